import { createHash } from 'node:crypto';
import {
  type HttpMethod,
  IsomorphicFetchHttpLibrary,
  type KubeConfig,
  RequestContext,
  type ResponseContext,
  Watch,
} from '@kubernetes/client-node';
import type { Registry } from 'prom-client';
import { CannesError } from '../../common/errors.ts';
import { type CoreMetrics, coreMetrics } from './metrics.ts';
import { isRecord } from './object.ts';

/**
 * A thin JSON client over `@kubernetes/client-node`: the KubeConfig supplies the cluster, TLS and
 * credentials (token, client certificate, exec plugin) and the library's own fetch transport
 * carries the request, exactly as its generated APIs do.
 *
 * Why not the generated typed APIs: they deserialise built-in kinds into classes with `Date`
 * fields but hand custom resources back as raw JSON, and `Watch` always yields raw JSON. The
 * controller core parses every object once at the boundary with a caller-supplied function, so
 * it wants the same raw wire JSON from every verb.
 */

/** A resource by its REST coordinates. `group` is '' for the core group (ConfigMaps, Secrets). */
export interface ResourceType {
  readonly group: string;
  readonly version: string;
  readonly plural: string;
  readonly kind: string;
  readonly namespaced: boolean;
}

export function apiVersionOf(r: ResourceType): string {
  return r.group === '' ? r.version : `${r.group}/${r.version}`;
}

export function describeResource(r: ResourceType): string {
  return r.group === '' ? r.plural : `${r.plural}.${r.group}`;
}

/** `/api/v1/namespaces/ns/configmaps[/name[/status]]`; omit `namespace` to list across all namespaces. */
export function resourcePath(
  r: ResourceType,
  opts: { namespace?: string | undefined; name?: string | undefined; subresource?: string | undefined } = {},
): string {
  const base = r.group === '' ? `/api/${r.version}` : `/apis/${r.group}/${r.version}`;
  let path = base;
  if (r.namespaced && opts.namespace !== undefined)
    path += `/namespaces/${encodeURIComponent(opts.namespace)}`;
  path += `/${r.plural}`;
  if (opts.name !== undefined) path += `/${encodeURIComponent(opts.name)}`;
  if (opts.subresource !== undefined) path += `/${opts.subresource}`;
  return path;
}

export const ContentType = {
  json: 'application/json',
  mergePatch: 'application/merge-patch+json',
  jsonPatch: 'application/json-patch+json',
  applyPatch: 'application/apply-patch+yaml',
} as const;
export type ContentType = (typeof ContentType)[keyof typeof ContentType];

/**
 * A non-2xx answer from the API server. `reason` is the Status reason (`NotFound`, `Conflict`,
 * `AlreadyExists`, `Expired`, `Invalid`, ...), already CamelCase, prefixed so conditions read
 * `KubeConflict`. Retryable: the controller's backoff decides when to try again.
 */
export class KubeApiError extends CannesError {
  readonly code: number;
  readonly statusReason: string;

  constructor(code: number, statusReason: string, message: string) {
    super(`Kube${statusReason || 'Error'}`, message);
    this.name = 'KubeApiError';
    this.code = code;
    this.statusReason = statusReason;
  }
}

export function isNotFound(err: unknown): boolean {
  return err instanceof KubeApiError && err.code === 404;
}
export function isConflict(err: unknown): boolean {
  return err instanceof KubeApiError && err.code === 409 && err.statusReason !== 'AlreadyExists';
}
export function isAlreadyExists(err: unknown): boolean {
  return err instanceof KubeApiError && err.code === 409 && err.statusReason === 'AlreadyExists';
}
/** 410 Gone / `Expired`: the resourceVersion is too old (compacted); relist. */
export function isGone(err: unknown): boolean {
  return err instanceof KubeApiError && err.code === 410;
}

export interface RequestOptions {
  query?: Record<string, string | number | boolean | undefined>;
  body?: unknown;
  contentType?: ContentType;
  signal?: AbortSignal;
}

export interface WatchEvent {
  type: string;
  object: unknown;
}

/** The narrow surface the controller core needs; fakes implement it in unit tests. */
export interface KubeApi {
  request(method: HttpMethod, path: string, opts?: RequestOptions): Promise<unknown>;
  /**
   * Opens a watch. `onEvent` gets each decoded line; `onDone` is called exactly once when the
   * stream ends for any reason (null for a clean server-side close). Returns a function that aborts.
   */
  watch(
    path: string,
    query: Record<string, string | number | boolean | undefined>,
    onEvent: (ev: WatchEvent) => void,
    onDone: (err: unknown) => void,
  ): Promise<() => void>;
}

export class KubeClient implements KubeApi {
  readonly #kc: KubeConfig;
  readonly #http = new IsomorphicFetchHttpLibrary();
  readonly #dispatchers = new Map<string, NonNullable<ReturnType<RequestContext['getDispatcher']>>>();
  readonly #watch: Watch;
  readonly #metrics: CoreMetrics | undefined;

  readonly #timeoutMs: number;

  /**
   * `timeoutMs` bounds every non-watch request (default 30 s): an API server that accepts the
   * connection but never answers must not hang a reconcile or a lease renewal forever.
   */
  constructor(kc: KubeConfig, opts: { registry?: Registry; timeoutMs?: number } = {}) {
    this.#kc = kc;
    this.#timeoutMs = opts.timeoutMs ?? 30_000;
    this.#watch = new Watch(kc);
    this.#metrics = opts.registry ? coreMetrics(opts.registry) : undefined;
  }

