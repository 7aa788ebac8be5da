import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { PROVIDER_NAMES, type ProviderName } from '../common/providers.ts';

/**
 * Every metric of the proxy, on its own registry (served on the `--metrics` listener only).
 * Label values come from closed sets (provider names, status classes, refusal reasons): no
 * key, route id, path or URL ever becomes a label value. The request path adds to plain
 * numbers (`ProviderStats`); prom-client reads them when Prometheus scrapes.
 */
export const REFUSAL_REASONS = [
  'source_not_allowed',
  'unknown_route',
  'bad_path',
  'body_too_large',
  'malformed_request',
  'headers_too_large',
  'headers_timeout',
  'method_not_allowed',
  'path_not_allowed',
  'key_file_missing',
] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

export const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx', 'aborted'] as const;
export type StatusClass = (typeof STATUS_CLASSES)[number];

export const UPSTREAM_ERROR_KINDS = ['connect', 'headers_timeout', 'body_timeout', 'reset', 'other'] as const;
export type UpstreamErrorKind = (typeof UPSTREAM_ERROR_KINDS)[number];

// LLM calls range from a few ms (errors) to many minutes (reasoning models).
const BUCKETS: readonly number[] = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
];

/**
 * What the request path counts for one provider: plain numbers, added to with `+=`.
 * prom-client's own `inc()`/`observe()` validate and hash their labels on every call, which
 * was a visible share of the proxy's CPU per request; these are read into prom-client's
 * metrics only when Prometheus scrapes.
 */
export class ProviderStats {
  readonly requests: Record<StatusClass, number> = zeros(STATUS_CLASSES);
  readonly upstreamErrors: Record<UpstreamErrorKind, number> = zeros(UPSTREAM_ERROR_KINDS);
  requestBytes = 0;
  responseBytes = 0;
  readonly ttfb = new Buckets(BUCKETS);
  readonly duration = new Buckets(BUCKETS);
}

/** A histogram's cells: the count per bucket (not cumulative), the sum and the count. */
export class Buckets {
  readonly bounds: readonly number[];
  readonly counts: number[];
  sum = 0;
  count = 0;

  constructor(bounds: readonly number[]) {
    this.bounds = bounds;
    this.counts = bounds.map(() => 0);
  }

  observe(v: number): void {
    // prom-client refuses these; one NaN would stick in the sum for the process's life.
    if (!Number.isFinite(v)) return;
    this.sum += v;
    this.count++;
    const b = this.bounds;
    for (let i = 0; i < b.length; i++) {
      if (v <= b[i]!) {
        this.counts[i]!++;
        return;
      }
    }
  }
}

function zeros<K extends string>(keys: readonly K[]): Record<K, number> {
  return Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>;
}

/**
 * A prom-client histogram whose values come from `Buckets` at scrape time, in the shape
 * prom-client's own histogram hands its registry (`_bucket` with `le`, `_sum`, `_count`).
 * Only providers that saw a request are shown, as prom-client shows only observed labels.
 */
class ScrapedHistogram extends Histogram<string> {
  readonly #cells: (s: ProviderStats) => Buckets;
  readonly #stats: () => ReadonlyMap<ProviderName, ProviderStats>;

  constructor(
    name: string,
    help: string,
    registers: Registry[],
    stats: () => ReadonlyMap<ProviderName, ProviderStats>,
    cells: (s: ProviderStats) => Buckets,
  ) {
    super({ name, help, labelNames: ['provider'], buckets: [...BUCKETS], registers });
    this.#stats = stats;
    this.#cells = cells;
  }

