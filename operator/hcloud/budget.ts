import { createHash } from 'node:crypto';
import type { Secret } from '../../common/secret.ts';

/**
 * A client-side model of Hetzner's rate limit (a token bucket: `limit` requests, refilling
 * `refillPerSecond`, 3600 and 1/s for the real API), one per API token. Every request takes
 * a token BEFORE it is sent; when the bucket is (nearly) empty the request waits for the
 * refill instead of being sent and refused. The model only ever gets MORE pessimistic from what
 * the server says (RateLimit-Remaining), so the client never sends a request the server's
 * bucket would refuse, even when another tool spends from the same project.
 *
 * Until the first response tells us the real numbers, only one request per token is in
 * flight (a probe), so a burst of calls cannot overrun a limit we do not know yet.
 */
export interface BudgetOptions {
  /** Bucket size before the server tells us (RateLimit-Limit wins). Default 3600. */
  limit?: number;
  /** Refill rate. Default 1 per second (Hetzner's documented rate). */
  refillPerSecond?: number;
  /**
   * Tokens kept in reserve (never spent by this client) as headroom for other tools of the
   * same project and for a person at the Console. Default 2% of the limit (at least 1).
   */
  reserveFraction?: number;
  now?: () => number;
}

export class TokenBudget {
  #limit: number;
  readonly #configuredRate: number;
  /** Refill rate observed from RateLimit-Reset, when it is precise enough to use. */
  #observedRate: number | undefined;
  readonly #reserveFraction: number;
  readonly #now: () => number;
  /**
   * The server's bucket level as far as confirmed answers tell, refilled over time and capped
   * at the limit. Requests in flight are NOT taken from it until their answer comes in: the
   * server takes them on arrival, and until then its bucket may sit at the cap and lose refill
   * that a model debiting at send time would wrongly count. They are subtracted from what
   * may be spent instead (`level - inflight`).
   */
  #level: number;
  #updated: number;
  #synced = false;
  #inflight = 0;
  #probe: Promise<void> | undefined;
  #probeDone: (() => void) | undefined;
  #queue: Promise<void> = Promise.resolve();
  #settled: { promise: Promise<void>; resolve: () => void } = Promise.withResolvers<void>();

  constructor(opts: BudgetOptions = {}) {
    this.#limit = opts.limit ?? 3600;
    this.#configuredRate = opts.refillPerSecond ?? 1;
    this.#reserveFraction = opts.reserveFraction ?? 0.02;
    this.#now = opts.now ?? Date.now;
    this.#level = this.#limit;
    this.#updated = this.#now();
  }

  get limit(): number {
    return this.#limit;
  }

  /** What may still be spent now: the level minus requests in flight (may be negative). */
  get tokens(): number {
    this.#refill();
    return this.#level - this.#inflight;
  }

