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
  options: { level?: string; destination?: NodeJS.WritableStream } = {},
): Logger {
  const level = options.level ?? process.env['LOG_LEVEL'] ?? 'info';
  const opts = { name, level, redact: { paths: REDACT_PATHS, censor: '[redacted]' } };
  return options.destination ? pino(opts, options.destination) : pino(opts);
}
