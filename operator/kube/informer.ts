import type { Registry } from 'prom-client';
import type { Logger } from '../lib/log.ts';
import {
  apiVersionOf,
  describeResource,
  isGone,
  type KubeApi,
  type ResourceType,
  resourcePath,
  statusError,
  type WatchEvent,
} from './client.ts';
import { type Clock, jitter, realClock, sleep, type Timer } from './clock.ts';
import { type CoreMetrics, coreMetrics } from './metrics.ts';
import { isRecord, type KubeObject, objectKey } from './object.ts';

export type InformerEvent<T> =
  | { type: 'add'; object: T }
  | { type: 'update'; object: T; old: T }
  | { type: 'delete'; object: T }
  /** A periodic relist found the object unchanged: reconcile it anyway (level-triggered resync). */
  | { type: 'resync'; object: T };

export type InformerHandler<T> = (ev: InformerEvent<T>) => void;

export interface InformerOptions<T extends KubeObject> {
  api: KubeApi;
  resource: ResourceType;
  /** Turns wire JSON into T or throws; objects that fail are counted, logged and left out of the cache. */
  parse: (raw: unknown) => T;
  /** Watch one namespace; omit for all namespaces (or a cluster-scoped resource). */
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
  /** Full relist that re-delivers every object (default 10 min; 0 disables). */
  resyncMs?: number;
  /** Restart a watch that delivered no event or bookmark for this long (default 120 s). */
  staleMs?: number;
  /** Jittered exponential backoff between failed list/watch attempts (default 800 ms → 30 s). */
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /** Page size of the list calls (default 500). */
  pageSize?: number;
  logger?: Logger;
  registry?: Registry;
  clock?: Clock;
}

type WatchEnd =
  | { kind: 'closed' }
  | { kind: 'timeout' }
  | { kind: 'stale' }
  | { kind: 'expired' }
  | { kind: 'resync' }
  | { kind: 'stopped' }
  | { kind: 'error'; err: unknown; connected: boolean };

/**
 * A list+watch cache that never silently stops (client-node's `makeInformer` gives up on any
 * error other than 410). It:
 * - lists (paginated), then watches from the list's resourceVersion with bookmarks;
 * - restarts the watch at once when the server or client-node's inactivity timer closes it;
 * - restarts with jittered exponential backoff after any error, relisting when the error was
 *   on the list;
 * - relists on 410 Gone / `Expired` (history compacted), diffing against the cache so that
 *   objects deleted meanwhile are reported as deletes;
 * - treats a watch with no event or bookmark for `staleMs` as dead and restarts it;
 * - relists in full every `resyncMs`, reporting unchanged objects as `resync` so every key is
 *   reconciled again.
 */
export class Informer<T extends KubeObject> {
  readonly #opts: InformerOptions<T>;
  readonly #clock: Clock;
  readonly #store = new Map<string, T>();
  readonly #handlers = new Set<InformerHandler<T>>();
  readonly #syncWaiters: Array<() => void> = [];
  readonly #label: string;
  readonly #metrics: CoreMetrics | undefined;
  #resourceVersion = '';
  #synced = false;
  #running: Promise<void> | undefined;
  #stopController: AbortController | undefined;
  #endWatch: ((end: WatchEnd) => void) | undefined;
  #resyncTimer: Timer | undefined;
  #resyncDue = false;
  #lastEventAt = 0;

  constructor(opts: InformerOptions<T>) {
    this.#opts = opts;
    this.#clock = opts.clock ?? realClock;
    this.#label = describeResource(opts.resource) + (opts.namespace ? `@${opts.namespace}` : '');
    this.#metrics = opts.registry ? coreMetrics(opts.registry) : undefined;
  }

  get resource(): ResourceType {
    return this.#opts.resource;
  }

  /** True once the first list has filled the cache. */
  get hasSynced(): boolean {
    return this.#synced;
  }

