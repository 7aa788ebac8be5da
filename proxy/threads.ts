import { parentPort, Worker } from 'node:worker_threads';
import { Registry } from 'prom-client';
import { Route, type RouteWire } from './keys.ts';
import { createLogger, type Logger, type LogLevel } from './log.ts';
import { type MetricsSnapshot, ProxyMetrics } from './metrics.ts';
import { Allowlist, BridgeAllowlist, type HostPort } from './net.ts';
import { ProxyServer, type ProxyServerOptions } from './server.ts';

/**
 * `--threads N`: the main thread serves, and N-1 worker threads of the same process serve the
 * same addresses and ports beside it (SO_REUSEPORT: the kernel spreads new connections over
 * them). Only the main thread reads the key file, handles signals and serves metrics; the
 * workers get the route table, the drain order and the metrics requests from it by message.
 * A worker that fails takes the process down (exit 1): systemd starts a whole new one.
 */

/**
 * A worker thread's stdout is a message to the main thread, which wakes up to write it: at
 * one line per request that cost the main thread about a fifth of the worker's CPU (600 of
 * 2800 ms in a one-connection run). Gathered for up to this long, the lines make a few
 * messages a second.
 */
export const WORKER_LOG_FLUSH_MS = 100;

/** What a worker thread is started with (structured clone). */
export interface ThreadConfig {
  readonly thread: number;
  /** The addresses with the ports the main thread bound (port 0 resolved). */
  readonly listen: readonly HostPort[];
  readonly allow: readonly string[];
  /** `--bridges-only`: `allow` narrowed to the Docker bridges present. */
  readonly bridgesOnly?: boolean;
  readonly logLevel: LogLevel;
  readonly limits: ServerLimits;
  readonly routes: readonly RouteWire[];
  /** The key file was gone when this thread started (fail closed, see ProxyServer.setRoutes). */
  readonly keyFileMissing?: boolean;
}

export type ServerLimits = Pick<
  ProxyServerOptions,
  | 'maxBodyBytes'
  | 'upstreamHeadersTimeoutMs'
  | 'upstreamBodyTimeoutMs'
  | 'upstreamConnectTimeoutMs'
  | 'clientHeadersTimeoutMs'
  | 'clientRequestTimeoutMs'
  | 'endpoints'
>;

type ToThread =
  | { readonly t: 'routes'; readonly routes: readonly RouteWire[]; readonly keyFileMissing: boolean }
  | { readonly t: 'snapshot'; readonly id: number }
  | { readonly t: 'drain'; readonly ms: number };

type FromThread =
  | { readonly t: 'listening' }
  | { readonly t: 'failed'; readonly code: string }
  | { readonly t: 'snapshot'; readonly id: number; readonly data: MetricsSnapshot };

/** Routes as they cross between threads, and back. */
export const toWire = (routes: ReadonlyMap<string, Route>): RouteWire[] =>
  [...routes.values()].map((r) => r.toWire());
const fromWire = (wire: readonly RouteWire[]): Map<string, Route> =>
  new Map(wire.map((w) => [w.id, Route.fromWire(w)]));

/** The main thread's handle on the worker threads. */
export class ProxyThreads {
  readonly #workers: Worker[];
  readonly #logger: Logger;
  readonly #waiting = new Map<number, (s: MetricsSnapshot) => void>();
  #seq = 0;
  #stopping = false;

  private constructor(workers: Worker[], logger: Logger) {
    this.#workers = workers;
    this.#logger = logger;
  }

