/**
 * Hetzner client benchmark against the in-process simulator (run by `make bench`; needs
 * nothing external).
 *   1. client overhead: GET /servers/{id} through HcloudClient (budget, schema check,
 *      metrics) as a ratio to bare fetch + JSON.parse measured in the same run;
 *   2. budget pacing: 300 concurrent creates against a 20-token bucket refilling 50/s: the
 *      achieved request rate as a ratio to the refill rate (at most ~1 + the burst), and how
 *      many requests the simulator refused (should be 0).
 * Writes bench/results/hcloud.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HcloudClient } from '../operator/hcloud/client.ts';
import { startSimulator } from '../test/hcloud-sim/simulator.ts';

const N = Number(process.env['BENCH_HCLOUD_GETS'] ?? 2000);

async function timeIt(fn: () => Promise<void>): Promise<number> {
  const start = performance.now();
  await fn();
  return (performance.now() - start) / 1000;
}

// 1. overhead
const sim = await startSimulator({
  rateLimit: { limit: 10_000_000, refillPerSecond: 10_000 },
  actionDurationMs: 1,
});
const client = new HcloudClient({ endpoint: sim.endpoint });
const created = await client.createServer(sim.token, {
  name: 'bench',
  server_type: 'cx23',
  image: 'ubuntu-24.04',
});
const id = created.server.id;
const auth = { authorization: `Bearer ${sim.token.reveal()}` };
// Warm both paths up.
for (let i = 0; i < 50; i++) {
  await client.getServer(sim.token, id);
  await (await fetch(`${sim.endpoint}/servers/${id}`, { headers: auth })).json();
}
const rawSeconds = await timeIt(async () => {
  for (let i = 0; i < N; i++) await (await fetch(`${sim.endpoint}/servers/${id}`, { headers: auth })).json();
});
const clientSeconds = await timeIt(async () => {
  for (let i = 0; i < N; i++) await client.getServer(sim.token, id);
});
await sim.close();

// 2. pacing
const LIMIT = 20;
const REFILL = 50;
const CREATES = 300;
const paced = await startSimulator({
  rateLimit: { limit: LIMIT, refillPerSecond: REFILL },
  actionDurationMs: 1,
});
const pacedClient = new HcloudClient({ endpoint: paced.endpoint, budget: { refillPerSecond: REFILL } });
const pacedSeconds = await timeIt(async () => {
  await Promise.all(
    Array.from({ length: CREATES }, (_, i) =>
      pacedClient.createServer(paced.token, {
        name: `p-${i}`,
        server_type: 'cx23',
        image: 'ubuntu-24.04',
        start_after_create: false,
      }),
    ),
  );
});
const refused = paced.admin.stats().refusedByBucket;
await paced.close();

const result = {
  overhead: {
    requests: N,
    clientPerSecond: Math.round(N / clientSeconds),
    rawFetchPerSecond: Math.round(N / rawSeconds),
    ratioToRawFetch: Number((rawSeconds / clientSeconds).toFixed(3)),
  },
  pacing: {
    creates: CREATES,
    limit: LIMIT,
    refillPerSecond: REFILL,
    achievedPerSecond: Number((CREATES / pacedSeconds).toFixed(1)),
    ratioToRefill: Number((CREATES / pacedSeconds / REFILL).toFixed(3)),
    refusedBySimulator: refused,
  },
};
console.log(
  `hcloud client: ${result.overhead.clientPerSecond} GET /servers/{id} per s = ${result.overhead.ratioToRawFetch}x bare fetch (${result.overhead.rawFetchPerSecond}/s)`,
);
console.log(
  `hcloud budget: ${CREATES} concurrent creates at ${result.pacing.achievedPerSecond}/s = ${result.pacing.ratioToRefill}x the ${REFILL}/s refill (burst ${LIMIT}); ${refused} refused by the simulator`,
);
const dir = join(import.meta.dirname, 'results');
mkdirSync(dir, { recursive: true });
writeFileSync(join(dir, 'hcloud.json'), `${JSON.stringify(result, null, 2)}\n`);
