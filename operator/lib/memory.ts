/**
 * Handing a provisioning burst's memory back to the system (issue 24, docs/robustness.md, "Memory").
 *
 * V8 collects its old generation when allocation pushes the heap to its next limit, and an idle
 * operator hardly allocates: after a burst (tens of deploys and SSH sessions at once) the heap
 * keeps the burst's garbage, and the process its RSS, until the next burst. One full collection
 * once the burst is over gives it back. It costs tens of milliseconds, once per burst.
 *
 * `gc` is V8's own, reached without a command-line flag the way jest's leak detector does
 * (`--expose-gc` set at run time, the function taken from a fresh context), so the operator
 * behaves the same however it is started.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

let gc: (() => void) | undefined;

/** A full garbage collection now. */
export function collectGarbage(): void {
  if (gc === undefined) {
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as () => void;
  }
  gc();
}

/**
 * Runs `fn` once things have been quiet for `quietMs`: each `poke()` (re)starts the wait. For the
 * end of a burst: poked whenever the last step in flight settles.
 */
export function afterQuiet(fn: () => void, quietMs: number): { poke(): void; stop(): void } {
  let timer: NodeJS.Timeout | undefined;
  return {
    poke() {
      clearTimeout(timer);
      timer = setTimeout(fn, quietMs);
      timer.unref();
    },
    stop() {
      clearTimeout(timer);
    },
  };
}
