/**
 * Controller core benchmark (run by `make bench`; needs nothing external).
 *   1. work queue: add → get → done cycles per second over 1000 keys, as a ratio to a bare
 *      FIFO with a Set for dedupe measured in the same run (what the client-go semantics cost);
 *   2. controller: watch events → informer cache → queue → 4 workers → a no-op reconcile:
 *      events per second and reconciles per event (coalescing under a storm).
 * Writes bench/results/kube.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Controller, done } from '../operator/kube/controller.ts';
import { Informer } from '../operator/kube/informer.ts';
import { createRegistry } from '../operator/kube/metrics.ts';
import { WorkQueue } from '../operator/kube/queue.ts';
import { createLogger } from '../operator/lib/log.ts';
import { CONFIGMAPS, type ConfigMap, parseConfigMap } from '../test/lib/configmaps.ts';
import { FakeApi } from '../test/unit/kube/fakes.ts';

const CYCLES = Number(process.env['BENCH_QUEUE_CYCLES'] ?? 300_000);
const KEYS = 1000;
const keys = Array.from({ length: KEYS }, (_, i) => `ns/k${i}`);

async function timeIt(fn: () => Promise<void>): Promise<number> {
  const start = performance.now();
  await fn();
  return (performance.now() - start) / 1000;
}

// Baseline: FIFO + Set, no processing set, no metrics, no rate limiter.
const baselineSeconds = await timeIt(async () => {
  const fifo: string[] = [];
  const queued = new Set<string>();
  let head = 0;
  for (let i = 0; i < CYCLES; i++) {
    const k = keys[i % KEYS] ?? '';
    if (!queued.has(k)) {
      queued.add(k);
      fifo.push(k);
    }
    if (i % 4 === 3) {
      while (head < fifo.length) {
        const got = fifo[head++] ?? '';
        queued.delete(got);
        await Promise.resolve(got);
      }
    }
  }
});

const registry = createRegistry({ processMetrics: false });
const queueSeconds = await timeIt(async () => {
  const q = new WorkQueue<string>();
  for (let i = 0; i < CYCLES; i++) {
    q.add(keys[i % KEYS] ?? '');
    if (i % 4 === 3) {
      while (q.length > 0) {
        const got = await q.get();
        if (got !== undefined) q.done(got);
      }
    }
  }
});

// Controller end to end with a scripted watch.
const EVENTS = Number(process.env['BENCH_EVENTS'] ?? 50_000);
const api = new FakeApi();
for (let i = 0; i < KEYS; i++) api.put(`k${i}`);
const informer = new Informer<ConfigMap>({
  api,
  resource: CONFIGMAPS,
  parse: parseConfigMap,
  resyncMs: 0,
});
let reconciles = 0;
const controller = new Controller({
  name: 'bench',
  informer,
  workers: 4,
  registry,
  logger: createLogger('bench', { level: 'silent' }),
  reconcile: async () => {
    reconciles++;
    return done();
  },
});
const stop = new AbortController();
const running = controller.run(stop.signal);
await informer.waitForSync();
while (api.watches.length === 0) await new Promise((r) => setImmediate(r));
while (reconciles < KEYS) await new Promise((r) => setImmediate(r));
reconciles = 0;
const depth = async (): Promise<number> =>
  (await registry.getSingleMetric('workqueue_depth')?.get())?.values[0]?.value ?? 0;
const active = async (): Promise<number> =>
  (await registry.getSingleMetric('controller_runtime_active_workers')?.get())?.values[0]?.value ?? 0;
const controllerSeconds = await timeIt(async () => {
  for (let i = 0; i < EVENTS; i++) {
    api.lastWatch.send({ type: 'MODIFIED', object: api.put(`k${i % KEYS}`, { i: String(i) }) });
    if (i % 100 === 99) await new Promise((r) => setImmediate(r));
  }
  while ((await depth()) > 0 || (await active()) > 0) await new Promise((r) => setImmediate(r));
});
stop.abort();
await running;
await informer.stop();

const result = {
  queue: {
    cycles: CYCLES,
    opsPerSecond: Math.round(CYCLES / queueSeconds),
    baselineOpsPerSecond: Math.round(CYCLES / baselineSeconds),
    ratioToBaseline: Number((baselineSeconds / queueSeconds).toFixed(3)),
  },
  controller: {
    events: EVENTS,
    eventsPerSecond: Math.round(EVENTS / controllerSeconds),
    reconciles,
    reconcilesPerEvent: Number((reconciles / EVENTS).toFixed(3)),
  },
};
console.log(
  `work queue: ${result.queue.opsPerSecond} add/get/done per s = ${result.queue.ratioToBaseline}x a bare FIFO+Set (${result.queue.baselineOpsPerSecond}/s)`,
);
console.log(
  `controller: ${result.controller.eventsPerSecond} watch events per s through cache+queue+4 workers; ${result.controller.reconcilesPerEvent} reconciles per event (below 1 when changes to a queued key coalesce)`,
);
const dir = join(import.meta.dirname, 'results');
mkdirSync(dir, { recursive: true });
writeFileSync(join(dir, 'kube.json'), `${JSON.stringify(result, null, 2)}\n`);
