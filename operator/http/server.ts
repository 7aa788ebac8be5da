import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';

/**
 * The operator's two small HTTP surfaces, on their own ports as in controller-runtime
 * (`--metrics-bind-address :8080`, `--health-probe-bind-address :8081`): a scrape or a probe
 * never competes with anything else, and each can be bound to a different interface.
 * Plain node:http: two GET routes need no framework.
 */

export interface RunningServer {
  readonly host: string;
  readonly port: number;
  readonly url: string;
  close(): Promise<void>;
}

/** A named check: healthy when it returns true (a throw counts as unhealthy). */
export interface Check {
  name: string;
  check: () => boolean | Promise<boolean>;
}

export interface ListenOptions {
  /** Default 127.0.0.1; in a pod pass 0.0.0.0 (or the pod IP). */
  host?: string;
  /** 0 picks a free port (tests). */
  port: number;
}

export function startMetricsServer(opts: ListenOptions & { registry: Registry }): Promise<RunningServer> {
  return listen(opts, async (req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'method not allowed\n');
    if (pathOf(req) !== '/metrics') return send(res, 404, 'not found\n');
    const body = await opts.registry.metrics();
    send(res, 200, body, opts.registry.contentType);
  });
}

/**
 * `/healthz` (liveness: is the process able to make progress) and `/readyz` (readiness: caches
 * synced). Answers `ok`, or 500 with one `[-]name failed` line per failing check;
 * `?verbose` lists passing checks too, in controller-runtime's format.
 */
export function startProbeServer(
  opts: ListenOptions & { healthz?: Check[]; readyz?: Check[] },
): Promise<RunningServer> {
  return listen(opts, async (req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'method not allowed\n');
    const url = new URL(req.url ?? '/', 'http://probe');
    const checks =
      url.pathname === '/healthz' ? opts.healthz : url.pathname === '/readyz' ? opts.readyz : undefined;
    if (!checks) return send(res, 404, 'not found\n');
    const results = await Promise.all(
      checks.map(async (c) => {
        try {
          return { name: c.name, ok: (await c.check()) === true };
        } catch {
          return { name: c.name, ok: false };
        }
      }),
    );
    const ok = results.every((r) => r.ok);
    const verbose = url.searchParams.has('verbose');
    if (ok && !verbose) return send(res, 200, 'ok');
    const lines = results
      .filter((r) => verbose || !r.ok)
      .map((r) => (r.ok ? `[+]${r.name} ok` : `[-]${r.name} failed`));
    lines.push(ok ? `${url.pathname.slice(1)} check passed` : `${url.pathname.slice(1)} check failed`);
    send(res, ok ? 200 : 500, `${lines.join('\n')}\n`);
  });
}

function pathOf(req: IncomingMessage): string {
  return new URL(req.url ?? '/', 'http://x').pathname;
}

function send(
  res: ServerResponse,
  code: number,
  body: string,
  contentType = 'text/plain; charset=utf-8',
): void {
  res.writeHead(code, { 'content-type': contentType, 'cache-control': 'no-store' });
  res.end(body);
}

function listen(
  opts: ListenOptions,
  handler: (req: IncomingMessage, res: ServerResponse) => Promise<void>,
): Promise<RunningServer> {
  const host = opts.host ?? '127.0.0.1';
  const server: Server = createServer((req, res) => {
    handler(req, res).catch(() => {
      if (!res.headersSent) send(res, 500, 'internal error\n');
      else res.destroy();
    });
  });
  // A probe or scrape is tiny: cap slow or idle clients.
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  server.keepAliveTimeout = 5_000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, host, () => {
      server.off('error', reject);
      const addr = server.address() as AddressInfo;
      const urlHost = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
      resolve({
        host: addr.address,
        port: addr.port,
        url: `http://${urlHost}:${addr.port}`,
        close: () =>
          new Promise<void>((res) => {
            server.closeAllConnections();
            server.close(() => res());
          }),
      });
    });
  });
}
