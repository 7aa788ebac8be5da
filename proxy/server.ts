import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
// The Agent alone, not undici's index, which also brings fetch, WebSocket, the cache stores
// and more that this process never runs: the bundle is half the size (20k lines, not 38k),
// and the proxy starts ~3 MB smaller.
import Agent from 'undici/lib/dispatcher/agent.js';
import { EndpointPolicy, type EndpointPolicyOptions } from './endpoints.ts';
import { REQUEST_DROP, responseHeaderAllowed } from './headers.ts';
import type { Route } from './keys.ts';
import type { Logger } from './log.ts';
import type { ProxyMetrics, RefusalReason, UpstreamErrorKind } from './metrics.ts';
import { statusClass } from './metrics.ts';
import type { HostPort, SourceCheck } from './net.ts';
import { parseTarget } from './route-path.ts';
import type { ScrubState } from './scrub.ts';

export interface ProxyServerOptions {
  readonly listen: readonly HostPort[];
  readonly allow: SourceCheck;
  readonly logger: Logger;
  readonly metrics: ProxyMetrics;
  /** Request bodies above this are refused with 413. */
  readonly maxBodyBytes: number;
  /** Time to the upstream's response headers (reasoning models can think for minutes). */
  readonly upstreamHeadersTimeoutMs: number;
  /** Longest silence between two upstream body chunks. */
  readonly upstreamBodyTimeoutMs: number;
  readonly upstreamConnectTimeoutMs: number;
  /** Time a client has to send its request headers (slowloris). */
  readonly clientHeadersTimeoutMs: number;
  /** Time a client has to send its whole request (headers and body). */
  readonly clientRequestTimeoutMs: number;
  /** Upstream dispatcher; a keep-alive pool per origin by default. */
  readonly dispatcher?: Dispatcher;
  /** Share each port with the proxy's other threads (SO_REUSEPORT, `--threads`). */
  readonly reusePort?: boolean;
  /** This thread's number in request log lines, when the proxy runs more than one. */
  readonly thread?: number;
  /** Widening of the per-provider endpoint allow list (`--allow-path-prefix`, `--allow-any-path`). */
  readonly endpoints?: EndpointPolicyOptions;
  /** At most one `bad client request` line per reason per this many ms (default 60 s). */
  readonly clientErrorLogIntervalMs?: number;
}

const JSON_TYPE = 'application/json';

/** Error bodies are constants: they can never carry a key, a URL or an id list. */
function errorBody(type: string, message: string): string {
  return JSON.stringify({ error: { type, message } });
}
const BODY_NOT_FOUND = errorBody('not_found', 'unknown route');
const BODY_BAD_PATH = errorBody('invalid_request', 'invalid path');
const BODY_TOO_LARGE = errorBody('request_too_large', 'request body too large');
const BODY_BAD_GATEWAY = errorBody('upstream_error', 'the upstream request failed');
const BODY_GATEWAY_TIMEOUT = errorBody('upstream_timeout', 'the upstream did not answer in time');
const BODY_BAD_REQUEST = errorBody('invalid_request', 'the request could not be forwarded');
const BODY_HEALTHY = JSON.stringify({ status: 'ok' });
const BODY_METHOD = errorBody('method_not_allowed', 'this method is not allowed through the proxy');
const BODY_PATH = errorBody(
  'forbidden',
  "this path is not one of the provider's inference endpoints that the proxy allows",
);
const BODY_NO_KEY_FILE = errorBody(
  'unavailable',
  'the proxy has no key file; no request is forwarded until it returns',
);
const BODY_UNSCANNABLE = errorBody(
  'upstream_error',
  'the upstream sent a compressed body, which the proxy cannot check for the key',
);
/** Default for `clientErrorLogIntervalMs`. */
export const CLIENT_ERROR_LOG_INTERVAL_MS = 60_000;

class BodyTooLarge extends Error {
  override readonly name = 'BodyTooLarge';
}
class ClientGone extends Error {
  override readonly name = 'ClientGone';
}
/** The upstream's response was answered with a 502 by the proxy itself (compressed body). */
class Unscannable extends Error {
  override readonly name = 'Unscannable';
}

/**
 * The listener(s) on the bridge address(es) and the request path. Everything per request
 * is O(headers): no URL object, no regex compilation, no body parsing.
 */
