/**
 * A small structured JSON logger for the proxy (one line per event on stdout). The proxy is
 * one bundled file on the VPS, so it does not pull pino's transport machinery; the line shape
 * (`level`, `time`, `name`, `msg`) matches pino's so the same log tooling reads both.
 *
 * Redaction is defence in depth: the proxy never passes a credential to the logger (keys are
 * `Secret`s, request lines carry no header values and no query string), and any field whose
 * name could hold one is replaced anyway.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';

const LEVELS: Record<LogLevel, number> = { debug: 20, info: 30, warn: 40, error: 50, silent: 100 };

export function isLogLevel(v: string): v is LogLevel {
  return Object.hasOwn(LEVELS, v);
}

const REDACTED_FIELDS = new Set([
  'apikey',
  'api_key',
  'api-key',
  'key',
  'token',
  'authorization',
  'proxy-authorization',
  'x-api-key',
  'x-goog-api-key',
  'password',
  'secret',
  'headers',
  'query',
  'url',
]);

export type Fields = Record<string, unknown>;

export interface Logger {
  readonly level: LogLevel;
  enabled(level: LogLevel): boolean;
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  /** Writes the lines still gathered now (before a worker thread exits). */
  flush(): void;
}

export interface LoggerOptions {
  level?: LogLevel;
  name?: string;
  /** Where lines go; stdout by default (synchronous for files and pipes on Linux). */
  write?: (line: string) => void;
  /**
   * How long stdout lines may be gathered before they are written: 0 (the default) writes
   * once per event-loop turn. Worker threads use more (see `WORKER_LOG_FLUSH_MS`).
   */
  flushMs?: number;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const level = options.level ?? 'info';
  const threshold = LEVELS[level];
  const name = JSON.stringify(options.name ?? 'cannes-proxy');
  const out = options.write ? { write: options.write, flush: () => {} } : batchedStdout(options.flushMs ?? 0);
  const write = out.write;
  const emit = (lvl: Exclude<LogLevel, 'silent'>, msg: string, fields?: Fields): void => {
    if (LEVELS[lvl] < threshold) return;
    let line = `{"level":"${lvl}","time":${Date.now()},"name":${name},"msg":${JSON.stringify(msg)}`;
    if (fields) {
      for (const k in fields) {
        const v = fields[k];
        if (v === undefined) continue;
        const f = field(k);
        if (f.redacted) line += `${f.prefix}"[redacted]"`;
        else if (typeof v === 'number') line += f.prefix + (Number.isFinite(v) ? String(v) : 'null');
        else if (typeof v === 'string') line += f.prefix + JSON.stringify(v);
        else line += f.prefix + serialise(k, v, 0);
      }
    }
    write(line + '}\n');
  };
  return {
    level,
    enabled: (lvl) => LEVELS[lvl] >= threshold,
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    flush: out.flush,
  };
}

/**
 * Lines are gathered and written once per event-loop turn (one syscall for many request
 * lines under load), or at most every `flushMs`; everything pending is written before the
 * process exits.
 */
function batchedStdout(flushMs: number): { write: (line: string) => void; flush: () => void } {
  let pending = '';
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    if (pending === '') return;
    const out = pending;
    pending = '';
    process.stdout.write(out);
  };
  process.on('exit', flush);
  const write = (line: string) => {
    pending += line;
    if (pending.length > 64 * 1024) flush();
    else if (!scheduled) {
      scheduled = true;
      if (flushMs > 0) setTimeout(flush, flushMs).unref();
      else setImmediate(flush);
    }
  };
  return { write, flush };
}

/**
 * A field name's `,"name":` and whether its value is redacted, remembered per name (the
 * request line logs the same few names thousands of times a second).
 */
interface Field {
  readonly prefix: string;
  readonly redacted: boolean;
}
const fieldCache = new Map<string, Field>();
function field(key: string): Field {
  let f = fieldCache.get(key);
  if (f === undefined) {
    f = { prefix: `,${JSON.stringify(key)}:`, redacted: REDACTED_FIELDS.has(key.toLowerCase()) };
    // Field names come from this code, so the map stays small; a bound keeps it so regardless.
    if (fieldCache.size < 256) fieldCache.set(key, f);
  }
  return f;
}

function serialise(key: string, v: unknown, depth: number): string {
  if (REDACTED_FIELDS.has(key.toLowerCase())) return '"[redacted]"';
  if (v === null || typeof v === 'number' || typeof v === 'boolean') return JSON.stringify(v);
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'bigint') return `"${v}"`;
  if (v instanceof Error) return serialiseError(v);
  if (typeof v === 'object' && depth < 3) {
    // Objects with their own toJSON (Secret) decide how they print.
    if ('toJSON' in v && typeof v.toJSON === 'function') return JSON.stringify(v);
    if (Array.isArray(v)) return `[${v.map((x) => serialise('', x, depth + 1)).join(',')}]`;
    const parts: string[] = [];
    for (const [k, x] of Object.entries(v)) {
      if (x !== undefined) parts.push(`${JSON.stringify(k)}:${serialise(k, x, depth + 1)}`);
    }
    return `{${parts.join(',')}}`;
  }
  return '"[unserialisable]"';
}

/**
 * Errors print name, code and reason only. Messages of errors we did not make can quote
 * input (V8's JSON.parse quotes the text it failed on; URL errors quote the URL), so they
 * are left out unless the error is one of ours (`reason` set), whose messages are written
 * to be safe.
 */
function serialiseError(err: Error): string {
  const out: Record<string, string> = { name: err.name };
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') out['code'] = code;
  const reason = (err as { reason?: unknown }).reason;
  if (typeof reason === 'string') {
    out['reason'] = reason;
    out['message'] = err.message;
  }
  return JSON.stringify(out);
}
