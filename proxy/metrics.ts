import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { PROVIDER_NAMES, type ProviderName } from './providers.ts';

/**
 * Every metric of the proxy, on its own registry (served on the `--metrics` listener only).
 * Label values come from closed sets (provider names, status classes, refusal reasons): no
 * key, route id, path or URL ever becomes a label value. Children are resolved once here so
 * the hot path does no label hashing.
 */
export const REFUSAL_REASONS = [
  'source_not_allowed',
  'unknown_route',
  'bad_path',
  'body_too_large',
  'malformed_request',
  'headers_too_large',
  'headers_timeout',
] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

export const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx', 'aborted'] as const;
export type StatusClass = (typeof STATUS_CLASSES)[number];

export const UPSTREAM_ERROR_KINDS = ['connect', 'headers_timeout', 'body_timeout', 'reset', 'other'] as const;
export type UpstreamErrorKind = (typeof UPSTREAM_ERROR_KINDS)[number];

interface ProviderChildren {
  readonly requests: Record<StatusClass, Counter.Internal>;
  readonly ttfb: Histogram.Internal<'provider'>;
  readonly duration: Histogram.Internal<'provider'>;
  readonly requestBytes: Counter.Internal;
  readonly responseBytes: Counter.Internal;
  readonly upstreamErrors: Record<UpstreamErrorKind, Counter.Internal>;
}

export class ProxyMetrics {
  readonly registry: Registry;
  readonly activeStreams: Gauge;
  readonly routes: Gauge;
  readonly #refusals: Record<RefusalReason, Counter.Internal>;
  readonly #reloads: Record<'success' | 'error', Counter.Internal>;
  readonly #byProvider: Map<ProviderName, ProviderChildren>;

  constructor(registry: Registry) {
    this.registry = registry;
    const registers = [registry];
    const requests = new Counter({
      name: 'cannes_proxy_requests_total',
      help: 'Proxied requests by provider and response status class (aborted: the client went away first)',
      labelNames: ['provider', 'status_class'] as const,
      registers,
    });
    // LLM calls range from a few ms (errors) to many minutes (reasoning models).
    const buckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];
    const ttfb = new Histogram({
      name: 'cannes_proxy_upstream_ttfb_seconds',
      help: 'Time from receiving a request to the upstream response headers',
      labelNames: ['provider'] as const,
      buckets,
      registers,
    });
    const duration = new Histogram({
      name: 'cannes_proxy_request_duration_seconds',
      help: 'Time from receiving a request to the end of the proxied response',
      labelNames: ['provider'] as const,
      buckets,
      registers,
    });
    const requestBytes = new Counter({
      name: 'cannes_proxy_request_bytes_total',
      help: 'Request body bytes sent upstream',
      labelNames: ['provider'] as const,
      registers,
    });
    const responseBytes = new Counter({
      name: 'cannes_proxy_response_bytes_total',
      help: 'Response body bytes relayed to clients',
      labelNames: ['provider'] as const,
      registers,
    });
    const upstreamErrors = new Counter({
      name: 'cannes_proxy_upstream_errors_total',
      help: 'Upstream failures by kind',
      labelNames: ['provider', 'kind'] as const,
      registers,
    });
    this.activeStreams = new Gauge({
      name: 'cannes_proxy_active_streams',
      help: 'Proxied requests in flight (request sent upstream, response not finished)',
      registers,
    });
    this.routes = new Gauge({
      name: 'cannes_proxy_routes',
      help: 'Routes (key ids) in the currently loaded key file',
      registers,
    });
    const refusals = new Counter({
      name: 'cannes_proxy_refusals_total',
      help: 'Connections or requests refused, by reason',
      labelNames: ['reason'] as const,
      registers,
    });
    const reloads = new Counter({
      name: 'cannes_proxy_key_file_reloads_total',
      help: 'Key file (re)loads by result; on error the last good key file stays in use',
      labelNames: ['result'] as const,
      registers,
    });
    this.#refusals = Object.fromEntries(REFUSAL_REASONS.map((r) => [r, refusals.labels(r)])) as Record<
      RefusalReason,
      Counter.Internal
    >;
    this.#reloads = { success: reloads.labels('success'), error: reloads.labels('error') };
    this.#byProvider = new Map();
    for (const p of PROVIDER_NAMES) {
      this.#byProvider.set(p, {
        requests: Object.fromEntries(STATUS_CLASSES.map((c) => [c, requests.labels(p, c)])) as Record<
          StatusClass,
          Counter.Internal
        >,
        ttfb: ttfb.labels(p),
        duration: duration.labels(p),
        requestBytes: requestBytes.labels(p),
        responseBytes: responseBytes.labels(p),
        upstreamErrors: Object.fromEntries(
          UPSTREAM_ERROR_KINDS.map((k) => [k, upstreamErrors.labels(p, k)]),
        ) as Record<UpstreamErrorKind, Counter.Internal>,
      });
    }
  }

  provider(p: ProviderName): ProviderChildren {
    return this.#byProvider.get(p)!;
  }

  refused(reason: RefusalReason): void {
    this.#refusals[reason].inc();
  }

  reloaded(ok: boolean): void {
    this.#reloads[ok ? 'success' : 'error'].inc();
  }
}

export function statusClass(status: number): StatusClass {
  if (status < 200) return '1xx';
  if (status < 300) return '2xx';
  if (status < 400) return '3xx';
  if (status < 500) return '4xx';
  return '5xx';
}
