import { TerminalError } from '../../common/errors.ts';

const UNITS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};
const PART = /([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)/y;

/** Parses a Go duration (`720h`, `1h30m`, `90s`) into milliseconds, as time.ParseDuration does. */
export function parseGoDuration(text: string): number {
  if (text.length === 0 || text.length > 64)
    throw new TerminalError('InvalidDuration', `invalid duration "${text}"`);
  let total = 0;
  PART.lastIndex = 0;
  while (PART.lastIndex < text.length) {
    const start = PART.lastIndex;
    const m = PART.exec(text);
    if (!m || m.index !== start) throw new TerminalError('InvalidDuration', `invalid duration "${text}"`);
    total += Number(m[1]) * (UNITS[m[2] ?? ''] ?? Number.NaN);
  }
  if (!Number.isFinite(total)) throw new TerminalError('InvalidDuration', `invalid duration "${text}"`);
  return total;
}
