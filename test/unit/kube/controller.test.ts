import { Writable } from 'node:stream';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { TerminalError } from '../../../common/errors.ts';
import type { Clock } from '../../../operator/kube/clock.ts';
import {
  Controller,
  done,
  QUIET_RETRIES,
  type ReconcileRequest,
  type Reconciler,
  requeueAfter,
} from '../../../operator/kube/controller.ts';
import { Informer } from '../../../operator/kube/informer.ts';
import { ExponentialFailureRateLimiter } from '../../../operator/kube/ratelimit.ts';
import { createLogger } from '../../../operator/lib/log.ts';
import { CONFIGMAPS, type ConfigMap, parseConfigMap } from '../../lib/configmaps.ts';
import { FakeApi, flush, ManualClock, until } from './fakes.ts';

const logger = createLogger('test', { level: 'silent' });

function setup(
  reconcile: Reconciler,
  opts: { workers?: number; clock?: Clock; logger?: ReturnType<typeof createLogger> } = {},
) {
  const api = new FakeApi();
  const registry = new Registry();
  const informer = new Informer<ConfigMap>({
    api,
    resource: CONFIGMAPS,
    parse: parseConfigMap,
    resyncMs: 0,
  });
  const controller = new Controller({
    name: 'test',
    informer,
    reconcile,
    workers: opts.workers ?? 1,
    registry,
    logger: opts.logger ?? logger,
    rateLimiter: new ExponentialFailureRateLimiter(1, 1000),
    ...(opts.clock ? { clock: opts.clock } : {}),
  });
  const stop = new AbortController();
  let running: Promise<void> | undefined;
  const start = (): void => {
    running = controller.run(stop.signal);
  };
  const shutdown = async (): Promise<void> => {
    stop.abort();
    await running;
    await informer.stop();
  };
  return { api, registry, informer, controller, start, shutdown, stop };
}

async function value(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = await registry.getSingleMetric(name)?.get();
  const v = m?.values.find((x) => Object.entries(labels).every(([k, val]) => x.labels[k] === val));
  return v?.value ?? Number.NaN;
}

