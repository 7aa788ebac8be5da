import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { knownSeries, metricNamesIn } from '../../fixtures/monitoring.ts';
import { LEADER_ELECTION_LEASE, OPERATOR_API_CALLS } from '../../fixtures/operator-rbac.ts';
import { ALL_TOGGLES, CHART_DIR, findObject, helm, type K8sObject, render, valuesFile } from './helm.ts';
import { grantKey, grantsOf, rbacRules, wildcards } from './rbac.ts';

// Shapes read from rendered objects; a wrong shape makes the expectations below fail.
type Container = {
  name: string;
  args: string[];
  env: { name: string; value?: string; valueFrom?: Record<string, Record<string, string>> }[];
  ports: { name: string; containerPort: number }[];
  livenessProbe: { httpGet: { path: string; port: string } };
  readinessProbe: { httpGet: { path: string; port: string } };
  resources: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext: Record<string, unknown> & { capabilities?: { drop?: string[]; add?: string[] } };
  volumeMounts: { name: string; mountPath: string; readOnly?: boolean }[];
};
type PodSpec = {
  serviceAccountName: string;
  securityContext: Record<string, unknown>;
  containers: Container[];
  volumes: { name: string; secret?: { secretName: string; items: { key: string; path: string }[] } }[];
};
const podSpec = (objects: K8sObject[]) => {
  const d = findObject(objects, 'Deployment');
  return (d['spec'] as { template: { spec: PodSpec } }).template.spec;
};
const container = (objects: K8sObject[]) => podSpec(objects).containers[0]!;
const strategy = (objects: K8sObject[]) =>
  (findObject(objects, 'Deployment')['spec'] as { strategy: unknown }).strategy;

describe('helm lint', () => {
  it('is clean with --strict on the defaults and with every toggle on', async () => {
    const plain = await helm(['lint', '--strict', CHART_DIR]);
    expect(plain.stdout + plain.stderr).toContain('1 chart(s) linted, 0 chart(s) failed');
    expect(plain.code).toBe(0);
    const all = await helm(['lint', '--strict', CHART_DIR, '--values', valuesFile(ALL_TOGGLES)]);
    expect(all.stdout + all.stderr).not.toMatch(/\[(WARNING|ERROR)\]/);
    expect(all.code).toBe(0);
  });
});

describe('helm template with the defaults', () => {
  it('renders the Deployment, ServiceAccount, ClusterRole and binding, and the metrics Service only', async () => {
    const kinds = (await render()).map((o) => o.kind).sort();
    expect(kinds).toEqual(['ClusterRole', 'ClusterRoleBinding', 'Deployment', 'Service', 'ServiceAccount']);
  });

  it('runs non-root with a read-only root filesystem, no capabilities and seccomp RuntimeDefault', async () => {
    const objects = await render();
    const pod = podSpec(objects);
    expect(pod.securityContext).toMatchObject({
      runAsNonRoot: true,
      seccompProfile: { type: 'RuntimeDefault' },
    });
    expect(pod.securityContext['runAsUser']).toBeGreaterThan(0);
    const c = container(objects);
    expect(c.securityContext).toMatchObject({
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      privileged: false,
      capabilities: { drop: ['ALL'] },
    });
    expect(c.securityContext.capabilities?.add).toBeUndefined();
    expect(c.resources.requests).toMatchObject({ cpu: expect.any(String), memory: expect.any(String) });
    expect(c.resources.limits).toMatchObject({ memory: expect.any(String) });
  });

  it('probes /healthz and /readyz on the health port and serves metrics on 8080', async () => {
    const c = container(await render());
    expect(c.ports).toEqual([
      { name: 'metrics', containerPort: 8080, protocol: 'TCP' },
      { name: 'health', containerPort: 8081, protocol: 'TCP' },
    ]);
    expect(c.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'health' });
    expect(c.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'health' });
    expect(c.args).toEqual([
      'run',
      '--metrics-bind-address',
      ':8080',
      '--health-probe-bind-address',
      ':8081',
    ]);
  });

  it('runs one replica without leader election and with the Recreate strategy', async () => {
    const objects = await render();
    expect(container(objects).args).not.toContain('--leader-elect');
    expect(strategy(objects)).toEqual({ type: 'Recreate' });
    expect(objects.filter((o) => o.kind === 'Role')).toEqual([]);
  });

  it('takes DATABASE_URL and the master keys from existing Secrets, never from a plain value', async () => {
    const objects = await render({
      values: {
        database: { existingSecret: 'pg', secretKey: 'dsn' },
        masterKeys: { existingSecret: 'mk', secretKey: 'keys' },
      },
    });
    const c = container(objects);
    const env = Object.fromEntries(c.env.map((e) => [e.name, e]));
    expect(env['DATABASE_URL']).toEqual({
      name: 'DATABASE_URL',
      valueFrom: { secretKeyRef: { name: 'pg', key: 'dsn' } },
    });
    expect(env['CANNES_MASTER_KEYS_FILE']?.value).toBe('/etc/cannes/master-keys/keys');
    const mount = c.volumeMounts.find((m) => m.mountPath === '/etc/cannes/master-keys');
    expect(mount?.readOnly).toBe(true);
    const volume = podSpec(objects).volumes.find((v) => v.name === mount?.name);
    expect(volume?.secret).toMatchObject({ secretName: 'mk', items: [{ key: 'keys', path: 'keys' }] });
    // Literal values are only ever these non-secret settings.
    const literal = c.env.filter((e) => e.value !== undefined).map((e) => e.name);
    expect(literal.sort()).toEqual(['CANNES_MASTER_KEYS_FILE', 'LOG_LEVEL']);
    expect(env['HCLOUD_ENDPOINT']).toBeUndefined();
  });

  it('sets HCLOUD_ENDPOINT only when a value is given', async () => {
    const c = container(await render({ values: { hcloud: { endpoint: 'http://127.0.0.1:4000/v1' } } }));
    expect(c.env.find((e) => e.name === 'HCLOUD_ENDPOINT')?.value).toBe('http://127.0.0.1:4000/v1');
  });
});

