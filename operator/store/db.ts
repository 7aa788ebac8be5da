import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { CannesError, TerminalError } from '../../common/errors.ts';
import { throwIfCancelled } from '../lib/cancel.ts';
import type { Logger } from '../lib/log.ts';
import type { StoreMetrics } from './metrics.ts';

/**
 * The Postgres connection, built for Neon and any PgBouncer in transaction mode:
 * - TLS from `sslmode` in DATABASE_URL (`verify-full` recommended; `require` and no sslmode
 *   on a non-loopback host are ALSO verified, because an unverified TLS link to the system of
 *   record is not worth having), CA from `sslrootcert` or PGSSLROOTCERT, else the system CAs.
 * - connect timeout, idle timeout, TCP keepalive; `pool.on('error')` so a dropped idle
 *   connection (Neon suspends computes) is logged, not a crash.
 * - only unnamed parameterized statements (no `name:` in any query), no session `SET`, no
 *   LISTEN/NOTIFY, no session advisory locks, no startup parameters PgBouncer would reject.
 * - every statement goes through `Db`: connection errors are retried with jittered backoff;
 *   acquiring a connection is always safe to retry, a statement only when the caller says it
 *   is idempotent.
 */

export interface DbOptions {
  connectionString: string;
  /** PEM CA bundle path (overrides `sslrootcert` / PGSSLROOTCERT). */
  sslRootCert?: string;
  max?: number;
  connectionTimeoutMillis?: number;
  idleTimeoutMillis?: number;
  queryTimeoutMillis?: number;
  retry?: RetryPolicy;
  logger?: Logger;
  metrics?: StoreMetrics;
  env?: NodeJS.ProcessEnv;
}

export interface RetryPolicy {
  /** Stop retrying once this long has passed since the first attempt (Neon cold starts take seconds). */
  maxElapsedMillis: number;
  baseMillis: number;
  capMillis: number;
}

export const DEFAULT_RETRY: RetryPolicy = { maxElapsedMillis: 30_000, baseMillis: 100, capMillis: 3_000 };

const LOOPBACK = new Set(['localhost', '127.0.0.1', '::1', '[::1]']);

/**
 * pg's `ssl` option from libpq's sslmode: plaintext only on loopback or a Unix socket, and a
 * verified TLS connection (with the given CA file, else the system's) everywhere else.
 */
function tlsOptions(
  url: URL,
  sslmode: string | undefined,
  rootCertPath: string | undefined,
): pg.PoolConfig['ssl'] {
  const host = url.hostname;
  const socketHost = host === '' || url.searchParams.has('host');
  const mode = sslmode ?? (socketHost || LOOPBACK.has(host) ? 'disable' : 'verify-full');
  switch (mode) {
    case 'disable':
    case 'allow':
    case 'prefer':
      // libpq's prefer/allow silently fall back to plaintext; we only honour them on loopback.
      if (!LOOPBACK.has(host) && !socketHost && mode !== 'disable') {
        throw new TerminalError(
          'DatabaseTlsRequired',
          `sslmode=${mode} may fall back to plaintext; use sslmode=verify-full for ${host}`,
        );
      }
      return false;
    case 'require':
    case 'verify-ca':
    case 'verify-full': {
      let ca: string | undefined;
      if (rootCertPath !== undefined && rootCertPath !== '' && rootCertPath !== 'system') {
        try {
          ca = readFileSync(rootCertPath, 'utf8');
        } catch {
          throw new TerminalError('DatabaseCaUnreadable', `cannot read the database CA file ${rootCertPath}`);
        }
      }
      return {
        rejectUnauthorized: true,
        ...(isIP(host) === 0 ? { servername: host } : {}),
        ...(ca === undefined ? {} : { ca }),
      };
    }
    default:
      throw new TerminalError('DatabaseUrlInvalid', `unknown sslmode ${mode}`);
  }
}

