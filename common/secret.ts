import { inspect } from 'node:util';

const REDACTED = '[redacted]';

/**
 * A value that is a secret. It prints as `[redacted]` through every path a value can
 * leak by accident (string coercion, JSON, util.inspect/console, template literals);
 * `reveal()` is called only at the one line that needs the bytes.
 */
export class Secret<T extends string | Uint8Array = string> {
  readonly #value: T;

  constructor(value: T) {
    this.#value = value;
  }

  static of(value: string): Secret<string> {
    return new Secret(value);
  }

  reveal(): T {
    return this.#value;
  }

  /** Length only: safe to log or validate against. */
  get length(): number {
    return this.#value.length;
  }

  /** Constant-time comparison with another secret of the same kind. */
  equals(other: Secret<T>): boolean {
    const a = toBytes(this.#value);
    const b = toBytes(other.#value);
    if (a.length !== b.length) return false;
    let diff = 0;
    for (let i = 0; i < a.length; i++) diff |= (a[i] ?? 0) ^ (b[i] ?? 0);
    return diff === 0;
  }

  toString(): string {
    return REDACTED;
  }

  toJSON(): string {
    return REDACTED;
  }

  [Symbol.toPrimitive](): string {
    return REDACTED;
  }

  [inspect.custom](): string {
    return `Secret(${REDACTED})`;
  }
}

function toBytes(v: string | Uint8Array): Uint8Array {
  return typeof v === 'string' ? new TextEncoder().encode(v) : v;
}

export function isSecret(v: unknown): v is Secret<string | Uint8Array> {
  return v instanceof Secret;
}
