import { CannesError } from '../../common/errors.ts';

/** Reads typed fields out of a pg row (parse at the boundary, no casts). */
export class RowReader {
  readonly #row: Record<string, unknown>;
  readonly #what: string;

  constructor(row: unknown, what: string) {
    if (typeof row !== 'object' || row === null)
      throw new CannesError('StoreCorrupt', `${what}: row is not an object`);
    this.#row = row as Record<string, unknown>;
    this.#what = what;
  }

  #bad(col: string, want: string): CannesError {
    return new CannesError('StoreCorrupt', `${this.#what}: column ${col} is not ${want}`);
  }

  str(col: string): string {
    const v = this.#row[col];
    if (typeof v !== 'string') throw this.#bad(col, 'text');
    return v;
  }

  strOrNull(col: string): string | null {
    const v = this.#row[col];
    if (v === null || v === undefined) return null;
    if (typeof v !== 'string') throw this.#bad(col, 'text');
    return v;
  }

  /** bigint columns arrive as strings; server ids fit a double. */
  intOrNull(col: string): number | null {
    const v = this.#row[col];
    if (v === null || v === undefined) return null;
    const n = typeof v === 'number' ? v : typeof v === 'string' ? Number(v) : Number.NaN;
    if (!Number.isSafeInteger(n)) throw this.#bad(col, 'a safe integer');
    return n;
  }

  int(col: string): number {
    const n = this.intOrNull(col);
    if (n === null) throw this.#bad(col, 'an integer');
    return n;
  }

  bool(col: string): boolean {
    const v = this.#row[col];
    if (typeof v !== 'boolean') throw this.#bad(col, 'boolean');
    return v;
  }

  date(col: string): Date {
    const v = this.#row[col];
    if (!(v instanceof Date)) throw this.#bad(col, 'a timestamp');
    return v;
  }

  dateOrNull(col: string): Date | null {
    const v = this.#row[col];
    if (v === null || v === undefined) return null;
    if (!(v instanceof Date)) throw this.#bad(col, 'a timestamp');
    return v;
  }

  isNull(col: string): boolean {
    return this.#row[col] === null || this.#row[col] === undefined;
  }
}
