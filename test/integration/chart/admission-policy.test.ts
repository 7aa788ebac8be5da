/**
 * The chart's ValidatingAdmissionPolicy on the rig's real API server: the operator's
 * ServiceAccount (with the chart's RBAC, which may create and patch any Secret) is denied a
 * change to an unlabelled Secret, any change but removing data, and the creation of any Secret
 * but a `<vps>-gateway` owned by its Vps. (A whole provisioning under the policy:
 * provisioning-rbac.test.ts.)
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Rig } from '../../rig/rig.ts';
import { useRig } from '../../rig/shared.ts';
import { installAdmissionPolicy } from './admission.ts';
import { render } from './helm.ts';
import { installRbacVariant, type RbacVariant } from './rbac.ts';

let rig: Rig;
let ns: string;
let variant: RbacVariant;
let removePolicy: () => Promise<void>;
const canary = `vap-canary-${randomBytes(8).toString('hex')}`;

beforeAll(async () => {
  rig = await useRig();
  ns = `vap-${randomBytes(4).toString('hex')}`;
  await rig.kubectl(['create', 'namespace', ns]);
  const chart = await render({ release: 'cannes-operator', namespace: ns });
  variant = await installRbacVariant(rig, chart, {
    namespace: ns,
    name: 'cannes-operator',
    prefix: `vap-${ns}`,
  });
  removePolicy = await installAdmissionPolicy(rig, chart, `vap-${ns}`);
  const secret = (name: string, labels: Record<string, string>) => ({
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name, namespace: ns, labels },
    stringData: { token: canary, other: 'kept' },
  });
  const list = {
    apiVersion: 'v1',
    kind: 'List',
    items: [secret('labelled', { 'cannes.dev/usage': 'cloud-token' }), secret('unlabelled', {})],
  };
  await rig.kubectl(['apply', '--server-side', '-f', '-'], { stdin: JSON.stringify(list) });
  // A new policy takes a moment to reach the admission chain: wait until a harmless probe
  // (creating a Secret no policy allows) is refused.
  const probe = JSON.stringify({ apiVersion: 'v1', kind: 'Secret', metadata: { name: 'vap-probe' } });
  for (let i = 0; ; i++) {
    const r = await asOperator(['create', '-f', '-'], probe);
    if (!r.ok) break;
    await rig.kubectl(['-n', ns, 'delete', 'secret', 'vap-probe'], { check: false });
    if (i > 60) throw new Error('the admission policy never took effect');
    await new Promise((res) => setTimeout(res, 500));
  }
}, 120_000);

afterAll(async () => {
  await removePolicy?.();
  await variant?.remove();
  await rig?.kubectl(['delete', 'namespace', ns, '--wait=false'], { check: false });
});

/** kubectl as the operator's ServiceAccount; the admission answer, allowed or not. */
async function asOperator(args: string[], stdin?: string) {
  const r = await rig.kubectl(['-n', ns, ...args], {
    kubeconfig: variant.kubeconfig,
    check: false,
    ...(stdin === undefined ? {} : { stdin }),
  });
  return { ok: r.code === 0, out: `${r.stdout}${r.stderr}` };
}
const removeToken = JSON.stringify([{ op: 'remove', path: '/data/token' }]);

describe("the chart's admission policy for the operator's Secret writes", () => {
  const denied = async (args: string[], stdin?: string) => {
    const r = await asOperator(args, stdin);
    return r.ok ? 'allowed' : r.out;
  };

  it('denies a change to an unlabelled Secret, with its reason', async () => {
    const out = await denied(['patch', 'secret', 'unlabelled', '--type=json', '-p', removeToken]);
    expect(out).toMatch(/only Secrets labelled cannes\.dev\/usage/);
    expect(out).not.toContain(canary);
  });

  it('denies adding or changing data, or the label, of a labelled Secret', async () => {
    const change = JSON.stringify({ stringData: { other: 'changed' } });
    expect(await denied(['patch', 'secret', 'labelled', '--type=merge', '-p', change])).toMatch(
      /only remove data/,
    );
    const relabel = JSON.stringify({ metadata: { labels: { 'cannes.dev/usage': 'llm-key' } } });
    expect(await denied(['patch', 'secret', 'labelled', '--type=merge', '-p', relabel])).toMatch(
      /only remove data/,
    );
  });

  it('denies creating any Secret but a <vps>-gateway owned by its Vps', async () => {
    const create = (name: string, owner?: string) =>
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: {
          name,
          ...(owner
            ? {
                ownerReferences: [
                  {
                    apiVersion: 'cannes.dev/v1alpha1',
                    kind: 'Vps',
                    name: owner,
                    uid: '00000000-0000-4000-8000-000000000001',
                    controller: true,
                  },
                ],
              }
            : {}),
        },
        stringData: { token: 'x' },
      });
    expect(await denied(['create', '-f', '-'], create('anything'))).toMatch(/only <vps>-gateway Secrets/);
    expect(await denied(['create', '-f', '-'], create('agent-gateway'))).toMatch(
      /only <vps>-gateway Secrets/,
    );
    expect(await denied(['create', '-f', '-'], create('other-gateway', 'agent'))).toMatch(
      /only <vps>-gateway Secrets/,
    );
    const ok = await asOperator(['create', '-f', '-'], create('agent-gateway', 'agent'));
    expect(ok.out).toContain('created');
  });

  it('allows the purge: removing a key from a labelled Secret', async () => {
    const r = await asOperator(['patch', 'secret', 'labelled', '--type=json', '-p', removeToken]);
    expect(r.ok, r.out).toBe(true);
  });
});
