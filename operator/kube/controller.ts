import { randomUUID } from 'node:crypto';
import type { Registry } from 'prom-client';
import { isTerminal, reasonOf } from '../../common/errors.ts';
import type { Logger } from '../lib/log.ts';
import { type Clock, realClock } from './clock.ts';
import type { Informer, InformerEvent } from './informer.ts';
import { type CoreMetrics, coreMetrics, type ReconcileResultLabel } from './metrics.ts';
import { type KubeObject, objectKey, splitKey } from './object.ts';
import { WorkQueue } from './queue.ts';
import type { RateLimiter } from './ratelimit.ts';

/** What a reconcile asks for next. Errors are thrown (a `TerminalError` is never retried). */
export type Result = { type: 'done' } | { type: 'requeue' } | { type: 'requeueAfter'; ms: number };

/** Converged (or waiting for the next event): forget the key's backoff. */
export function done(): Result {
  return { type: 'done' };
}
/** Come back after `ms` (a computed time: next poll, next rotation due). Resets the backoff. */
export function requeueAfter(ms: number): Result {
  return { type: 'requeueAfter', ms };
}
/** Come back soon, with the key's exponential backoff (use when waiting on something without a known time). */
export function requeue(): Result {
  return { type: 'requeue' };
}

export interface ReconcileRequest {
  /** `namespace/name` (or `name` for cluster-scoped objects): the informer cache key. */
  key: string;
  namespace?: string;
  name: string;
}

export interface ReconcileContext {
  /** Aborted when the controller stops or leadership is lost: stop at the next await. */
  signal: AbortSignal;
  /** Child logger bound to controller, key and reconcileID. */
  logger: Logger;
  /** Consecutive failed attempts for this key so far (0 on the first try). */
  attempt: number;
}

export type Reconciler = (req: ReconcileRequest, ctx: ReconcileContext) => Promise<Result>;

export interface ControllerOptions<T extends KubeObject> {
  /** Controller name: the `controller` label of every metric and the queue's `name`. */
  name: string;
  /** The primary resource: each add/update/delete/resync enqueues that object's key. */
  informer: Informer<T>;
  reconcile: Reconciler;
  /** Concurrent reconciles (different keys only; one key is never reconciled twice at once). Default 1. */
  workers?: number;
  registry?: Registry;
  logger: Logger;
  rateLimiter?: RateLimiter<string>;
  /** Enqueue only events this returns true for (default: all). */
  predicate?: (ev: InformerEvent<T>) => boolean;
  clock?: Clock;
}

interface Source {
  informer: { start(): void; waitForSync(signal?: AbortSignal): Promise<void> };
  subscribe(enqueue: (key: string) => void): () => void;
}

/**
 * The controller-runtime loop: informer events → rate-limited work queue → N workers → reconcile.
 * Reconciles are level-triggered: they receive a key and read the current object themselves
 * (usually from `informer.get(key)`), so missed or coalesced events lose nothing.
 */
export class Controller<T extends KubeObject> {
  readonly name: string;
  readonly #opts: ControllerOptions<T>;
  readonly #sources: Source[] = [];
  readonly #clock: Clock;
  readonly #metrics: CoreMetrics | undefined;
  #queue: WorkQueue<string> | undefined;

