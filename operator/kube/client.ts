import { createInterface } from 'node:readline';
import type { Registry } from 'prom-client';
import { request as send } from 'undici';
import { CannesError } from '../../common/errors.ts';
import type { KubeConnection } from './connection.ts';
import { type CoreMetrics, coreMetrics } from './metrics.ts';
import { isRecord } from './object.ts';

/**
 * A thin JSON client over undici: the KubeConnection (connection.ts) supplies the server, the TLS
 * material and the credentials; requests and watches share its keep-alive pool.
 *
 * Why no typed APIs: the controller core parses every object once at the boundary with a
 * caller-supplied function, so it wants the same raw wire JSON from every verb (and client-node's
 * generated APIs cost ~75 MiB of RSS: connection.ts).
 */

export type HttpMethod = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

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
  readonly #conn: KubeConnection;
  readonly #metrics: CoreMetrics | undefined;
  readonly #timeoutMs: number;
  readonly #watchIdleMs: number;
  readonly #host: string;

  /**
   * `timeoutMs` bounds every non-watch request (default 30 s): an API server that accepts the
   * connection but never answers must not hang a reconcile or a lease renewal forever. A watch that
   * carries nothing for `watchIdleMs` (default 30 s, as client-node's) ends, and is opened again.
   */
  constructor(
    conn: KubeConnection,
    opts: { registry?: Registry; timeoutMs?: number; watchIdleMs?: number } = {},
  ) {
    this.#conn = conn;
    this.#timeoutMs = opts.timeoutMs ?? 30_000;
    this.#watchIdleMs = opts.watchIdleMs ?? 30_000;
    this.#metrics = opts.registry ? coreMetrics(opts.registry) : undefined;
    this.#host = new URL(conn.server).host;
  }

  #count(code: number | string, method: string): void {
    this.#metrics?.restClientRequests.inc({ code: String(code), method, host: this.#host });
  }

  #url(path: string, query: Record<string, string | number | boolean | undefined> = {}): URL {
    const url = new URL(this.#conn.server + path);
    for (const [k, v] of Object.entries(query)) {
      if (v !== undefined) url.searchParams.set(k, String(v));
    }
    return url;
  }

  async request(method: HttpMethod, path: string, opts: RequestOptions = {}): Promise<unknown> {
    const url = this.#url(path, opts.query);
    const { headers, dispatcher } = await this.#conn.prepare();
    headers['accept'] = 'application/json';
    let body: string | undefined;
    if (opts.body !== undefined) {
      headers['content-type'] = opts.contentType ?? ContentType.json;
      body = JSON.stringify(opts.body);
    }
    const timeout = AbortSignal.timeout(this.#timeoutMs);
    let status: number;
    let text: string;
    try {
      const res = await send(url, {
        method,
        headers,
        body,
        dispatcher,
        signal: opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout,
      });
      status = res.statusCode;
      text = await res.body.text();
    } catch (err) {
      this.#count('<error>', method);
      throw err;
    }
    this.#count(status, method);
    let json: unknown;
    try {
      json = text === '' ? undefined : JSON.parse(text);
    } catch {
      json = undefined;
    }
    if (status >= 200 && status < 300) return json;
    throw statusError(status, json, `${method} ${url.pathname}`);
  }

  async watch(
    path: string,
    query: Record<string, string | number | boolean | undefined>,
    onEvent: (ev: WatchEvent) => void,
    onDone: (err: unknown) => void,
  ): Promise<() => void> {
    const url = this.#url(path, { ...query, watch: 'true' });
    const controller = new AbortController();
    let finished = false;
    let idle: NodeJS.Timeout | undefined;
    const doneOnce = (err: unknown): void => {
      if (finished) return;
      finished = true;
      clearTimeout(idle);
      controller.abort();
      onDone(err);
    };
    const touch = () => {
      clearTimeout(idle);
      // A `TimeoutError`, as client-node's watch ended: the informer re-watches at once on it
      // (a quiet watch is no fault) instead of backing off as after an error.
      idle = setTimeout(
        () => doneOnce(new DOMException(`watch idle for ${this.#watchIdleMs} ms`, 'TimeoutError')),
        this.#watchIdleMs,
      );
      idle.unref();
    };
    try {
      touch();
      const { headers, dispatcher } = await this.#conn.prepare();
      const res = await send(url, { method: 'GET', headers, dispatcher, signal: controller.signal });
      if (res.statusCode !== 200) {
        const text = await res.body.text().catch(() => '');
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        this.#count(res.statusCode, 'WATCH');
        doneOnce(statusError(res.statusCode, json, 'watch'));
      } else {
        this.#count(200, 'WATCH');
        touch();
        const body = res.body;
        body.on('data', touch);
        body.on('error', (e) => doneOnce(controller.signal.aborted ? null : e));
        body.on('close', () => doneOnce(null));
        const lines = createInterface({ input: body, crlfDelay: Number.POSITIVE_INFINITY });
        lines.on('line', (line) => {
          if (finished) return;
          let ev: unknown;
          try {
            ev = JSON.parse(line);
          } catch {
            return; // not a watch event line: skipped, as client-node does
          }
          if (isRecord(ev) && typeof ev['type'] === 'string')
            onEvent({ type: ev['type'], object: ev['object'] });
        });
        // readline re-emits the body's errors (an abort among them): handled, as the body's are.
        lines.on('error', (e) => doneOnce(controller.signal.aborted ? null : e));
        lines.on('close', () => doneOnce(null));
      }
    } catch (err) {
      if (!finished) this.#count('<error>', 'WATCH');
      doneOnce(err);
    }
    return () => {
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