describe('helm template with every toggle on', () => {
  it('adds leader election with its Lease Role, the ServiceMonitor, the PrometheusRule and the dashboard', async () => {
    const objects = await render({ values: ALL_TOGGLES });
    expect(objects.map((o) => o.kind).sort()).toEqual([
      'ClusterRole',
      'ClusterRoleBinding',
      'ConfigMap',
      'Deployment',
      'NetworkPolicy',
      'PodDisruptionBudget',
      'PrometheusRule',
      'Role',
      'RoleBinding',
      'Service',
      'ServiceAccount',
      'ServiceMonitor',
    ]);
    expect(container(objects).args).toContain('--leader-elect');
    expect(strategy(objects)).toEqual({ type: 'RollingUpdate' });
  });

  it('keeps one replica through node drains and admits traffic only to the metrics port', async () => {
    const objects = await render({ values: ALL_TOGGLES });
    const pdb = findObject(objects, 'PodDisruptionBudget')['spec'] as {
      minAvailable: number;
      selector: unknown;
    };
    const selector = (findObject(objects, 'Deployment')['spec'] as { selector: unknown }).selector;
    expect(pdb).toEqual({ minAvailable: 1, selector });
    const np = findObject(objects, 'NetworkPolicy')['spec'] as Record<string, unknown>;
    expect(np['podSelector']).toEqual(selector);
    expect(np['policyTypes']).toEqual(['Ingress']);
    expect(np['ingress']).toEqual([
      { ports: [{ port: 'metrics', protocol: 'TCP' }], from: ALL_TOGGLES.networkPolicy.metricsFrom },
    ]);
  });

  it('renders no PodDisruptionBudget for a single replica, where it would block every drain', async () => {
    const objects = await render({ values: { podDisruptionBudget: { enabled: true } } });
    expect(objects.filter((o) => o.kind === 'PodDisruptionBudget')).toEqual([]);
  });

  it('points the ServiceMonitor at the Service metrics port, keeping the Vps namespace label', async () => {
    const objects = await render({ values: ALL_TOGGLES });
    const sm = findObject(objects, 'ServiceMonitor');
    const svc = findObject(objects, 'Service');
    const spec = sm['spec'] as {
      selector: { matchLabels: Record<string, string> };
      endpoints: Record<string, unknown>[];
    };
    expect(svc.metadata.labels).toMatchObject(spec.selector.matchLabels);
    expect(spec.endpoints).toEqual([
      expect.objectContaining({ port: 'metrics', path: '/metrics', honorLabels: true }),
    ]);
    expect((svc['spec'] as { ports: { name: string }[] }).ports.map((p) => p.name)).toEqual(['metrics']);
    expect(sm.metadata.labels?.['release']).toBe('kube-prometheus-stack');
  });

  it('ships the dashboard in a ConfigMap with the Grafana sidecar label', async () => {
    const cm = findObject(await render({ values: ALL_TOGGLES }), 'ConfigMap', '-dashboard');
    expect(cm.metadata.labels?.['grafana_dashboard']).toBe('1');
    const data = cm['data'] as Record<string, string>;
    expect(JSON.parse(data['cannes-operator.json']!)).toEqual(
      JSON.parse(readFileSync(`${CHART_DIR}/files/dashboard.json`, 'utf8')),
    );
  });

  it('alerts on the six conditions, using only metrics listed in docs/monitoring.md', async () => {
    const rule = findObject(await render({ values: ALL_TOGGLES }), 'PrometheusRule');
    const groups = (rule['spec'] as { groups: { rules: { alert: string; expr: string }[] }[] }).groups;
    const rules = groups.flatMap((g) => g.rules);
    expect(rules.map((r) => r.alert)).toEqual([
      'CannesOperatorDown',
      'CannesReconcileErrorsHigh',
      'CannesVpsNotReady',
      'CannesSshKeyOverdue',
      'CannesHcloudRateLimitLow',
      'CannesProxyRefusalsSpiking',
    ]);
    const known = knownSeries();
    const unknown = rules.flatMap((r) =>
      metricNamesIn(r.expr)
        .filter((n) => !known.has(n))
        .map((n) => `${r.alert}: ${n}`),
    );
    expect(unknown).toEqual([]);
  });

  it('leaves out a disabled alert', async () => {
    const rule = findObject(
      await render({
        values: { prometheusRule: { enabled: true, alerts: { vpsNotReady: { enabled: false } } } },
      }),
      'PrometheusRule',
    );
    expect(JSON.stringify(rule)).not.toContain('CannesVpsNotReady');
    expect(JSON.stringify(rule)).toContain('CannesSshKeyOverdue');
  });
});

