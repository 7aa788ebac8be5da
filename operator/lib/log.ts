import { type Logger, pino } from 'pino';

/**
 * The one logger factory. Secrets are typed (`Secret` prints `[redacted]`); on top of that
 * pino redacts the field names where a secret could hide if someone forgot the type.
 */
export const REDACT_PATHS = [
  'token',
  'apiKey',
  'password',
  'privateKey',
  'rootPassword',
  'root_password',
  'authorization',
  '*.token',
  '*.apiKey',
  '*.password',
  '*.privateKey',
  '*.rootPassword',
  '*.root_password',
  '*.authorization',
  'headers.authorization',
  'headers["x-api-key"]',
  'headers["x-goog-api-key"]',
  'headers["api-key"]',
  'req.headers.authorization',
  'req.headers["x-api-key"]',
  'req.headers["x-goog-api-key"]',
  'req.headers["api-key"]',
];

export type { Logger };

export function createLogger(
  name: string,
  options: { level?: string; destination?: NodeJS.WritableStream; format?: 'json' | 'console' } = {},
): Logger {
  const level = options.level ?? process.env['LOG_LEVEL'] ?? 'info';
  const opts = { name, level, redact: { paths: REDACT_PATHS, censor: '[redacted]' } };
  if (options.format === 'console') return pino(opts, consoleStream(options.destination ?? process.stdout));
  return options.destination ? pino(opts, options.destination) : pino(opts);
}

const LEVEL_NAMES: Record<number, string> = {
  10: 'TRACE',
  20: 'DEBUG',
  30: 'INFO',
  40: 'WARN',
  50: 'ERROR',
  60: 'FATAL',
};
const OMIT = new Set(['level', 'time', 'pid', 'hostname', 'name', 'msg']);

/**
 * `--log-format console`: one readable line per record (`12:00:00.000 INFO message key=value`)
 * for a terminal. Formats pino's JSON after redaction, so it shows nothing the JSON would not;
 * no pino-pretty dependency for a few lines of formatting.
 */
export function consoleStream(out: NodeJS.WritableStream): { write(line: string): void } {
  return {
    write(line: string) {
      let rec: Record<string, unknown>;
      try {
        rec = JSON.parse(line) as Record<string, unknown>;
      } catch {
        out.write(line);
        return;
      }
      const time = typeof rec['time'] === 'number' ? new Date(rec['time']).toISOString().slice(11, 23) : '';
      const level = LEVEL_NAMES[Number(rec['level'])] ?? String(rec['level']);
      const fields = Object.entries(rec)
        .filter(([k]) => !OMIT.has(k))
        .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
      out.write(`${[time, level.padEnd(5), String(rec['msg'] ?? ''), ...fields].join(' ')}\n`);
    },
  };
}