  /**
   * What prom-client's registry reads for the text format (and its `get()` for JSON, which
   * moves `sharedLabels` into `labels`): its own fields, these values.
   */
  async getForPromString() {
    // prom-client sets these at run time; its typings leave them out.
    const { name, help, type, aggregator } = this as unknown as Record<
      'name' | 'help' | 'type' | 'aggregator',
      string
    >;
    const bucket = `${name}_bucket`;
    const values: ScrapedValue[] = [];
    for (const [provider, s] of this.#stats()) {
      const c = this.#cells(s);
      if (c.count === 0) continue;
      const sharedLabels = { provider };
      let acc = 0;
      for (let i = 0; i < c.bounds.length; i++) {
        acc += c.counts[i]!;
        values.push({ value: acc, labels: { le: c.bounds[i]! }, sharedLabels, metricName: bucket });
      }
      values.push(
        { value: c.count, labels: { le: '+Inf' }, sharedLabels, metricName: bucket },
        { value: c.sum, labels: {}, sharedLabels, metricName: `${name}_sum` },
        { value: c.count, labels: {}, sharedLabels, metricName: `${name}_count` },
      );
    }
    return { name, help, type, values, aggregator };
  }
}

interface ScrapedValue {
  value: number;
  labels: Record<string, string | number>;
  sharedLabels: Record<string, string>;
  metricName: string;
}

/**
 * One thread's counts, posted to the main thread when Prometheus scrapes (`--threads`). A
 * structured clone: plain objects, no label values beyond the closed sets above.
 */
export interface MetricsSnapshot {
  readonly active: number;
  readonly refusals: Readonly<Record<RefusalReason, number>>;
  readonly providers: readonly (readonly [ProviderName, ProviderStats])[];
}

interface MetricsView {
  readonly active: number;
  readonly refusals: Readonly<Record<RefusalReason, number>>;
  readonly byProvider: ReadonlyMap<ProviderName, ProviderStats>;
}

export class ProxyMetrics {
  readonly registry: Registry;
  readonly routes: Gauge;
  /** Proxied requests in flight; the request path adds and subtracts, the gauge reads it. */
  active = 0;
  readonly #refusals: Record<RefusalReason, number> = zeros(REFUSAL_REASONS);
  readonly #reloads: Record<'success' | 'error', Counter.Internal>;
  readonly #byProvider = new Map<ProviderName, ProviderStats>();
  /** The other threads' counts as of the last scrape (`setRemote`). */
  #remote: readonly MetricsSnapshot[] = [];

  constructor(registry: Registry) {
    this.registry = registry;
    const registers = [registry];
    for (const p of PROVIDER_NAMES) this.#byProvider.set(p, new ProviderStats());
    const view = () => this.#view();
    new Counter({
      name: 'cannes_proxy_requests_total',
      help: 'Proxied requests by provider and response status class (aborted: the client went away first)',
      labelNames: ['provider', 'status_class'] as const,
      registers,
      collect() {
        this.reset();
        for (const [provider, s] of view().byProvider) {
          for (const c of STATUS_CLASSES) {
            if (s.requests[c] > 0) this.inc({ provider, status_class: c }, s.requests[c]);
          }
        }
      },
    });
    const byProvider = () => view().byProvider;
    new ScrapedHistogram(
      'cannes_proxy_upstream_ttfb_seconds',
      'Time from receiving a request to the upstream response headers',
      registers,
      byProvider,
      (s) => s.ttfb,
    );
    new ScrapedHistogram(
      'cannes_proxy_request_duration_seconds',
      'Time from receiving a request to the end of the proxied response',
      registers,
      byProvider,
      (s) => s.duration,
    );
    const bytes = (name: string, help: string, field: 'requestBytes' | 'responseBytes') =>
      new Counter({
        name,
        help,
        labelNames: ['provider'] as const,
        registers,
        collect() {
          this.reset();
          for (const [provider, s] of view().byProvider) if (s[field] > 0) this.inc({ provider }, s[field]);
        },
      });
    bytes('cannes_proxy_request_bytes_total', 'Request body bytes sent upstream', 'requestBytes');
    bytes('cannes_proxy_response_bytes_total', 'Response body bytes relayed to clients', 'responseBytes');
    new Counter({
      name: 'cannes_proxy_upstream_errors_total',
      help: 'Upstream failures by kind',
      labelNames: ['provider', 'kind'] as const,
      registers,
      collect() {
        this.reset();
        for (const [provider, s] of view().byProvider) {
          for (const kind of UPSTREAM_ERROR_KINDS) {
            if (s.upstreamErrors[kind] > 0) this.inc({ provider, kind }, s.upstreamErrors[kind]);
          }
        }
      },
    });
    new Gauge({
      name: 'cannes_proxy_active_streams',
      help: 'Proxied requests in flight (request sent upstream, response not finished)',
      registers,
      collect() {
        this.set(view().active);
      },
    });
    this.routes = new Gauge({
      name: 'cannes_proxy_routes',
      help: 'Routes (key ids) in the currently loaded key file',
      registers,
    });
    new Counter({
      name: 'cannes_proxy_refusals_total',
      help: 'Connections or requests refused, by reason',
      labelNames: ['reason'] as const,
      registers,
      collect() {
        this.reset();
        const r = view().refusals;
        for (const reason of REFUSAL_REASONS) if (r[reason] > 0) this.inc({ reason }, r[reason]);
      },
    });
    const reloads = new Counter({
      name: 'cannes_proxy_key_file_reloads_total',
      help: 'Key file (re)loads by result; on error the last good key file stays in use',
      labelNames: ['result'] as const,
      registers,
    });
    this.#reloads = { success: reloads.labels('success'), error: reloads.labels('error') };
  }

