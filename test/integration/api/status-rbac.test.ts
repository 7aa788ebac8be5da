import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { vpsManifest } from '../../lib/manifests.ts';
import type { Rig } from '../../rig/rig.ts';
import { crdNamespace, numberAt, suffix } from './fixtures.ts';

describe('the status subresource and RBAC on cannes.dev objects', () => {
  let rig: Rig;
  let ns: string;
  let drop: () => Promise<void> = async () => {};

  beforeAll(async () => {
    ({ rig, ns, drop } = await crdNamespace('status'));
  });
  afterAll(async () => {
    await drop();
  });

  const generation = async (name: string): Promise<number> => {
    const res = await rig.kubectl(['get', 'vps', name, '-n', ns, '-o', 'json']);
    return numberAt(JSON.parse(res.stdout), 'metadata', 'generation');
  };

  it('does not bump metadata.generation on a /status write, and does on a spec write', async () => {
    const name = `gen-${suffix()}`;
    await rig.kubectl(['create', '-f', '-'], { stdin: JSON.stringify(vpsManifest(ns, name)) });
    const g0 = await generation(name);

    const statusPatch = JSON.stringify({ status: { observedGeneration: g0, serverCreated: true } });
    await rig.kubectl([
      'patch',
      'vps',
      name,
      '-n',
      ns,
      '--subresource=status',
      '--type=merge',
      '-p',
      statusPatch,
    ]);
    const afterStatus = await rig.kubectl(['get', 'vps', name, '-n', ns, '-o', 'json']);
    const parsed: unknown = JSON.parse(afterStatus.stdout);
    expect(numberAt(parsed, 'status', 'observedGeneration')).toBe(g0); // the status write landed
    expect(numberAt(parsed, 'metadata', 'generation')).toBe(g0);

    await rig.kubectl([
      'patch',
      'vps',
      name,
      '-n',
      ns,
      '--type=merge',
      '-p',
      '{"spec":{"sshKeyRotation":{"interval":"168h"}}}',
    ]);
    expect(await generation(name)).toBe(g0 + 1);
  });

  it('ignores status in a write to the main resource', async () => {
    const name = `main-${suffix()}`;
    const obj = { ...vpsManifest(ns, name), status: { ready: true } };
    const res = await rig.kubectl(['create', '-f', '-', '-o', 'json'], { stdin: JSON.stringify(obj) });
    const created: unknown = JSON.parse(res.stdout);
    expect(typeof created === 'object' && created !== null && 'status' in created).toBe(false);
  });

  it('answers 403 on vpses to a service account with no RBAC', async () => {
    const sa = `no-rbac-${suffix()}`;
    const kubeconfig = await rig.serviceAccountKubeconfig(ns, sa);
    const list = await rig.kubectl(['get', 'vpses', '-n', ns], { kubeconfig, check: false });
    expect(list.code).not.toBe(0);
    expect(list.stderr).toContain('Error from server (Forbidden)');
    expect(list.stderr).toContain(`User "system:serviceaccount:${ns}:${sa}" cannot list resource "vpses"`);
    const create = await rig.kubectl(['create', '-f', '-'], {
      kubeconfig,
      check: false,
      stdin: JSON.stringify(vpsManifest(ns, `sa-${suffix()}`)),
    });
    expect(create.stderr).toContain('cannot create resource "vpses"');
    const can = await rig.kubectl(['auth', 'can-i', 'list', 'vpses.cannes.dev', '-n', ns], {
      kubeconfig,
      check: false,
    });
    expect(can.stdout.trim()).toBe('no');
  });

  it('lets the same kind of token list vpses once a Role grants it (the control for the 403)', async () => {
    const sa = `reader-${suffix()}`;
    const kubeconfig = await rig.serviceAccountKubeconfig(ns, sa);
    await rig.kubectl([
      'create',
      'role',
      `${sa}`,
      '-n',
      ns,
      '--verb=get,list',
      '--resource=vpses.cannes.dev',
    ]);
    await rig.kubectl([
      'create',
      'rolebinding',
      `${sa}`,
      '-n',
      ns,
      `--role=${sa}`,
      `--serviceaccount=${ns}:${sa}`,
    ]);
    const list = await rig.kubectl(['get', 'vpses', '-n', ns, '-o', 'name'], { kubeconfig, check: false });
    expect(list.stderr).toBe('');
    expect(list.code).toBe(0);
    const target = `keep-${suffix()}`;
    await rig.kubectl(['create', '-f', '-'], { stdin: JSON.stringify(vpsManifest(ns, target)) });
    const seen = await rig.kubectl(['get', 'vps', target, '-n', ns, '-o', 'name'], { kubeconfig });
    expect(seen.stdout.trim()).toBe(`vps.cannes.dev/${target}`);
    const del = await rig.kubectl(['delete', 'vps', target, '-n', ns], { kubeconfig, check: false });
    expect(del.stderr).toContain('cannot delete resource "vpses"');
  });
});
