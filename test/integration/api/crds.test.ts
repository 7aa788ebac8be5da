import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { vpsManifest } from '../../lib/manifests.ts';
import type { Rig } from '../../rig/rig.ts';
import { CRDS_DIR, crdNamespace, EXAMPLES_DIR } from './fixtures.ts';

describe('the CRDs in crds/ on a real API server', () => {
  let rig: Rig;
  let ns: string;
  let drop: () => Promise<void> = async () => {};

  beforeAll(async () => {
    ({ rig, ns, drop } = await crdNamespace('crds'));
  });
  afterAll(async () => {
    await drop();
  });

  it('are accepted by kubectl apply -f crds/', async () => {
    const res = await rig.kubectl(['apply', '-f', CRDS_DIR]);
    expect(res.stdout).toMatch(
      /customresourcedefinition\.apiextensions\.k8s\.io\/vpses\.cannes\.dev (created|configured|unchanged)/,
    );
    expect(res.stdout).toMatch(/modelkeys\.cannes\.dev (created|configured|unchanged)/);
    const names = await rig.kubectl(['api-resources', '--api-group=cannes.dev', '-o', 'name']);
    expect(names.stdout.split('\n').sort()).toEqual(
      expect.arrayContaining(['modelkeys.cannes.dev', 'vpses.cannes.dev']),
    );
  });

  it('serve the short name mk for modelkeys', async () => {
    const res = await rig.kubectl(['api-resources', '--api-group=cannes.dev']);
    expect(res.stdout).toMatch(/^modelkeys\s+mk\s+cannes\.dev\/v1alpha1\s+true\s+ModelKey$/m);
  });

  it('explain vps.spec with a description for every field', async () => {
    const res = await rig.kubectl(['explain', 'vps.spec']);
    expect(res.stdout).toContain('KIND:       Vps');
    // Required fields are marked, and each field line is followed by an indented description.
    for (const field of ['serverType', 'location', 'cloudTokenSecretRef']) {
      expect(res.stdout).toMatch(
        new RegExp(`^  ${field}\\s+<\\w+> -required-\\n(?:  enum: .*\\n)?    \\S`, 'm'),
      );
    }
    // Each field is a block: "  name\t<type>", maybe "  enum: ...", then the indented description.
    const blocks = res.stdout.slice(res.stdout.indexOf('FIELDS:') + 'FIELDS:'.length).split(/\n\s*\n/);
    const fields = blocks.map((b) => b.replace(/^\n+/, '')).filter((b) => /^ {2}\w+\s+</.test(b));
    expect(fields.length).toBeGreaterThanOrEqual(3);
    const undescribed = fields
      .filter((b) => !/^ {4}(?!<no description>)\S/m.test(b))
      .map((b) => b.trim().split(/\s/)[0]);
    expect(undescribed).toEqual([]);
  });

  it('show Ready, HasSshKey, Gateway, IPv4, Status and Age in kubectl get vps', async () => {
    const name = 'printer';
    await rig.kubectl(['apply', '-f', '-'], { stdin: JSON.stringify(vpsManifest(ns, name)) });
    await rig.kubectl(['annotate', 'vps', name, '-n', ns, 'cannes.dev/ipv4=198.18.0.7']);
    await rig.kubectl([
      'patch',
      'vps',
      name,
      '-n',
      ns,
      '--subresource=status',
      '--type=merge',
      '-p',
      JSON.stringify({ status: { ready: true, hasSshKey: false, gatewayDeployed: true } }),
    ]);
    const res = await rig.kubectl(['get', 'vps', '-n', ns]);
    const [header, row] = res.stdout.trim().split('\n');
    expect(header?.split(/\s+/)).toEqual(['NAME', 'READY', 'HASSSHKEY', 'GATEWAY', 'IPV4', 'STATUS', 'AGE']);
    expect(row?.split(/\s+/).slice(0, 5)).toEqual([name, 'true', 'false', 'true', '198.18.0.7']);
  });

  it('accept every object in examples/ with a server-side dry run', async () => {
    // A dry run creates nothing, so the Namespace the examples live in must exist for real first.
    const namespaces = readdirSync(EXAMPLES_DIR)
      .filter((f) => /\.ya?ml$/.test(f))
      .flatMap((f) => parseAllDocuments(readFileSync(join(EXAMPLES_DIR, f), 'utf8')).map((d) => d.toJS()))
      .filter((o: unknown) => typeof o === 'object' && o !== null && Reflect.get(o, 'kind') === 'Namespace');
    expect(namespaces.length).toBeGreaterThan(0);
    for (const n of namespaces) await rig.kubectl(['apply', '-f', '-'], { stdin: JSON.stringify(n) });
    const res = await rig.kubectl(['apply', '--dry-run=server', '-f', CRDS_DIR, '-f', EXAMPLES_DIR]);
    expect(res.stdout).toMatch(/vps\.cannes\.dev\/\S+ (created|configured|unchanged) \(server dry run\)/);
    expect(res.stdout).toMatch(
      /modelkey\.cannes\.dev\/\S+ (created|configured|unchanged) \(server dry run\)/,
    );
  });
});
