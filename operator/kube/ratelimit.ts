import { type Clock, realClock } from './clock.ts';

/**
 * client-go's workqueue rate limiters. `when(key)` returns how long to wait before the key may be
 * processed again and records a failure; `forget(key)` clears the per-key history on success.
 */
export interface RateLimiter<K = string> {
  when(key: K): number;
  forget(key: K): void;
  numRequeues(key: K): number;
}

/** base * 2^failures, capped (client-go ItemExponentialFailureRateLimiter: 5 ms → 1000 s). */
export class ExponentialFailureRateLimiter<K = string> implements RateLimiter<K> {
  readonly #baseMs: number;
  readonly #maxMs: number;
  readonly #failures = new Map<K, number>();

  constructor(baseMs = 5, maxMs = 1_000_000) {
    this.#baseMs = baseMs;
    this.#maxMs = maxMs;
  }

  when(key: K): number {
    const exp = this.#failures.get(key) ?? 0;
    this.#failures.set(key, exp + 1);
    // 2^exp overflows to Infinity long after the cap; Math.min keeps the result finite.
    return Math.min(this.#baseMs * 2 ** exp, this.#maxMs);
  }

  forget(key: K): void {
    this.#failures.delete(key);
  }

  numRequeues(key: K): number {
    return this.#failures.get(key) ?? 0;
  }
}

/**
 * Overall token bucket (client-go BucketRateLimiter, golang.org/x/time/rate semantics): `qps`
 * tokens per second, at most `burst` stored. Each `when` takes a token, reserving a future one
 * (and returning the wait) when the bucket is empty. Not per key: `forget` does nothing.
 */
export class BucketRateLimiter<K = string> implements RateLimiter<K> {
  readonly #qps: number;
  readonly #burst: number;
  readonly #clock: Clock;
  #tokens: number;
  #last: number;

  constructor(qps = 10, burst = 100, clock: Clock = realClock) {
    this.#qps = qps;
    this.#burst = burst;
    this.#clock = clock;
    this.#tokens = burst;
    this.#last = clock.now();
  }

  when(_key: K): number {
    const now = this.#clock.now();
    this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#last) / 1000) * this.#qps);
    this.#last = now;
    this.#tokens -= 1;
    if (this.#tokens >= 0) return 0;
    return (-this.#tokens / this.#qps) * 1000;
  }

  forget(_key: K): void {}

  numRequeues(_key: K): number {
    return 0;
  }
}

/** The worst (longest) answer of several limiters; every limiter records the attempt. */
export class MaxOfRateLimiter<K = string> implements RateLimiter<K> {
  readonly #limiters: RateLimiter<K>[];

  constructor(...limiters: RateLimiter<K>[]) {
    this.#limiters = limiters;
  }

  when(key: K): number {
    let max = 0;
    for (const l of this.#limiters) max = Math.max(max, l.when(key));
    return max;
  }

  forget(key: K): void {
    for (const l of this.#limiters) l.forget(key);
  }

  numRequeues(key: K): number {
    let max = 0;
    for (const l of this.#limiters) max = Math.max(max, l.numRequeues(key));
    return max;
  }
}

/** client-go DefaultControllerRateLimiter: max(per-key 5 ms → 1000 s, overall 10 qps burst 100). */
export function defaultControllerRateLimiter<K = string>(clock: Clock = realClock): RateLimiter<K> {
  return new MaxOfRateLimiter<K>(
    new ExponentialFailureRateLimiter<K>(5, 1_000_000),
    new BucketRateLimiter<K>(10, 100, clock),
  );
}