export class ProxyServer {
  readonly #opts: ProxyServerOptions;
  readonly #servers: Server[] = [];
  readonly #dispatcher: Dispatcher;
  readonly #ownDispatcher: boolean;
  #routes: ReadonlyMap<string, Route> = new Map();
  #keyFileMissing = false;
  readonly #endpoints: EndpointPolicy;
  /** Per refusal reason of a bad client request: when a line was last written, how many since. */
  readonly #clientErrors = new Map<RefusalReason, { last: number; suppressed: number }>();
  #active = 0;
  #draining = false;
  #idleWaiters: (() => void)[] = [];

  constructor(opts: ProxyServerOptions) {
    this.#opts = opts;
    this.#ownDispatcher = opts.dispatcher === undefined;
    this.#endpoints = new EndpointPolicy(opts.endpoints);
    this.#dispatcher =
      opts.dispatcher ??
      new Agent({
        connect: { timeout: opts.upstreamConnectTimeoutMs },
        headersTimeout: opts.upstreamHeadersTimeoutMs,
        bodyTimeout: opts.upstreamBodyTimeoutMs,
        keepAliveTimeout: 10_000,
        keepAliveMaxTimeout: 600_000,
        pipelining: 1,
      });
  }

  /**
   * Swaps the route table atomically (key file reload); requests in flight keep their route.
   * `keyFileMissing`: the key file was deleted, so every proxied request gets a 503 (fail
   * closed) until a valid file gives a table again.
   */
  setRoutes(routes: ReadonlyMap<string, Route>, keyFileMissing = false): void {
    this.#routes = keyFileMissing ? new Map() : routes;
    this.#keyFileMissing = keyFileMissing;
    this.#opts.metrics.routes.set(this.#routes.size);
  }

  get keyFileMissing(): boolean {
    return this.#keyFileMissing;
  }

  /** The route table in use (the one the key file last gave). */
  get routes(): ReadonlyMap<string, Route> {
    return this.#routes;
  }

  get activeRequests(): number {
    return this.#active;
  }

  async listen(): Promise<AddressInfo[]> {
    const out: AddressInfo[] = [];
    for (const hp of this.#opts.listen) {
      const server = createServer(
        {
          headersTimeout: this.#opts.clientHeadersTimeoutMs,
          requestTimeout: this.#opts.clientRequestTimeoutMs,
          // Timeouts are checked on this interval: keep it well below the headers timeout.
          connectionsCheckingInterval: Math.max(100, Math.min(1000, this.#opts.clientHeadersTimeoutMs / 4)),
          keepAliveTimeout: 5_000,
          maxHeaderSize: 16 * 1024,
          noDelay: true,
          requireHostHeader: false,
          insecureHTTPParser: false,
        },
        (req, res) => this.#onRequest(req, res),
      );
      server.on('connection', (socket: Socket) => this.#onConnection(socket));
      server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) =>
        this.#onClientError(err, socket),
      );
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        const reusePort = this.#opts.reusePort === true;
        server.listen({ host: hp.host, port: hp.port, exclusive: true, reusePort }, () => {
          server.off('error', reject);
          resolve();
        });
      });
      server.on('error', (err) => this.#opts.logger.error('listener error', { err }));
      this.#servers.push(server);
      out.push(server.address() as AddressInfo);
    }
    return out;
  }

  /**
   * Stops accepting, lets requests in flight finish up to `deadlineMs`, then cuts what is
   * left. Idle keep-alive connections are closed at once.
   */
  async close(deadlineMs: number): Promise<void> {
    this.#draining = true;
    const closed = this.#servers.map((s) => new Promise<void>((r) => s.close(() => r())));
    for (const s of this.#servers) s.closeIdleConnections();
    if (this.#active > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((r) => this.#idleWaiters.push(r)),
        new Promise<void>((r) => {
          timer = setTimeout(r, deadlineMs);
        }),
      ]);
      clearTimeout(timer);
    }
    for (const s of this.#servers) s.closeAllConnections();
    await Promise.all(closed);
    if (this.#ownDispatcher) await this.#dispatcher.destroy();
  }

  #onConnection(socket: Socket): void {
    // Checked before a single byte is parsed, on every connection, on top of the bind.
    if (!this.#opts.allow.allows(socket.remoteAddress, socket.remoteFamily)) {
      this.#opts.metrics.refused('source_not_allowed');
      if (this.#opts.logger.enabled('debug')) {
        this.#opts.logger.debug('connection refused', { remote: socket.remoteAddress ?? 'unknown' });
      }
      socket.destroy();
    }
  }

