import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { findObject, render } from './helm.ts';

// promtool comes from Debian's `prometheus` package (mk/chart.mk adds it to APT_PACKAGES).
const PROMTEST = 'test/integration/chart/alerts.promtest.yaml';
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function promtool(args: string[], cwd: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    execFile('promtool', args, { cwd, encoding: 'utf8', timeout: 120_000 }, (err, stdout, stderr) => {
      const code: unknown = err ? Reflect.get(err, 'code') : 0;
      if (typeof code !== 'number') reject(new Error(`promtool failed to run: ${err?.message}`));
      else resolve({ code, out: stdout + stderr });
    });
  });
}

/** The PrometheusRule's groups as a Prometheus rules file, next to the promtool test cases. */
async function rulesDir(values: Record<string, unknown> = {}): Promise<string> {
  const objects = await render({
    release: 'cannes-operator',
    values: { prometheusRule: { enabled: true, ...values } },
  });
  const spec = findObject(objects, 'PrometheusRule')['spec'] as { groups: unknown };
  const dir = mkdtempSync(join(tmpdir(), 'cannes-alerts-'));
  dirs.push(dir);
  writeFileSync(join(dir, 'rules.yaml'), stringify({ groups: spec.groups }));
  copyFileSync(PROMTEST, join(dir, 'alerts.promtest.yaml'));
  return dir;
}

type PromTest = { name: string; alert_rule_test: { alertname: string; exp_alerts: unknown[] }[] };

describe('the PrometheusRule alerts', () => {
  it('pass promtool check rules', async () => {
    const dir = await rulesDir();
    const res = await promtool(['check', 'rules', 'rules.yaml'], dir);
    expect(res.out).toContain('SUCCESS: 9 rules found');
    expect(res.out).not.toMatch(/warning/i);
    expect(res.code).toBe(0);
  });

  it('pass promtool test rules: each alert fires when it should and stays quiet otherwise', async () => {
    const dir = await rulesDir();
    const res = await promtool(['test', 'rules', 'alerts.promtest.yaml'], dir);
    expect(res.out).toContain('SUCCESS');
    expect(res.code).toBe(0);
  });

  it('have a firing and a quiet case for every alert', async () => {
    const dir = await rulesDir();
    const rules = parse(readFileSync(join(dir, 'rules.yaml'), 'utf8')) as {
      groups: { rules: { alert: string }[] }[];
    };
    const tests = (parse(readFileSync(PROMTEST, 'utf8')) as { tests: PromTest[] }).tests;
    const cases = tests.flatMap((t) => t.alert_rule_test);
    for (const { alert } of rules.groups.flatMap((g) => g.rules)) {
      const mine = cases.filter((c) => c.alertname === alert);
      expect(
        mine.some((c) => c.exp_alerts.length > 0),
        `${alert} fires somewhere`,
      ).toBe(true);
      expect(
        mine.some((c) => c.exp_alerts.length === 0),
        `${alert} stays quiet somewhere`,
      ).toBe(true);
    }
  });

  it('fail the promtool tests when a threshold moves (the tests can fail)', async () => {
    const dir = await rulesDir({ alerts: { reconcileErrors: { ratio: 0.5 } } });
    const res = await promtool(['test', 'rules', 'alerts.promtest.yaml'], dir);
    expect(res.code).not.toBe(0);
    expect(res.out).toContain('CannesReconcileErrorsHigh');
  });

  it('follow prometheusRule.selector for the operator series', async () => {
    const dir = await rulesDir({ selector: 'namespace="ops",service="cannes"' });
    const text = readFileSync(join(dir, 'rules.yaml'), 'utf8');
    expect(text).toContain('cannes_vps_not_ready_seconds{namespace="ops",service="cannes"}');
    expect(text).not.toContain('job="cannes-operator"');
    const res = await promtool(['check', 'rules', 'rules.yaml'], dir);
    expect(res.code).toBe(0);
  });
});
