import { describe, expect, it } from 'vitest';
import {
  BucketRateLimiter,
  defaultControllerRateLimiter,
  ExponentialFailureRateLimiter,
  MaxOfRateLimiter,
} from '../../../operator/kube/ratelimit.ts';
import { ManualClock } from './fakes.ts';

describe('ExponentialFailureRateLimiter', () => {
  it('doubles from 5 ms per failure of the same key', () => {
    const l = new ExponentialFailureRateLimiter(5, 1_000_000);
    expect([1, 2, 3, 4, 5].map(() => l.when('a'))).toEqual([5, 10, 20, 40, 80]);
    expect(l.numRequeues('a')).toBe(5);
  });

  it('caps the delay at 1000 s and never overflows', () => {
    const l = new ExponentialFailureRateLimiter(5, 1_000_000);
    let last = 0;
    for (let i = 0; i < 2000; i++) last = l.when('a');
    expect(last).toBe(1_000_000);
  });

  it('keeps keys independent and resets a key on forget', () => {
    const l = new ExponentialFailureRateLimiter(5, 1_000_000);
    l.when('a');
    l.when('a');
    expect(l.when('b')).toBe(5);
    l.forget('a');
    expect(l.numRequeues('a')).toBe(0);
    expect(l.when('a')).toBe(5);
  });
});

describe('BucketRateLimiter', () => {
  it('lets a burst of 100 through at once, then spaces requests 100 ms apart (10 qps)', () => {
    const clock = new ManualClock();
    const l = new BucketRateLimiter(10, 100, clock);
    for (let i = 0; i < 100; i++) expect(l.when(`k${i}`)).toBe(0);
    expect(l.when('x')).toBeCloseTo(100);
    expect(l.when('y')).toBeCloseTo(200);
  });

  it('refills tokens over time up to the burst', async () => {
    const clock = new ManualClock();
    const l = new BucketRateLimiter(10, 100, clock);
    for (let i = 0; i < 100; i++) l.when('k');
    await clock.advance(1000);
    for (let i = 0; i < 10; i++) expect(l.when('k')).toBe(0);
    expect(l.when('k')).toBeGreaterThan(0);
  });
});

describe('default controller rate limiter', () => {
  it('answers the larger of per-key backoff and the overall bucket', () => {
    const clock = new ManualClock();
    const l = defaultControllerRateLimiter<string>(clock);
    // 100 distinct keys failing once: bucket has tokens, per-key says 5 ms.
    for (let i = 0; i < 100; i++) expect(l.when(`k${i}`)).toBe(5);
    // The 101st failure anywhere waits for a token (100 ms) even though its own backoff is 5 ms.
    expect(l.when('k-new')).toBeCloseTo(100);
  });

  it('forget resets the per-key part only', () => {
    const l = new MaxOfRateLimiter(
      new ExponentialFailureRateLimiter(5, 1000),
      new BucketRateLimiter(1000, 1000),
    );
    l.when('a');
    l.when('a');
    expect(l.numRequeues('a')).toBe(2);
    l.forget('a');
    expect(l.numRequeues('a')).toBe(0);
    expect(l.when('a')).toBe(5);
  });
});
