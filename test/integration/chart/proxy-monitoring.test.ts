/**
 * The proxy bundle (dist/proxy/cannes-proxy.mjs, what runs on every VPS) on loopback, its
 * /metrics checked by promtool and scraped by a real Prometheus that also evaluates the chart's
 * alert rules. Its allow-list excludes loopback, so the test's own requests are refusals.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { missingMetrics } from '../../fixtures/monitoring.ts';
import { freePort } from '../../rig/postgres.ts';
import { findObject, render } from './helm.ts';
import { checkMetrics, type Prometheus, startPrometheus } from './prometheus.ts';

const BUNDLE = 'dist/proxy/cannes-proxy.mjs';

let dir: string;
let proxy: ChildProcess | undefined;
let prometheus: Prometheus | undefined;
let listen = '';
let metricsUrl = '';
const logs: string[] = [];

/** One GET to the proxy; resolves with the status, or 0 when the connection was cut. */
function hit(path: string): Promise<number> {
  const [host, port] = listen.split(':');
  return new Promise((resolve) => {
    const req = request({ host, port: Number(port), path, method: 'GET', timeout: 10_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', () => resolve(0));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

beforeAll(async () => {
  if (!existsSync(BUNDLE)) throw new Error(`${BUNDLE} is missing: run \`make build\` first`);
  dir = mkdtempSync(join(tmpdir(), 'cannes-proxy-metrics-'));
  const keys = join(dir, 'model-keys.json');
  // An obviously fake key to a closed loopback origin: no request is ever forwarded anyway.
  writeFileSync(
    keys,
    JSON.stringify({
      version: 1,
      keys: {
        claude: {
          provider: 'anthropic',
          apiKey: `FAKE-${randomBytes(8).toString('hex')}`,
          baseUrl: 'http://127.0.0.1:9',
        },
      },
    }),
    { mode: 0o600 },
  );
  listen = `127.0.0.1:${await freePort()}`;
  const metricsAddr = `127.0.0.1:${await freePort()}`;
  metricsUrl = `http://${metricsAddr}/metrics`;
  proxy = spawn(
    'setpriv',
    [
      '--pdeathsig',
      'KILL',
      '--',
      process.execPath,
      BUNDLE,
      '--keys',
      keys,
      '--listen',
      listen,
      // A range this machine's loopback is not in: every request of this test is refused.
      '--allow',
      '172.31.254.0/24',
      '--metrics',
      metricsAddr,
      '--log-level',
      'warn',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  proxy.stdout?.on('data', (b: Buffer) => logs.push(b.toString()));
  proxy.stderr?.on('data', (b: Buffer) => logs.push(b.toString()));
  const deadline = Date.now() + 60_000;
  for (;;) {
    const ok = await fetch(metricsUrl).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (proxy.exitCode !== null || Date.now() > deadline)
      throw new Error(`proxy did not start:\n${logs.join('')}`);
    await sleep(200);
  }

  const rule = findObject(
    await render({ release: 'cannes-operator', values: { prometheusRule: { enabled: true } } }),
    'PrometheusRule',
  );
  writeFileSync(join(dir, 'rules.yaml'), stringify({ groups: (rule['spec'] as { groups: unknown }).groups }));
  prometheus = await startPrometheus({
    jobs: [{ job: 'cannes-proxy', targets: [metricsAddr] }],
    ruleFiles: [join(dir, 'rules.yaml')],
  });
});

afterAll(async () => {
  await prometheus?.stop();
  if (proxy && proxy.exitCode === null && proxy.signalCode === null) {
    const exited = new Promise((r) => proxy!.once('exit', r));
    proxy.kill('SIGTERM');
    await Promise.race([exited, sleep(10_000).then(() => proxy!.kill('SIGKILL'))]);
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('the proxy bundle metrics', () => {
  it('counts a refused client in cannes_proxy_refusals_total, as a real Prometheus sees it', async () => {
    for (let i = 0; i < 3; i++) expect(await hit('/proxy/claude/v1/messages')).not.toBe(200);
    const samples = await prometheus!.waitFor(
      'sum(cannes_proxy_refusals_total{job="cannes-proxy"})',
      (s) => (s[0]?.value ?? 0) >= 3,
    );
    expect(samples[0]?.value).toBeGreaterThanOrEqual(3);
    const byReason = await prometheus!.query('cannes_proxy_refusals_total{job="cannes-proxy"} > 0');
    expect(byReason.map((s) => s.metric['reason'])).toContain('source_not_allowed');
  });

  it('serves /metrics that promtool check metrics accepts without a warning', async () => {
    const text = await (await fetch(metricsUrl)).text();
    expect(text).toContain('cannes_proxy_refusals_total');
    expect(await checkMetrics(text), 'promtool check metrics (docs/monitoring.md)').toEqual([]);
  });

  it('exposes every proxy metric that the dashboard and the alerts use (docs/monitoring.md)', async () => {
    expect(missingMetrics(await (await fetch(metricsUrl)).text(), 'proxy')).toEqual([]);
  });

  it('lets the chart alert rules evaluate next to its real series, none of them a proxy alert', async () => {
    const deadline = Date.now() + 60_000;
    let rules = await prometheus!.rules();
    while (!(rules.length > 0 && rules.every((r) => r.health === 'ok')) && Date.now() < deadline) {
      await sleep(500);
      rules = await prometheus!.rules();
    }
    expect(rules.filter((r) => r.health !== 'ok')).toEqual([]);
    // Each proxy's /metrics stays on its VPS loopback: no alert may need it until the tailnet
    // scrape lands (docs/monitoring.md, "The proxy's metrics").
    expect(rules.length).toBeGreaterThan(0);
    expect(rules.filter((r) => /cannes_proxy_/.test(r.query))).toEqual([]);
  });
});