  /** Milliseconds (clock time) of the last watch event or bookmark, for health checks. */
  get lastEventAt(): number {
    return this.#lastEventAt;
  }

  get(key: string): T | undefined {
    return this.#store.get(key);
  }

  list(): T[] {
    return [...this.#store.values()];
  }

  keys(): string[] {
    return [...this.#store.keys()];
  }

  /** Subscribes to cache changes; returns the unsubscribe function. */
  on(handler: InformerHandler<T>): () => void {
    this.#handlers.add(handler);
    return () => this.#handlers.delete(handler);
  }

  waitForSync(signal?: AbortSignal): Promise<void> {
    if (this.#synced) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onAbort = (): void => reject(signal?.reason);
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#syncWaiters.push(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      });
    });
  }

  start(): void {
    if (this.#running) return;
    this.#stopController = new AbortController();
    this.#running = this.#run(this.#stopController.signal);
    this.#scheduleResync();
  }

  async stop(): Promise<void> {
    this.#stopController?.abort(new Error('informer stopped'));
    this.#resyncTimer?.cancel();
    this.#endWatch?.({ kind: 'stopped' });
    await this.#running;
    this.#running = undefined;
  }

  #scheduleResync(): void {
    const every = this.#opts.resyncMs ?? 600_000;
    if (every <= 0) return;
    this.#resyncTimer = this.#clock.setTimeout(() => {
      this.#resyncDue = true;
      this.#endWatch?.({ kind: 'resync' });
      this.#scheduleResync();
    }, every);
  }

  async #run(signal: AbortSignal): Promise<void> {
    const log = this.#opts.logger;
    const initial = this.#opts.backoffInitialMs ?? 800;
    const max = this.#opts.backoffMaxMs ?? 30_000;
    let delay = initial;
    let listReason: string | undefined = 'initial';
    const backoff = async (): Promise<void> => {
      const wait = jitter(delay, 1.0);
      delay = Math.min(delay * 2, max);
      await sleep(wait, signal, this.#clock).catch(() => {});
    };
    while (!signal.aborted) {
      if (this.#resyncDue) {
        this.#resyncDue = false;
        listReason ??= 'resync';
      }
      if (listReason !== undefined) {
        try {
          await this.#relist(listReason, signal);
          listReason = undefined;
          delay = initial;
        } catch (err) {
          if (signal.aborted) break;
          log?.warn({ err, resource: this.#label }, 'list failed; retrying with backoff');
          listReason = 'error';
          await backoff();
          continue;
        }
      }
      const watchStartedAt = this.#clock.now();
      const end = await this.#watchOnce();
      // A watch that delivered something was healthy for a while: start the backoff afresh.
      if (this.#lastEventAt > watchStartedAt) delay = initial;
      if (end.kind === 'stopped' || signal.aborted) break;
      this.#metrics?.informerWatchRestarts.inc({ resource: this.#label, reason: end.kind });
      switch (end.kind) {
        case 'closed':
          // A server (or proxy) that closes every watch at once must not spin us in a hot loop.
          if (this.#lastEventAt <= watchStartedAt && this.#clock.now() - watchStartedAt < 1000) {
            await backoff();
          } else {
            delay = initial;
          }
          break;
        case 'timeout':
        case 'stale':
          // Resume from the last resourceVersion; nothing was lost.
          delay = initial;
          break;
        case 'expired':
          log?.info({ resource: this.#label }, 'watch expired (410); relisting');
          listReason = 'expired';
          break;
        case 'resync':
          listReason = 'resync';
          this.#resyncDue = false;
          break;
        case 'error':
          log?.warn({ err: end.err, resource: this.#label }, 'watch failed; restarting with backoff');
          await backoff();
          break;
      }
    }
  }

  async #relist(reason: string, signal: AbortSignal): Promise<void> {
    const { api, resource } = this.#opts;
    this.#metrics?.informerRelists.inc({ resource: this.#label, reason });
    const fresh = new Map<string, T>();
    let cont: string | undefined;
    let rv = '';
    do {
      const page = await api.request('GET', resourcePath(resource, { namespace: this.#opts.namespace }), {
        query: {
          labelSelector: this.#opts.labelSelector,
          fieldSelector: this.#opts.fieldSelector,
          limit: this.#opts.pageSize ?? 500,
          continue: cont,
        },
        signal,
      });
      if (!isRecord(page) || !Array.isArray(page['items']) || !isRecord(page['metadata'])) {
        throw statusError(500, undefined, `list ${this.#label}: malformed list response`);
      }
      const meta = page['metadata'];
      rv = typeof meta['resourceVersion'] === 'string' ? meta['resourceVersion'] : rv;
      cont = typeof meta['continue'] === 'string' && meta['continue'] !== '' ? meta['continue'] : undefined;
      for (const item of page['items']) {
        const obj = this.#parse(withTypeMeta(item, resource));
        if (obj) fresh.set(objectKey(obj.metadata), obj);
      }
    } while (cont !== undefined);

    // Replace the cache, reporting the difference (client-go's DeltaFIFO.Replace).
    const events: InformerEvent<T>[] = [];
    for (const [key, old] of this.#store) {
      if (!fresh.has(key)) events.push({ type: 'delete', object: old });
    }
    for (const [key, obj] of fresh) {
      const old = this.#store.get(key);
      if (!old) events.push({ type: 'add', object: obj });
      else if (old.metadata.resourceVersion !== obj.metadata.resourceVersion)
        events.push({ type: 'update', object: obj, old });
      else if (reason === 'resync') events.push({ type: 'resync', object: obj });
    }
    this.#store.clear();
    for (const [k, v] of fresh) this.#store.set(k, v);
    this.#resourceVersion = rv;
    this.#metrics?.informerObjects.set({ resource: this.#label }, this.#store.size);
    this.#opts.logger?.debug({ resource: this.#label, reason, objects: fresh.size, rv }, 'listed');
    if (!this.#synced) {
      this.#synced = true;
      this.#metrics?.informerSynced.set({ resource: this.#label }, 1);
      for (const w of this.#syncWaiters.splice(0)) w();
    }
    for (const ev of events) this.#emit(ev);
  }

  #watchOnce(): Promise<WatchEnd> {
    const { api, resource } = this.#opts;
    const staleMs = this.#opts.staleMs ?? 120_000;
    return new Promise<WatchEnd>((resolve) => {
      let ended = false;
      let connected = false;
      let abort: (() => void) | undefined;
      let staleTimer: Timer | undefined;
      const armStale = (): void => {
        staleTimer?.cancel();
        staleTimer = this.#clock.setTimeout(() => end({ kind: 'stale' }), staleMs);
      };
      const end = (e: WatchEnd): void => {
        if (ended) return;
        ended = true;
        staleTimer?.cancel();
        this.#endWatch = undefined;
        abort?.();
        resolve(e);
      };
      this.#endWatch = end;
      if (this.#resyncDue) {
        end({ kind: 'resync' });
        return;
      }
      armStale();
      const onEvent = (ev: WatchEvent): void => {
        if (ended) return;
        this.#lastEventAt = this.#clock.now();
        armStale();
        const next = this.#handleWatchEvent(ev);
        if (next) end(next);
      };
      const onDone = (err: unknown): void => {
        if (err === null || err === undefined) end({ kind: 'closed' });
        else if (isGone(err)) end({ kind: 'expired' });
        else if (connected && err instanceof Error && err.name === 'TimeoutError') end({ kind: 'timeout' });
        else end({ kind: 'error', err, connected });
      };
      // client-go picks a random server-side timeout in [5, 10) min so watches do not expire together.
      const timeoutSeconds = Math.floor(300 + Math.random() * 300);
      api
        .watch(
          resourcePath(resource, { namespace: this.#opts.namespace }),
          {
            resourceVersion: this.#resourceVersion,
            allowWatchBookmarks: true,
            timeoutSeconds,
            labelSelector: this.#opts.labelSelector,
            fieldSelector: this.#opts.fieldSelector,
          },
          onEvent,
          onDone,
        )
        .then(
          (abortFn) => {
            connected = true;
            abort = abortFn;
            if (ended) abortFn();
          },
          (err: unknown) => end({ kind: 'error', err, connected: false }),
        );
    });
  }

  /** Applies one watch event to the cache; returns how the watch must end, if it must. */
  #handleWatchEvent(ev: WatchEvent): WatchEnd | undefined {
    const raw = ev.object;
    switch (ev.type) {
      case 'BOOKMARK': {
        const rv = rawResourceVersion(raw);
        if (rv) this.#resourceVersion = rv;
        return undefined;
      }
      case 'ERROR': {
        const code = isRecord(raw) && typeof raw['code'] === 'number' ? raw['code'] : 500;
        const err = statusError(code, raw, `watch ${this.#label}`);
        return code === 410 ? { kind: 'expired' } : { kind: 'error', err, connected: true };
      }
      case 'ADDED':
      case 'MODIFIED':
      case 'DELETED': {
        const rv = rawResourceVersion(raw);
        if (rv) this.#resourceVersion = rv;
        const obj = this.#parse(withTypeMeta(raw, this.#opts.resource));
        if (!obj) {
          // An object we cannot parse must not linger in the cache with stale contents: a
          // reconcile then finds nothing and does nothing, rather than act on old data.
          const key = rawKey(raw);
          const old = key === undefined ? undefined : this.#store.get(key);
          if (key !== undefined && old) {
            this.#store.delete(key);
            if (ev.type === 'DELETED') this.#emit({ type: 'delete', object: old });
          }
          return undefined;
        }
        const key = objectKey(obj.metadata);
        const old = this.#store.get(key);
        if (ev.type === 'DELETED') {
          this.#store.delete(key);
          this.#emit({ type: 'delete', object: old ?? obj });
        } else {
          this.#store.set(key, obj);
          this.#emit(old ? { type: 'update', object: obj, old } : { type: 'add', object: obj });
        }
        this.#metrics?.informerObjects.set({ resource: this.#label }, this.#store.size);
        return undefined;
      }
      default:
        return undefined;
    }
  }

  #parse(raw: unknown): T | undefined {
    try {
      return this.#opts.parse(raw);
    } catch (err) {
      this.#metrics?.informerParseErrors.inc({ resource: this.#label });
      const meta = isRecord(raw) && isRecord(raw['metadata']) ? raw['metadata'] : {};
      this.#opts.logger?.warn(
        { err, resource: this.#label, namespace: meta['namespace'], name: meta['name'] },
        'object failed to parse; left out of the cache',
      );
      return undefined;
    }
  }

  #emit(ev: InformerEvent<T>): void {
    for (const h of this.#handlers) {
      try {
        h(ev);
      } catch (err) {
        this.#opts.logger?.error({ err, resource: this.#label }, 'informer handler threw');
      }
    }
  }
}

/** List items of built-in kinds come without apiVersion/kind; fill them in so one parser fits both. */
function withTypeMeta(raw: unknown, r: ResourceType): unknown {
  if (!isRecord(raw)) return raw;
  return { apiVersion: apiVersionOf(r), kind: r.kind, ...raw };
}

function rawKey(raw: unknown): string | undefined {
  if (!isRecord(raw) || !isRecord(raw['metadata'])) return undefined;
  const { name, namespace } = raw['metadata'];
  if (typeof name !== 'string') return undefined;
  return objectKey({ name, namespace: typeof namespace === 'string' ? namespace : undefined });
}

function rawResourceVersion(raw: unknown): string | undefined {
  if (!isRecord(raw) || !isRecord(raw['metadata'])) return undefined;
  const rv = raw['metadata']['resourceVersion'];
  return typeof rv === 'string' && rv !== '' ? rv : undefined;
}
