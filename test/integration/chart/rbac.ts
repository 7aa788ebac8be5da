/**
 * The chart's RBAC as data: the rules it renders expanded into single grants, wildcard audit,
 * "the RBAC minus rule i" variants bound to a fresh ServiceAccount, and `kubectl auth can-i`
 * checks of the operator's API calls (test/fixtures/operator-rbac.ts) against the rig.
 */
import type { ApiCall } from '../../fixtures/operator-rbac.ts';
import type { Rig } from '../../rig/rig.ts';
import type { K8sObject } from './helm.ts';

export type PolicyRule = {
  apiGroups?: string[];
  resources?: string[];
  verbs: string[];
  resourceNames?: string[];
  nonResourceURLs?: string[];
};

/** One verb on one resource: the unit the operator's API calls are listed in. */
export type Grant = {
  group: string;
  resource: string;
  verb: string;
  scope: 'cluster' | 'release';
  name?: string;
};

const strings = (v: unknown): v is string[] => Array.isArray(v) && v.every((s) => typeof s === 'string');

function parseRule(v: unknown): PolicyRule {
  if (typeof v !== 'object' || v === null) throw new Error('RBAC rule is not an object');
  const rule: PolicyRule = { verbs: [] };
  for (const key of ['apiGroups', 'resources', 'verbs', 'resourceNames', 'nonResourceURLs'] as const) {
    const x: unknown = Reflect.get(v, key);
    if (x === undefined) continue;
    if (!strings(x)) throw new Error(`RBAC rule: ${key} is not a list of strings`);
    rule[key] = x;
  }
  return rule;
}

/** A `helm test` hook object: RBAC for the test pod, not the operator's. */
export const isHook = (o: K8sObject) => typeof o.metadata.annotations?.['helm.sh/hook'] === 'string';

const isRole = (o: K8sObject) =>
  o.apiVersion === 'rbac.authorization.k8s.io/v1' &&
  (o.kind === 'ClusterRole' || o.kind === 'Role') &&
  !isHook(o);

/**
 * The scope of a role's grants: the leader-election Role is the release namespace's; the
 * ClusterRole, or with `watchNamespace` the Role of the same rules in the watched namespace, is
 * where the custom resources live ("cluster" in test/fixtures/operator-rbac.ts).
 */
const scopeOf = (role: K8sObject): 'cluster' | 'release' =>
  role.kind === 'Role' && role.metadata.name.endsWith('-leader-election') ? 'release' : 'cluster';

export type LocatedRule = { role: K8sObject; index: number; rule: PolicyRule; scope: 'cluster' | 'release' };

/** Every rule of every Role and ClusterRole, in render order (rule i of the chart is element i). */
export function rbacRules(objects: K8sObject[]): LocatedRule[] {
  return objects.filter(isRole).flatMap((role) => {
    const rules: unknown = role['rules'];
    if (!Array.isArray(rules)) return [];
    return rules.map((r, index) => ({
      role,
      index,
      rule: parseRule(r),
      scope: scopeOf(role),
    }));
  });
}

/** A rule as single grants (verb x group x resource x name). */
export function grantsOfRule(r: Pick<LocatedRule, 'rule' | 'scope'>): Grant[] {
  const out: Grant[] = [];
  const names = r.rule.resourceNames && r.rule.resourceNames.length > 0 ? r.rule.resourceNames : [undefined];
  for (const group of r.rule.apiGroups ?? [])
    for (const resource of r.rule.resources ?? [])
      for (const verb of r.rule.verbs)
        for (const name of names)
          out.push(
            name === undefined
              ? { group, resource, verb, scope: r.scope }
              : { group, resource, verb, scope: r.scope, name },
          );
  return out;
}

export function grantsOf(objects: K8sObject[]): Grant[] {
  return rbacRules(objects).flatMap(grantsOfRule);
}

export const grantKey = (g: Grant | ApiCall) =>
  `${g.scope} ${g.group || 'core'}/${g.resource} ${g.verb}${g.name ? ` name=${g.name}` : ''}`;

