import { Counter, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { ProxyMetrics } from '../../../proxy/metrics.ts';

/** The sample lines of one metric family in the text format (no HELP/TYPE). */
function family(text: string, name: string): string[] {
  return text
    .split('\n')
    .filter((l) => l.startsWith(`${name}_`) || l.startsWith(`${name}{`) || l.startsWith(`${name} `));
}

describe('proxy metrics', () => {
  it('formats a histogram exactly as prom-client would for the same observations', async () => {
    const observations = [0.001, 0.02, 0.02, 0.3, 4, 700];
    const ours = new Registry();
    const m = new ProxyMetrics(ours);
    const reference = new Registry();
    const h = new Histogram({
      name: 'cannes_proxy_request_duration_seconds',
      help: 'h',
      labelNames: ['provider'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
      registers: [reference],
    });
    for (const v of observations) {
      m.provider('anthropic').duration.observe(v);
      h.observe({ provider: 'anthropic' }, v);
    }
    // Not a duration: ignored (prom-client would throw), so the sum stays a number.
    m.provider('anthropic').duration.observe(Number.NaN);
    const name = 'cannes_proxy_request_duration_seconds';
    const got = family(await ours.metrics(), name);
    expect(got).toHaveLength(16 + 3);
    expect(got).toEqual(family(await reference.metrics(), name));
    expect(got).toContain(`${name}_bucket{le="+Inf",provider="anthropic"} 6`);
    const json = (await ours.getMetricsAsJSON()).find((x) => x.name === name)!;
    expect(json.type).toBe('histogram');
    expect(json.values).toContainEqual({
      value: 3,
      labels: { le: 0.025, provider: 'anthropic' },
      metricName: `${name}_bucket`,
    });
  });

  it('shows counters and the in-flight gauge from the numbers the request path keeps', async () => {
    const registry = new Registry();
    const m = new ProxyMetrics(registry);
    const p = m.provider('openai');
    p.requests['2xx'] += 5;
    p.requests.aborted += 1;
    p.requestBytes += 1234;
    p.responseBytes += 99;
    p.upstreamErrors.body_timeout += 2;
    m.active = 3;
    const text = await registry.metrics();
    expect(text).toContain('cannes_proxy_requests_total{provider="openai",status_class="2xx"} 5');
    expect(text).toContain('cannes_proxy_requests_total{provider="openai",status_class="aborted"} 1');
    expect(text).toContain('cannes_proxy_request_bytes_total{provider="openai"} 1234');
    expect(text).toContain('cannes_proxy_response_bytes_total{provider="openai"} 99');
    expect(text).toContain('cannes_proxy_upstream_errors_total{provider="openai",kind="body_timeout"} 2');
    expect(text).toContain('cannes_proxy_active_streams 3');
    // Providers and classes that saw nothing are not shown, as with prom-client's own labels.
    expect(text).not.toMatch(/provider="anthropic"/);
    expect(text).not.toMatch(/status_class="5xx"/);
    // A second scrape reads the same totals (a scrape does not consume them).
    p.requests['2xx'] += 1;
    expect(await registry.metrics()).toContain(
      'cannes_proxy_requests_total{provider="openai",status_class="2xx"} 6',
    );
    // The counters are still counters to Prometheus.
    expect(registry.getSingleMetric('cannes_proxy_requests_total')).toBeInstanceOf(Counter);
  });
});