describe('Controller', () => {
  it('never reconciles one key on two workers at once, whatever the event storm', async () => {
    const active = new Map<string, number>();
    let maxSameKey = 0;
    let maxTotal = 0;
    let calls = 0;
    const t = setup(
      async (req: ReconcileRequest) => {
        calls++;
        const n = (active.get(req.key) ?? 0) + 1;
        active.set(req.key, n);
        maxSameKey = Math.max(maxSameKey, n);
        maxTotal = Math.max(
          maxTotal,
          [...active.values()].reduce((a, b) => a + b, 0),
        );
        await new Promise((r) => setTimeout(r, 2));
        active.set(req.key, (active.get(req.key) ?? 1) - 1);
        return done();
      },
      { workers: 4 },
    );
    for (const n of ['a', 'b', 'c', 'd']) t.api.put(n);
    t.start();
    await until(() => t.api.watches.length > 0, 'watch opened');
    for (let i = 0; i < 200; i++) {
      const name = ['a', 'b', 'c', 'd'][i % 4] ?? 'a';
      t.api.lastWatch.send({ type: 'MODIFIED', object: t.api.put(name, { i: String(i) }) });
      if (i % 10 === 0) await new Promise((r) => setTimeout(r, 1));
    }
    await until(() => [...active.values()].every((v) => v === 0) && calls >= 4, 'reconciles to settle');
    await flush();
    expect(maxSameKey).toBe(1);
    // The assertion above could fail: four workers did run different keys concurrently.
    expect(maxTotal).toBeGreaterThan(1);
    // Coalescing: far fewer reconciles than events.
    expect(calls).toBeLessThan(200);
    await t.shutdown();
  });

  it('retries a failing key with growing backoff and records the errors', async () => {
    const attempts: number[] = [];
    const t = setup(async (_req, ctx) => {
      attempts.push(ctx.attempt);
      if (attempts.length < 4) throw new Error('boom');
      return done();
    });
    t.api.put('a');
    t.start();
    await until(() => attempts.length === 4, 'four attempts');
    await flush();
    expect(attempts).toEqual([0, 1, 2, 3]);
    expect(await value(t.registry, 'controller_runtime_reconcile_errors_total')).toBe(3);
    expect(await value(t.registry, 'controller_runtime_reconcile_total', { result: 'error' })).toBe(3);
    expect(await value(t.registry, 'controller_runtime_reconcile_total', { result: 'success' })).toBe(1);
    expect(await value(t.registry, 'workqueue_retries_total')).toBe(3);
    await t.shutdown();
  });

  it('logs retried failures at warn until they persist, and a programming error at error at once', async () => {
    const lines: { level: number; msg: string; key?: string; attempt?: number }[] = [];
    const destination = new Writable({
      write(chunk, _enc, cb) {
        for (const l of String(chunk).split('\n')) if (l) lines.push(JSON.parse(l));
        cb();
      },
    });
    const calls = new Map<string, number>();
    const t = setup(
      async (req) => {
        const n = (calls.get(req.name) ?? 0) + 1;
        calls.set(req.name, n);
        if (req.name === 'panics' && n === 1) throw new TypeError('x is undefined');
        if (req.name === 'flaky' && n <= QUIET_RETRIES + 3) throw new Error('503 from upstream');
        return done();
      },
      { logger: createLogger('test', { level: 'info', destination }) },
    );
    t.api.put('panics');
    t.api.put('flaky');
    t.start();
    await until(() => calls.get('panics') === 2, 'the panic retried');
    await until(() => calls.get('flaky') === QUIET_RETRIES + 4, 'the flaky key through');
    await flush();
    const failures = (key: string) =>
      lines.filter((l) => l.msg === 'reconcile failed; retrying with backoff' && l.key === key);
    expect(failures('ns/panics').map((l) => l.level)).toEqual([50]);
    expect(failures('ns/flaky').map((l) => [l.attempt, l.level])).toEqual([
      [1, 40],
      [2, 40],
      [3, 40],
      [4, 50],
      [5, 50],
      [6, 50],
    ]);
    await t.shutdown();
  });

  it('does not retry a terminal error', async () => {
    const clock = new ManualClock();
    let calls = 0;
    const t = setup(
      async () => {
        calls++;
        throw new TerminalError('InvalidSpec', 'spec.serverType is unknown');
      },
      { clock },
    );
    t.api.put('a');
    t.start();
    await until(() => calls === 1, 'first reconcile');
    await clock.advance(2_000_000);
    expect(calls).toBe(1);
    expect(clock.pendingTimers).toBe(0);
    expect(await value(t.registry, 'controller_runtime_terminal_reconcile_errors_total')).toBe(1);
    expect(await value(t.registry, 'controller_runtime_reconcile_errors_total')).toBe(1);
    await t.shutdown();
  });

  it('counts a programming error as a panic and still retries it', async () => {
    let calls = 0;
    const t = setup(async () => {
      calls++;
      if (calls === 1) throw new TypeError('cannot read properties of undefined');
      return done();
    });
    t.api.put('a');
    t.start();
    await until(() => calls === 2, 'retry after the panic');
    expect(await value(t.registry, 'controller_runtime_reconcile_panics_total')).toBe(1);
    await t.shutdown();
  });

  it('comes back exactly when requeueAfter asked', async () => {
    const clock = new ManualClock();
    let calls = 0;
    const t = setup(
      async () => {
        calls++;
        return calls === 1 ? requeueAfter(60_000) : done();
      },
      { clock },
    );
    t.api.put('a');
    t.start();
    await until(() => calls === 1, 'first reconcile');
    await clock.advance(59_999);
    expect(calls).toBe(1);
    await clock.advance(1);
    await until(() => calls === 2, 'requeued reconcile');
    expect(await value(t.registry, 'controller_runtime_reconcile_total', { result: 'requeue_after' })).toBe(
      1,
    );
    await t.shutdown();
  });

  it('pre-initialises reconcile_total to 0 for every result and reports max concurrency', async () => {
    const t = setup(async () => done(), { workers: 3 });
    t.start();
    await t.informer.waitForSync();
    await flush();
    for (const result of ['success', 'error', 'requeue', 'requeue_after']) {
      expect(
        await value(t.registry, 'controller_runtime_reconcile_total', { controller: 'test', result }),
      ).toBe(0);
    }
    expect(
      await value(t.registry, 'controller_runtime_max_concurrent_reconciles', { controller: 'test' }),
    ).toBe(3);
    expect(await value(t.registry, 'workqueue_depth', { name: 'test', controller: 'test' })).toBe(0);
    await t.shutdown();
  });

  it('stops taking work the moment its signal aborts, and aborts the running reconcile', async () => {
    let calls = 0;
    let sawAbort = false;
    const t = setup(async (_req, ctx) => {
      calls++;
      await new Promise<void>((resolve) =>
        ctx.signal.addEventListener('abort', () => resolve(), { once: true }),
      );
      sawAbort = ctx.signal.aborted;
      return done();
    });
    t.api.put('a');
    t.api.put('b');
    t.start();
    await until(() => calls === 1, 'first reconcile');
    await t.shutdown();
    expect(sawAbort).toBe(true);
    expect(calls).toBe(1);
  });

  it('enqueues the mapped keys when a watched secondary object changes', async () => {
    const seen: string[] = [];
    const t = setup(async (req) => {
      seen.push(req.key);
      return done();
    });
    const other = new FakeApi();
    const secondary = new Informer<ConfigMap>({
      api: other,
      resource: CONFIGMAPS,
      parse: parseConfigMap,
      resyncMs: 0,
    });
    t.controller.watch(secondary, (o) => (o.data['owner'] ? [`ns/${o.data['owner']}`] : []));
    t.api.put('primary');
    t.start();
    await until(() => seen.length === 1 && other.watches.length > 0, 'initial reconcile');
    other.lastWatch.send({ type: 'ADDED', object: other.put('child', { owner: 'primary' }) });
    await until(() => seen.length === 2, 'reconcile from the secondary');
    expect(seen).toEqual(['ns/primary', 'ns/primary']);
    await t.shutdown();
    await secondary.stop();
  });
});
