import type { Writable } from 'node:stream';

/**
 * Writes `data` to a child's stdin and closes it. A child that exits before reading its input
 * (a failed command, a killed worker) closes the pipe, and the write then fails with EPIPE: that
 * error belongs to the child's exit status, which the caller checks, so it must not become an
 * unhandled 'error' event that ends the test run.
 */
export function endStdin(stdin: Writable | null | undefined, data?: string | Buffer): void {
  if (!stdin) return;
  stdin.on('error', ignorePipeClosed);
  stdin.end(data ?? '');
}

/** Writes one piece to a child's stdin that stays open (same EPIPE rule as endStdin). */
export function writeStdin(stdin: Writable | null | undefined, data: string | Buffer): void {
  if (!stdin) return;
  if (stdin.listenerCount('error') === 0) stdin.on('error', ignorePipeClosed);
  if (!stdin.writable) return;
  stdin.write(data);
}

function ignorePipeClosed(err: NodeJS.ErrnoException): void {
  if (err.code === 'EPIPE' || err.code === 'ERR_STREAM_DESTROYED' || err.code === 'ECONNRESET') return;
  throw err;
}
