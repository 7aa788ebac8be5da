import {
  type KubeApi,
  type RequestOptions,
  statusError,
  type WatchEvent,
} from '../../../operator/kube/client.ts';
import type { Clock, Timer } from '../../../operator/kube/clock.ts';
import { isRecord } from '../../../operator/kube/object.ts';
import { waitUntil } from '../../lib/wait.ts';

/** A clock that only moves when a test advances it; timers fire in due order. */
export class ManualClock implements Clock {
  #now = 1_000_000;
  #seq = 0;
  readonly #timers = new Map<number, { at: number; fn: () => void }>();

  now(): number {
    return this.#now;
  }

  setTimeout(fn: () => void, ms: number): Timer {
    const id = ++this.#seq;
    this.#timers.set(id, { at: this.#now + Math.max(0, ms), fn });
    return { cancel: () => this.#timers.delete(id) };
  }

  get pendingTimers(): number {
    return this.#timers.size;
  }

  /** Moves time forward, firing due timers (and letting promises settle between them). */
  async advance(ms: number): Promise<void> {
    const target = this.#now + ms;
    for (;;) {
      await flush();
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const e of this.#timers) if (e[1].at <= target && (!next || e[1].at < next[1].at)) next = e;
      if (!next) break;
      this.#timers.delete(next[0]);
      this.#now = Math.max(this.#now, next[1].at);
      next[1].fn();
    }
    this.#now = target;
    await flush();
  }
}

/** Lets every already-queued promise callback and a few macrotask turns run. */
export async function flush(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise<void>((r) => setImmediate(r));
}

/**
 * Waits (real time, bounded) until `cond` holds; fails the test with `what` otherwise. The
 * fakes answer in-process, so it polls every few milliseconds and a throwing `cond` fails at once.
 */
export function until(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  return waitUntil(what, cond, timeoutMs, { intervalMs: 5, failOnError: true });
}

export interface FakeWatch {
  query: Record<string, string | number | boolean | undefined>;
  send(ev: WatchEvent): void;
  /** Ends the stream: null = clean close. */
  end(err: unknown): void;
  aborted: boolean;
}

/**
 * An in-memory API server for one collection of ConfigMap-like objects: list with
 * resourceVersion, watches a test drives by hand, scripted failures.
 */
export class FakeApi implements KubeApi {
  rv = 100;
  readonly objects = new Map<string, Record<string, unknown>>();
  readonly watches: FakeWatch[] = [];
  readonly calls: Array<{ method: string; path: string; opts: RequestOptions }> = [];
  listFailures = 0;
  /** Optional override for non-list requests. */
  handler: ((method: string, path: string, opts: RequestOptions) => Promise<unknown>) | undefined;

  put(name: string, data: Record<string, string> = {}, namespace = 'ns'): Record<string, unknown> {
    this.rv++;
    const existing = this.objects.get(`${namespace}/${name}`);
    const uid = existing && isRecord(existing['metadata']) ? existing['metadata']['uid'] : `uid-${name}`;
    const obj = {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name, namespace, uid, resourceVersion: String(this.rv) },
      data,
    };
    this.objects.set(`${namespace}/${name}`, obj);
    return obj;
  }

  remove(name: string, namespace = 'ns'): Record<string, unknown> | undefined {
    const obj = this.objects.get(`${namespace}/${name}`);
    this.objects.delete(`${namespace}/${name}`);
    this.rv++;
    return obj;
  }

  get lastWatch(): FakeWatch {
    const w = this.watches.at(-1);
    if (!w) throw new Error('no watch opened');
    return w;
  }

  async request(method: string, path: string, opts: RequestOptions = {}): Promise<unknown> {
    this.calls.push({ method, path, opts });
    if (method === 'GET' && path.endsWith('/configmaps')) {
      if (this.listFailures > 0) {
        this.listFailures--;
        throw statusError(500, undefined, 'list');
      }
      // List items of built-in kinds carry no apiVersion/kind on the wire.
      const items = [...this.objects.values()].map(({ apiVersion: _a, kind: _k, ...rest }) => rest);
      return { metadata: { resourceVersion: String(this.rv) }, items };
    }
    if (this.handler) return this.handler(method, path, opts);
    throw statusError(404, undefined, `${method} ${path}`);
  }

  async watch(
    _path: string,
    query: Record<string, string | number | boolean | undefined>,
    onEvent: (ev: WatchEvent) => void,
    onDone: (err: unknown) => void,
  ): Promise<() => void> {
    let done = false;
    const w: FakeWatch = {
      query,
      aborted: false,
      send: (ev) => {
        if (!done) onEvent(ev);
      },
      end: (err) => {
        if (done) return;
        done = true;
        onDone(err);
      },
    };
    this.watches.push(w);
    return () => {
      w.aborted = true;
      w.end(new Error('aborted'));
    };
  }
}
