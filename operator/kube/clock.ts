/** Time as the controller core sees it; unit tests drive a manual clock instead of sleeping. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): Timer;
}

export interface Timer {
  cancel(): void;
}

/**
 * Node fires a timer set for more than 2^31-1 ms (24.8 days) after 1 ms instead (with a
 * TimeoutOverflowWarning). A requeue for a rotation 30 days away would spin the reconcile:
 * longer waits are chained from timers within the limit.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export const realClock: Clock = {
  now: () => performance.timeOrigin + performance.now(),
  setTimeout(fn, ms) {
    let t: NodeJS.Timeout;
    const arm = (left: number): void => {
      t =
        left > MAX_TIMER_MS
          ? setTimeout(() => arm(left - MAX_TIMER_MS), MAX_TIMER_MS)
          : setTimeout(fn, Math.max(0, left));
    };
    arm(ms);
    return { cancel: () => clearTimeout(t) };
  },
};

/** Resolves after `ms`, or rejects with the signal's reason once aborted. */
export function sleep(ms: number, signal?: AbortSignal, clock: Clock = realClock): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      timer.cancel();
      reject(signal?.reason);
    };
    const timer = clock.setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** client-go's wait.Jitter: a random duration in [ms, ms * (1 + factor)). */
export function jitter(ms: number, factor: number, random: () => number = Math.random): number {
  return ms + random() * factor * ms;
}
