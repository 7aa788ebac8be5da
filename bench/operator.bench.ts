/**
 * Operator scale and cost benchmark (run by `make bench`; needs root, the rig and the OpenClaw
 * install, like the integration tests). Writes bench/results/operator.json.
 *
 * Scale: BENCH_VPS (a list, default "50,100,200,400": one run per size, the curve) Vps, each
 * with one ModelKey, applied at once, against the Hetzner simulator with zero action latency. Every server is a real host (network namespace,
 * real boots into rescue and OS, real sshd, real SSH from the operator: rescue keygen, deploy,
 * nftables, the post-provisioning key rotation), but "light": the long-running services (the
 * proxy unit, the gateway container) are tiny HTTP stand-ins (RealHostProviderOptions
 * .standInServices), since 200 real OpenClaw gateways do not fit on one 2-core machine.
 * Measured: time to all Ready, Hetzner calls per Vps (target <= 6) by route, SSH connections
 * per Vps, operator RSS.
 *
 * The operator runs as it ships (`--resync` at its default, 10 minutes). Idle: once settled,
 * BENCH_IDLE_S (default 60) of idle, then its memory (the curve and the slope).
 * Resync: then the operator is restarted with a 5 s full resync and runs BENCH_IDLE_S more: a
 * start on a fleet of Ready servers and 12 full relists and reconciles of every Vps, what two
 * hours cost at the default. Its memory under that load is reported apart. Hetzner calls and SSH
 * connections while idle and during the resyncs must be 0 (the run fails otherwise).
 *
 * BENCH_REAL_VPS (default 0): additionally the same with that many fully real servers (the
 * real OpenClaw gateway and proxy), for the time to Ready of the real thing.
 * Latency: BENCH_LATENCY_VPS (a list, default "1,50"): the same with Hetzner's own action
 * latencies and boot times (test/hcloud-sim/latencies.ts), for the time to Ready against the
 * sum of the unavoidable latencies of one Vps.
 * BENCH_WORKERS (default 4, the operator's default): `--workers` of the operator. Long steps
 * run off the workers (operator/controllers/inflight.ts), so a few workers provision any number.
 *
 * Writes bench/results/operator.json (every run) and bench/results/operator-memory.png (RSS
 * against N).
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { DEFAULT_RESYNC_MS, OPERATOR_RUNTIME_ENV } from '../operator/config.ts';
import { HETZNER_LATENCIES, latencyFloorSeconds } from '../test/hcloud-sim/latencies.ts';
import { openaiVps, operatorRequests } from '../test/integration/operator/robust.ts';
import { cloudTokenSecret, llmKeySecret } from '../test/lib/manifests.ts';
import { metricSum, type OperatorProcess, REPO, type System, startSystem } from '../test/lib/system.ts';
import { waitUntil } from '../test/lib/wait.ts';
import { idleSlope, memoryPlot } from './plot.ts';

const sizes = (v: string) =>
  v
    .split(',')
    .map((x) => Number(x.trim()))
    .filter((x) => x > 0);
const SIZES = sizes(process.env['BENCH_VPS'] ?? '50,100,200,400');
const LATENCY_SIZES = sizes(process.env['BENCH_LATENCY_VPS'] ?? '1,50');
const REAL = Number(process.env['BENCH_REAL_VPS'] ?? 0);
const IDLE_S = Number(process.env['BENCH_IDLE_S'] ?? 60);
const WORKERS = Number(process.env['BENCH_WORKERS'] ?? 4);
/** The resync check's full relist period (s). */
const RESYNC_S = 5;
/** Quiet this long (no Hetzner call, no SSH connection) after Ready: the operator has settled. */
const SETTLE_MS = 15_000;
/** Extra operator flags and environment for an experiment (BENCH_OPERATOR_ARGS="--max-in-flight 32"). */
const EXTRA_ARGS = (process.env['BENCH_OPERATOR_ARGS'] ?? '').split(/\s+/).filter((a) => a !== '');
const EXTRA_ENV = Object.fromEntries(
  (process.env['BENCH_OPERATOR_ENV'] ?? '')
    .split(/\s+/)
    .filter((a) => a.includes('='))
    .map((a) => [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)]),
);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type VpsItem = {
  metadata: { name: string };
  status?: { ready?: boolean };
};