  #onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    let status = '400 Bad Request';
    let reason: RefusalReason = 'malformed_request';
    if (err.code === 'HPE_HEADER_OVERFLOW') {
      status = '431 Request Header Fields Too Large';
      reason = 'headers_too_large';
    } else if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      status = '408 Request Timeout';
      reason = 'headers_timeout';
    }
    this.#opts.metrics.refused(reason);
    this.#logClientError(reason, err.code ?? 'unknown');
    socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
  }

  /**
   * Slow and idle clients (header timeouts), oversized and malformed requests: every one is
   * counted in the metrics, but a container that opens many such connections must not write
   * one log line each. At most one line per reason per interval; it says how many it stands for.
   */
  #logClientError(reason: RefusalReason, code: string): void {
    const now = Date.now();
    let s = this.#clientErrors.get(reason);
    if (s === undefined) {
      s = { last: -Infinity, suppressed: 0 };
      this.#clientErrors.set(reason, s);
    }
    if (now - s.last < (this.#opts.clientErrorLogIntervalMs ?? CLIENT_ERROR_LOG_INTERVAL_MS)) {
      s.suppressed++;
      return;
    }
    this.#opts.logger.info('bad client request', {
      reason,
      code,
      ...(s.suppressed > 0 ? { alsoSinceLastLine: s.suppressed } : {}),
    });
    s.last = now;
    s.suppressed = 0;
  }

  #onRequest(req: IncomingMessage, res: ServerResponse): void {
    const url = req.url ?? '';
    if (this.#draining) res.shouldKeepAlive = false;
    const method = req.method ?? 'GET';
    if (!this.#endpoints.methodKnown(method)) {
      // TRACE, TRACK, OPTIONS, WebDAV and anything else no provider API uses.
      this.#refuse(req, res, 405, BODY_METHOD, 'method_not_allowed');
      return;
    }
    const target = parseTarget(url);
    if (!target.ok) {
      if (url === '/healthz' && (req.method === 'GET' || req.method === 'HEAD')) {
        res.writeHead(200, { 'content-type': JSON_TYPE, 'cache-control': 'no-store' });
        res.end(req.method === 'HEAD' ? undefined : BODY_HEALTHY);
        return;
      }
      if (target.reason === 'bad_path') {
        this.#refuse(req, res, 400, BODY_BAD_PATH, 'bad_path');
      } else {
        this.#refuse(req, res, 404, BODY_NOT_FOUND, 'unknown_route');
      }
      return;
    }
    if (this.#keyFileMissing) {
      // Fail closed: with no key file there is no key to inject, and no route to trust.
      this.#refuse(req, res, 503, BODY_NO_KEY_FILE, 'key_file_missing');
      return;
    }
    const route = this.#routes.get(target.id);
    if (route === undefined) {
      // Same answer for every unknown id: no list of ids, no hint which exist.
      this.#refuse(req, res, 404, BODY_NOT_FOUND, 'unknown_route');
      return;
    }
    const verdict = this.#endpoints.check(route.provider, method, target.path);
    if (verdict !== 'ok') {
      if (verdict === 'method') this.#refuse(req, res, 405, BODY_METHOD, 'method_not_allowed');
      else this.#refuse(req, res, 403, BODY_PATH, 'path_not_allowed');
      return;
    }

    // One pass over the raw headers: drop hop-by-hop and credentials (every copy, which
    // `req.headers` would have merged or dropped), note the body framing.
    const raw = req.rawHeaders;
    const headers: string[] = [];
    let contentLength = -1;
    let chunked = false;
    let connectionTokens: string | null = null;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!;
      const lower = name.toLowerCase();
      if (REQUEST_DROP.has(lower)) {
        if (lower === 'content-length') contentLength = Number(raw[i + 1]);
        else if (lower === 'transfer-encoding') chunked = true;
        else if (lower === 'connection')
          connectionTokens = connectionTokens ? `${connectionTokens},${raw[i + 1]}` : raw[i + 1]!;
        continue;
      }
      headers.push(name, raw[i + 1]!);
    }
    if (connectionTokens !== null) dropConnectionNamed(headers, connectionTokens);

    if (contentLength > this.#opts.maxBodyBytes) {
      this.#refuse(req, res, 413, BODY_TOO_LARGE, 'body_too_large');
      return;
    }
    const exchange = new Exchange(this, route, req, res, target.path, contentLength);
    // The response body is scanned for the key, which a compressed body would hide.
    headers.push('accept-encoding', 'identity');
    route.injectCredential(headers);
    this.#active++;
    this.#opts.metrics.active++;
    const path = route.basePath + target.path + (target.query === '' ? '' : `?${target.query}`);
    const options: Dispatcher.DispatchOptions = {
      origin: route.origin,
      path: path === '' ? '/' : path,
      method,
      headers,
      body: null,
    };
    if (chunked) {
      options.body = Readable.from(capped(req, this.#opts.maxBodyBytes, exchange), { objectMode: false });
    } else if (contentLength > 0) {
      headers.push('content-length', String(contentLength));
      // Decided once the parser is done with the bytes that carried the headers.
      process.nextTick(() => this.#dispatchSized(options, exchange, contentLength));
      return;
    } else if (contentLength === 0) {
      options.body = '';
    }
    this.#dispatcher.dispatch(options, exchange);
  }

  /**
   * A sized request body that arrived with its headers (a small JSON call, the common case)
   * is already whole in `req`'s buffer by the next tick: it goes upstream as that one
   * buffer, which costs undici a fraction of streaming it. Any other body is streamed as it
   * arrives. Nothing is waited for either way: the body is never held back to collect it.
   */
  #dispatchSized(options: Dispatcher.DispatchOptions, exchange: Exchange, contentLength: number): void {
    if (exchange.over) return;
    const req = exchange.req;
    if (req.readableLength === contentLength) {
      // Every byte the framing allows is here; only the parser's end-of-message is to come.
      options.body = req.read(contentLength) as Buffer;
      req.resume();
    } else {
      options.body = req;
    }
    this.#dispatcher.dispatch(options, exchange);
  }

  #refuse(
    req: IncomingMessage,
    res: ServerResponse,
    status: number,
    body: string,
    reason: RefusalReason,
  ): void {
    this.#opts.metrics.refused(reason);
    this.#opts.logger.info('request refused', { method: req.method, status, reason });
    // The body of a refused request is not read: close instead of draining it.
    if (req.method !== 'GET' && req.method !== 'HEAD') res.shouldKeepAlive = false;
    const headers: Record<string, string | number> = {
      'content-type': JSON_TYPE,
      'content-length': Buffer.byteLength(body),
    };
    if (status === 405) headers['allow'] = this.#endpoints.allowHeader;
    res.writeHead(status, headers);
    res.end(body);
  }

  /** @internal called by Exchange when a proxied request is over (any outcome). */
  finished(ex: Exchange, outcome: Outcome): void {
    this.#active--;
    const m = this.#opts.metrics;
    m.active--;
    const pm = m.provider(ex.route.provider);
    const seconds = (performance.now() - ex.start) / 1000;
    pm.duration.observe(seconds);
    pm.requests[outcome.status === 0 ? 'aborted' : statusClass(outcome.status)]++;
    pm.requestBytes += ex.requestBytes;
    pm.responseBytes += ex.responseBytes;
    if (outcome.upstreamError) pm.upstreamErrors[outcome.upstreamError]++;
    const log = this.#opts.logger;
    if (log.enabled('info')) {
      // No header values, no query string: id, provider, method, path, status, sizes, time.
      log.info('request', {
        id: ex.route.id,
        provider: ex.route.provider,
        method: ex.req.method,
        path: ex.path.length > 256 ? `${ex.path.slice(0, 256)}…` : ex.path,
        status: outcome.status,
        outcome: outcome.kind,
        ms: Math.round(seconds * 1000),
        in: ex.requestBytes,
        out: ex.responseBytes,
        thread: this.#opts.thread,
      });
    }
    if (this.#active === 0 && this.#idleWaiters.length > 0) {
      for (const w of this.#idleWaiters.splice(0)) w();
    }
  }

  /** @internal */
  observeTtfb(ex: Exchange): void {
    this.#opts.metrics.provider(ex.route.provider).ttfb.observe((performance.now() - ex.start) / 1000);
  }
}