/** Every `*` in a rule, as "Kind/name rule i field". */
export function wildcards(objects: K8sObject[]): string[] {
  const found: string[] = [];
  for (const { role, index, rule } of rbacRules(objects)) {
    for (const [field, list] of Object.entries(rule)) {
      if (Array.isArray(list) && list.some((s) => s.includes('*'))) {
        found.push(`${role.kind}/${role.metadata.name} rule ${index} ${field}`);
      }
    }
  }
  return found;
}

/** A deep copy of the objects with rule `i` (as numbered by rbacRules) removed. */
export function withoutRule(objects: K8sObject[], i: number): K8sObject[] {
  const target = rbacRules(objects)[i];
  if (!target) throw new Error(`there is no RBAC rule ${i}`);
  return objects.map((o) => {
    const copy = structuredClone(o);
    if (o === target.role) {
      const rules = copy['rules'];
      if (Array.isArray(rules)) rules.splice(target.index, 1);
    }
    return copy;
  });
}

/**
 * The rendered RBAC (Roles, ClusterRoles, their bindings) re-named with `prefix` and bound to
 * ServiceAccount `namespace/serviceAccount` instead of the chart's, so variants can live side by
 * side on one API server. Namespaced objects move to `namespace`.
 */
export function rbacFor(
  objects: K8sObject[],
  opts: { prefix: string; namespace: string; serviceAccount: string },
): K8sObject[] {
  const renamed = new Map<string, string>();
  const rbac = objects.filter((o) => o.apiVersion === 'rbac.authorization.k8s.io/v1' && !isHook(o));
  for (const o of rbac)
    renamed.set(`${o.kind}/${o.metadata.name}`, `${opts.prefix}-${o.metadata.name}`.slice(0, 253));
  return rbac.map((o) => {
    const copy = structuredClone(o);
    copy.metadata = {
      name: renamed.get(`${o.kind}/${o.metadata.name}`)!,
      ...(o.kind === 'Role' || o.kind === 'RoleBinding' ? { namespace: opts.namespace } : {}),
      labels: { 'app.kubernetes.io/part-of': 'cannes', 'cannes.dev/test': opts.prefix },
    };
    if (o.kind === 'ClusterRoleBinding' || o.kind === 'RoleBinding') {
      const ref: unknown = o['roleRef'];
      const refKind: unknown = typeof ref === 'object' && ref !== null ? Reflect.get(ref, 'kind') : undefined;
      const refName: unknown = typeof ref === 'object' && ref !== null ? Reflect.get(ref, 'name') : undefined;
      copy['roleRef'] = {
        apiGroup: 'rbac.authorization.k8s.io',
        kind: refKind,
        name: renamed.get(`${String(refKind)}/${String(refName)}`),
      };
      copy['subjects'] = [{ kind: 'ServiceAccount', name: opts.serviceAccount, namespace: opts.namespace }];
    }
    return copy;
  });
}

/** `kubectl auth can-i` arguments for one call (resource.group[/name] and --subresource). */
export function canIArgs(
  call: Pick<ApiCall, 'group' | 'resource' | 'verb' | 'name'>,
  namespace: string,
): string[] {
  const [resource, subresource] = call.resource.split('/');
  const qualified = call.group === '' ? resource! : `${resource}.${call.group}`;
  const args = [
    'auth',
    'can-i',
    call.verb,
    call.name ? `${qualified}/${call.name}` : qualified,
    '-n',
    namespace,
  ];
  if (subresource) args.push(`--subresource=${subresource}`);
  return args;
}

/** Whether ServiceAccount `sa` may make `call` in `namespace` (impersonated by the rig's admin). */
export async function canI(
  rig: Rig,
  sa: { namespace: string; name: string },
  call: Pick<ApiCall, 'group' | 'resource' | 'verb' | 'name'>,
  namespace: string,
): Promise<boolean> {
  const res = await rig.kubectl(
    [...canIArgs(call, namespace), `--as=system:serviceaccount:${sa.namespace}:${sa.name}`],
    { check: false },
  );
  const answer = res.stdout.trim();
  if (answer === 'yes' && res.code === 0) return true;
  if (answer === 'no' && res.code === 1) return false;
  throw new Error(`kubectl ${canIArgs(call, namespace).join(' ')}: exit ${res.code}: ${res.stderr.trim()}`);
}

