import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Counter, Gauge, Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { findObject, render } from './helm.ts';
import { checkMetrics, type Prometheus, startPrometheus } from './prometheus.ts';

// Until the operator runs in an integration test, a small prom-client server stands in for it:
// it exposes controller_runtime_reconcile_total for both controllers, as the operator will.
const registry = new Registry();
const reconciles = new Counter({
  name: 'controller_runtime_reconcile_total',
  help: 'Total number of reconciliations per controller',
  labelNames: ['controller', 'result'] as const,
  registers: [registry],
});
new Gauge({
  name: 'cannes_vps_ready',
  help: 'Whether the Vps is Ready',
  labelNames: ['namespace', 'name'] as const,
  registers: [registry],
}).set({ namespace: 'team-a', name: 'web' }, 1);
reconciles.inc({ controller: 'vps', result: 'success' }, 3);
reconciles.inc({ controller: 'modelkey', result: 'success' }, 2);

let server: Server;
let target: string;
let prometheus: Prometheus | undefined;
let rulesDir: string;

beforeAll(async () => {
  server = createServer((req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    void registry
      .metrics()
      .then((text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  target = `127.0.0.1:${(server.address() as AddressInfo).port}`;

  // The chart's alert rules, loaded into the real Prometheus too.
  const rule = findObject(
    await render({ release: 'cannes-operator', values: { prometheusRule: { enabled: true } } }),
    'PrometheusRule',
  );
  rulesDir = mkdtempSync(join(tmpdir(), 'cannes-prom-rules-'));
  writeFileSync(
    join(rulesDir, 'rules.yaml'),
    stringify({ groups: (rule['spec'] as { groups: unknown }).groups }),
  );

  // A port nothing listens on: its target must show as down.
  const closed = createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const closedPort = (closed.address() as AddressInfo).port;
  await new Promise((r) => closed.close(r));

  prometheus = await startPrometheus({
    jobs: [
      { job: 'cannes-operator', targets: [target], honorLabels: true },
      { job: 'gone', targets: [`127.0.0.1:${closedPort}`] },
    ],
    ruleFiles: [join(rulesDir, 'rules.yaml')],
  });
});

afterAll(async () => {
  await prometheus?.stop();
  await new Promise((r) => server?.close(r));
  if (rulesDir) rmSync(rulesDir, { recursive: true, force: true });
});

describe('a real Prometheus started by the test helper', () => {
  it('scrapes a loopback target and answers controller_runtime_reconcile_total for both controllers', async () => {
    const samples = await prometheus!.waitFor(
      'controller_runtime_reconcile_total{job="cannes-operator"}',
      (s) => s.length >= 2,
    );
    expect(samples.map((s) => s.metric['controller']).sort()).toEqual(['modelkey', 'vps']);
    expect(samples.find((s) => s.metric['controller'] === 'vps')?.value).toBe(3);
  });

  it('keeps the exported namespace label with honor_labels', async () => {
    const samples = await prometheus!.waitFor('cannes_vps_ready', (s) => s.length > 0);
    expect(samples[0]?.metric).toMatchObject({ namespace: 'team-a', name: 'web', job: 'cannes-operator' });
  });

  it('shows a target that does not answer as down', async () => {
    const up = await prometheus!.waitFor('up{job="gone"}', (s) => s.length > 0);
    expect(up[0]?.value).toBe(0);
    const ours = await prometheus!.waitFor('up{job="cannes-operator"}', (s) => s.length > 0);
    expect(ours[0]?.value).toBe(1);
  });

  it('loads and evaluates the chart alert rules without errors', async () => {
    const deadline = Date.now() + 60_000;
    let rules = await prometheus!.rules();
    while (rules.some((r) => r.health !== 'ok') && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 500));
      rules = await prometheus!.rules();
    }
    expect(rules.map((r) => r.name)).toHaveLength(9);
    expect(rules.filter((r) => r.health !== 'ok')).toEqual([]);
  });

  it('refuses to scrape anything but loopback', async () => {
    await expect(startPrometheus({ jobs: [{ job: 'x', targets: ['192.0.2.1:9090'] }] })).rejects.toThrow(
      /not on loopback/,
    );
  });
});

describe('promtool check metrics', () => {
  it('passes a prom-client exposition and reports a counter without _total', async () => {
    expect(await checkMetrics(await registry.metrics())).toEqual([]);
    const bad = '# HELP cannes_bad A counter\n# TYPE cannes_bad counter\ncannes_bad 1\n';
    expect((await checkMetrics(bad)).join('\n')).toMatch(
      /cannes_bad counter metrics should have "_total" suffix/,
    );
  });
});
