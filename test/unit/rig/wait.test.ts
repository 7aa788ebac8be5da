import { describe, expect, it } from 'vitest';
import { waitFor, waitUntil } from '../../lib/wait.ts';

describe('the shared polling helper', () => {
  it('returns the first value that is not undefined, retrying a check that throws', async () => {
    let calls = 0;
    const v = await waitFor(
      'the third call',
      () => {
        calls++;
        if (calls === 1) throw new Error('not up yet');
        return calls === 3 ? 'ready' : undefined;
      },
      1_000,
      { intervalMs: 1 },
    );
    expect(v).toBe('ready');
    expect(calls).toBe(3);
  });

  it('names what it waited for, the time, the last error and the extra text when it times out', async () => {
    const err = await waitFor(
      'the moon',
      () => {
        throw new Error('still night');
      },
      30,
      { intervalMs: 5, onTimeout: () => 'log tail here' },
    ).catch((e: unknown) => e);
    expect(String(err)).toMatch(/timed out waiting for the moon \(30 ms\)/);
    expect(String(err)).toContain('last error: Error: still night');
    expect(String(err)).toContain('log tail here');
  });

  it('stops before the deadline when giveUp gives a reason', async () => {
    const start = Date.now();
    const err = await waitUntil('never', () => false, 10_000, {
      intervalMs: 5,
      giveUp: () => 'the process exited',
    }).catch((e: unknown) => e);
    expect(String(err)).toContain('gave up waiting for never: the process exited');
    expect(Date.now() - start).toBeLessThan(5_000);
  });

  it('fails at once on a throwing check with failOnError', async () => {
    let calls = 0;
    const err = await waitUntil(
      'a broken check',
      () => {
        calls++;
        throw new Error('boom');
      },
      10_000,
      { intervalMs: 5, failOnError: true },
    ).catch((e: unknown) => e);
    expect(String(err)).toBe('Error: boom');
    expect(calls).toBe(1);
  });

  it('takes a bare onTimeout function as its fourth argument (the rig callers)', async () => {
    const err = await waitFor(
      'x',
      () => undefined,
      10,
      () => 'extra',
    ).catch((e: unknown) => e);
    expect(String(err)).toContain('\nextra');
  });
});