  /**
   * Starts `configs.length` workers from `entry` (this bundle) and resolves once every one
   * listens; rejects with the first failure (and stops the others).
   */
  static async start(
    entry: URL,
    configs: readonly ThreadConfig[],
    logger: Logger,
    onFailure: (message: string) => void,
  ): Promise<ProxyThreads> {
    const workers = configs.map((workerData) => new Worker(entry, { workerData }));
    const threads = new ProxyThreads(workers, logger);
    try {
      await Promise.all(workers.map((w, i) => threads.#watch(w, configs[i]!.thread, onFailure)));
    } catch (err) {
      threads.#stopping = true;
      await Promise.all(workers.map((w) => w.terminate()));
      throw err;
    }
    return threads;
  }

  /** Resolves when the worker listens; afterwards reports an unplanned exit to `onFailure`. */
  #watch(w: Worker, thread: number, onFailure: (message: string) => void): Promise<void> {
    return new Promise((resolve, reject) => {
      let listening = false;
      w.on('message', (m: FromThread) => {
        if (m.t === 'listening') {
          listening = true;
          resolve();
        } else if (m.t === 'failed') {
          reject(new Error(`thread ${thread} cannot listen (${m.code})`));
        } else if (m.t === 'snapshot') {
          this.#waiting.get(m.id)?.(m.data);
        }
      });
      // Error objects from a worker are not logged whole: name and code only (see log.ts).
      w.on('error', (err) => {
        if (!listening) reject(err);
        else if (!this.#stopping) onFailure(`thread ${thread} failed (${err.name})`);
      });
      w.on('exit', (code) => {
        if (!listening) reject(new Error(`thread ${thread} exited (${code}) before listening`));
        else if (!this.#stopping) onFailure(`thread ${thread} exited (${code})`);
      });
    });
  }

  /** Hands a new route table to every worker (the key file was reloaded). */
  setRoutes(routes: ReadonlyMap<string, Route>, keyFileMissing = false): void {
    const msg: ToThread = { t: 'routes', routes: toWire(routes), keyFileMissing };
    for (const w of this.#workers) w.postMessage(msg);
  }

  /** Every worker's metrics; a worker that does not answer within `timeoutMs` is left out. */
  async snapshots(timeoutMs = 2000): Promise<MetricsSnapshot[]> {
    const asks = this.#workers.map((w) => {
      const id = ++this.#seq;
      return new Promise<MetricsSnapshot | null>((resolve) => {
        const timer = setTimeout(() => {
          this.#waiting.delete(id);
          this.#logger.warn('a proxy thread did not answer a metrics request', { timeoutMs });
          resolve(null);
        }, timeoutMs);
        this.#waiting.set(id, (s) => {
          clearTimeout(timer);
          this.#waiting.delete(id);
          resolve(s);
        });
        w.postMessage({ t: 'snapshot', id } satisfies ToThread);
      });
    });
    return (await Promise.all(asks)).filter((s): s is MetricsSnapshot => s !== null);
  }

  /** Each worker stops accepting and lets its open streams finish up to `ms`, then exits. */
  async drain(ms: number): Promise<void> {
    this.#stopping = true;
    await Promise.all(
      this.#workers.map(
        (w) =>
          new Promise<void>((resolve) => {
            const timer = setTimeout(() => void w.terminate(), ms + 5000);
            w.once('exit', () => {
              clearTimeout(timer);
              resolve();
            });
            w.postMessage({ t: 'drain', ms } satisfies ToThread);
          }),
      ),
    );
  }
}

/** A worker thread's life: serve until the main thread says drain. */
export async function runThread(config: ThreadConfig): Promise<void> {
  const port = parentPort;
  if (port === null) throw new Error('runThread outside a worker thread');
  const post = (m: FromThread) => port.postMessage(m);
  const logger = createLogger({ level: config.logLevel, flushMs: WORKER_LOG_FLUSH_MS });
  const metrics = new ProxyMetrics(new Registry());
  const proxy = new ProxyServer({
    ...config.limits,
    listen: config.listen,
    allow: config.bridgesOnly
      ? new BridgeAllowlist(new Allowlist(config.allow))
      : new Allowlist(config.allow),
    logger,
    metrics,
    reusePort: true,
    thread: config.thread,
  });
  proxy.setRoutes(fromWire(config.routes), config.keyFileMissing === true);
  try {
    await proxy.listen();
  } catch (err) {
    post({ t: 'failed', code: err instanceof Error && 'code' in err ? String(err.code) : 'unknown' });
    return;
  }
  port.on('message', (m: ToThread) => {
    if (m.t === 'routes') {
      proxy.setRoutes(fromWire(m.routes), m.keyFileMissing);
    } else if (m.t === 'snapshot') {
      post({ t: 'snapshot', id: m.id, data: metrics.snapshot() });
    } else if (m.t === 'drain') {
      void proxy.close(m.ms).then(() => {
        logger.flush();
        process.exit(0);
      });
    }
  });
  post({ t: 'listening' });
}
