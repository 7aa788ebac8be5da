/**
 * The operator process with exactly the chart's RBAC (a TokenRequest token of a ServiceAccount
 * bound to the rendered ClusterRole and Role), scraped by a real Prometheus. Real parts: the
 * rig's API server, Postgres; Hetzner is a loopback stub that refuses every token (401), so
 * every Vps reconcile ends quickly in a terminal error and no server is ever created. Also:
 * without any one rule of the chart's RBAC, the operator makes a request that is denied (403,
 * counted in rest_client_requests_total). The full provisioning run with the chart's RBAC
 * belongs to the end-to-end tests (see rig.test.ts).
 *
 * Skipped, saying so, while `operator/main.ts run` is not wired yet.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { missingMetrics } from '../../fixtures/monitoring.ts';
import { LEADER_ELECTION_LEASE, OPERATOR_API_CALLS } from '../../fixtures/operator-rbac.ts';
import { cloudTokenSecret, llmKeySecret, modelKeyManifest, vpsManifest } from '../../lib/manifests.ts';
import { waitFor } from '../../lib/wait.ts';
import { type StartedRig, startRig } from '../../rig/controlplane.ts';
import { createTestDatabase, freePort, type TestDatabase } from '../../rig/postgres.ts';
import { findObject, type K8sObject, render } from './helm.ts';
import { checkMetrics, type Prometheus, startPrometheus } from './prometheus.ts';
import {
  grantKey,
  grantsOfRule,
  installRbacVariant,
  RBAC_DENIAL,
  type RbacVariant,
  rbacRules,
  withoutRule,
} from './rbac.ts';

const probe = spawnSync(process.execPath, ['operator/main.ts', 'run', '--help'], { encoding: 'utf8' });
const RUN_AVAILABLE = probe.status === 0 && probe.stdout.includes('--metrics-bind-address');
if (!RUN_AVAILABLE)
  console.log('[chart] operator `run` is not wired yet: skipping the operator scrape tests');

const suffix = randomBytes(3).toString('hex');
const ns = `cannes-op-${suffix}`;
const userNs = `team-op-${suffix}`;
const POD_NAME = `cannes-operator-${suffix}`;

// A private control plane: the operator watches every namespace, so on the shared rig it would
// reconcile other test files' objects (and they, its).
let rig: StartedRig;
let variant: RbacVariant | undefined;
let db: TestDatabase | undefined;
let hetzner: Server | undefined;
let main: OperatorRun | undefined;
/** The rendered chart (leader election on), kept for the drop-one-rule runs. */
let chart: K8sObject[] = [];
let keysFile = '';
let databaseUrl = '';
let hetznerEndpoint = '';
let prometheus: Prometheus | undefined;
let dir: string | undefined;
let metricsUrl = '';

type OperatorRun = {
  proc: ChildProcess;
  metricsUrl: string;
  readyzUrl: string;
  logs: string[];
  stop(): Promise<void>;
};

/** Starts `operator/main.ts run --leader-elect` as the identity in `kubeconfig`. */
async function startOperator(kubeconfig: string, podName: string): Promise<OperatorRun> {
  const metricsPort = await freePort();
  const probePort = await freePort();
  const logs: string[] = [];
  const proc = spawn(
    'setpriv',
    [
      '--pdeathsig',
      'KILL',
      '--',
      process.execPath,
      'operator/main.ts',
      'run',
      '--leader-elect',
      '--metrics-bind-address',
      `127.0.0.1:${metricsPort}`,
      '--health-probe-bind-address',
      `127.0.0.1:${probePort}`,
    ],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        PATH: process.env['PATH'] ?? '/usr/bin:/bin',
        KUBECONFIG: kubeconfig,
        DATABASE_URL: databaseUrl,
        CANNES_MASTER_KEYS_FILE: keysFile,
        HCLOUD_ENDPOINT: hetznerEndpoint,
        POD_NAME: podName,
        POD_NAMESPACE: ns,
        LOG_LEVEL: 'info',
      },
    },
  );
  proc.stdout?.on('data', (b: Buffer) => logs.push(b.toString()));
  proc.stderr?.on('data', (b: Buffer) => logs.push(b.toString()));
  const exited = new Promise((r) => proc.once('exit', r));
  return {
    proc,
    metricsUrl: `http://127.0.0.1:${metricsPort}/metrics`,
    readyzUrl: `http://127.0.0.1:${probePort}/readyz`,
    logs,
    stop: async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGTERM');
      await Promise.race([exited, sleep(15_000).then(() => proc.kill('SIGKILL'))]);
      await exited;
    },
  };
}