  #count(code: number | string, method: string): void {
    const server = this.#kc.getCurrentCluster()?.server ?? '';
    let host = '';
    try {
      host = new URL(server).host;
    } catch {
      // An unparsable server is reported by the request itself.
    }
    this.#metrics?.restClientRequests.inc({ code: String(code), method, host });
  }

  /**
   * client-node 2.0 builds a new undici Agent, with its own connection pool, on every
   * `applySecurityAuthentication`: each request would open a TLS connection of its own (a
   * handshake on both ends) and keep it alive idle for seconds; at a few hundred Vps that is
   * hundreds of open sockets and most of the operator's memory. Requests share one dispatcher
   * per distinct connection material instead (keep-alive, as client-go does). The key is a
   * digest of what makes the connection, read through the library's own public
   * `applyToHTTPSOptions`, so a rotated client certificate gets a new pool.
   */
  async #shareDispatcher(ctx: RequestContext): Promise<void> {
    const fresh = ctx.getDispatcher();
    if (fresh === undefined) return;
    const o: Parameters<KubeConfig['applyToHTTPSOptions']>[0] = {};
    await this.#kc.applyToHTTPSOptions(o);
    const cluster = this.#kc.getCurrentCluster();
    const h = createHash('sha256');
    for (const part of [
      cluster?.server,
      cluster?.proxyUrl,
      cluster?.skipTLSVerify,
      o.ca,
      o.cert,
      o.key,
      o.pfx,
      o.passphrase,
      o.rejectUnauthorized,
      o.servername,
    ]) {
      const bytes = Buffer.isBuffer(part) ? part : Buffer.from(JSON.stringify(part ?? null));
      h.update(String(bytes.length)).update(':').update(bytes);
    }
    const key = h.digest('hex');
    const shared = this.#dispatchers.get(key);
    if (shared !== undefined) {
      ctx.setDispatcher(shared);
      void fresh.close().catch(() => {});
    } else {
      this.#dispatchers.set(key, fresh);
    }
  }

  get kubeConfig(): KubeConfig {
    return this.#kc;
  }

  async request(method: HttpMethod, path: string, opts: RequestOptions = {}): Promise<unknown> {
    const cluster = this.#kc.getCurrentCluster();
    if (!cluster) throw new CannesError('KubeConfigInvalid', 'kubeconfig has no current cluster');
    const url = new URL(cluster.server.replace(/\/+$/, '') + path);
    for (const [k, v] of Object.entries(opts.query ?? {})) {
      if (v !== undefined) url.searchParams.set(k, String(v));
    }
    const ctx = new RequestContext(url.toString(), method);
    ctx.setHeaderParam('Accept', 'application/json');
    if (opts.body !== undefined) {
      ctx.setHeaderParam('Content-Type', opts.contentType ?? ContentType.json);
      ctx.setBody(JSON.stringify(opts.body));
    }
    const timeout = AbortSignal.timeout(this.#timeoutMs);
    ctx.setSignal(opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout);
    await this.#kc.applySecurityAuthentication(ctx);
    await this.#shareDispatcher(ctx);
    let res: ResponseContext;
    try {
      res = await this.#http.send(ctx).toPromise();
    } catch (err) {
      this.#count('<error>', method);
      throw err;
    }
    this.#count(res.httpStatusCode, method);
    const text = await res.body.text();
    let json: unknown;
    try {
      json = text === '' ? undefined : JSON.parse(text);
    } catch {
      json = undefined;
    }
    if (res.httpStatusCode >= 200 && res.httpStatusCode < 300) return json;
    throw statusError(res.httpStatusCode, json, `${method} ${url.pathname}`);
  }

  async watch(
    path: string,
    query: Record<string, string | number | boolean | undefined>,
    onEvent: (ev: WatchEvent) => void,
    onDone: (err: unknown) => void,
  ): Promise<() => void> {
    let finished = false;
    const doneOnce = (err: unknown): void => {
      if (finished) return;
      finished = true;
      onDone(err);
    };
    let connected = false;
    const controller = await this.#watch.watch(
      path,
      query,
      (type: string, object: unknown) => onEvent({ type, object }),
      (err: unknown) => {
        const e = toWatchError(err);
        if (!connected) this.#count(e instanceof KubeApiError ? e.code : '<error>', 'WATCH');
        doneOnce(e);
      },
    );
    if (!finished) {
      connected = true;
      this.#count(200, 'WATCH');
    }
    return () => {
      controller.abort();
      doneOnce(new CannesError('WatchAborted', 'watch aborted'));
    };
  }
}

/** Builds a KubeApiError from an HTTP status and a (possibly absent) metav1.Status body. */
export function statusError(code: number, body: unknown, what: string): KubeApiError {
  let reason = '';
  let message = '';
  if (isRecord(body)) {
    if (typeof body['reason'] === 'string') reason = body['reason'];
    if (typeof body['message'] === 'string') message = body['message'];
  }
  if (reason === '') reason = defaultReason(code);
  return new KubeApiError(code, reason, `${what}: ${code} ${message || reason}`);
}

function defaultReason(code: number): string {
  switch (code) {
    case 400:
      return 'BadRequest';
    case 401:
      return 'Unauthorized';
    case 403:
      return 'Forbidden';
    case 404:
      return 'NotFound';
    case 409:
      return 'Conflict';
    case 410:
      return 'Expired';
    case 422:
      return 'Invalid';
    case 429:
      return 'TooManyRequests';
    default:
      return code >= 500 ? 'InternalError' : 'Unknown';
  }
}

/** `Watch` reports a non-200 answer as an Error with `statusCode`; keep the code (410 matters). */
function toWatchError(err: unknown): unknown {
  if (err === null || err === undefined) return null;
  if (err instanceof Error) {
    const code: unknown = Reflect.get(err, 'statusCode');
    if (typeof code === 'number') return statusError(code, undefined, 'watch');
  }
  return err;
}