/** Turns DATABASE_URL into pg options. sslmode/sslrootcert are stripped from the URL because pg lets URL values override `ssl`. */
export function poolConfig(opts: DbOptions): pg.PoolConfig {
  let url: URL;
  try {
    url = new URL(opts.connectionString);
  } catch {
    throw new TerminalError('DatabaseUrlInvalid', 'DATABASE_URL is not a valid postgres:// URL');
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    throw new TerminalError(
      'DatabaseUrlInvalid',
      `DATABASE_URL must start with postgres:// or postgresql://, not ${url.protocol}//`,
    );
  }
  const env = opts.env ?? process.env;
  const sslmode = url.searchParams.get('sslmode') ?? env['PGSSLMODE'] ?? undefined;
  const rootCertPath =
    opts.sslRootCert ?? url.searchParams.get('sslrootcert') ?? env['PGSSLROOTCERT'] ?? undefined;
  // Neon's own URLs carry channel_binding=require: SCRAM bound to the TLS channel (pg's name for it differs).
  const channelBinding = url.searchParams.get('channel_binding');
  if (channelBinding !== null && !['disable', 'prefer', 'require'].includes(channelBinding)) {
    throw new TerminalError('DatabaseUrlInvalid', `unknown channel_binding ${channelBinding}`);
  }
  for (const p of [
    'sslmode',
    'sslrootcert',
    'sslcert',
    'sslkey',
    'uselibpqcompat',
    'ssl',
    'channel_binding',
  ]) {
    url.searchParams.delete(p);
  }
  const ssl = tlsOptions(url, sslmode, rootCertPath);
  return {
    connectionString: url.toString(),
    ssl,
    max: opts.max ?? 5,
    connectionTimeoutMillis: opts.connectionTimeoutMillis ?? 10_000,
    idleTimeoutMillis: opts.idleTimeoutMillis ?? 30_000,
    query_timeout: opts.queryTimeoutMillis ?? 30_000,
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
    application_name: 'cannes-operator',
    ...(channelBinding === 'require' ? { enableChannelBinding: true } : {}),
  };
}

const RETRYABLE_NODE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'ENOTFOUND',
]);
// 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now, 53300 too_many_connections.
const RETRYABLE_SQLSTATES = new Set(['57P01', '57P02', '57P03', '53300']);
const RETRYABLE_MESSAGES =
  /Connection terminated|timeout exceeded when trying to connect|connection error|server closed the connection|server conn crashed|server login has been failing|the database system is (starting up|shutting down|in recovery)|Client was closed and is not queryable|Query read timeout/i;

/** A lost or refused connection: the database may be fine a moment later. */
export function isConnectionError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = 'code' in err && typeof err.code === 'string' ? err.code : undefined;
  if (
    code !== undefined &&
    (RETRYABLE_NODE_CODES.has(code) || RETRYABLE_SQLSTATES.has(code) || code.startsWith('08'))
  )
    return true;
  if (RETRYABLE_MESSAGES.test(err.message)) return true;
  return err.cause !== undefined && err.cause !== err && isConnectionError(err.cause);
}

/** A transaction the server aborted to keep consistency: rerunning the whole transaction is correct. */
function isSerializationError(err: unknown): boolean {
  return err instanceof Error && 'code' in err && (err.code === '40001' || err.code === '40P01');
}

function backoff(policy: RetryPolicy, attempt: number): number {
  // Full jitter (as hcloud-go and the AWS architecture blog): spreads reconnect storms after a restart.
  return Math.random() * Math.min(policy.capMillis, policy.baseMillis * 2 ** attempt);
}

export interface Queryable {
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(
    text: string,
    values?: unknown[],
  ): Promise<pg.QueryResult<R>>;
}

export class Db {
  readonly pool: pg.Pool;
  readonly #retry: RetryPolicy;
  readonly #log: Logger | undefined;
  readonly metrics: StoreMetrics | undefined;
  /** Statements sent to the server (BEGIN/COMMIT included): what a reconcile costs. */
  statements = 0;
  /** Retries after connection errors (for metrics and tests). */
  retries = 0;

  constructor(opts: DbOptions) {
    this.pool = new pg.Pool(poolConfig(opts));
    this.#retry = opts.retry ?? DEFAULT_RETRY;
    this.#log = opts.logger;
    this.metrics = opts.metrics;
    // An idle client losing its connection emits here; without a listener the process dies.
    this.pool.on('error', (err) => {
      this.#log?.warn(
        { err: { message: err.message, code: (err as { code?: unknown }).code } },
        'idle database connection lost',
      );
    });
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  /** One statement. `idempotent: false` statements are retried only when the connection could not be made. */
  async query<R extends pg.QueryResultRow = pg.QueryResultRow>(
    text: string,
    values: unknown[] = [],
    opts: { idempotent: boolean } = { idempotent: true },
  ): Promise<pg.QueryResult<R>> {
    // A cancelled reconcile starts no new statement (one already sent runs to its end).
    throwIfCancelled();
    return this.#withRetry(opts.idempotent, (client) => this.#send<R>(client, text, values));
  }

