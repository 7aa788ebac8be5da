import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ApiCall, LEADER_ELECTION_LEASE, OPERATOR_API_CALLS } from '../../fixtures/operator-rbac.ts';
import type { Rig } from '../../rig/rig.ts';
import { useRig } from '../../rig/shared.ts';
import { ALL_TOGGLES, CHART_DIR, type K8sObject, render, renderText, valuesFile } from './helm.ts';
import {
  canI,
  grantKey,
  grantsOfRule,
  installRbacVariant,
  mapLimit,
  rbacRules,
  subjectAccessReview,
  withoutRule,
} from './rbac.ts';

const MONITORING_CRDS = 'test/fixtures/monitoring-crds';
const suffix = randomBytes(3).toString('hex');
/** The release namespace, and a namespace standing for any user's namespace. */
const ns = `cannes-chart-${suffix}`;
const userNs = `team-${suffix}`;
const release = `cannes-${suffix}`;

/** Calls the operator must never be able to make, next to the ones it makes. */
const FORBIDDEN: Pick<ApiCall, 'group' | 'resource' | 'verb' | 'name'>[] = [
  { group: '', resource: 'secrets', verb: 'list' },
  { group: '', resource: 'secrets', verb: 'watch' },
  { group: '', resource: 'secrets', verb: 'update' },
  { group: '', resource: 'secrets', verb: 'delete' },
  { group: '', resource: 'secrets', verb: 'deletecollection' },
  { group: 'cannes.dev', resource: 'vpses', verb: 'create' },
  { group: 'cannes.dev', resource: 'vpses', verb: 'delete' },
  { group: 'cannes.dev', resource: 'vpses', verb: 'update' },
  { group: 'cannes.dev', resource: 'vpses/status', verb: 'patch' },
  { group: 'cannes.dev', resource: 'modelkeys/finalizers', verb: 'update' },
  { group: 'cannes.dev', resource: 'modelkeys', verb: 'delete' },
  { group: '', resource: 'pods', verb: 'list' },
  { group: '', resource: 'pods/exec', verb: 'create' },
  { group: '', resource: 'configmaps', verb: 'get' },
  { group: '', resource: 'events', verb: 'create' },
  { group: '', resource: 'serviceaccounts/token', verb: 'create' },
  { group: 'events.k8s.io', resource: 'events', verb: 'delete' },
  { group: 'rbac.authorization.k8s.io', resource: 'clusterroles', verb: 'create' },
  { group: 'rbac.authorization.k8s.io', resource: 'rolebindings', verb: 'create' },
  { group: 'apiextensions.k8s.io', resource: 'customresourcedefinitions', verb: 'update' },
  { group: 'coordination.k8s.io', resource: 'leases', verb: 'get', name: 'someone-elses-lease' },
  { group: 'coordination.k8s.io', resource: 'leases', verb: 'delete', name: LEADER_ELECTION_LEASE },
  { group: 'coordination.k8s.io', resource: 'leases', verb: 'list' },
];

/** Where a call is checked: the release namespace for Lease calls, a user namespace otherwise. */
const whereOf = (c: ApiCall) => (c.scope === 'release' ? ns : userNs);