function manifests(s: System, names: readonly string[]): string {
  const docs: unknown[] = [
    cloudTokenSecret(s.namespace, 'hcloud-token', s.canaries.hcloudToken),
    llmKeySecret(s.namespace, 'llm-keys', s.canaries.modelKeys),
  ];
  for (const name of names) docs.push(...openaiVps(s, name, 'hcloud-token'));
  return docs.map((d) => stringify(d)).join('---\n');
}

async function listVps(s: System): Promise<VpsItem[]> {
  return (JSON.parse(await s.kubectl(['get', 'vps', '-o', 'json'])) as { items: VpsItem[] }).items;
}

/** Resident set of the operator process, from /proc (MiB). */
function rssMiB(op: OperatorProcess): number {
  const pid = op.proc.pid;
  if (pid === undefined) return Number.NaN;
  let status = '';
  try {
    status = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return Number.NaN;
  }
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN);
  return Math.round((kb / 1024) * 10) / 10;
}

/** SSH connection attempts the operator made so far. */
const sshConnections = (op: OperatorProcess) => metricSum(op, 'cannes_ssh_connections_total');
/** Reconciles of Vps objects so far. */
const vpsReconciles = (op: OperatorProcess) =>
  metricSum(op, 'controller_runtime_reconcile_total', 'controller="vps"');

/**
 * Mean seconds of each provisioning step, from the operator's own histogram
 * (`cannes_provisioning_step_duration_seconds`): where a Vps's time to Ready goes.
 */
async function stepSeconds(op: OperatorProcess): Promise<Record<string, number>> {
  const text = await (await fetch(op.metricsUrl)).text();
  const sum = new Map<string, number>();
  const count = new Map<string, number>();
  for (const m of text.matchAll(
    /^cannes_provisioning_step_duration_seconds_(sum|count)\{step="([^"]+)"\} (\S+)$/gm,
  ))
    (m[1] === 'sum' ? sum : count).set(m[2] ?? '', Number(m[3]));
  return Object.fromEntries([...sum].map(([step, s]) => [step, round1(s / (count.get(step) || 1))]));
}

/** Operator calls by `METHOD route` (action polls, finds, creates...), most frequent first. */
function byRoute(s: System): Record<string, number> {
  const counts = new Map<string, number>();
  for (const r of operatorRequests(s)) {
    const k = `${r.method} ${r.route || r.url}`;
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  return Object.fromEntries([...counts].sort((a, b) => b[1] - a[1]));
}

/**
 * Polls once a second; a check that throws (the apiserver refused) ends the run, and so does
 * the operator's exit, named with its code or signal and its last log lines (a run once lost
 * its operator without a word).
 */
function until(
  what: string,
  op: OperatorProcess,
  check: () => Promise<boolean>,
  timeoutMs: number,
): Promise<void> {
  return waitUntil(what, check, timeoutMs, {
    intervalMs: 1000,
    failOnError: true,
    giveUp: () => operatorExit(op),
  });
}

function operatorExit(op: OperatorProcess): string | undefined {
  const { exitCode, signalCode } = op.proc;
  if (exitCode === null && signalCode === null) return undefined;
  const tail = op.logs.join('').split('\n').slice(-20).join('\n');
  return `the operator exited (${signalCode ? `signal ${signalCode}` : `code ${exitCode}`}); its last log lines:\n${tail}`;
}

const names = (prefix: string, n: number) =>
  Array.from({ length: n }, (_, i) => `${prefix}-${String(i).padStart(3, '0')}`);
const round1 = (x: number) => Math.round(x * 10) / 10;

/** Operator heap in use (MiB), from its own metrics. */
const heapMiB = async (op: OperatorProcess) => {
  try {
    return round1((await metricSum(op, 'nodejs_heap_size_used_bytes', '', 0)) / 2 ** 20);
  } catch {
    return 0; // not listening yet (start-up)
  }
};

/**
 * BENCH_HEAP_SNAPSHOT=1: a heap snapshot of the idle operator after each run, in
 * bench/results/heap/ (not committed; summarise with tools/heap-summary.ts).
 */
const HEAP_SNAPSHOT = process.env['BENCH_HEAP_SNAPSHOT'] === '1';

async function heapSnapshot(op: OperatorProcess, label: string): Promise<void> {
  const before = new Set(readdirSync(REPO));
  op.proc.kill('SIGUSR2');
  const dir = join(REPO, 'bench', 'results', 'heap');
  mkdirSync(dir, { recursive: true });
  await waitUntil(
    'the heap snapshot',
    async () => readdirSync(REPO).some((f) => f.endsWith('.heapsnapshot') && !before.has(f)),
    300_000,
    { intervalMs: 1000 },
  );
  // Written in one go, but give the writer a moment to close it.
  await sleep(5000);
  const file = readdirSync(REPO).find((f) => f.endsWith('.heapsnapshot') && !before.has(f));
  if (file) renameSync(join(REPO, file), join(dir, `operator-${label}.heapsnapshot`));
}

/** The machine's 1-minute load average (other work on it slows every run). */
const load1 = () => Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);