interface Outcome {
  /** HTTP status sent to the client, 0 when the client went away before it. */
  readonly status: number;
  readonly kind: 'ok' | 'client_aborted' | 'upstream_error' | 'refused';
  readonly upstreamError?: UpstreamErrorKind;
}

/**
 * One proxied request: an undici dispatch handler that writes straight into the client
 * response. Backpressure: when the client socket is full the upstream read is paused until
 * 'drain'. The client going away (`res` 'close' before `writableFinished`: `req` 'close'
 * only means the request body was read) aborts the upstream request.
 */
class Exchange implements Dispatcher.DispatchHandler, ScrubState {
  readonly route: Route;
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly path: string;
  readonly start = performance.now();
  requestBytes: number;
  responseBytes = 0;
  readonly #proxy: ProxyServer;
  #controller: Dispatcher.DispatchController | null = null;
  #done = false;
  #clientGone = false;
  #status = 0;
  /** Body bytes the upstream announced (content-length), -1 when it did not. */
  #announced = -1;
  /** A sized body that came in one chunk: sent with `end()`, headers and body in one write. */
  #whole: Buffer | null = null;
  /** Response bytes held back because they could begin the key (`KeyScrubber.push`). */
  carry: Buffer | null = null;
  readonly #onDrain = () => this.#controller?.resume();

