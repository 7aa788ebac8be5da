/**
 * Errors carry a CamelCase `reason` that becomes a condition reason, and say whether
 * retrying can help (`terminal: true` means the user must change something).
 * Messages never contain secret material.
 */
export class CannesError extends Error {
  readonly reason: string;
  readonly terminal: boolean;

  constructor(reason: string, message: string, options: { terminal?: boolean; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CannesError';
    this.reason = reason;
    this.terminal = options.terminal ?? false;
  }
}

/** The user must fix something (spec, Secret contents): retrying will not help. */
export class TerminalError extends CannesError {
  constructor(reason: string, message: string, cause?: unknown) {
    super(reason, message, { terminal: true, cause });
    this.name = 'TerminalError';
  }
}

export function isTerminal(err: unknown): boolean {
  return err instanceof CannesError && err.terminal;
}

export function reasonOf(err: unknown, fallback = 'InternalError'): string {
  return err instanceof CannesError ? err.reason : fallback;
}