/** The system of the run in progress: an interrupted benchmark stops it (operator, servers, database). */
let running: System | undefined;
for (const sig of ['SIGINT', 'SIGTERM'] as const)
  process.once(sig, () => {
    console.error(`${sig}: stopping the run's operator, servers and database`);
    void Promise.resolve(running?.stop()).finally(() => process.exit(130));
  });

async function run(n: number, light: boolean, latency: 'zero' | 'hetzner' = 'zero') {
  const s = await startSystem({
    standInServices: light,
    builtOperator: true,
    ...(latency === 'hetzner'
      ? { actionMs: { ...HETZNER_LATENCIES.actionDurationMs }, bootToSshMs: HETZNER_LATENCIES.bootToSshMs }
      : { actionMs: 0 }),
  });
  running = s;
  try {
    const start = (resyncSeconds: number) =>
      s.startOperator(['--resync', String(resyncSeconds), '--workers', String(WORKERS), ...EXTRA_ARGS], {
        ...EXTRA_ENV,
        ...(HEAP_SNAPSHOT
          ? {
              NODE_OPTIONS: `${EXTRA_ENV['NODE_OPTIONS'] ?? OPERATOR_RUNTIME_ENV['NODE_OPTIONS'] ?? ''} --heapsnapshot-signal=SIGUSR2`,
            }
          : {}),
      });
    const op = await start(DEFAULT_RESYNC_MS / 1000);
    const vpsNames = names(light ? 'vps' : 'real', n);
    const t0 = performance.now();
    await s.kubectl(['apply', '-f', '-'], manifests(s, vpsNames));
    let peakRss = 0;
    let peakHeap = 0;
    let lastReport = 0;
    const loads: number[] = [];
    await until(
      `${n} Vps Ready`,
      op,
      async () => {
        peakRss = Math.max(peakRss, rssMiB(op));
        peakHeap = Math.max(peakHeap, await heapMiB(op));
        loads.push(load1());
        const items = await listVps(s);
        const ready = items.filter((v) => v.status?.ready === true).length;
        if (performance.now() - lastReport > 30_000) {
          lastReport = performance.now();
          console.error(`  ${Math.round((performance.now() - t0) / 1000)} s: ${ready}/${n} Ready`);
        }
        return items.length === n && ready === n;
      },
      3_600_000,
    );
    const readySeconds = (performance.now() - t0) / 1000;
    const callsAtReady = operatorRequests(s).length;
    const reconcilesAtReady = await vpsReconciles(op);
    // The post-provisioning key rotations and the last status writes follow Ready: wait until
    // neither Hetzner calls nor SSH connections have moved for SETTLE_MS.
    let settled = { calls: -1, ssh: -1 };
    await until(
      'the operator to settle after Ready',
      op,
      async () => {
        peakRss = Math.max(peakRss, rssMiB(op));
        const now = { calls: operatorRequests(s).length, ssh: await sshConnections(op) };
        const same = now.calls === settled.calls && now.ssh === settled.ssh;
        settled = now;
        if (!same) await sleep(SETTLE_MS);
        return same;
      },
      1_800_000,
    );
    const settledSeconds = (performance.now() - t0) / 1000;
    const calls = operatorRequests(s).length;
    const ssh = await sshConnections(op);
    const creates = operatorRequests(s).filter((r) => r.method === 'POST' && r.route === '/servers').length;
    const rssSettled = rssMiB(op);
    const steps = await stepSeconds(op);
    const reconciles = await vpsReconciles(op);
    await sleep(IDLE_S * 1000);
    const exited = operatorExit(op);
    if (exited) throw new Error(`while idle, ${exited}`);
    // Idle memory as it is (the operator's own GC after the burst has run by now), and where it
    // sits: V8's heap as committed, memory held outside it for JS objects (Buffers, ssh2's
    // WebAssembly memory), and the rest of the RSS (code, glibc's heap, stacks).
    const idleRss = rssMiB(op);
    const idleHeap = await heapMiB(op);
    const idleHeapTotal = round1((await metricSum(op, 'nodejs_heap_size_total_bytes', '', 0)) / 2 ** 20);
    const idleExternal = round1((await metricSum(op, 'nodejs_external_memory_bytes', '', 0)) / 2 ** 20);
    if (HEAP_SNAPSHOT) await heapSnapshot(op, `${latency}-${n}`);
    const idleCalls = operatorRequests(s).length - calls;
    const idleSsh = (await sshConnections(op)) - ssh;
    const idleReconciles = (await vpsReconciles(op)) - reconciles;
    const resync = await resyncCheck(s, op, () => start(RESYNC_S), n);
    return {
      vps: n,
      servers: light
        ? 'real hosts (network namespace, rescue and OS boots, sshd, nftables), services stood in for'
        : 'real hosts running the real proxy and the real OpenClaw gateway',
      latency,
      ...(latency === 'hetzner' ? { latencyFloorSeconds: latencyFloorSeconds() } : {}),
      operatorWorkers: WORKERS,
      ...(EXTRA_ARGS.length > 0 ? { operatorArgs: EXTRA_ARGS } : {}),
      ...(Object.keys(EXTRA_ENV).length > 0 ? { operatorEnv: EXTRA_ENV } : {}),
      machineLoad1: {
        mean: round1(loads.reduce((a, x) => a + x, 0) / loads.length),
        max: Math.max(...loads),
      },
      secondsToAllReady: round1(readySeconds),
      vpsReconcilesPerSecond: round1(reconcilesAtReady / readySeconds),
      secondsToSettled: round1(settledSeconds),
      hetznerCallsPerVps: round1(calls / n),
      hetznerCallsPerVpsAtReady: round1(callsAtReady / n),
      hetznerCallsTotal: calls,
      serverCreates: creates,
      callsByRoute: byRoute(s),
      meanStepSeconds: steps,
      sshConnectionsPerVps: round1(ssh / n),
      operatorRssMiB: { peak: peakRss, settled: rssSettled, afterIdle: idleRss },
      idleMemoryMiB: {
        rss: idleRss,
        v8HeapCommitted: idleHeapTotal,
        external: idleExternal,
        rest: round1(idleRss - idleHeapTotal - idleExternal),
      },
      operatorHeapMiB: { peak: peakHeap, afterIdle: idleHeap },
      idle: {
        seconds: IDLE_S,
        resyncSeconds: DEFAULT_RESYNC_MS / 1000,
        hetznerCalls: idleCalls,
        sshConnections: idleSsh,
        vpsReconcilesPerVps: round1(idleReconciles / n),
      },
      resync,
    };
  } finally {
    running = undefined;
    await s.stop();
  }
}