  constructor(
    proxy: ProxyServer,
    route: Route,
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
    cl: number,
  ) {
    this.#proxy = proxy;
    this.route = route;
    this.req = req;
    this.res = res;
    this.path = path;
    this.requestBytes = Math.max(cl, 0);
    res.on('close', () => {
      if (res.writableFinished) return;
      this.#clientGone = true;
      if (this.#controller && !this.#controller.aborted)
        this.#controller.abort(new ClientGone('client went away'));
      this.#finish({ status: 0, kind: 'client_aborted' });
    });
  }

  /** The exchange is over (the client left, or an answer was sent): nothing more to do. */
  get over(): boolean {
    return this.#done;
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller;
    if (this.#clientGone) controller.abort(new ClientGone('client went away'));
  }

  onResponseStart(
    controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
  ): void {
    if (this.#clientGone) return;
    this.#proxy.observeTtfb(this);
    const enc = headers['content-encoding'];
    if (enc !== undefined && !(typeof enc === 'string' && enc.trim().toLowerCase() === 'identity')) {
      // Asked for `identity`, sent compressed: the body cannot be checked for the key, so it
      // does not go to the client at all.
      this.#unscannable(controller);
      return;
    }
    const scrub = this.route.scrubber;
    const out: string[] = [];
    for (const name in headers) {
      if (!responseHeaderAllowed(name) || scrub.inName(name)) continue;
      const v = headers[name];
      if (typeof v === 'string') out.push(name, scrub.header(v));
      else if (v !== undefined) for (const x of v) out.push(name, scrub.header(x));
    }
    this.#status = statusCode;
    this.res.writeHead(statusCode, out);
    // Streams (SSE: no content-length) get their headers at once, not with the first event,
    // which a reasoning model may send minutes later. Sized bodies send headers and body in
    // one write.
    const cl = headers['content-length'];
    if (cl === undefined) this.res.flushHeaders();
    else if (typeof cl === 'string') this.#announced = Number(cl);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#clientGone) return;
    this.responseBytes += chunk.length;
    if (this.responseBytes === this.#announced && this.#announced === chunk.length) {
      // The whole sized body in one chunk: the parser ends the message right after it, in
      // the same call, so keeping it for `end()` delays nothing.
      this.#whole = this.route.scrubber.push(this, chunk, true);
      return;
    }
    // Every key replaced by a marker of the same length; only bytes that could begin the key
    // are held back (normally none).
    const out = this.route.scrubber.push(this, chunk, false);
    if (out.length === 0) return;
    if (!this.res.write(out) && !controller.paused) {
      controller.pause();
      this.res.once('drain', this.#onDrain);
    }
  }

  onResponseEnd(): void {
    if (this.#clientGone) return;
    // Bytes held back at the last chunk's end were not the key after all: they go now.
    const rest = this.#whole ?? this.route.scrubber.end(this);
    if (rest === null) this.res.end();
    else this.res.end(rest);
    this.#finish({ status: this.#status, kind: 'ok' });
  }

  onResponseError(_controller: Dispatcher.DispatchController | null, err: Error): void {
    if (this.#clientGone || err instanceof ClientGone || err instanceof Unscannable) return;
    const res = this.res;
    if (res.destroyed || this.req.errored) {
      // The client went away mid-upload: the request body stream failed, not the upstream.
      this.#clientGone = true;
      res.destroy();
      this.#finish({ status: 0, kind: 'client_aborted' });
      return;
    }
    if (res.headersSent) {
      // Mid-stream failure: the client must see a broken stream, not a clean end.
      res.destroy();
      this.#finish({ status: this.#status, kind: 'upstream_error', upstreamError: errorKind(err) });
      return;
    }
    let status: number;
    let body: string;
    let upstreamError: UpstreamErrorKind | undefined = errorKind(err);
    if (err instanceof BodyTooLarge) {
      status = 413;
      body = BODY_TOO_LARGE;
      upstreamError = undefined;
    } else if ((err as NodeJS.ErrnoException).code === 'UND_ERR_INVALID_ARG') {
      status = 400;
      body = BODY_BAD_REQUEST;
      upstreamError = undefined;
    } else if (upstreamError === 'headers_timeout' || upstreamError === 'connect') {
      status =
        (err as NodeJS.ErrnoException).code === 'UND_ERR_CONNECT_TIMEOUT' ||
        upstreamError === 'headers_timeout'
          ? 504
          : 502;
      body = status === 504 ? BODY_GATEWAY_TIMEOUT : BODY_BAD_GATEWAY;
    } else {
      status = 502;
      body = BODY_BAD_GATEWAY;
    }
    res.shouldKeepAlive = false;
    res.writeHead(status, { 'content-type': JSON_TYPE, 'content-length': Buffer.byteLength(body) });
    res.end(body);
    this.#finish({ status, kind: upstreamError ? 'upstream_error' : 'refused', upstreamError });
  }

  #unscannable(controller: Dispatcher.DispatchController): void {
    const res = this.res;
    res.shouldKeepAlive = false;
    res.writeHead(502, { 'content-type': JSON_TYPE, 'content-length': Buffer.byteLength(BODY_UNSCANNABLE) });
    res.end(BODY_UNSCANNABLE);
    this.#finish({ status: 502, kind: 'upstream_error', upstreamError: 'other' });
    // After #finish: the abort's onResponseError finds the exchange over.
    this.#clientGone = true;
    if (!controller.aborted) controller.abort(new Unscannable('compressed upstream body'));
  }

  /** Counts request bytes of chunked bodies (content-length ones are known up front). */
  addRequestBytes(n: number): void {
    this.requestBytes += n;
  }

  #finish(outcome: Outcome): void {
    if (this.#done) return;
    this.#done = true;
    this.res.off('drain', this.#onDrain);
    this.#proxy.finished(this, outcome);
  }
}

function errorKind(err: Error): UpstreamErrorKind {
  const code = (err as NodeJS.ErrnoException).code;
  switch (code) {
    case 'UND_ERR_HEADERS_TIMEOUT':
      return 'headers_timeout';
    case 'UND_ERR_BODY_TIMEOUT':
      return 'body_timeout';
    case 'UND_ERR_CONNECT_TIMEOUT':
    case 'ECONNREFUSED':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return 'connect';
    case 'ECONNRESET':
    case 'UND_ERR_SOCKET':
    case 'EPIPE':
      return 'reset';
    default:
      return 'other';
  }
}

/** `Connection: x-foo` names more hop-by-hop headers: remove those too (RFC 9110 §7.6.1). */
function dropConnectionNamed(headers: string[], tokens: string): void {
  const names = new Set(
    tokens
      .split(',')
      .map((t) => t.trim().toLowerCase())
      .filter((t) => t !== '' && t !== 'close' && t !== 'keep-alive'),
  );
  if (names.size === 0) return;
  for (let i = headers.length - 2; i >= 0; i -= 2) {
    if (names.has(headers[i]!.toLowerCase())) headers.splice(i, 2);
  }
}

/** A chunked request body, streamed with the size cap enforced as bytes arrive. */
async function* capped(req: IncomingMessage, max: number, ex: Exchange): AsyncGenerator<Buffer> {
  let n = 0;
  for await (const chunk of req) {
    const b: Buffer = chunk;
    n += b.length;
    if (n > max) throw new BodyTooLarge('request body too large');
    ex.addRequestBytes(b.length);
    yield b;
  }
}
