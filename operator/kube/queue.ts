import { type Clock, realClock, type Timer } from './clock.ts';
import { defaultControllerRateLimiter, type RateLimiter } from './ratelimit.ts';

/** Where a queue reports what it does; the metrics module implements it with prom-client. */
export interface QueueMetricsSink {
  add(): void;
  depth(n: number): void;
  /** Seconds a key waited in the queue before a worker took it. */
  queueDuration(seconds: number): void;
  /** Seconds a worker spent on a key. */
  workDuration(seconds: number): void;
  retry(): void;
}

export interface WorkQueueOptions<K> {
  rateLimiter?: RateLimiter<K>;
  clock?: Clock;
  metrics?: QueueMetricsSink;
}

/**
 * A rate-limited, delaying work queue with client-go semantics:
 * - `dirty` holds keys waiting to be processed, `processing` keys a worker holds. A key is in the
 *   FIFO at most once, and never handed to a second worker while the first has not called `done`.
 * - Adding a key that is being processed marks it dirty; `done` requeues it once, so any number of
 *   events during one reconcile coalesce into exactly one more.
 * - `addAfter` delays a key; several delays of one key keep the earliest.
 * - `addRateLimited` delays by the rate limiter (per-key exponential backoff and the overall
 *   bucket); `forget` clears the key's backoff after a success.
 * - `shutDown` stops accepting keys and hands out no more; `drain` waits for keys in flight.
 *   Keys still queued are dropped: a new leader (or the next start) relists and enqueues every object.
 */
export class WorkQueue<K = string> {
  readonly #queue: K[] = [];
  readonly #dirty = new Set<K>();
  readonly #processing = new Map<K, number>();
  readonly #enqueuedAt = new Map<K, number>();
  readonly #waiting = new Map<K, { readyAt: number; timer: Timer }>();
  readonly #getters: Array<(key: K | undefined) => void> = [];
  readonly #drainers: Array<() => void> = [];
  readonly #limiter: RateLimiter<K>;
  readonly #clock: Clock;
  readonly #metrics: QueueMetricsSink | undefined;
  #shuttingDown = false;

  constructor(opts: WorkQueueOptions<K> = {}) {
    this.#clock = opts.clock ?? realClock;
    this.#limiter = opts.rateLimiter ?? defaultControllerRateLimiter<K>(this.#clock);
    this.#metrics = opts.metrics;
  }

  add(key: K): void {
    if (this.#shuttingDown || this.#dirty.has(key)) return;
    this.#metrics?.add();
    this.#dirty.add(key);
    this.#enqueuedAt.set(key, this.#clock.now());
    if (this.#processing.has(key)) return;
    this.#push(key);
  }

  /** Next key to work on; `undefined` once the queue is shut down. Call `done(key)` when finished. */
  get(): Promise<K | undefined> {
    if (this.#shuttingDown) return Promise.resolve(undefined);
    const key = this.#take();
    if (key !== undefined) return Promise.resolve(key);
    return new Promise((resolve) => this.#getters.push(resolve));
  }

  done(key: K): void {
    const started = this.#processing.get(key);
    if (started === undefined) return;
    this.#processing.delete(key);
    this.#metrics?.workDuration((this.#clock.now() - started) / 1000);
    if (this.#dirty.has(key) && !this.#shuttingDown) this.#push(key);
    if (this.#processing.size === 0) {
      for (const d of this.#drainers.splice(0)) d();
    }
  }

  addAfter(key: K, ms: number): void {
    if (this.#shuttingDown) return;
    if (ms <= 0) {
      this.add(key);
      return;
    }
    const readyAt = this.#clock.now() + ms;
    const existing = this.#waiting.get(key);
    if (existing && existing.readyAt <= readyAt) return;
    existing?.timer.cancel();
    const timer = this.#clock.setTimeout(() => {
      this.#waiting.delete(key);
      this.add(key);
    }, ms);
    this.#waiting.set(key, { readyAt, timer });
  }

  addRateLimited(key: K): void {
    if (this.#shuttingDown) return;
    this.#metrics?.retry();
    this.addAfter(key, this.#limiter.when(key));
  }

  forget(key: K): void {
    this.#limiter.forget(key);
  }

  numRequeues(key: K): number {
    return this.#limiter.numRequeues(key);
  }

  /** Keys waiting to be handed out (not counting delayed or in-flight keys). */
  get length(): number {
    return this.#queue.length;
  }

  get shuttingDown(): boolean {
    return this.#shuttingDown;
  }

  /** Seconds of work in flight and the longest single one, for the unfinished-work gauges. */
  inFlight(): { totalSeconds: number; longestSeconds: number } {
    const now = this.#clock.now();
    let total = 0;
    let longest = 0;
    for (const started of this.#processing.values()) {
      const s = (now - started) / 1000;
      total += s;
      longest = Math.max(longest, s);
    }
    return { totalSeconds: total, longestSeconds: longest };
  }

  shutDown(): void {
    if (this.#shuttingDown) return;
    this.#shuttingDown = true;
    for (const w of this.#waiting.values()) w.timer.cancel();
    this.#waiting.clear();
    this.#queue.length = 0;
    this.#metrics?.depth(0);
    for (const g of this.#getters.splice(0)) g(undefined);
  }

  /** Shuts down and resolves once every key handed out has been marked done. */
  drain(): Promise<void> {
    this.shutDown();
    if (this.#processing.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#drainers.push(resolve));
  }

  #push(key: K): void {
    const getter = this.#getters.shift();
    if (getter) {
      this.#startProcessing(key);
      getter(key);
      return;
    }
    this.#queue.push(key);
    this.#metrics?.depth(this.#queue.length);
  }

  #take(): K | undefined {
    if (this.#queue.length === 0) return undefined;
    const key = this.#queue.shift();
    if (key === undefined) return undefined;
    this.#metrics?.depth(this.#queue.length);
    this.#startProcessing(key);
    return key;
  }

  #startProcessing(key: K): void {
    const now = this.#clock.now();
    const enqueued = this.#enqueuedAt.get(key);
    if (enqueued !== undefined) this.#metrics?.queueDuration((now - enqueued) / 1000);
    this.#enqueuedAt.delete(key);
    this.#dirty.delete(key);
    this.#processing.set(key, now);
  }
}
