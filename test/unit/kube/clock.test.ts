import { describe, expect, it } from 'vitest';
import { MAX_TIMER_MS, realClock } from '../../../operator/kube/clock.ts';

describe('realClock', () => {
  it('does not fire a timer longer than 24.8 days early (Node would fire it after 1 ms)', async () => {
    let fired = 0;
    const timers = [MAX_TIMER_MS + 1, 30 * 24 * 3600 * 1000, 3 * MAX_TIMER_MS].map((ms) =>
      realClock.setTimeout(() => fired++, ms),
    );
    await new Promise((r) => setTimeout(r, 50));
    for (const t of timers) t.cancel();
    expect(fired).toBe(0);
  });

  it('fires short timers, and cancel stops them', async () => {
    const fired: string[] = [];
    realClock.setTimeout(() => fired.push('a'), 5);
    realClock.setTimeout(() => fired.push('b'), 10).cancel();
    await new Promise((r) => setTimeout(r, 50));
    expect(fired).toEqual(['a']);
  });
});
