import { describe, expect, it } from 'vitest';
import { HETZNER_ACTION_PRIORS_MS, PollSchedule } from '../../../operator/hcloud/poll-schedule.ts';

const OPTS = { initialMs: 1000, factor: 1.5, maxMs: 10_000, priorMs: HETZNER_ACTION_PRIORS_MS };

/**
 * The polls one wait makes for an action of `command` that takes `durationMs`, on `s`: each poll
 * is sent at the time the schedule names, and finds the action done once its time has come.
 */
function wait(s: PollSchedule, command: string, durationMs: number): number[] {
  const at: number[] = [];
  let elapsed = 0;
  for (;;) {
    elapsed = s.nextPollAt([command], at.length, elapsed);
    at.push(elapsed);
    if (elapsed >= durationMs) {
      s.observe(command, at.length, elapsed);
      return at;
    }
    if (at.length > 100) throw new Error('never done');
  }
}

describe('PollSchedule', () => {
  it('polls a one-minute create four times the first time and once after it learned', () => {
    const s = new PollSchedule(OPTS);
    expect(wait(s, 'create_server', 60_000)).toEqual([1000, 4000, 16_000, 60_000]);
    expect(s.expected('create_server')).toBe(60_000);
    // The next creates: one poll each, at what the last ones took.
    expect(wait(s, 'create_server', 60_000)).toEqual([60_000]);
  });

  it('does not keep a fast create (a simulator) waiting for the prior, nor polls it sooner than 1 s', () => {
    const s = new PollSchedule(OPTS);
    expect(wait(s, 'create_server', 300)).toEqual([1000]);
    // Learned, but never sooner than the early poll: sooner would cost calls to save under a second.
    for (let i = 0; i < 30; i++) expect(wait(s, 'create_server', 0)).toEqual([1000]);
  });

  it('follows actions that got faster, at the price of a second poll now and then', () => {
    const s = new PollSchedule(OPTS);
    wait(s, 'create_server', 60_000);
    let polls = 0;
    for (let i = 0; i < 40; i++) polls += wait(s, 'create_server', 20_000).length;
    // From 60 s down to about 20 s: the first poll comes near the action's real duration.
    expect(s.expected('create_server')).toBeLessThan(25_000);
    expect(polls).toBeLessThan(40 * 2);
  });

  it('is not thrown off by one slow action (a Hetzner hiccup)', () => {
    const s = new PollSchedule(OPTS);
    for (let i = 0; i < 3; i++) wait(s, 'create_server', 60_000);
    wait(s, 'create_server', 300_000);
    // The next create is polled when creates usually end, not five minutes in.
    expect(wait(s, 'create_server', 60_000)[0]).toBeLessThanOrEqual(60_000);
  });

  it('keeps polling an action that takes longer than learned, every quarter of it (capped)', () => {
    const s = new PollSchedule(OPTS);
    wait(s, 'reset_server', 4000);
    const e = s.expected('reset_server')!;
    const at = wait(s, 'reset_server', 4 * e);
    expect(at[0]).toBe(e);
    // After the first: every max(1 s, e/4), never more than 10 s apart.
    for (let i = 1; i < at.length; i++)
      expect(at[i]! - at[i - 1]!).toBe(Math.min(10_000, Math.max(1000, e / 4)));
  });

  it('backs off geometrically for a command with no prior and nothing learned', () => {
    const s = new PollSchedule(OPTS);
    expect(wait(s, 'enable_rescue', 5000)).toEqual([1000, 2500, 4750, 8125]);
  });

  it('waits for the longest of several commands polled together', () => {
    const s = new PollSchedule(OPTS);
    wait(s, 'create_server', 60_000);
    wait(s, 'start_server', 2000);
    expect(s.nextPollAt(['start_server', 'create_server'], 0, 0)).toBe(60_000);
    // One of them never seen: the early poll, as for any fresh command.
    expect(s.nextPollAt(['create_server', 'delete_server'], 0, 0)).toBe(1000);
  });
});