/** Requests that RBAC denied this operator, from its log (see RBAC_DENIAL). */
function denials(run: OperatorRun): string[] {
  return run.logs
    .join('')
    .split('\n')
    .filter((l) => RBAC_DENIAL.test(l));
}

const logTail = (run = main) => (run?.logs ?? []).join('').split('\n').slice(-30).join('\n');

/** `waitFor` that stops early, with the log's tail, when the operator `run` has exited. */
function waitUntil<T>(
  what: string,
  fn: () => Promise<T | undefined>,
  timeoutMs = 120_000,
  run: OperatorRun | undefined = main,
): Promise<T> {
  return waitFor(what, fn, timeoutMs, {
    giveUp: () =>
      run && run.proc.exitCode !== null
        ? `operator exited (${run.proc.exitCode}):\n${logTail(run)}`
        : undefined,
    onTimeout: () => logTail(run),
  });
}

/** A fake token and LLM key (obviously fake values), a Vps and a ModelKey for it, in userNs. */
async function applyWorkload(vps: string, modelKey: string): Promise<void> {
  const fake = `FAKE-${randomBytes(16).toString('hex')}`;
  await rig.kubectl(['apply', '-n', userNs, '-f', '-'], {
    stdin: JSON.stringify({
      apiVersion: 'v1',
      kind: 'List',
      items: [
        cloudTokenSecret(undefined, `${vps}-hcloud`, fake),
        llmKeySecret(undefined, `${modelKey}-llm`, { anthropic: fake }),
        vpsManifest(undefined, vps, { cloudTokenSecretRef: { name: `${vps}-hcloud`, key: 'token' } }),
        modelKeyManifest(undefined, modelKey, {
          vpsRef: { name: vps },
          secretRef: { name: `${modelKey}-llm`, key: 'anthropic' },
        }),
      ],
    }),
  });
}