describe('the RBAC the chart renders', () => {
  it('has no * in any verb, resource, API group or name', async () => {
    for (const values of [undefined, ALL_TOGGLES]) {
      const objects = await render({ values });
      expect(rbacRules(objects).length).toBeGreaterThan(0);
      expect(wildcards(objects)).toEqual([]);
    }
  });

  it('grants exactly the API calls the operator makes (test/fixtures/operator-rbac.ts)', async () => {
    const single = grantsOf(await render())
      .map(grantKey)
      .sort();
    expect(single).toEqual(
      OPERATOR_API_CALLS.filter((c) => c.scope === 'cluster')
        .map(grantKey)
        .sort(),
    );
    const elected = grantsOf(await render({ values: ALL_TOGGLES }))
      .map(grantKey)
      .sort();
    expect(elected).toEqual(OPERATOR_API_CALLS.map(grantKey).sort());
  });

  it('never lets the operator list, watch, update or delete Secrets, nor touch a Lease other than its own', async () => {
    const grants = grantsOf(await render({ values: ALL_TOGGLES }));
    const secretVerbs = grants.filter((g) => g.resource === 'secrets').map((g) => g.verb);
    expect(secretVerbs.sort()).toEqual(['create', 'get', 'patch']);
    const leaseReads = grants.filter((g) => g.resource === 'leases' && g.verb !== 'create');
    expect(leaseReads.length).toBeGreaterThan(0);
    for (const g of leaseReads) expect(g.name).toBe(LEADER_ELECTION_LEASE);
    expect(grants.filter((g) => g.resource === 'leases').every((g) => g.scope === 'release')).toBe(true);
  });

  it('binds the roles to the chart ServiceAccount in the release namespace', async () => {
    const objects = await render({ namespace: 'ops', values: ALL_TOGGLES });
    const sa = findObject(objects, 'ServiceAccount');
    expect(podSpec(objects).serviceAccountName).toBe(sa.metadata.name);
    for (const kind of ['ClusterRoleBinding', 'RoleBinding']) {
      expect(findObject(objects, kind)['subjects']).toEqual([
        { kind: 'ServiceAccount', name: sa.metadata.name, namespace: 'ops' },
      ]);
    }
    expect(findObject(objects, 'Role').metadata.namespace).toBe('ops');
  });
});

describe('values.schema.json', () => {
  const rejects = async (values: unknown, message: RegExp) => {
    await expect(render({ values })).rejects.toThrow(message);
  };

  it('rejects a secret given as a plain value instead of a Secret name', async () => {
    await rejects(
      { database: { url: 'postgres://u:FAKE@db/x' } },
      /additional properties 'url' not allowed/i,
    );
    await rejects({ masterKeys: { keys: 'k1 FAKE' } }, /additional properties 'keys' not allowed/i);
  });

  it('rejects an unknown value, a bad replica count, pull policy, duration or port clash', async () => {
    await rejects({ replicas: 2 }, /additional properties 'replicas' not allowed/i);
    await rejects({ replicaCount: 0 }, /replicaCount/);
    await rejects({ image: { pullPolicy: 'Sometimes' } }, /pullPolicy/);
    await rejects({ prometheusRule: { alerts: { vpsNotReady: { for: '30 minutes' } } } }, /for/);
    await rejects({ database: { existingSecret: '' } }, /existingSecret/);
    await rejects({ metrics: { port: 8081 } }, /metrics.port and health.port must differ/);
    await rejects({ serviceAccount: { create: false } }, /serviceAccount.name is required/);
  });

  it('uses an existing ServiceAccount and leaves RBAC to the user when asked', async () => {
    const objects = await render({
      values: { replicaCount: 2, serviceAccount: { create: false, name: 'mine' }, rbac: { create: false } },
    });
    expect(objects.map((o) => o.kind).sort()).toEqual(['Deployment', 'PodDisruptionBudget', 'Service']);
    expect(podSpec(objects).serviceAccountName).toBe('mine');
  });
});