  constructor(opts: ControllerOptions<T>) {
    this.name = opts.name;
    this.#opts = opts;
    this.#clock = opts.clock ?? realClock;
    this.#metrics = opts.registry ? coreMetrics(opts.registry) : undefined;
    const primary = opts.informer;
    const predicate = opts.predicate;
    this.#sources.push({
      informer: primary,
      subscribe: (enqueue) =>
        primary.on((ev) => {
          if (!predicate || predicate(ev)) enqueue(objectKey(ev.object.metadata));
        }),
    });
  }

  /**
   * Also reconcile when objects of another informer change: `map` names the keys of this
   * controller's objects to enqueue (e.g. a ModelKey event → its Vps's key).
   */
  watch<U extends KubeObject>(informer: Informer<U>, map: (obj: U) => string[]): this {
    this.#sources.push({
      informer,
      subscribe: (enqueue) =>
        informer.on((ev) => {
          const objects = ev.type === 'update' ? [ev.old, ev.object] : [ev.object];
          for (const o of objects) for (const key of map(o)) enqueue(key);
        }),
    });
    return this;
  }

  /** Enqueues a key by hand (ignored while the controller is not running). */
  enqueue(key: string): void {
    this.#queue?.add(key);
  }

  /** Starts informers that are not running yet, waits for every cache to sync, then runs workers until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    if (this.#queue && !this.#queue.shuttingDown)
      throw new Error(`controller ${this.name} is already running`);
    const workers = Math.max(1, this.#opts.workers ?? 1);
    const log = this.#opts.logger.child({ controller: this.name });
    const queue: WorkQueue<string> = new WorkQueue<string>({
      clock: this.#clock,
      ...(this.#opts.rateLimiter ? { rateLimiter: this.#opts.rateLimiter } : {}),
      ...(this.#metrics
        ? {
            metrics: this.#metrics.registerController(this.name, workers, {
              inFlight: () => queue.inFlight(),
            }),
          }
        : {}),
    });
    this.#queue = queue;
    const unsubscribe = this.#sources.map((s) => s.subscribe((key) => queue.add(key)));
    const stop = (): void => queue.shutDown();
    signal.addEventListener('abort', stop, { once: true });
    try {
      for (const s of this.#sources) s.informer.start();
      await Promise.all(this.#sources.map((s) => s.informer.waitForSync(signal)));
      // Events from the initial list may have fired before we subscribed: enqueue every cached object.
      for (const key of this.#opts.informer.keys()) queue.add(key);
      log.info({ workers }, 'caches synced; starting workers');
      const running = Array.from({ length: workers }, () => this.#worker(queue, signal, log));
      await Promise.all(running);
    } catch (err) {
      if (!signal.aborted) throw err;
    } finally {
      signal.removeEventListener('abort', stop);
      for (const u of unsubscribe) u();
      await queue.drain();
      log.info('controller stopped');
    }
  }

  async #worker(queue: WorkQueue<string>, signal: AbortSignal, log: Logger): Promise<void> {
    for (;;) {
      const key = await queue.get();
      if (key === undefined) return;
      await this.#processOne(queue, key, signal, log);
    }
  }

  async #processOne(queue: WorkQueue<string>, key: string, signal: AbortSignal, log: Logger): Promise<void> {
    const m = this.#metrics;
    const labels = { controller: this.name };
    m?.activeWorkers.inc(labels);
    const started = this.#clock.now();
    const logger = log.child({ key, reconcileID: randomUUID() });
    let result: ReconcileResultLabel = 'success';
    try {
      const res = await this.#opts.reconcile(
        { key, ...splitKey(key) },
        { signal, logger, attempt: queue.numRequeues(key) },
      );
      switch (res.type) {
        case 'done':
          queue.forget(key);
          break;
        case 'requeue':
          result = 'requeue';
          queue.addRateLimited(key);
          break;
        case 'requeueAfter':
          result = 'requeue_after';
          queue.forget(key);
          queue.addAfter(key, res.ms);
          break;
      }
    } catch (err) {
      result = 'error';
      m?.reconcileErrors.inc(labels);
      const panic = isPanic(err);
      if (panic) m?.reconcilePanics.inc(labels);
      if (isTerminal(err)) {
        // The user must change something; the next event on the object brings it back.
        m?.terminalReconcileErrors.inc(labels);
        queue.forget(key);
        logger.warn({ err, reason: reasonOf(err) }, 'reconcile failed (terminal, not retried)');
      } else {
        queue.addRateLimited(key);
        if (!signal.aborted) {
          // A transient failure (a Hetzner 503, a server still booting) that the next tries
          // fix is expected on a healthy operator: warn. Error once it persists, and always
          // for a programming error, so that error lines are worth alerting on.
          const attempt = queue.numRequeues(key);
          const fields = { err, reason: reasonOf(err), attempt };
          if (panic || attempt > QUIET_RETRIES)
            logger.error(fields, 'reconcile failed; retrying with backoff');
          else logger.warn(fields, 'reconcile failed; retrying with backoff');
        }
      }
    } finally {
      m?.reconcileTotal.inc({ controller: this.name, result });
      m?.reconcileTime.observe(labels, (this.#clock.now() - started) / 1000);
      m?.activeWorkers.dec(labels);
      queue.done(key);
    }
  }
}

/** Failed tries of one key logged at warn before its failures log at error. */
export const QUIET_RETRIES = 3;

/** A programming error (what Go would panic on): counted as controller_runtime_reconcile_panics_total. */
function isPanic(err: unknown): boolean {
  return (
    !(err instanceof Error) ||
    err instanceof TypeError ||
    err instanceof ReferenceError ||
    err instanceof RangeError ||
    err instanceof SyntaxError
  );
}
