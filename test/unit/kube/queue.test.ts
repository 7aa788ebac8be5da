import { describe, expect, it } from 'vitest';
import { WorkQueue } from '../../../operator/kube/queue.ts';
import { ExponentialFailureRateLimiter } from '../../../operator/kube/ratelimit.ts';
import { flush, ManualClock } from './fakes.ts';

function newQueue(clock = new ManualClock()): { q: WorkQueue<string>; clock: ManualClock } {
  return {
    q: new WorkQueue<string>({ clock, rateLimiter: new ExponentialFailureRateLimiter(5, 1_000_000) }),
    clock,
  };
}

describe('WorkQueue', () => {
  it('hands out a key added many times before processing exactly once', async () => {
    const { q } = newQueue();
    q.add('a');
    q.add('b');
    q.add('a');
    q.add('a');
    expect(q.length).toBe(2);
    expect(await q.get()).toBe('a');
    expect(await q.get()).toBe('b');
    expect(q.length).toBe(0);
  });

  it('does not hand a key to a second worker while the first still holds it', async () => {
    const { q } = newQueue();
    q.add('a');
    expect(await q.get()).toBe('a');
    q.add('a');
    let second: string | undefined = 'pending';
    void q.get().then((k) => {
      second = k;
    });
    await flush();
    expect(second).toBe('pending');
    q.done('a');
    await flush();
    expect(second).toBe('a');
  });

  it('coalesces any number of adds during processing into exactly one more', async () => {
    const { q } = newQueue();
    q.add('a');
    await q.get();
    for (let i = 0; i < 10; i++) q.add('a');
    q.done('a');
    expect(q.length).toBe(1);
    expect(await q.get()).toBe('a');
    q.done('a');
    expect(q.length).toBe(0);
  });

  it('adds a delayed key only when its time comes', async () => {
    const { q, clock } = newQueue();
    q.addAfter('a', 1000);
    await clock.advance(999);
    expect(q.length).toBe(0);
    await clock.advance(1);
    expect(q.length).toBe(1);
  });

  it('keeps the earliest of several delays of one key', async () => {
    const { q, clock } = newQueue();
    q.addAfter('a', 5000);
    q.addAfter('a', 1000);
    q.addAfter('a', 3000);
    expect(clock.pendingTimers).toBe(1);
    await clock.advance(1000);
    expect(q.length).toBe(1);
    expect(await q.get()).toBe('a');
    q.done('a');
    await clock.advance(10_000);
    expect(q.length).toBe(0);
  });

  it('adds at once when the delay is zero', () => {
    const { q } = newQueue();
    q.addAfter('a', 0);
    expect(q.length).toBe(1);
  });

  it('backs a failing key off exponentially and forgets the history on success', async () => {
    const { q, clock } = newQueue();
    const delays: number[] = [];
    for (let i = 0; i < 4; i++) {
      q.addRateLimited('a');
      const start = clock.now();
      while (q.length === 0) await clock.advance(1);
      delays.push(clock.now() - start);
      expect(await q.get()).toBe('a');
      q.done('a');
    }
    expect(delays).toEqual([5, 10, 20, 40]);
    expect(q.numRequeues('a')).toBe(4);
    q.forget('a');
    expect(q.numRequeues('a')).toBe(0);
  });

  it('after shutdown answers waiting and new workers with undefined and ignores adds', async () => {
    const { q, clock } = newQueue();
    const waiting = q.get();
    q.addAfter('later', 100);
    q.shutDown();
    expect(await waiting).toBeUndefined();
    q.add('a');
    expect(await q.get()).toBeUndefined();
    await clock.advance(1000);
    expect(q.length).toBe(0);
  });

  it('drain resolves only once the keys in flight are done', async () => {
    const { q } = newQueue();
    q.add('a');
    await q.get();
    let drained = false;
    void q.drain().then(() => {
      drained = true;
    });
    await flush();
    expect(drained).toBe(false);
    q.done('a');
    await flush();
    expect(drained).toBe(true);
  });

  it('reports seconds of work in flight', async () => {
    const { q, clock } = newQueue();
    q.add('a');
    q.add('b');
    await q.get();
    await clock.advance(2000);
    await q.get();
    await clock.advance(1000);
    expect(q.inFlight()).toEqual({ totalSeconds: 4, longestSeconds: 3 });
  });
});