describe('the chart on the rig API server', () => {
  let rig: Rig;
  let installed = false;
  let sa: { namespace: string; name: string };

  beforeAll(async () => {
    rig = await useRig();
    await rig.kubectl(['apply', '-f', MONITORING_CRDS]);
    await rig.kubectl([
      'wait',
      '--for=condition=Established',
      '--timeout=60s',
      'crd/servicemonitors.monitoring.coreos.com',
      'crd/prometheusrules.monitoring.coreos.com',
    ]);
    await rig.kubectl(['create', 'namespace', ns]);
    await rig.kubectl(['create', 'namespace', userNs]);
    // The `helm test` pod's ServiceAccount, for real: a server-side dry run of the pod looks
    // its ServiceAccount up, and the dry run of that ServiceAccount creates nothing.
    await rig.kubectl(['create', 'serviceaccount', `${release}-cannes-operator-test`, '-n', ns]);
  });

  afterAll(async () => {
    if (!rig) return;
    if (installed) await rig.helm(['uninstall', release, '-n', ns], { check: false });
    // No namespace controller on the rig: the namespaces stay Terminating until the rig stops.
    await rig.kubectl(['delete', 'namespace', ns, userNs, '--wait=false'], { check: false });
  });

  const dryRun = (text: string) =>
    rig.kubectl(['apply', '--dry-run=server', '--validate=strict', '-n', ns, '-f', '-'], { stdin: text });

  it('accepts the default rendering in a server-side dry run', async () => {
    const res = await dryRun(await renderText({ release, namespace: ns }));
    expect(res.stdout).toMatch(/deployment\.apps\/[\w-]+ created \(server dry run\)/);
    expect(res.stdout).toMatch(
      /clusterrole\.rbac\.authorization\.k8s\.io\/[\w-]+ created \(server dry run\)/,
    );
  });

  it('accepts the rendering with every toggle on in a server-side dry run, strictly validated', async () => {
    const res = await dryRun(await renderText({ release, namespace: ns, values: ALL_TOGGLES }));
    for (const kind of [
      'servicemonitor',
      'prometheusrule',
      'configmap',
      'role.rbac',
      'rolebinding.rbac',
      'poddisruptionbudget',
      'networkpolicy',
      'pod',
    ]) {
      expect(res.stdout).toMatch(
        new RegExp(`${kind.replace('.', '\\.')}[\\w.]*/[\\w-]+ created \\(server dry run\\)`),
      );
    }
  });

  it('rejects in the dry run a field the monitoring CRDs do not have (the dry run can fail)', async () => {
    const text = (await renderText({ release, namespace: ns, values: ALL_TOGGLES })).replace(
      'honorLabels: true',
      'honorLabels: true\n      honourLabels: true',
    );
    await expect(dryRun(text)).rejects.toThrow(/unknown field "spec\.endpoints\[0\]\.honourLabels"/);
  });

  it('installs with helm install, CRDs included', async () => {
    await rig.helm(['install', release, CHART_DIR, '-n', ns, '--values', valuesFile(ALL_TOGGLES)]);
    installed = true;
    const list = await rig.helm(['list', '-n', ns, '-o', 'json']);
    expect(list.stdout).toContain(`"name":"${release}"`);
    expect(list.stdout).toContain('"status":"deployed"');
    const crds = await rig.kubectl(['get', 'crd', 'vpses.cannes.dev', 'modelkeys.cannes.dev', '-o', 'name']);
    expect(crds.stdout.trim().split('\n')).toHaveLength(2);
    const objects = await rig.kubectl([
      'get',
      'deployment,service,serviceaccount,role,rolebinding,servicemonitor,prometheusrule,configmap,poddisruptionbudget,networkpolicy',
      '-n',
      ns,
      '-l',
      `app.kubernetes.io/instance=${release}`,
      '-o',
      'name',
    ]);
    expect(objects.stdout.trim().split('\n').sort()).toEqual(
      [
        `configmap/${release}-cannes-operator-dashboard`,
        `deployment.apps/${release}-cannes-operator`,
        `networkpolicy.networking.k8s.io/${release}-cannes-operator`,
        `poddisruptionbudget.policy/${release}-cannes-operator`,
        `prometheusrule.monitoring.coreos.com/${release}-cannes-operator`,
        `role.rbac.authorization.k8s.io/${release}-cannes-operator-leader-election`,
        `rolebinding.rbac.authorization.k8s.io/${release}-cannes-operator-leader-election`,
        `service/${release}-cannes-operator`,
        `serviceaccount/${release}-cannes-operator`,
        `servicemonitor.monitoring.coreos.com/${release}-cannes-operator`,
      ].sort(),
    );
    sa = { namespace: ns, name: `${release}-cannes-operator` };
  });

  it('upgrades from two replicas to one and back: the strategy never changes, so the API server accepts each', async () => {
    expect(installed).toBe(true);
    for (const replicaCount of [1, 2]) {
      await rig.helm([
        'upgrade',
        release,
        CHART_DIR,
        '-n',
        ns,
        '--values',
        valuesFile({ ...ALL_TOGGLES, replicaCount }),
      ]);
      const got = await rig.kubectl([
        'get',
        'deployment',
        `${release}-cannes-operator`,
        '-n',
        ns,
        '-o',
        'jsonpath={.spec.replicas} {.spec.strategy}',
      ]);
      const [replicas, ...strategy] = got.stdout.trim().split(' ');
      expect(Number(replicas)).toBe(replicaCount);
      expect(JSON.parse(strategy.join(' '))).toEqual({
        type: 'RollingUpdate',
        rollingUpdate: { maxSurge: 1, maxUnavailable: 0 },
      });
    }
  });

  it('lets the installed ServiceAccount make every API call the operator makes (kubectl auth can-i --as)', async () => {
    expect(sa).toBeDefined();
    const answers = await mapLimit(
      OPERATOR_API_CALLS,
      4,
      async (c) => [grantKey(c), await canI(rig, sa, c, whereOf(c))] as const,
    );
    expect(answers.filter(([, yes]) => !yes).map(([k]) => k)).toEqual([]);
    expect(answers).toHaveLength(OPERATOR_API_CALLS.length);
  });

  it('denies the installed ServiceAccount everything else we could think of', async () => {
    const calls = [
      ...FORBIDDEN.map((c) => ({ c, where: userNs })),
      ...FORBIDDEN.map((c) => ({ c, where: ns })),
    ];
    // Leases only in the release namespace.
    calls.push({ c: { group: 'coordination.k8s.io', resource: 'leases', verb: 'create' }, where: userNs });
    const allowed = await mapLimit(calls, 4, async ({ c, where }) =>
      (await canI(rig, sa, c, where)) ? `${where} ${c.verb} ${c.resource}` : '',
    );
    expect(allowed.filter(Boolean)).toEqual([]);
  });

  it('works with a TokenRequest token of that ServiceAccount: lists Vps objects everywhere, not Pods', async () => {
    const kubeconfig = await rig.serviceAccountKubeconfig(sa.namespace, sa.name);
    const vpses = await rig.kubectl(['get', 'vpses', '-A'], { kubeconfig, check: false });
    expect(vpses.stderr).not.toMatch(/forbidden/i);
    expect(vpses.code).toBe(0);
    const pods = await rig.kubectl(['get', 'pods', '-A'], { kubeconfig, check: false });
    expect(pods.code).not.toBe(0);
    expect(pods.stderr).toMatch(/forbidden/i);
    const lease = await rig.kubectl(['create', '-n', ns, '-f', '-'], {
      kubeconfig,
      stdin: JSON.stringify({
        apiVersion: 'coordination.k8s.io/v1',
        kind: 'Lease',
        metadata: { name: LEADER_ELECTION_LEASE },
        spec: { holderIdentity: 'chart-test', leaseDurationSeconds: 15 },
      }),
    });
    expect(lease.stdout).toContain(`lease.coordination.k8s.io/${LEADER_ELECTION_LEASE} created`);
    const got = await rig.kubectl(['get', 'lease', LEADER_ELECTION_LEASE, '-n', ns, '-o', 'name'], {
      kubeconfig,
    });
    expect(got.stdout.trim()).toBe(`lease.coordination.k8s.io/${LEADER_ELECTION_LEASE}`);
  });

  it("needs every rule: without any one of them, exactly that rule's calls are denied", async () => {
    const objects: K8sObject[] = await render({ release, namespace: ns, values: ALL_TOGGLES });
    const rules = rbacRules(objects);
    expect(rules.length).toBeGreaterThanOrEqual(6);
    for (let i = 0; i < rules.length; i++) {
      const expected = grantsOfRule(rules[i]!).map(grantKey).sort();
      const variant = await installRbacVariant(rig, withoutRule(objects, i), {
        namespace: ns,
        name: `minus-rule-${i}`,
        prefix: `minus-rule-${i}-${suffix}`,
      });
      try {
        // The RBAC authorizer learns about new bindings through a watch: poll until it settles.
        let denied: string[] = [];
        for (let attempt = 0; attempt < 30; attempt++) {
          const results = await mapLimit(OPERATOR_API_CALLS, 6, async (c) =>
            (await subjectAccessReview(rig, variant.serviceAccount, c, whereOf(c))) ? '' : grantKey(c),
          );
          denied = results.filter(Boolean).sort();
          if (denied.join() === expected.join()) break;
          await new Promise((r) => setTimeout(r, 500));
        }
        expect(denied, `without rule ${i}`).toEqual(expected);
        expect(denied.length, `rule ${i} is needed by some call`).toBeGreaterThan(0);
      } finally {
        await variant.remove();
      }
    }
  });

  it('with watchNamespace, grants the calls in that namespace only; the helm test may read the Lease only', async () => {
    const scoped = `${release}-ns`;
    const objects = await render({ release: scoped, namespace: ns, values: { watchNamespace: userNs } });
    const wanted = objects.filter(
      (o) => o.apiVersion === 'rbac.authorization.k8s.io/v1' || o.kind === 'ServiceAccount',
    );
    const list = JSON.stringify({ apiVersion: 'v1', kind: 'List', items: wanted });
    await rig.kubectl(['apply', '-f', '-'], { stdin: list });
    try {
      const operator = { namespace: ns, name: `${scoped}-cannes-operator` };
      const tester = { namespace: ns, name: `${scoped}-cannes-operator-test` };
      const cluster = OPERATOR_API_CALLS.filter((c) => c.scope === 'cluster');
      // The RBAC authorizer learns about new bindings through a watch: poll until it settles.
      let answers: string[] = [];
      for (let attempt = 0; attempt < 30; attempt++) {
        answers = await mapLimit(cluster, 6, async (c) => {
          const inWatched = await subjectAccessReview(rig, operator, c, userNs);
          const elsewhere = await subjectAccessReview(rig, operator, c, ns);
          return inWatched && !elsewhere ? '' : `${grantKey(c)} watched=${inWatched} other=${elsewhere}`;
        });
        if (answers.every((a) => a === '')) break;
        await new Promise((r) => setTimeout(r, 500));
      }
      expect(answers.filter(Boolean)).toEqual([]);
      const lease = { group: 'coordination.k8s.io', resource: 'leases', verb: 'get' as const };
      expect(await subjectAccessReview(rig, operator, { ...lease, name: LEADER_ELECTION_LEASE }, ns)).toBe(
        true,
      );
      expect(await subjectAccessReview(rig, tester, { ...lease, name: LEADER_ELECTION_LEASE }, ns)).toBe(
        true,
      );
      expect(await subjectAccessReview(rig, tester, { ...lease, name: 'someone-elses-lease' }, ns)).toBe(
        false,
      );
      expect(
        await subjectAccessReview(rig, tester, { ...lease, verb: 'update', name: LEADER_ELECTION_LEASE }, ns),
      ).toBe(false);
      expect(
        await subjectAccessReview(rig, tester, { group: '', resource: 'secrets', verb: 'get' }, ns),
      ).toBe(false);
    } finally {
      await rig.kubectl(['delete', '--ignore-not-found', '-f', '-'], { stdin: list, check: false });
    }
  });

  // The operator itself with this RBAC: operator-monitoring.test.ts (each rule needed) and
  // provisioning-rbac.test.ts (a whole provisioning to Ready, nothing denied).
});
