import { AsyncLocalStorage } from 'node:async_hooks';
import { CannesError } from '../../common/errors.ts';

/**
 * The reconcile's cancellation, carried to every Hetzner request, SSH command and store query
 * made on its behalf (the way Go code passes a `context.Context`): the step runner enters it
 * once (`withCancel`), and the clients read it where they block (`cancelSignal`,
 * `throwIfCancelled`). A call made outside a reconcile has none and is never cancelled.
 */
const current = new AsyncLocalStorage<AbortSignal>();

export function withCancel<T>(signal: AbortSignal, fn: () => Promise<T>): Promise<T> {
  return current.run(signal, fn);
}

/**
 * Runs `fn` outside any reconcile's cancellation: for work shared by several reconciles (one
 * batched Hetzner poll), which the cancellation of the one that started it must not end.
 */
export function detached<T>(fn: () => T): T {
  return current.exit(fn);
}

/** The cancellation of the reconcile this call is part of, if any. */
export function cancelSignal(): AbortSignal | undefined {
  return current.getStore();
}

/** Throws `Cancelled` when the reconcile this call belongs to was cancelled (lost lease, SIGTERM). */
export function throwIfCancelled(): void {
  if (current.getStore()?.aborted) throw cancelled();
}

export function cancelled(): CannesError {
  return new CannesError(
    'Cancelled',
    'the reconcile was cancelled (leadership lost or the operator stopping)',
  );
}

/** A promise that rejects with `Cancelled` when the current reconcile is cancelled (never, outside one). */
export function onCancel(): { promise: Promise<never>; dispose: () => void } {
  const signal = current.getStore();
  let dispose = () => {};
  const promise = new Promise<never>((_, reject) => {
    if (!signal) return;
    if (signal.aborted) {
      reject(cancelled());
      return;
    }
    const listener = () => reject(cancelled());
    signal.addEventListener('abort', listener, { once: true });
    dispose = () => signal.removeEventListener('abort', listener);
  });
  promise.catch(() => {});
  return { promise, dispose };
}