  /** At least one token is always left unspent: the slack that absorbs clock and network skew. */
  #reserve(): number {
    return Math.max(1, Math.floor(this.#limit * this.#reserveFraction));
  }

  /** The refill rate the model uses: never above what the server's own numbers imply. */
  get refillPerSecond(): number {
    return Math.min(this.#configuredRate, this.#observedRate ?? this.#configuredRate);
  }

  #refill(): void {
    const now = this.#now();
    const elapsed = Math.max(0, now - this.#updated) / 1000;
    this.#level = Math.min(this.#limit, this.#level + elapsed * this.refillPerSecond);
    this.#updated = now;
  }

  /**
   * Take one token; resolves when the request may be sent. Returns how long it waited (ms).
   * Callers are served first come, first served: only the head of the queue waits for the
   * refill, so a burst of calls leaves at the refill rate instead of all at once.
   * The caller must call `settle` once the response (or failure) is in.
   */
  async acquire(sleep: (ms: number) => Promise<void>): Promise<number> {
    const start = this.#now();
    const before = this.#queue;
    let release = () => {};
    this.#queue = new Promise<void>((resolve) => {
      release = resolve;
    });
    await before;
    try {
      // Until synced: one probe at a time, the others queue behind it.
      while (!this.#synced && this.#probe) await this.#probe;
      if (!this.#synced) {
        this.#probe = new Promise((resolve) => {
          this.#probeDone = resolve;
        });
      }
      // Re-checked after each sleep: timers may fire early, and a response header may have
      // lowered the estimate meanwhile.
      for (;;) {
        this.#refill();
        const deficit = this.#reserve() + 1 - (this.#level - this.#inflight);
        if (deficit <= 0) break;
        // The refill can lift the level only up to the cap; past that, answers to requests
        // in flight must come in first.
        const refillable = Math.min(deficit, this.#limit - this.#level);
        if (refillable >= deficit)
          await sleep(Math.max(1, Math.ceil((deficit / this.refillPerSecond) * 1000)));
        else await Promise.race([this.#settled.promise, sleep(1000)]);
      }
      this.#inflight += 1;
    } finally {
      release();
    }
    return this.#now() - start;
  }

  /**
   * The response is in (or the request failed): the server has counted it by now, so it
   * leaves the in-flight count and is taken from the level. `remaining`/`limit` come from the
   * RateLimit-* headers when present; `remaining` may already include requests still in
   * flight, which are subtracted again when spending (pessimistic, never optimistic).
   */
  settle(headers: {
    limit?: number | undefined;
    remaining?: number | undefined;
    /** RateLimit-Reset: Unix time (s) at which the bucket is full again. */
    reset?: number | undefined;
    refused?: boolean;
  }): void {
    const confirmed = this.#inflight > 0;
    if (confirmed) this.#inflight -= 1;
    this.#refill();
    const limit = headers.limit ?? this.#limit;
    if (headers.reset !== undefined && headers.remaining !== undefined && headers.remaining < limit) {
      // (limit - remaining) tokens refill by `reset`. Reset is in whole seconds, so the
      // estimate is used only when it spans 10 s or more (error at most 10%, and on the slow
      // side: a rounded-up reset means a lower estimated rate).
      const secs = headers.reset - this.#now() / 1000;
      if (secs >= 10) this.#observedRate = (limit - headers.remaining) / secs;
    }
    if (headers.limit !== undefined && headers.limit > 0) {
      this.#level = Math.min(headers.limit, this.#level + headers.limit - this.#limit);
      this.#limit = headers.limit;
    }
    if (confirmed) this.#level -= 1;
    if (headers.remaining !== undefined) {
      this.#level = Math.min(this.#level, headers.remaining);
      this.#synced = true;
    } else if (headers.refused) {
      this.#level = Math.min(this.#level, 0);
    }
    const settled = this.#settled;
    this.#settled = Promise.withResolvers<void>();
    settled.resolve();
    if (this.#probeDone) {
      const done = this.#probeDone;
      this.#probeDone = undefined;
      this.#probe = undefined;
      done();
    }
  }
}

/**
 * Budgets keyed by a hash of the token, so the map (which a debugger or a heap dump may
 * show) never holds the token itself.
 */
export class BudgetRegistry {
  readonly #budgets = new Map<string, TokenBudget>();
  readonly #opts: BudgetOptions;

  constructor(opts: BudgetOptions = {}) {
    this.#opts = opts;
  }

  for(token: Secret<string>): { id: string; budget: TokenBudget } {
    const id = tokenId(token);
    let budget = this.#budgets.get(id);
    if (!budget) {
      budget = new TokenBudget(this.#opts);
      this.#budgets.set(id, budget);
    }
    return { id, budget };
  }
}

/**
 * A stable, non-reversible id for a token (the first 16 hex digits of its SHA-256). Hetzner
 * tokens are 64 random characters, so the prefix of a hash cannot be turned back into one.
 */
export function tokenId(token: Secret<string>): string {
  return createHash('sha256').update(token.reveal()).digest('hex').slice(0, 16);
}
