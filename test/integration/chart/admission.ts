import type { Rig } from '../../rig/rig.ts';
import type { K8sObject } from './helm.ts';

/**
 * Applies the chart's ValidatingAdmissionPolicy and its binding (cluster-scoped) under names
 * of this test's own, so test files sharing the rig never collide; returns their removal.
 */
export async function installAdmissionPolicy(
  rig: Rig,
  chart: K8sObject[],
  prefix: string,
): Promise<() => Promise<void>> {
  const policy = chart.find((o) => o.kind === 'ValidatingAdmissionPolicy');
  const binding = chart.find((o) => o.kind === 'ValidatingAdmissionPolicyBinding');
  if (!policy || !binding) throw new Error('the chart renders no ValidatingAdmissionPolicy and binding');
  const name = `${prefix}-secrets`;
  const items = [
    { ...policy, metadata: { ...policy.metadata, name } },
    {
      ...binding,
      metadata: { ...binding.metadata, name },
      spec: { ...(binding['spec'] as Record<string, unknown>), policyName: name },
    },
  ];
  const list = JSON.stringify({ apiVersion: 'v1', kind: 'List', items });
  await rig.kubectl(['apply', '-f', '-'], { stdin: list });
  return async () => {
    await rig.kubectl(['delete', '--ignore-not-found', '-f', '-'], { stdin: list, check: false });
  };
}
