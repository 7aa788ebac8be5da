/**
 * Operator scale and cost benchmark (run by `make bench`; needs root, the rig and the
 * OpenClaw install, like the integration tests).
 *
 * Full provisioning on real simulated servers, BENCH_REAL_VPS of them (default 6), with zero
 * action latency in the simulator: time to all Ready, Hetzner calls per Vps (target <= 15, with
 * a breakdown by route), operator RSS; then an idle period with a 5 s resync (BENCH_IDLE_S,
 * default 60 s: 12 full resyncs, what two hours cost at the default 600 s resync): Hetzner
 * calls during idle must be 0 (the run fails otherwise).
 *
 * Not 200 Vps, the number: every Vps needs a real host (namespace, sshd, the docker
 * shim running the real OpenClaw gateway, ~30-50 s of CPU at its first start) and this 2-core
 * machine shared by several engineers cannot hold 200 of them; and the simulator's state-only
 * host provider cannot stand in, because the rescue step then waits (5 min, by design) for an
 * sshd that never comes, holding a worker, so no Vps gets past ServerCreated. See
 * docs/robustness.md.
 *
 * Writes bench/results/operator.json.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { operatorRequests } from '../test/integration/operator/robust.ts';
import { type OperatorProcess, REPO, type System, startSystem } from '../test/lib/system.ts';

const REAL = Number(process.env['BENCH_REAL_VPS'] ?? 6);
const IDLE_S = Number(process.env['BENCH_IDLE_S'] ?? 60);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type VpsItem = {
  metadata: { name: string; uid: string; annotations?: Record<string, string> };
  status?: { ready?: boolean };
};

function manifests(s: System, names: readonly string[]): string {
  const docs: unknown[] = [
    {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'hcloud-token', namespace: s.namespace },
      stringData: { token: s.canaries.hcloudToken },
    },
    {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'llm-keys', namespace: s.namespace },
      stringData: s.canaries.modelKeys,
    },
  ];
  for (const name of names) {
    docs.push(
      {
        apiVersion: 'cannes.dev/v1alpha1',
        kind: 'Vps',
        metadata: { name, namespace: s.namespace },
        spec: {
          serverType: 'cx22',
          location: 'fsn1',
          cloudTokenSecretRef: { name: 'hcloud-token', key: 'token' },
        },
      },
      {
        apiVersion: 'cannes.dev/v1alpha1',
        kind: 'ModelKey',
        metadata: { name: `${name}-openai`, namespace: s.namespace },
        spec: {
          vpsRef: { name },
          provider: 'openai',
          secretRef: { name: 'llm-keys', key: 'openai' },
          purgeSecretAfterDelivery: false,
        },
      },
    );
  }
  return docs.map((d) => stringify(d)).join('---\n');
}

async function listVps(s: System): Promise<VpsItem[]> {
  return (JSON.parse(await s.kubectl(['get', 'vps', '-o', 'json'])) as { items: VpsItem[] }).items;
}

/** Resident set of the operator process, from /proc (MiB). */
function rssMiB(op: OperatorProcess): number {
  const pid = op.proc.pid;
  if (pid === undefined) return Number.NaN;
  const status = readProc(`/proc/${pid}/status`);
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN);
  return Math.round((kb / 1024) * 10) / 10;
}

function readProc(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
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

async function until(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(1000);
  }
}

const names = (prefix: string, n: number) =>
  Array.from({ length: n }, (_, i) => `${prefix}-${String(i).padStart(3, '0')}`);

async function fullProvisioning() {
  const s = await startSystem({ actionMs: 0 });
  try {
    const op = await s.startOperator(['--resync', '5']);
    const vpsNames = names('real', REAL);
    const start = performance.now();
    await s.kubectl(['apply', '-f', '-'], manifests(s, vpsNames));
    let peakRss = 0;
    await until(
      `${REAL} Vps Ready`,
      async () => {
        peakRss = Math.max(peakRss, rssMiB(op));
        const items = await listVps(s);
        return items.length === REAL && items.every((v) => v.status?.ready === true);
      },
      1_800_000,
    );
    const readySeconds = (performance.now() - start) / 1000;
    const calls = operatorRequests(s).length;
    const creates = operatorRequests(s).filter((r) => r.method === 'POST' && r.route === '/servers').length;
    // Let the last status writes and the token purge settle, then measure idle.
    await sleep(10_000);
    const before = operatorRequests(s).length;
    await sleep(IDLE_S * 1000);
    const idleCalls = operatorRequests(s).length - before;
    const rss = rssMiB(op);
    return {
      vps: REAL,
      hosts: 'real (network namespace, sshd, docker shim running the real OpenClaw gateway)',
      secondsToAllReady: Math.round(readySeconds * 10) / 10,
      hetznerCallsTotal: calls,
      hetznerCallsPerVps: Math.round((calls / REAL) * 10) / 10,
      serverCreates: creates,
      callsByRoute: byRoute(s),
      operatorRssMiB: { peakDuringProvisioning: peakRss, afterIdle: rss },
      idle: {
        seconds: IDLE_S,
        resyncSeconds: 5,
        fullResyncs: Math.floor(IDLE_S / 5),
        hetznerCalls: idleCalls,
      },
    };
  } finally {
    await s.stop();
  }
}

const full = REAL > 0 ? await fullProvisioning() : undefined;
console.log('full provisioning:', JSON.stringify(full, null, 2));
const out = join(REPO, 'bench', 'results');
mkdirSync(out, { recursive: true });
writeFileSync(
  join(out, 'operator.json'),
  `${JSON.stringify({ measuredAt: new Date().toISOString(), full }, null, 2)}\n`,
);
if (full && full.idle.hetznerCalls !== 0) {
  console.error(`FAIL: ${full.idle.hetznerCalls} Hetzner calls while idle (must be 0)`);
  process.exitCode = 1;
}
process.exit();
