import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type StartedRig, startRig } from '../../rig/controlplane.ts';
import { CHART_DIR } from './helm.ts';

// The documented upgrade path for CRDs (CHANGELOG.md "Upgrade notes", docs/releasing.md): Helm
// installs the chart's crds/ on the first install only and never upgrades them, so every upgrade
// runs `kubectl apply --server-side --force-conflicts -f crds/` first. On a private rig: the CRDs
// are cluster-scoped, and this test installs an older copy of them.
const UPGRADE_STEP = ['apply', '--server-side', '--force-conflicts', '-f', `${CHART_DIR}/crds/`];
const ns = 'image-crd-upgrade';
const userNs = 'image-crd-user';
const release = 'cannes';

let rig: StartedRig;
let dir = '';
let oldChart = '';

/** Names of the printer columns of the Vps CRD as the API server has it. */
async function vpsColumns(): Promise<string[]> {
  const res = await rig.kubectl([
    'get',
    'crd',
    'vpses.cannes.dev',
    '-o',
    'jsonpath={.spec.versions[0].additionalPrinterColumns[*].name}',
  ]);
  return res.stdout.trim().split(/\s+/);
}

beforeAll(async () => {
  rig = await startRig();
  // "The previous release": this chart with its Vps CRD one printer column short.
  dir = mkdtempSync(join(tmpdir(), 'image-crd-upgrade-'));
  oldChart = join(dir, 'cannes-operator');
  cpSync(CHART_DIR, oldChart, { recursive: true });
  const crd = join(oldChart, 'crds', 'cannes.dev_vpses.yaml');
  const text = readFileSync(crd, 'utf8');
  const column = /\n {8}- name: Gateway\n(?: {10}.*\n)+/;
  expect(text).toMatch(column);
  writeFileSync(crd, text.replace(column, '\n'));
}, 120_000);

afterAll(async () => {
  await rig?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('upgrading the CRDs with the chart', () => {
  it('helm upgrade alone leaves the old CRDs; the documented step upgrades them and keeps the objects', async () => {
    await rig.helm(['install', release, oldChart, '-n', ns, '--create-namespace']);
    expect(await vpsColumns()).not.toContain('Gateway');
    await rig.kubectl(['create', 'namespace', userNs]);
    const vps = readFileSync('examples/20-vps.yaml', 'utf8').replace(
      'namespace: cannes-demo',
      `namespace: ${userNs}`,
    );
    await rig.kubectl(['apply', '--server-side', '-f', '-'], { stdin: vps });

    // Helm never touches crds/ on upgrade: the reason for the step.
    await rig.helm(['upgrade', release, CHART_DIR, '-n', ns]);
    expect(await vpsColumns()).not.toContain('Gateway');

    // Without --force-conflicts the apply stops: Helm created the CRDs, so its field manager owns
    // the fields that change (the step that CHANGELOG.md documented before this test).
    const plain = await rig.kubectl(['apply', '--server-side', '-f', `${CHART_DIR}/crds/`], { check: false });
    expect(plain.code).toBe(1);
    expect(plain.stderr).toMatch(/conflict with "helm"/);
    expect(await vpsColumns()).not.toContain('Gateway');

    // The documented step: the new CRDs first, then helm upgrade.
    await rig.kubectl(UPGRADE_STEP);
    await rig.helm(['upgrade', release, CHART_DIR, '-n', ns]);
    expect(await vpsColumns()).toContain('Gateway');
    const got = await rig.kubectl(['get', 'vps', 'agent', '-n', userNs, '-o', 'jsonpath={.spec.serverType}']);
    expect(got.stdout).toBe('cx23');

    // Again on an up-to-date cluster: nothing to change, nothing fails.
    const again = await rig.kubectl(UPGRADE_STEP);
    expect(again.stdout).toMatch(/serverside-applied/);
  });

  it('helm uninstall leaves the CRDs and so every Vps in place', async () => {
    await rig.helm(['uninstall', release, '-n', ns]);
    const crds = await rig.kubectl(['get', 'crd', 'vpses.cannes.dev', 'modelkeys.cannes.dev', '-o', 'name']);
    expect(crds.stdout.trim().split('\n').sort()).toEqual([
      'customresourcedefinition.apiextensions.k8s.io/modelkeys.cannes.dev',
      'customresourcedefinition.apiextensions.k8s.io/vpses.cannes.dev',
    ]);
    const vps = await rig.kubectl(['get', 'vps', '-n', userNs, '-o', 'name']);
    expect(vps.stdout.trim()).toBe('vps.cannes.dev/agent');
  });
});