/** Runs `fn` over `items` with at most `limit` at once (the machine has 2 shared cores). */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/** Whether `sa` may make `call` in `namespace`, by a SubjectAccessReview (fast: no process). */
export async function subjectAccessReview(
  rig: Rig,
  sa: { namespace: string; name: string },
  call: Pick<ApiCall, 'group' | 'resource' | 'verb' | 'name'>,
  namespace: string,
): Promise<boolean> {
  const [resource, subresource] = call.resource.split('/');
  const res = await rig.adminRequest('POST', '/apis/authorization.k8s.io/v1/subjectaccessreviews', {
    apiVersion: 'authorization.k8s.io/v1',
    kind: 'SubjectAccessReview',
    spec: {
      user: `system:serviceaccount:${sa.namespace}:${sa.name}`,
      groups: ['system:serviceaccounts', `system:serviceaccounts:${sa.namespace}`, 'system:authenticated'],
      resourceAttributes: {
        namespace,
        verb: call.verb,
        group: call.group,
        resource,
        ...(subresource ? { subresource } : {}),
        ...(call.name ? { name: call.name } : {}),
      },
    },
  });
  const status: unknown =
    typeof res.body === 'object' && res.body !== null ? Reflect.get(res.body, 'status') : undefined;
  const allowed: unknown =
    typeof status === 'object' && status !== null ? Reflect.get(status, 'allowed') : undefined;
  if (res.status !== 201 || typeof allowed !== 'boolean') {
    throw new Error(`SubjectAccessReview: HTTP ${res.status}`);
  }
  return allowed;
}

export type RbacVariant = {
  serviceAccount: { namespace: string; name: string };
  /** A kubeconfig with a TokenRequest token of the variant's ServiceAccount (1 h). */
  kubeconfig: string;
  remove(): Promise<void>;
};

/**
 * Installs `objects`' RBAC (e.g. the chart's, or `withoutRule(chart, i)`) for a fresh
 * ServiceAccount `namespace/name` and returns a kubeconfig that authenticates as it: run the
 * operator with that kubeconfig to prove the RBAC is enough, or that a rule is needed.
 */
export async function installRbacVariant(
  rig: Rig,
  objects: K8sObject[],
  opts: { namespace: string; name: string; prefix: string },
): Promise<RbacVariant> {
  const variant = rbacFor(objects, {
    prefix: opts.prefix,
    namespace: opts.namespace,
    serviceAccount: opts.name,
  });
  const list = { apiVersion: 'v1', kind: 'List', items: variant };
  await rig.kubectl(['apply', '-f', '-'], { stdin: JSON.stringify(list) });
  const kubeconfig = await rig.serviceAccountKubeconfig(opts.namespace, opts.name);
  return {
    serviceAccount: { namespace: opts.namespace, name: opts.name },
    kubeconfig,
    remove: async () => {
      await rig.kubectl(['delete', '--ignore-not-found', '-f', '-'], {
        stdin: JSON.stringify(list),
        check: false,
      });
      await rig.kubectl(['delete', 'serviceaccount', opts.name, '-n', opts.namespace, '--ignore-not-found'], {
        check: false,
      });
    },
  };
}

/**
 * Requests that RBAC denied this operator, from an operator's log: every failed API call is logged with
 * the API server's message (the informer, the elector, the reconcile and the event recorder all
 * log errors), and an RBAC denial reads `... is forbidden: User "system:serviceaccount:NS:SA"
 * cannot VERB resource ...`. Not rest_client_requests_total{code="403"}: the API server also
 * answers 403 for writes into a terminating namespace (other tests leave those on the shared
 * rig, and the operator watches every namespace), which says nothing about RBAC.
 */
export const RBAC_DENIAL = /is forbidden: User \\?"system:serviceaccount:[^"\\]+\\?" cannot /;