  /**
   * BEGIN … COMMIT on one connection (one PgBouncer server connection for its length).
   * The whole function is rerun after a connection loss or serialization failure when idempotent.
   */
  async transaction<T>(
    fn: (q: Queryable) => Promise<T>,
    opts: { idempotent: boolean } = { idempotent: true },
  ): Promise<T> {
    throwIfCancelled();
    return this.#withRetry(opts.idempotent, async (client) => {
      const q: Queryable = {
        query: <R extends pg.QueryResultRow>(text: string, values: unknown[] = []) =>
          this.#send<R>(client, text, values),
      };
      await q.query('BEGIN');
      try {
        const result = await fn(q);
        await q.query('COMMIT');
        return result;
      } catch (err) {
        if (!isConnectionError(err)) {
          this.statements++;
          await client.query('ROLLBACK').catch(() => undefined);
        }
        throw err;
      }
    });
  }

  async #send<R extends pg.QueryResultRow>(
    client: pg.PoolClient,
    text: string,
    values: unknown[],
  ): Promise<pg.QueryResult<R>> {
    this.statements++;
    this.metrics?.statements.inc();
    const end = this.metrics?.statementDuration.startTimer();
    try {
      return await client.query<R>(text, values);
    } finally {
      end?.();
    }
  }

  async #withRetry<T>(idempotent: boolean, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const started = Date.now();
    const more = (): boolean => Date.now() - started < this.#retry.maxElapsedMillis;
    for (let attempt = 0; ; attempt++) {
      let client: pg.PoolClient | undefined;
      try {
        client = await this.pool.connect();
      } catch (err) {
        // Nothing was sent: always safe to try again.
        if (more() && isConnectionError(err)) {
          await this.#pause(attempt, err, 'connect');
          continue;
        }
        throw this.#unavailable(err);
      }
      // A connection lost while checked out but between statements (e.g. inside a transaction
      // while we decrypt) is emitted as 'error' on the client: without a listener, a crash.
      let lostBetweenStatements: Error | undefined;
      const onClientError = (err: Error): void => {
        lostBetweenStatements = err;
        this.#log?.warn({ error: errorSummary(err) }, 'database connection lost while in use');
      };
      client.on('error', onClientError);
      try {
        const result = await fn(client);
        client.off('error', onClientError);
        client.release(lostBetweenStatements);
        return result;
      } catch (err) {
        client.off('error', onClientError);
        const lost = isConnectionError(err) || lostBetweenStatements !== undefined;
        // A connection that failed mid-statement must not go back to the pool.
        client.release(lost ? (lostBetweenStatements ?? (err instanceof Error ? err : true)) : undefined);
        if (idempotent && more() && (lost || isSerializationError(err))) {
          await this.#pause(attempt, err, 'statement');
          continue;
        }
        throw lost ? this.#unavailable(err) : err;
      }
    }
  }

  #unavailable(err: unknown): unknown {
    if (isConnectionError(err)) this.metrics?.unavailable.inc();
    return wrapDbError(err);
  }

  async #pause(attempt: number, err: unknown, phase: 'connect' | 'statement'): Promise<void> {
    this.retries++;
    this.metrics?.retries.inc({ phase });
    const ms = backoff(this.#retry, attempt);
    this.#log?.info(
      { attempt: attempt + 1, phase, delayMs: Math.round(ms), error: errorSummary(err) },
      'database unavailable, retrying',
    );
    await sleep(ms);
  }
}

function errorSummary(err: unknown): string {
  if (!(err instanceof Error)) return 'unknown';
  const code = 'code' in err && typeof err.code === 'string' ? `${err.code}: ` : '';
  return code + err.message;
}

function wrapDbError(err: unknown): unknown {
  if (err instanceof CannesError || !isConnectionError(err)) return err;
  return new CannesError('DatabaseUnavailable', `database unavailable: ${errorSummary(err)}`, { cause: err });
}