/**
 * The idle cost of resyncs: the operator restarted with a RESYNC_S full relist on the settled
 * fleet, for IDLE_S. A start and every resync reconcile each Vps; none may call Hetzner or open
 * an SSH connection. Its RSS is that of an operator under a continuous relist, not an idle one.
 */
async function resyncCheck(
  s: System,
  first: OperatorProcess,
  restart: () => Promise<OperatorProcess>,
  n: number,
) {
  await first.stop();
  const calls = operatorRequests(s).length;
  const op = await restart();
  const t0 = performance.now();
  let peak = 0;
  await until(
    `${IDLE_S} s of ${RESYNC_S} s resyncs`,
    op,
    async () => {
      peak = Math.max(peak, rssMiB(op));
      return performance.now() - t0 >= IDLE_S * 1000;
    },
    IDLE_S * 1000 + 60_000,
  );
  return {
    seconds: IDLE_S,
    resyncSeconds: RESYNC_S,
    fullResyncs: Math.floor(IDLE_S / RESYNC_S),
    hetznerCalls: operatorRequests(s).length - calls,
    sshConnections: await sshConnections(op),
    // The start and every full resync reconcile each Vps (from its own and its ModelKey's relist).
    vpsReconcilesPerVps: round1((await vpsReconciles(op)) / n),
    operatorRssMiB: { peak, end: rssMiB(op) },
    operatorHeapMiB: await heapMiB(op),
  };
}

