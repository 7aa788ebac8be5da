import { randomBytes } from 'node:crypto';
import type { Registry } from 'prom-client';
import type { Logger } from '../lib/log.ts';
import { ContentType, isNotFound, type KubeApi, resourcePath } from './client.ts';
import { type CoreMetrics, coreMetrics } from './metrics.ts';
import type { KubeObject } from './object.ts';

export const REPORTING_CONTROLLER = 'cannes.dev/operator';

export const EVENTS_RESOURCE = {
  group: 'events.k8s.io',
  version: 'v1',
  plural: 'events',
  kind: 'Event',
  namespaced: true,
} as const;

export interface EventInput {
  type: 'Normal' | 'Warning';
  /** CamelCase, what happened: `ServerCreated`, `HostKeyMismatch`. */
  reason: string;
  /** CamelCase, what the controller did or was doing: `CreateServer`, `Reconcile`. */
  action: string;
  /** Human-readable, at most 1 KiB, never secret material. */
  note: string;
  related?: KubeObject;
}

export interface EventRecorderOptions {
  api: KubeApi;
  /** This replica, e.g. the pod name (events.k8s.io requires it). */
  reportingInstance: string;
  reportingController?: string;
  logger?: Logger;
  registry?: Registry;
  /** An isomorphic event inside this window bumps the first one's series instead of creating a new one (default 6 min, as client-go). */
  seriesWindowMs?: number;
}

const MAX_NOTE_BYTES = 1024;
const MAX_SERIES_CACHE = 4096;

/**
 * Writes `events.k8s.io/v1` Events. `record` never throws and never waits: a failed write is
 * logged and counted (`cannes_events_failed_total`), because an Event is a courtesy to a person
 * and must not fail a reconcile. Repeats of the same event on the same object within the series
 * window update a `series` (count, lastObservedTime) instead of creating new objects.
 */
export class EventRecorder {
  readonly #api: KubeApi;
  readonly #instance: string;
  readonly #controller: string;
  readonly #log: Logger | undefined;
  readonly #metrics: CoreMetrics | undefined;
  readonly #windowMs: number;
  readonly #pending = new Set<Promise<void>>();
  readonly #series = new Map<string, { namespace: string; name: string; count: number; firstAt: number }>();

  constructor(opts: EventRecorderOptions) {
    this.#api = opts.api;
    this.#instance = opts.reportingInstance;
    this.#controller = opts.reportingController ?? REPORTING_CONTROLLER;
    this.#log = opts.logger;
    this.#metrics = opts.registry ? coreMetrics(opts.registry) : undefined;
    this.#windowMs = opts.seriesWindowMs ?? 6 * 60_000;
  }

  record(regarding: KubeObject, ev: EventInput): void {
    let p: Promise<void>;
    try {
      p = this.#write(regarding, ev).catch((err: unknown) => this.#failed(err, ev));
    } catch (err) {
      this.#failed(err, ev);
      return;
    }
    this.#pending.add(p);
    void p.finally(() => this.#pending.delete(p));
  }

  normal(regarding: KubeObject, reason: string, action: string, note: string): void {
    this.record(regarding, { type: 'Normal', reason, action, note });
  }

  warning(regarding: KubeObject, reason: string, action: string, note: string): void {
    this.record(regarding, { type: 'Warning', reason, action, note });
  }

  /** Resolves once every event recorded so far has been written or has failed (tests, shutdown). */
  async flush(): Promise<void> {
    while (this.#pending.size > 0) await Promise.allSettled([...this.#pending]);
  }

  #failed(err: unknown, ev: EventInput): void {
    this.#metrics?.eventsFailed.inc({ reason: ev.reason.slice(0, 128) });
    this.#log?.warn({ err, eventReason: ev.reason }, 'could not record event');
  }

  async #write(regarding: KubeObject, ev: EventInput): Promise<void> {
    const m = regarding.metadata;
    const namespace = m.namespace ?? 'default';
    const note = truncateUtf8(ev.note, MAX_NOTE_BYTES);
    const seriesKey = [m.uid, ev.type, ev.reason, ev.action, note].join('\u0000');
    const now = Date.now();
    const existing = this.#series.get(seriesKey);
    if (existing && now - existing.firstAt < this.#windowMs) {
      existing.count++;
      try {
        await this.#api.request(
          'PATCH',
          resourcePath(EVENTS_RESOURCE, { namespace: existing.namespace, name: existing.name }),
          {
            contentType: ContentType.mergePatch,
            body: { series: { count: existing.count, lastObservedTime: microTime(new Date(now)) } },
          },
        );
        return;
      } catch (err) {
        if (!isNotFound(err)) throw err;
        this.#series.delete(seriesKey);
      }
    }
    const name = `${m.name.slice(0, 200)}.${now.toString(16)}${randomBytes(4).toString('hex')}`;
    const body = {
      apiVersion: 'events.k8s.io/v1',
      kind: 'Event',
      metadata: { name, namespace },
      eventTime: microTime(new Date(now)),
      reportingController: this.#controller,
      reportingInstance: this.#instance.slice(0, 128),
      action: ev.action.slice(0, 128),
      reason: ev.reason.slice(0, 128),
      note,
      type: ev.type,
      regarding: objectRef(regarding),
      ...(ev.related ? { related: objectRef(ev.related) } : {}),
    };
    await this.#api.request('POST', resourcePath(EVENTS_RESOURCE, { namespace }), { body });
    if (this.#series.size >= MAX_SERIES_CACHE) {
      const oldest = this.#series.keys().next();
      if (!oldest.done) this.#series.delete(oldest.value);
    }
    this.#series.set(seriesKey, { namespace, name, count: 1, firstAt: now });
  }
}

function objectRef(o: KubeObject): Record<string, string> {
  const ref: Record<string, string> = {
    apiVersion: o.apiVersion,
    kind: o.kind,
    name: o.metadata.name,
    uid: o.metadata.uid,
    resourceVersion: o.metadata.resourceVersion,
  };
  if (o.metadata.namespace) ref['namespace'] = o.metadata.namespace;
  return ref;
}

/** metav1.MicroTime: RFC 3339 with microseconds. */
export function microTime(d: Date): string {
  return d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

function truncateUtf8(s: string, maxBytes: number): string {
  const buf = Buffer.from(s, 'utf8');
  if (buf.length <= maxBytes) return s;
  // Cut on a character boundary: decode the prefix and drop a trailing replacement char.
  return buf
    .subarray(0, maxBytes - 3)
    .toString('utf8')
    .replace(/\uFFFD$/, '')
    .concat('...');
}
