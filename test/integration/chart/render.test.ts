import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { knownSeries, metricNamesIn } from '../../fixtures/monitoring.ts';
import { LEADER_ELECTION_LEASE, OPERATOR_API_CALLS } from '../../fixtures/operator-rbac.ts';
import { ALL_TOGGLES, CHART_DIR, findObject, helm, type K8sObject, render, valuesFile } from './helm.ts';
import { grantKey, grantsOf, isHook, rbacRules, wildcards } from './rbac.ts';

// Shapes read from rendered objects; a wrong shape makes the expectations below fail.
type Container = {
  name: string;
  args: string[];
  env: { name: string; value?: string; valueFrom?: Record<string, Record<string, string>> }[];
  ports: { name: string; containerPort: number }[];
  livenessProbe: { httpGet: { path: string; port: string }; [k: string]: unknown };
  readinessProbe: { httpGet: { path: string; port: string }; [k: string]: unknown };
  resources: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext: Record<string, unknown> & { capabilities?: { drop?: string[]; add?: string[] } };
  volumeMounts: { name: string; mountPath: string; readOnly?: boolean }[];
};
type PodSpec = {
  serviceAccountName: string;
  imagePullSecrets?: { name: string }[];
  topologySpreadConstraints?: Record<string, unknown>[];
  securityContext: Record<string, unknown>;
  containers: Container[];
  volumes: {
    name: string;
    secret?: { secretName: string; items: { key: string; path: string }[] };
    configMap?: { name: string };
  }[];
};
/** What `helm install` applies: the rendering without the `helm test` hook objects. */
const installed = (objects: K8sObject[]) => objects.filter((o) => !isHook(o));
const kindsOf = (objects: K8sObject[]) =>
  installed(objects)
    .map((o) => o.kind)
    .sort();
