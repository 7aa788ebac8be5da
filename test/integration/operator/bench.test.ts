/**
 * `make bench-operator` (README, docs/robustness.md) at its smallest: the benchmark runs end to
 * end against the shared rig, writes its results and its plot, and its own checks hold (every Vps
 * one server; 0 Hetzner calls and 0 SSH connections while idle and over a restart with 5 s
 * resyncs). No number is asserted: performance is the benchmark's to measure, never a test's.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, expect, it } from 'vitest';
import { REPO } from '../../lib/system.ts';
import { ownerPid, useRig } from '../../rig/shared.ts';

const dir = mkdtempSync(join(tmpdir(), 'cannes-bench-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Resolves when the benchmark exits 0; otherwise rejects with its output (its FAIL lines). */
const run = promisify(execFile);

type Run = {
  vps: number;
  serverCreates: number;
  meanStepSeconds: Record<string, number>;
  idle: { hetznerCalls: number; sshConnections: number };
  resync: { hetznerCalls: number; sshConnections: number; vpsReconcilesPerVps: number };
};

it('runs for 1 and 2 Vps and writes operator.json and the memory plot', async () => {
  await useRig(); // the benchmark joins this run's control plane instead of starting its own
  await run(process.execPath, ['bench/operator.bench.ts'], {
    cwd: REPO,
    env: {
      ...process.env,
      BENCH_VPS: '1,2',
      BENCH_LATENCY_VPS: '',
      BENCH_IDLE_S: '5',
      BENCH_RESULTS_DIR: dir,
      CANNES_RIG_OWNER_PID: String(ownerPid()),
    },
    maxBuffer: 16 * 2 ** 20,
  });
  const results = JSON.parse(readFileSync(join(dir, 'operator.json'), 'utf8')) as {
    idleRssSlopeMiBPerVps: number | null;
    scale: Run[];
  };
  expect(results.scale.map((r) => r.vps)).toEqual([1, 2]);
  for (const r of results.scale) {
    expect(r.serverCreates).toBe(r.vps);
    expect(r.idle).toMatchObject({ hetznerCalls: 0, sshConnections: 0 });
    expect(r.resync).toMatchObject({ hetznerCalls: 0, sshConnections: 0 });
    // The restart relisted and reconciled every Vps: the check had something to count.
    expect(r.resync.vpsReconcilesPerVps).toBeGreaterThanOrEqual(1);
    expect(Object.keys(r.meanStepSeconds)).toEqual(
      expect.arrayContaining(['create_server', 'rescue_keygen', 'deploy']),
    );
  }
  expect(typeof results.idleRssSlopeMiBPerVps).toBe('number');
  const png = readFileSync(join(dir, 'operator-memory.png'));
  expect(png.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
}, 600_000);
