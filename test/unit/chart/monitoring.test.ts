import { readFileSync } from 'node:fs';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import {
  knownSeries,
  MONITORED_METRICS,
  metricNamesIn,
  missingMetrics,
  seriesNames,
} from '../../fixtures/monitoring.ts';

type Panel = { title?: string; type?: string; targets?: { expr?: string }[]; panels?: Panel[] };

const dashboard = JSON.parse(readFileSync('charts/cannes-operator/files/dashboard.json', 'utf8')) as {
  uid: string;
  panels: Panel[];
};
const exprs = (panels: Panel[]): { title: string; expr: string }[] =>
  panels.flatMap((p) => [
    ...(p.targets ?? []).map((t) => ({ title: p.title ?? '?', expr: t.expr ?? '' })),
    ...exprs(p.panels ?? []),
  ]);

/** Rows of the table under "## The list" in docs/monitoring.md. */
function docsTable(): { name: string; type: string; labels: string[]; source: string }[] {
  const md = readFileSync('docs/monitoring.md', 'utf8');
  const section = md.slice(md.indexOf('## The list'), md.indexOf('\n## ', md.indexOf('## The list') + 1));
  return [...section.matchAll(/^\| `([a-z_:]+)` \| (\w+) \| ([^|]*) \| (\w+) \|/gm)].map((m) => ({
    name: m[1]!,
    type: m[2]!,
    labels: [...m[3]!.matchAll(/`(\w+)`/g)].map((l) => l[1]!),
    source: m[4]!,
  }));
}

describe('the metrics contract (docs/monitoring.md and test/fixtures/monitoring.ts)', () => {
  it('lists the same metrics, types, labels and sources in the doc and the fixture', () => {
    const fromDocs = docsTable();
    expect(fromDocs.length).toBeGreaterThan(15);
    expect(fromDocs).toEqual(
      MONITORED_METRICS.map((m) => ({ name: m.name, type: m.type, labels: [...m.labels], source: m.source })),
    );
  });

  it('names controller-runtime metrics as controller-runtime does and ours with cannes_', () => {
    for (const m of MONITORED_METRICS) {
      expect(m.name).toMatch(
        /^(controller_runtime_|workqueue_|leader_election_|rest_client_|cannes_)[a-z_]+$/,
      );
      if (m.type === 'counter') expect(m.name).toMatch(/_total$/);
      else expect(m.name).not.toMatch(/_total$/);
    }
  });

  it('finds the metric names in PromQL, not the functions, labels, keywords or variables', () => {
    expect(
      metricNamesIn(
        'histogram_quantile(0.95, sum by (controller, le) (rate(controller_runtime_reconcile_time_seconds_bucket{job=~"$job", x="a b"}[$__rate_interval])))',
      ),
    ).toEqual(['controller_runtime_reconcile_time_seconds_bucket']);
    expect(
      metricNamesIn(
        'max by (namespace, name) (a_seconds{job="x"}) > on (namespace, name) b_seconds + 3600 and on () (sum(increase(c_total[15m])) > 0)',
      ),
    ).toEqual(['a_seconds', 'b_seconds', 'c_total']);
    expect(metricNamesIn('absent(up{job="x"} == 1) or vector(0) unless bool 1e3')).toEqual(['up']);
  });
});

describe('the Grafana dashboard', () => {
  const all = exprs(dashboard.panels);

  it('queries only metrics listed in docs/monitoring.md', () => {
    const known = knownSeries();
    expect(all.length).toBeGreaterThan(15);
    const unknown = all.flatMap(({ title, expr }) =>
      metricNamesIn(expr)
        .filter((n) => !known.has(n))
        .map((n) => `${title}: ${n}`),
    );
    expect(unknown).toEqual([]);
  });

  it('shows every listed operator metric somewhere, and no proxy metric (no Prometheus reaches a proxy yet)', () => {
    const used = new Set(all.flatMap(({ expr }) => metricNamesIn(expr)));
    const unused = MONITORED_METRICS.filter((m) => m.source === 'operator')
      .filter((m) => !seriesNames(m).some((s) => used.has(s)))
      .map((m) => m.name);
    expect(unused).toEqual([]);
    expect(all.filter(({ expr }) => /cannes_proxy_/.test(expr))).toEqual([]);
  });

  it("lists only this operator's jobs, and All is those jobs rather than every target", () => {
    const job = (
      dashboard as unknown as {
        templating: {
          list: { name: string; definition?: string; allValue?: string; includeAll?: boolean }[];
        };
      }
    ).templating.list.find((v) => v.name === 'job');
    // A series only the Cannes operator exports; not controller-runtime's, which every operator has.
    expect(job?.definition).toMatch(/^label_values\(cannes_[a-z_]+, job\)$/);
    expect(job?.includeAll).toBe(true);
    expect(job?.allValue).toBeUndefined();
    const up = all.find((e) => e.title === 'Operators up');
    expect(up?.expr).toMatch(/and on \(job, instance\) .*cannes_informer_synced/);
    // Every query is filtered by the job variable.
    expect(all.filter(({ expr }) => !expr.includes('job=~"$job"'))).toEqual([]);
  });

  it('has a stable uid, unique panel ids and a selectable Prometheus data source', () => {
    expect(dashboard.uid).toBe('cannes-operator');
    const ids = JSON.stringify(dashboard).match(/"id": ?\d+/g) ?? [];
    expect(new Set(ids).size).toBe(ids.length);
    for (const { expr } of all) expect(expr).not.toMatch(/\$\{?DS_/);
    expect(JSON.stringify(dashboard)).toContain(['"uid":"$', '{datasource}"'].join(''));
  });
});

describe('missingMetrics (for the operator and proxy scrape tests)', () => {
  it('reports each listed metric a scrape lacks or exposes with another type', async () => {
    const registry = new Registry();
    const registers = [registry];
    new Counter({
      name: 'cannes_proxy_requests_total',
      help: 'h',
      labelNames: ['provider', 'status_class'],
      registers,
    });
    // Wrong type on purpose: the contract says counter.
    new Gauge({ name: 'cannes_proxy_refusals_total', help: 'h', labelNames: ['reason'], registers });
    expect(missingMetrics(await registry.metrics(), 'proxy')).toEqual(['cannes_proxy_refusals_total']);

    registry.removeSingleMetric('cannes_proxy_refusals_total');
    new Counter({ name: 'cannes_proxy_refusals_total', help: 'h', labelNames: ['reason'], registers });
    expect(missingMetrics(await registry.metrics(), 'proxy')).toEqual([]);
    expect(missingMetrics(await registry.metrics(), 'operator')).toContain(
      'controller_runtime_reconcile_total',
    );
  });

  it('accepts a histogram exposed as a histogram', async () => {
    const registry = new Registry();
    new Histogram({ name: 'cannes_provisioning_step_duration_seconds', help: 'h', registers: [registry] });
    expect(missingMetrics(await registry.metrics(), 'operator')).not.toContain(
      'cannes_provisioning_step_duration_seconds',
    );
  });
});
