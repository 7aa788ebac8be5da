/**
 * Hetzner Cloud's own latencies, for the simulator when a benchmark asks for the real thing
 * (`bench/operator.bench.ts`, BENCH_LATENCY=hetzner). Sources and reasons: docs/robustness.md
 * ("Real action latencies"). Action durations are per API command; `bootToSshMs` is from the
 * end of the power-on/reset action to sshd answering.
 */
export const HETZNER_LATENCIES = {
  actionDurationMs: {
    // "Action should take 60 to 90 seconds on average" (Hetzner's own Ansible collection,
    // plugins/modules/server.py, on create_server): the low end, for a stock image.
    create_server: 60_000,
    // No published figures for these: values chosen (docs/robustness.md says why).
    enable_rescue: 2_000,
    start_server: 10_000,
    reset_server: 5_000,
    reboot_server: 5_000,
    delete_server: 5_000,
    default: 2_000,
  },
  bootToSshMs: { rescue: 20_000, os: 25_000 },
} as const;

/** The unavoidable latencies of one provisioning, in seconds (the floor of time to Ready). */
export function latencyFloorSeconds(): number {
  const a = HETZNER_LATENCIES.actionDurationMs;
  const b = HETZNER_LATENCIES.bootToSshMs;
  // create, enable_rescue, poweron, boot to rescue sshd, reset, boot to the OS's sshd.
  return (a.create_server + a.enable_rescue + a.start_server + b.rescue + a.reset_server + b.os) / 1000;
}
