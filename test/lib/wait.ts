/**
 * The one polling helper of the tests and benchmarks. It imports nothing, so a unit fake, an
 * integration helper and the system rig can all use it without pulling in each other's parts.
 */

export interface WaitOptions {
  /** Pause between checks (default 500 ms): short for in-process fakes, long for slow processes. */
  readonly intervalMs?: number;
  /** Appended to the timeout error, e.g. the tail of the log of the process under test. */
  readonly onTimeout?: () => string;
  /**
   * Asked after each failed check: a reason to stop now instead of at the deadline (the process
   * under test exited, so the condition can no longer come true).
   */
  readonly giveUp?: () => string | undefined;
  /**
   * A check that throws fails the wait at once. By default a throw counts as "not yet" (the
   * server is still starting) and the last error is named if the wait times out.
   */
  readonly failOnError?: boolean;
}

/**
 * Calls `check` until it returns something other than `undefined`, and returns that; fails with
 * "timed out waiting for <what>" once `timeoutMs` has passed. The fourth argument may be just the
 * `onTimeout` function.
 */
export async function waitFor<T>(
  what: string,
  check: () => T | undefined | Promise<T | undefined>,
  timeoutMs: number,
  options: WaitOptions | (() => string) = {},
): Promise<T> {
  const opts: WaitOptions = typeof options === 'function' ? { onTimeout: options } : options;
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      if (opts.failOnError) throw err;
      lastErr = err;
    }
    const stop = opts.giveUp?.();
    if (stop !== undefined) throw new Error(`gave up waiting for ${what}: ${stop}`);
    if (Date.now() > deadline) {
      const extra = opts.onTimeout ? `\n${opts.onTimeout()}` : '';
      throw new Error(
        `timed out waiting for ${what} (${timeoutMs} ms)${lastErr ? ` (last error: ${String(lastErr)})` : ''}${extra}`,
      );
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 500));
  }
}

/** `waitFor` for a yes/no condition. */
export async function waitUntil(
  what: string,
  cond: () => boolean | Promise<boolean>,
  timeoutMs: number,
  options: WaitOptions | (() => string) = {},
): Promise<void> {
  await waitFor(what, async () => ((await cond()) ? true : undefined), timeoutMs, options);
}