type RunResult = Awaited<ReturnType<typeof run>>;
const results: { scale: RunResult[]; latency: RunResult[]; real?: RunResult } = { scale: [], latency: [] };
const all = (): [string, RunResult][] => [
  ...results.scale.map((r): [string, RunResult] => [`scale ${r.vps}`, r]),
  ...results.latency.map((r): [string, RunResult] => [`latency ${r.vps}`, r]),
  ...(results.real ? [['real', results.real] as [string, RunResult]] : []),
];
/** BENCH_RESULTS_DIR: somewhere else than bench/results (the smoke test's own directory). */
const out = process.env['BENCH_RESULTS_DIR'] || join(REPO, 'bench', 'results');
mkdirSync(out, { recursive: true });
/** Written after every run, so a long curve that stops part-way keeps what it measured. */
function save(): void {
  const curve = results.scale.map((r) => ({ vps: r.vps, rss: r.operatorRssMiB }));
  const slope = idleSlope(curve);
  writeFileSync(
    join(out, 'operator.json'),
    `${JSON.stringify({ measuredAt: new Date().toISOString(), idleRssSlopeMiBPerVps: slope, ...results }, null, 2)}\n`,
  );
  if (curve.length > 0) writeFileSync(join(out, 'operator-memory.png'), memoryPlot(curve));
}
for (const n of SIZES) {
  console.error(`scale: ${n} Vps on light servers, ${WORKERS} workers`);
  const r = await run(n, true);
  results.scale.push(r);
  console.log('scale:', JSON.stringify(r, null, 2));
  save();
}
for (const n of LATENCY_SIZES) {
  console.error(`latency: ${n} Vps with Hetzner's latencies, ${WORKERS} workers`);
  const r = await run(n, true, 'hetzner');
  results.latency.push(r);
  console.log('latency:', JSON.stringify(r, null, 2));
  save();
}
if (REAL > 0) {
  console.error(`real: ${REAL} Vps on fully real servers`);
  results.real = await run(REAL, false);
  console.log('real:', JSON.stringify(results.real, null, 2));
  save();
}
for (const [name, r] of all()) {
  const problems: string[] = [];
  if (r.idle.hetznerCalls !== 0) problems.push(`${r.idle.hetznerCalls} Hetzner calls while idle (must be 0)`);
  if (r.idle.sshConnections !== 0)
    problems.push(`${r.idle.sshConnections} SSH connections while idle (must be 0)`);
  if (r.resync.hetznerCalls !== 0)
    problems.push(`${r.resync.hetznerCalls} Hetzner calls over a restart and resyncs (must be 0)`);
  if (r.resync.sshConnections !== 0)
    problems.push(`${r.resync.sshConnections} SSH connections over a restart and resyncs (must be 0)`);
  if (r.serverCreates !== r.vps) problems.push(`${r.serverCreates} servers created for ${r.vps} Vps`);
  // A resync relists Vps and ModelKeys (each maps to its Vps): about 2 reconciles per Vps per
  // resync. Far more means a requeue loop (a spinning timer once made thousands).
  if (r.resync.vpsReconcilesPerVps > 4 * (r.resync.fullResyncs + 1) + 2)
    problems.push(`${r.resync.vpsReconcilesPerVps} reconciles per Vps over the resyncs: a requeue loop?`);
  if (r.idle.vpsReconcilesPerVps > 4)
    problems.push(`${r.idle.vpsReconcilesPerVps} reconciles per Vps while idle: a requeue loop?`);
  const target = r.hetznerCallsPerVps <= 6 ? 'met' : 'MISSED';
  console.log(`${name}: ${r.hetznerCallsPerVps} Hetzner calls per Vps (target <= 6: ${target})`);
  for (const p of problems) console.error(`FAIL ${name}: ${p}`);
  if (problems.length > 0) process.exitCode = 1;
}
process.exit();
