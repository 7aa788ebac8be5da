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

type Gc = (options?: { type: 'major'; execution: 'sync'; flavor: 'regular' | 'last-resort' }) => void;
let gc: Gc | undefined;

/**
 * A full garbage collection now that also hands the memory back: V8's "last resort" flavour
 * (what it runs near an out-of-memory, and `LowMemoryNotification`) collects until nothing more
 * is freed, shrinks the young generation and releases the pages it pooled. A regular full GC
 * frees the objects but keeps the heap committed: in a 40-round burst of objects and buffers
 * (Node 24) it left 26 MiB of V8 heap and 153 MiB RSS, the last-resort one 5.5 and 104 MiB.
 */
export function collectGarbage(flavor: 'regular' | 'last-resort' = 'last-resort'): void {
  if (gc === undefined) {
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as Gc;
  }
  gc({ type: 'major', execution: 'sync', flavor });
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
