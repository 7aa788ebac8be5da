/**
 * Long steps in flight, off the workers. A step that mostly waits (a Hetzner action, a server
 * booting into rescue or its OS, the gateway's cold start) runs here, keyed by the Vps, while
 * the reconcile that started it returns at once and gives its worker back; when the step
 * settles, `onSettled` re-enqueues the Vps and the next reconcile collects the result (reports
 * it, or throws its error into the usual retry). So a few workers provision any number of Vps
 * at once, as controller-runtime reconcilers that requeue while they wait do.
 *
 * Nothing here is a record: a crash loses the entries, and the next operator runs the step
 * again from its recorded facts, exactly as after a crash inside a step run on a worker.
 */
import { withCancel } from '../lib/cancel.ts';

type Entry =
  | { state: 'running'; promise: Promise<void>; abort: AbortController }
  | { state: 'done'; note: string; facts: unknown }
  | { state: 'failed'; error: unknown };

export type InFlightState =
  | { readonly state: 'running' }
  | { readonly state: 'done'; readonly note: string; readonly facts: unknown }
  | { readonly state: 'failed'; readonly error: unknown };

export class InFlight {
  readonly #entries = new Map<string, Entry>();
  readonly #onSettled: (key: string) => void;
  readonly #onDrained: (() => void) | undefined;
  readonly #limit: number;
  #active = 0;
  readonly #slots: (() => void)[] = [];

  /**
   * `onSettled(key)` re-enqueues the object `key` belongs to (its part before the first `#`).
   * At most `limit` steps run at once; the others wait for a slot, in order. `onDrained` is
   * called whenever a step settles and none is left running (the end of a burst).
   */
  constructor(onSettled: (key: string) => void, limit = Number.POSITIVE_INFINITY, onDrained?: () => void) {
    this.#onSettled = onSettled;
    this.#limit = limit;
    this.#onDrained = onDrained;
  }

  /** Waits for a free slot; a cancelled waiter leaves the line at once. */
  #waitForSlot(signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const wake = () => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = () => {
        const i = this.#slots.indexOf(wake);
        if (i >= 0) this.#slots.splice(i, 1);
        reject(signal.reason);
      };
      this.#slots.push(wake);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  async #slot<R>(signal: AbortSignal, fn: () => Promise<R>): Promise<R> {
    // A waiter woken by a step that ended takes over its slot (the count never passes the limit).
    if (this.#active >= this.#limit) await this.#waitForSlot(signal);
    else this.#active++;
    try {
      signal.throwIfAborted();
      return await fn();
    } finally {
      const next = this.#slots.shift();
      if (next) next();
      else this.#active--;
    }
  }

  /** How many steps are running now (for metrics and tests). */
  get running(): number {
    let n = 0;
    for (const e of this.#entries.values()) if (e.state === 'running') n++;
    return n;
  }

  /** The entry's state; a settled one is removed by `take`. */
  peek(key: string): InFlightState | undefined {
    const e = this.#entries.get(key);
    if (!e) return undefined;
    return e.state === 'running' ? { state: 'running' } : e;
  }

  /** Removes and returns a settled entry (undefined while running or absent). */
  take(key: string): InFlightState | undefined {
    const e = this.#entries.get(key);
    if (!e || e.state === 'running') return undefined;
    this.#entries.delete(key);
    return e;
  }

  /**
   * Runs `fn` off the worker, cancelled by `signal` (leadership lost, operator stopping) or by
   * `cancel(key)`. `facts` is what the step recorded on the way (handed back with the result).
   */
  start(key: string, signal: AbortSignal, facts: unknown, fn: () => Promise<string>): void {
    if (this.#entries.has(key)) throw new Error(`step ${key} is already in flight`);
    const abort = new AbortController();
    const both = AbortSignal.any([signal, abort.signal]);
    const settle = (next: Entry) => {
      // A cancelled entry was removed by `cancel`: what it left is nobody's to collect.
      if (this.#entries.get(key) !== running) return;
      if (both.aborted) this.#entries.delete(key);
      else {
        this.#entries.set(key, next);
        this.#onSettled(key);
      }
      if (this.running === 0) this.#onDrained?.();
    };
    const promise = withCancel(both, () => this.#slot(both, fn)).then(
      (note) => settle({ state: 'done', note, facts }),
      (error: unknown) => settle({ state: 'failed', error }),
    );
    const running: Entry = { state: 'running', promise, abort };
    this.#entries.set(key, running);
  }

  /** Cancels every step of one object (`<object>#...`) and waits until they have stopped. */
  async cancel(prefix: string): Promise<void> {
    const waits: Promise<void>[] = [];
    for (const [key, e] of this.#entries) {
      if (!key.startsWith(`${prefix}#`)) continue;
      if (e.state === 'running') {
        e.abort.abort();
        waits.push(e.promise);
      }
      this.#entries.delete(key);
    }
    await Promise.all(waits);
  }

  /** Waits for every running step (after the controllers' signal aborted them). */
  async drain(): Promise<void> {
    const waits = [...this.#entries.values()].flatMap((e) => (e.state === 'running' ? [e.promise] : []));
    await Promise.all(waits);
  }
}