  provider(p: ProviderName): ProviderStats {
    return this.#byProvider.get(p)!;
  }

  refused(reason: RefusalReason): void {
    this.#refusals[reason]++;
  }

  reloaded(ok: boolean): void {
    this.#reloads[ok ? 'success' : 'error'].inc();
  }

  /** This thread's counts, for the main thread to add to its own (`--threads`). */
  snapshot(): MetricsSnapshot {
    return { active: this.active, refusals: { ...this.#refusals }, providers: [...this.#byProvider] };
  }

  /** The other threads' latest snapshots; the next scrape shows their sum with this thread's. */
  setRemote(snapshots: readonly MetricsSnapshot[]): void {
    this.#remote = snapshots;
  }

  #view(): MetricsView {
    if (this.#remote.length === 0) {
      return { active: this.active, refusals: this.#refusals, byProvider: this.#byProvider };
    }
    let active = this.active;
    const refusals = { ...this.#refusals };
    const byProvider = new Map<ProviderName, ProviderStats>();
    for (const [p, s] of this.#byProvider) byProvider.set(p, addStats(new ProviderStats(), s));
    for (const snap of this.#remote) {
      active += snap.active;
      for (const r of REFUSAL_REASONS) refusals[r] += snap.refusals[r];
      for (const [p, s] of snap.providers) {
        const into = byProvider.get(p);
        if (into) addStats(into, s);
      }
    }
    return { active, refusals, byProvider };
  }
}

/** Adds `from` into `into` (`from` may be a structured clone: plain objects, same shape). */
function addStats(into: ProviderStats, from: ProviderStats): ProviderStats {
  for (const c of STATUS_CLASSES) into.requests[c] += from.requests[c];
  for (const k of UPSTREAM_ERROR_KINDS) into.upstreamErrors[k] += from.upstreamErrors[k];
  into.requestBytes += from.requestBytes;
  into.responseBytes += from.responseBytes;
  addBuckets(into.ttfb, from.ttfb);
  addBuckets(into.duration, from.duration);
  return into;
}

function addBuckets(into: Buckets, from: Buckets): void {
  for (let i = 0; i < into.counts.length; i++) into.counts[i]! += from.counts[i] ?? 0;
  into.sum += from.sum;
  into.count += from.count;
}

export function statusClass(status: number): StatusClass {
  if (status < 200) return '1xx';
  if (status < 300) return '2xx';
  if (status < 400) return '3xx';
  if (status < 500) return '4xx';
  return '5xx';
}
