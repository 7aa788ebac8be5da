/**
 * A whole provisioning as the chart's ServiceAccount: the operator runs with a TokenRequest
 * token of a ServiceAccount bound to exactly the rendered ClusterRole and Role (leader election
 * on), on the system harness (the rig's API server, Postgres, the Hetzner simulator whose
 * servers are real hosts, fake LLM upstreams). The Vps reaches Ready, the cloud token and the
 * LLM keys are purged from their Secrets (Secret patch), the gateway token Secret is created
 * (Secret create), and the API server denied nothing, RBAC and the chart's admission policy
 * for Secret writes included. That each rule is needed is shown in
 * operator-monitoring.test.ts (without any one of them a request is denied).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { metricsWithoutSamples } from '../../fixtures/monitoring.ts';
import {
  exampleManifests,
  type OperatorProcess,
  type System,
  startSystem,
  waitFor,
} from '../../lib/system.ts';
import { installAdmissionPolicy } from './admission.ts';
import { render } from './helm.ts';
import { type Prometheus, startPrometheus } from './prometheus.ts';
import { installRbacVariant, RBAC_DENIAL, type RbacVariant } from './rbac.ts';

let s: System;
let op: OperatorProcess;
let variant: RbacVariant | undefined;
let removePolicy: (() => Promise<void>) | undefined;
let prometheus: Prometheus | undefined;
const diag = () => `operator log tail:\n${op?.logs.join('').split('\n').slice(-40).join('\n')}`;

/** Operator metrics that have no sample yet after a whole provisioning, and why (2026-11-25). */
/** Operator metrics allowed to have no sample yet (none: every listed metric is exported). */
const KNOWN_GAPS: Record<string, string> = {};

type Obj = {
  metadata: { annotations?: Record<string, string> };
  status?: Record<string, unknown>;
  data?: Record<string, string>;
};

beforeAll(async () => {
  s = await startSystem();
  const chart = await render({
    release: 'cannes-operator',
    namespace: s.namespace,
    values: { replicaCount: 2 },
  });
  variant = await installRbacVariant(s.rig, chart, {
    namespace: s.namespace,
    name: 'cannes-operator',
    prefix: `rbac-${s.namespace}`,
  });
  // ... and under the chart's admission policy for its Secret writes (purges, the gateway Secret).
  removePolicy = await installAdmissionPolicy(s.rig, chart, `rbac-${s.namespace}`);
  op = await s.startOperator(['--leader-elect'], {
    KUBECONFIG: variant.kubeconfig,
    POD_NAME: 'cannes-operator-chart-rbac',
  });
  await s.kubectl(['apply', '-f', '-'], exampleManifests(s, { purgeSecrets: true }));
  prometheus = await startPrometheus({
    jobs: [{ job: 'cannes-operator', targets: [new URL(op.metricsUrl).host], honorLabels: true }],
  });
}, 300_000);

afterAll(async () => {
  await prometheus?.stop();
  await s?.stop();
  await variant?.remove();
  await removePolicy?.();
}, 180_000);

describe('the operator with exactly the chart RBAC', () => {
  it('provisions a Vps to Ready and purges the cloud token and the LLM keys, with no request denied', async () => {
    const ready = await waitFor(
      'Vps agent Ready',
      async () => {
        const v = (await s.getJson('vps', 'agent')) as Obj;
        return v.status?.['ready'] === true ? v : undefined;
      },
      900_000,
      diag,
    );
    expect(ready.status).toMatchObject({ serverCreated: true, hasSshKey: true, gatewayDeployed: true });
    // Secret patch: the purges.
    const token = await waitFor(
      'cloud token purged',
      async () => {
        const v = (await s.getJson('secret', 'hcloud-token')) as Obj;
        return v.data?.['token'] === undefined ? v : undefined;
      },
      300_000,
      diag,
    );
    expect(token.data?.['token']).toBeUndefined();
    const keys = await waitFor(
      'LLM keys purged',
      async () => {
        const v = (await s.getJson('secret', 'llm-keys')) as Obj;
        return v.data?.['anthropic'] === undefined && v.data?.['openai'] === undefined ? v : undefined;
      },
      300_000,
      diag,
    );
    expect(keys.data?.['anthropic']).toBeUndefined();
    // Secret create: the gateway token.
    const gateway = (await s.getJson('secret', 'agent-gateway')) as Obj;
    expect(typeof gateway.data?.['token']).toBe('string');
    // The real Prometheus saw both controllers reconcile.
    const reconciles = await prometheus!.waitFor(
      'sum by (controller) (controller_runtime_reconcile_total{job="cannes-operator"})',
      (r) => ['vps', 'modelkey'].every((c) => (r.find((x) => x.metric['controller'] === c)?.value ?? 0) > 0),
      120_000,
    );
    expect(reconciles.map((r) => r.metric['controller']).sort()).toEqual(['modelkey', 'vps']);
    // Every listed metric has a sample after a whole provisioning, except known gaps of the
    // operator (printed, and allowed to close: the check is that nothing new is missing).
    const metrics = await (await fetch(op.metricsUrl)).text();
    const unsampled = metricsWithoutSamples(metrics, 'operator');
    const known = unsampled.filter((m) => m in KNOWN_GAPS);
    if (known.length > 0) {
      console.log(
        `[chart] operator metrics without samples (known gaps): ${known.map((m) => `${m}: ${KNOWN_GAPS[m]}`).join('; ')}`,
      );
    }
    expect(unsampled.filter((m) => !(m in KNOWN_GAPS))).toEqual([]);
    // Nothing denied by RBAC (see RBAC_DENIAL).
    const denied = op.logs
      .join('')
      .split('\n')
      .filter((l) => RBAC_DENIAL.test(l));
    expect(denied).toEqual([]);
  }, 1_500_000);
});
