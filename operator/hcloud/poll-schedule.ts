/**
 * When to poll a running Hetzner action (issue 24: Hetzner calls near the floor).
 *
 * A poll before an action can be done is a call wasted, and the API budget is 3,600 calls an
 * hour per project. So the first poll of an action comes when actions of its command have been
 * seen to finish in this process, and later polls come at a quarter of that, not on a backoff
 * that keeps polling a one-minute create a dozen times:
 *
 * - learned: `expected(command)` is the median of how long that command took the last five times
 *   here (the time of the poll that found it done), so one slow action (a Hetzner hiccup) does
 *   not delay the next ones. A first poll that already finds it done records 90 % of its time,
 *   so the guess creeps down (never below `initialMs`) until a poll comes too early: the schedule
 *   follows actions that got faster, at the price of an occasional second poll;
 * - before anything is learned (a fresh operator): one early poll at `initialMs` (a simulator, or
 *   an action that is done at once), then ×4 steps up to the command's prior (what Hetzner
 *   publishes), if any; without a prior, the geometric backoff (initialMs × factor^k up to maxMs).
 *
 * Pure bookkeeping: no clock, no I/O (waitForActions owns both).
 */

export interface ScheduleOptions {
  /** Early poll of a command with nothing learned yet, and the shortest interval. */
  readonly initialMs: number;
  readonly factor: number;
  readonly maxMs: number;
  /** The first guess per command, before this process has seen one finish. */
  readonly priorMs: Readonly<Record<string, number>>;
}

/**
 * Hetzner's own figures, the only published one: "60 to 90 seconds on average" for a server
 * create (Hetzner's Ansible collection, hetzner.hcloud, plugins/modules/server.py). The low end:
 * a later poll costs less than a minute of an owner's wait. Other commands learn from the first.
 */
export const HETZNER_ACTION_PRIORS_MS: Readonly<Record<string, number>> = { create_server: 60_000 };

/** How many recent durations of a command the guess is the median of. */
const KEEP = 5;

export class PollSchedule {
  readonly #o: ScheduleOptions;
  /** The last few durations seen, per command (oldest first). */
  readonly #seen = new Map<string, number[]>();

  constructor(o: ScheduleOptions) {
    this.#o = o;
  }

  /** What this process expects a `command` to take (learned), if anything. */
  expected(command: string): number | undefined {
    const seen = this.#seen.get(command);
    if (seen === undefined) return undefined;
    // The lower median: with an even count, the shorter of the two middle values.
    return [...seen].sort((a, b) => a - b)[(seen.length - 1) >> 1];
  }

  /**
   * How long after the wait started to poll next, for a wait on `commands` that has polled
   * `polls` times so far and is `elapsedMs` in. Several commands: the one expected to take
   * longest decides (one poll covers them all).
   */
  nextPollAt(commands: readonly string[], polls: number, elapsedMs: number): number {
    const o = this.#o;
    const learned = commands.map((c) => this.expected(c));
    if (learned.every((e) => e !== undefined)) {
      const e = Math.max(...(learned as number[]));
      if (polls === 0) return e;
      return Math.max(elapsedMs + clamp(e / 4, o.initialMs, o.maxMs), e);
    }
    if (polls === 0) return o.initialMs;
    const prior = Math.max(0, ...commands.map((c) => o.priorMs[c] ?? 0));
    // Towards the prior in steps of ×4 (1 s, 4 s, 16 s, 60 s for a create): a simulator's or a
    // fast create is not kept waiting a minute, a real one costs four polls, once.
    if (prior > elapsedMs) return Math.min(prior, Math.max(elapsedMs, o.initialMs) * 4);
    if (prior > 0) return elapsedMs + clamp(prior / 4, o.initialMs, o.maxMs);
    // No prior: the backoff (1 s, 1.5 s, 2.25 s, ... up to maxMs between polls).
    return elapsedMs + Math.min(o.maxMs, o.initialMs * o.factor ** polls);
  }

  /** An action of `command` was found done by poll number `polls` (1 = the first), `elapsedMs` in. */
  observe(command: string, polls: number, elapsedMs: number): void {
    // Never below the early poll: sooner would cost calls (fewer waiters share a batch) to save
    // under a second.
    const took = Math.max(this.#o.initialMs, polls === 1 ? elapsedMs * 0.9 : elapsedMs);
    const seen = this.#seen.get(command) ?? [];
    seen.push(took);
    if (seen.length > KEEP) seen.shift();
    this.#seen.set(command, seen);
  }
}

const clamp = (v: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, v));