const ROLLING = { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } };
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
  it('renders the Deployment, ServiceAccount, ClusterRole, the Lease Role, their bindings and the metrics Service only', async () => {
    expect(kindsOf(await render())).toEqual([
      'ClusterRole',
      'ClusterRoleBinding',
      'Deployment',
      'Role',
      'RoleBinding',
      'Service',
      'ServiceAccount',
      'ValidatingAdmissionPolicy',
      'ValidatingAdmissionPolicyBinding',
    ]);
  });

  it("narrows the operator's Secret writes with an admission policy bound to its ServiceAccount, unless turned off", async () => {
    const objects = await render({ release: 'cannes', namespace: 'cannes-system' });
    const policy = findObject(objects, 'ValidatingAdmissionPolicy');
    expect(JSON.stringify(policy)).toContain('system:serviceaccount:cannes-system:cannes-operator');
    expect(findObject(objects, 'ValidatingAdmissionPolicyBinding')['spec']).toMatchObject({
      policyName: policy.metadata.name,
      validationActions: ['Deny'],
    });
    const off = await render({ values: { admissionPolicy: { enabled: false } } });
    expect(kindsOf(off)).not.toContain('ValidatingAdmissionPolicy');
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
      '--leader-elect',
      '--leader-election-id',
      'cannes-operator',
      '--metrics-bind-address',
      ':8080',
      '--health-probe-bind-address',
      ':8081',
    ]);
  });

  it('elects a leader also with one replica, with the same strategy for one replica and two', async () => {
    const one = await render();
    expect(container(one).args).toContain('--leader-elect');
    expect(findObject(one, 'Role', '-leader-election')).toBeDefined();
    const two = await render({ values: { replicaCount: 2 } });
    // `helm upgrade` between the two changes only the count (rig.test.ts runs such upgrades).
    expect(strategy(one)).toEqual(ROLLING);
    expect(strategy(two)).toEqual(ROLLING);
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
    expect(kindsOf(objects)).toEqual([
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
      'ValidatingAdmissionPolicy',
      'ValidatingAdmissionPolicyBinding',
    ]);
    expect(container(objects).args).toContain('--leader-elect');
    expect(strategy(objects)).toEqual(ROLLING);
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
    // The configured peers, plus the `helm test` pod (checked in "the helm test hook" below).
    expect(np['ingress']).toEqual([
      {
        ports: [{ port: 'metrics', protocol: 'TCP' }],
        from: [...ALL_TOGGLES.networkPolicy.metricsFrom, { podSelector: expect.any(Object) }],
      },
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

  it('alerts on the nine conditions with a runbook each, using only operator metrics listed in docs/monitoring.md', async () => {
    const rule = findObject(await render({ values: ALL_TOGGLES }), 'PrometheusRule');
    const groups = (
      rule['spec'] as {
        groups: { rules: { alert: string; expr: string; annotations: Record<string, string> }[] }[];
      }
    ).groups;
    const rules = groups.flatMap((g) => g.rules);
    expect(rules.map((r) => r.alert)).toEqual([
      'CannesOperatorDown',
      'CannesReconcileErrorsHigh',
      'CannesVpsNotReady',
      'CannesSshKeyOverdue',
      'CannesHcloudRateLimitLow',
      'CannesNoLeader',
      'CannesDatabaseUnavailable',
      'CannesDecryptionFailures',
      'CannesWorkQueueStuck',
    ]);
    for (const r of rules) {
      expect(r.annotations['runbook_url']).toBe(`docs/runbooks/${r.alert}.md`);
      expect(existsSync(r.annotations['runbook_url']!), r.alert).toBe(true);
    }
    const known = knownSeries();
    const unknown = rules.flatMap((r) =>
      metricNamesIn(r.expr)
        .filter((n) => !known.has(n))
        .map((n) => `${r.alert}: ${n}`),
    );
    expect(unknown).toEqual([]);
  });

  it('points runbook_url at prometheusRule.runbookUrlPrefix when set', async () => {
    const rule = findObject(
      await render({
        values: {
          prometheusRule: { enabled: true, runbookUrlPrefix: 'https://docs.example.test/runbooks/' },
        },
      }),
      'PrometheusRule',
    );
    expect(JSON.stringify(rule)).toContain(
      '"runbook_url":"https://docs.example.test/runbooks/CannesNoLeader.md"',
    );
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
    expect(single).toEqual(OPERATOR_API_CALLS.map(grantKey).sort());
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
    const sa = findObject(installed(objects), 'ServiceAccount');
    expect(podSpec(objects).serviceAccountName).toBe(sa.metadata.name);
    const ops = installed(objects);
    for (const [kind, suffix] of [
      ['ClusterRoleBinding', ''],
      ['RoleBinding', '-leader-election'],
    ] as const) {
      expect(findObject(ops, kind, suffix)['subjects']).toEqual([
        { kind: 'ServiceAccount', name: sa.metadata.name, namespace: 'ops' },
      ]);
    }
    expect(findObject(ops, 'Role', '-leader-election').metadata.namespace).toBe('ops');
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
    expect(kindsOf(objects)).toEqual([
      'Deployment',
      'PodDisruptionBudget',
      'Service',
      'ValidatingAdmissionPolicy',
      'ValidatingAdmissionPolicyBinding',
    ]);
    expect(podSpec(objects).serviceAccountName).toBe('mine');
  });
});

describe('resource names', () => {
  const deploymentName = async (release: string, values?: unknown) =>
    findObject(await render({ release, values }), 'Deployment').metadata.name;

  it('does not repeat the chart name: cannes -> cannes-operator, not cannes-cannes-operator', async () => {
    expect(await deploymentName('cannes')).toBe('cannes-operator');
    expect(await deploymentName('cannes-operator')).toBe('cannes-operator');
    expect(await deploymentName('prod-cannes-operator')).toBe('prod-cannes-operator');
    expect(await deploymentName('prod')).toBe('prod-cannes-operator');
    expect(await deploymentName('cannes-prod')).toBe('cannes-prod-cannes-operator');
    expect(await deploymentName('cannes', { fullnameOverride: 'ops' })).toBe('ops');
  });
});

describe('namespace-scoped install (watchNamespace)', () => {
  it('grants the same rules as a Role in the watched namespace instead of a ClusterRole, and tells the operator', async () => {
    const cluster = installed(await render());
    const scoped = installed(await render({ namespace: 'ops', values: { watchNamespace: 'team-a' } }));
    expect(scoped.filter((o) => o.kind.startsWith('Cluster'))).toEqual([]);
    const role = scoped.find((o) => o.kind === 'Role' && o.metadata.namespace === 'team-a');
    expect(role?.metadata.name).toBe('cannes-operator');
    expect(role?.['rules']).toEqual(findObject(cluster, 'ClusterRole')['rules']);
    const binding = scoped.find((o) => o.kind === 'RoleBinding' && o.metadata.namespace === 'team-a');
    expect(binding?.['roleRef']).toEqual({
      apiGroup: 'rbac.authorization.k8s.io',
      kind: 'Role',
      name: 'cannes-operator',
    });
    expect(binding?.['subjects']).toEqual([
      { kind: 'ServiceAccount', name: 'cannes-operator', namespace: 'ops' },
    ]);
    // The Lease Role stays in the release namespace.
    expect(findObject(scoped, 'Role', '-leader-election').metadata.namespace).toBe('ops');
    expect(grantsOf(scoped).map(grantKey).sort()).toEqual(OPERATOR_API_CALLS.map(grantKey).sort());
    const args = container(scoped).args;
    expect(args.slice(args.indexOf('--watch-namespace'), args.indexOf('--watch-namespace') + 2)).toEqual([
      '--watch-namespace',
      'team-a',
    ]);
    expect(container(cluster).args).not.toContain('--watch-namespace');
  });

  it('rejects a watchNamespace that is no namespace name', async () => {
    await expect(render({ values: { watchNamespace: 'Team_A' } })).rejects.toThrow(/watchNamespace/);
  });
});

describe('pod customisation values', () => {
  it('appends extraArgs, extraEnv, extraVolumes and extraVolumeMounts after the chart own', async () => {
    const objects = await render({
      values: {
        extraArgs: ['--workers', '8'],
        extraEnv: [{ name: 'PGSSLROOTCERT', value: '/etc/cannes/pg-ca/ca.crt' }],
        extraVolumes: [{ name: 'pg-ca', configMap: { name: 'pg-ca' } }],
        extraVolumeMounts: [{ name: 'pg-ca', mountPath: '/etc/cannes/pg-ca', readOnly: true }],
      },
    });
    const c = container(objects);
    expect(c.args.slice(-2)).toEqual(['--workers', '8']);
    expect(c.args[0]).toBe('run');
    expect(c.env.at(-1)).toEqual({ name: 'PGSSLROOTCERT', value: '/etc/cannes/pg-ca/ca.crt' });
    expect(c.env.map((e) => e.name)).toContain('DATABASE_URL');
    expect(c.volumeMounts.map((m) => m.name)).toEqual(['master-keys', 'tmp', 'pg-ca']);
    expect(podSpec(objects).volumes.at(-1)).toEqual({ name: 'pg-ca', configMap: { name: 'pg-ca' } });
  });

  it('takes imagePullSecrets as [{name}] on the operator and the test pod, and refuses bare strings', async () => {
    const objects = await render({ values: { imagePullSecrets: [{ name: 'regcred' }] } });
    expect(podSpec(objects).imagePullSecrets).toEqual([{ name: 'regcred' }]);
    const testPod = findObject(objects, 'Pod') as K8sObject & { spec: PodSpec };
    expect(testPod.spec.imagePullSecrets).toEqual([{ name: 'regcred' }]);
    await expect(render({ values: { imagePullSecrets: ['regcred'] } })).rejects.toThrow(/imagePullSecrets/);
  });

  it('spreads by topology, selecting this release pods unless told otherwise', async () => {
    const objects = await render({
      values: {
        topologySpreadConstraints: [
          { maxSkew: 1, topologyKey: 'topology.kubernetes.io/zone', whenUnsatisfiable: 'ScheduleAnyway' },
          {
            maxSkew: 2,
            topologyKey: 'kubernetes.io/hostname',
            whenUnsatisfiable: 'DoNotSchedule',
            labelSelector: { matchLabels: { mine: 'yes' } },
          },
        ],
      },
    });
    const selector = (findObject(objects, 'Deployment')['spec'] as { selector: unknown }).selector;
    expect(podSpec(objects).topologySpreadConstraints).toEqual([
      {
        maxSkew: 1,
        topologyKey: 'topology.kubernetes.io/zone',
        whenUnsatisfiable: 'ScheduleAnyway',
        labelSelector: selector,
      },
      {
        maxSkew: 2,
        topologyKey: 'kubernetes.io/hostname',
        whenUnsatisfiable: 'DoNotSchedule',
        labelSelector: { matchLabels: { mine: 'yes' } },
      },
    ]);
    expect(podSpec(await render()).topologySpreadConstraints).toBeUndefined();
  });

  it('takes the probes from values', async () => {
    const c = container(
      await render({
        values: {
          livenessProbe: { httpGet: { path: '/healthz', port: 'health' }, periodSeconds: 60 },
          readinessProbe: { httpGet: { path: '/readyz', port: 'health' }, failureThreshold: 9 },
        },
      }),
    );
    // Helm merges a map value into the default: the other fields keep their defaults.
    expect(c.livenessProbe).toEqual({
      httpGet: { path: '/healthz', port: 'health' },
      initialDelaySeconds: 10,
      periodSeconds: 60,
      timeoutSeconds: 5,
      failureThreshold: 3,
    });
    expect(c.readinessProbe).toMatchObject({
      httpGet: { path: '/readyz', port: 'health' },
      failureThreshold: 9,
    });
    await expect(render({ values: { livenessProbe: { periodSeconds: 0 } } })).rejects.toThrow(
      /periodSeconds/,
    );
  });

  it('names the Lease after leaderElection.id in the flag, the Role and the test', async () => {
    const objects = await render({ values: { leaderElection: { id: 'cannes-team-a' } } });
    const args = container(objects).args;
    expect(args[args.indexOf('--leader-election-id') + 1]).toBe('cannes-team-a');
    const lease = grantsOf(objects).filter((g) => g.resource === 'leases' && g.name !== undefined);
    expect(lease.map((g) => g.name)).toEqual(['cannes-team-a', 'cannes-team-a']);
    const testPod = findObject(objects, 'Pod') as K8sObject & { spec: PodSpec };
    expect(testPod.spec.containers[0]!.env).toContainEqual({ name: 'LEASE_NAME', value: 'cannes-team-a' });
  });
});

describe('the helm test hook', () => {
  type TestPod = K8sObject & {
    spec: PodSpec & {
      restartPolicy: string;
      containers: (Container & { command: string[]; image: string })[];
    };
  };
  const hooks = (objects: K8sObject[]) => objects.filter(isHook);

  it('is a Pod running files/helm-test.mjs with node, its ServiceAccount allowed one Lease get only', async () => {
    const objects = await render({ namespace: 'ops' });
    const hookObjects = hooks(objects);
    expect(hookObjects.map((o) => o.kind).sort()).toEqual(['Pod', 'Role', 'RoleBinding', 'ServiceAccount']);
    for (const o of hookObjects) expect(o.metadata.annotations?.['helm.sh/hook']).toBe('test');
    const pod = findObject(objects, 'Pod') as TestPod;
    const c = pod.spec.containers[0]!;
    expect(pod.spec.restartPolicy).toBe('Never');
    expect(c.image).toBe(
      (
        findObject(objects, 'Deployment')['spec'] as {
          template: { spec: { containers: { image: string }[] } };
        }
      ).template.spec.containers[0]!.image,
    );
    expect(c.command).toEqual(['node', '--input-type=module', '-e']);
    expect(c.args).toEqual([readFileSync(`${CHART_DIR}/files/helm-test.mjs`, 'utf8')]);
    expect(c.env).toContainEqual({
      name: 'METRICS_URL',
      value: 'http://cannes-operator.ops.svc:8080/metrics',
    });
    expect(c.securityContext).toMatchObject({
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
    });
    const role = hookObjects.find((o) => o.kind === 'Role')!;
    expect(role['rules']).toEqual([
      {
        apiGroups: ['coordination.k8s.io'],
        resources: ['leases'],
        resourceNames: ['cannes-operator'],
        verbs: ['get'],
      },
    ]);
    expect(pod.spec.serviceAccountName).toBe(
      hookObjects.find((o) => o.kind === 'ServiceAccount')!.metadata.name,
    );
  });

  it('is never picked by the operator Service, Deployment or PodDisruptionBudget selector', async () => {
    const objects = await render({ values: ALL_TOGGLES });
    const pod = findObject(objects, 'Pod');
    const selector = (
      findObject(objects, 'Deployment')['spec'] as { selector: { matchLabels: Record<string, string> } }
    ).selector.matchLabels;
    const labels = pod.metadata.labels ?? {};
    expect(Object.entries(selector).every(([k, v]) => labels[k] === v)).toBe(false);
    // With metricsFrom set, the NetworkPolicy admits the test pod to the metrics port too.
    const np = findObject(objects, 'NetworkPolicy')['spec'] as { ingress: { from: unknown[] }[] };
    expect(np.ingress[0]!.from).toContainEqual({
      podSelector: {
        matchLabels: {
          'app.kubernetes.io/name': labels['app.kubernetes.io/name'],
          'app.kubernetes.io/instance': labels['app.kubernetes.io/instance'],
        },
      },
    });
  });

  it('is left out with tests.enabled false', async () => {
    expect(hooks(await render({ values: { tests: { enabled: false } } }))).toEqual([]);
  });
});

describe('helm lint with the new values', () => {
  it('is clean with every customisation set', async () => {
    const values = {
      watchNamespace: 'team-a',
      extraArgs: ['--workers', '8'],
      extraEnv: [{ name: 'PGSSLROOTCERT', value: '/ca/ca.crt' }],
      extraVolumes: [{ name: 'ca', configMap: { name: 'ca' } }],
      extraVolumeMounts: [{ name: 'ca', mountPath: '/ca' }],
      imagePullSecrets: [{ name: 'regcred' }],
      topologySpreadConstraints: [
        { maxSkew: 1, topologyKey: 'kubernetes.io/hostname', whenUnsatisfiable: 'ScheduleAnyway' },
      ],
    };
    const res = await helm(['lint', '--strict', CHART_DIR, '--values', valuesFile(values)]);
    expect(res.stdout + res.stderr).not.toMatch(/\[(WARNING|ERROR)\]/);
    expect(res.code).toBe(0);
  });
});