beforeAll(async () => {
  if (!RUN_AVAILABLE) return;
  rig = await startRig();
  await rig.kubectl(['apply', '--server-side', '-f', 'crds/']);
  await rig.kubectl(['create', 'namespace', ns]);
  await rig.kubectl(['create', 'namespace', userNs]);

  // The chart's RBAC with leader election, bound to a fresh ServiceAccount.
  chart = await render({
    release: 'cannes-operator',
    namespace: ns,
    values: { replicaCount: 2, prometheusRule: { enabled: true } },
  });
  variant = await installRbacVariant(rig, chart, {
    namespace: ns,
    name: 'cannes-operator',
    prefix: `op-${suffix}`,
  });

  db = await createTestDatabase();
  dir = mkdtempSync(join(tmpdir(), 'cannes-op-'));
  keysFile = join(dir, 'master-keys');
  databaseUrl = db.url;
  writeFileSync(keysFile, `k1 ${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
  const rule = findObject(chart, 'PrometheusRule');
  writeFileSync(join(dir, 'rules.yaml'), stringify({ groups: (rule['spec'] as { groups: unknown }).groups }));

  // Hetzner stand-in: every request is unauthorized, a terminal error for the reconcile.
  hetzner = createServer((_req, res) => {
    res
      .writeHead(401, { 'content-type': 'application/json' })
      .end(
        JSON.stringify({ error: { code: 'unauthorized', message: 'unable to authenticate', details: {} } }),
      );
  });
  await new Promise<void>((r) => hetzner!.listen(0, '127.0.0.1', r));
  hetznerEndpoint = `http://127.0.0.1:${(hetzner.address() as AddressInfo).port}/v1`;

  main = await startOperator(variant.kubeconfig, POD_NAME);
  metricsUrl = main.metricsUrl;
  await waitUntil('operator ready', async () => ((await fetch(main!.readyzUrl)).ok ? true : undefined));

  await applyWorkload('agent', 'claude');

  prometheus = await startPrometheus({
    jobs: [{ job: 'cannes-operator', targets: [new URL(metricsUrl).host], honorLabels: true }],
    ruleFiles: [join(dir, 'rules.yaml')],
  });
});

afterAll(async () => {
  await prometheus?.stop();
  await main?.stop();
  await new Promise((r) => (hetzner ? hetzner.close(r) : r(undefined)));
  await variant?.remove();
  await db?.drop();
  if (dir) rmSync(dir, { recursive: true, force: true });
  await rig?.stop();
});

describe.skipIf(!RUN_AVAILABLE)(
  'the operator with exactly the chart RBAC, scraped by a real Prometheus',
  () => {
    it('returns controller_runtime_reconcile_total for both controllers from a Prometheus query', async () => {
      const samples = await prometheus!.waitFor(
        'sum by (controller) (controller_runtime_reconcile_total{job="cannes-operator"})',
        (s) =>
          ['vps', 'modelkey'].every((c) => (s.find((x) => x.metric['controller'] === c)?.value ?? 0) > 0),
        120_000,
      );
      expect(samples.map((s) => s.metric['controller']).sort()).toEqual(['modelkey', 'vps']);
    });

    it('holds its Lease and writes status, finalizers and Events with that RBAC alone', async () => {
      const holder = await waitUntil('lease held', async () => {
        const r = await rig.kubectl(
          ['get', 'lease', LEADER_ELECTION_LEASE, '-n', ns, '-o', 'jsonpath={.spec.holderIdentity}'],
          { check: false },
        );
        return r.stdout.startsWith(POD_NAME) ? r.stdout : undefined;
      });
      expect(holder).toMatch(new RegExp(`^${POD_NAME}`));
      const vps = await waitUntil('Vps status written', async () => {
        const r = await rig.kubectl(['get', 'vps', 'agent', '-n', userNs, '-o', 'json']);
        const v = JSON.parse(r.stdout) as {
          metadata: { finalizers?: string[] };
          status?: { conditions?: unknown[] };
        };
        return v.status?.conditions?.length ? v : undefined;
      });
      expect(vps.metadata.finalizers?.length).toBeGreaterThan(0);
      const events = await waitUntil('an Event', async () => {
        const r = await rig.kubectl(['get', 'events.events.k8s.io', '-n', userNs, '-o', 'name']);
        return r.stdout.trim() ? r.stdout : undefined;
      });
      expect(events).toContain('event.events.k8s.io/');
      expect(denials(main!)).toEqual([]);
    });

    it('serves /metrics that promtool check metrics accepts without a warning', async () => {
      const text = await (await fetch(metricsUrl)).text();
      expect(text).toContain('controller_runtime_reconcile_total');
      // prom-client's nodejs_active_*_total gauges trip promtool: see docs/monitoring.md.
      expect(await checkMetrics(text), 'promtool check metrics (docs/monitoring.md)').toEqual([]);
    });

    it('exposes every operator metric that the dashboard and the alerts use (docs/monitoring.md)', async () => {
      const text = await (await fetch(metricsUrl)).text();
      expect(missingMetrics(text, 'operator')).toEqual([]);
    });

    it('lets the chart alert rules evaluate on its real series', async () => {
      const rules = await waitUntil('rules evaluated', async () => {
        const r = await prometheus!.rules();
        return r.length > 0 && r.every((x) => x.health === 'ok') ? r : undefined;
      });
      expect(rules).toHaveLength(9);
    });

    it('makes no request that the chart RBAC denies', async () => {
      expect(denials(main!)).toEqual([]);
    });

    it('needs every rule: without any one of them the operator makes a request that is denied', async () => {
      // One operator at a time holds the Lease: stop the main one, and drop the Lease so that the
      // next run has to create it.
      await main!.stop();
      const rules = rbacRules(chart);
      const checked: string[] = [];
      for (let i = 0; i < rules.length; i++) {
        const keys = new Set(grantsOfRule(rules[i]!).map(grantKey));
        const calls = OPERATOR_API_CALLS.filter((c) => keys.has(grantKey(c)));
        // A permission the rig's API server never checks (an admission plugin it does not run).
        if (calls.every((c) => c.onlyWith !== undefined)) continue;
        await rig.kubectl(['delete', 'lease', LEADER_ELECTION_LEASE, '-n', ns, '--ignore-not-found']);
        const minus = await installRbacVariant(rig, withoutRule(chart, i), {
          namespace: ns,
          name: `minus-rule-${i}`,
          prefix: `op-minus-${i}-${suffix}`,
        });
        const run = await startOperator(minus.kubeconfig, `minus-rule-${i}-${suffix}`);
        // Fresh objects: the existing ones are reconciled already, and an unchanged status or
        // an Event already recorded is not written again.
        await applyWorkload(`agent-${i}`, `claude-${i}`);
        try {
          const denied = await waitUntil(
            `a 403 without rule ${i} (${[...keys].join(', ')})`,
            async () => {
              const n = denials(run).length;
              return n > 0 ? n : undefined;
            },
            120_000,
            run,
          );
          expect(denied, `without rule ${i}`).toBeGreaterThan(0);
          checked.push(`rule ${i}`);
        } finally {
          await run.stop();
          await minus.remove();
        }
      }
      expect(checked.length).toBeGreaterThanOrEqual(rules.length - 1);
    });
  },
);
