import { describe, expect, it } from 'vitest';
import { parseModelKey, parseVps } from '../../../operator/api/parse.ts';
import { modelKeyManifest, vpsManifest } from '../../lib/manifests.ts';

const meta = { name: 'agent', namespace: 'ns', uid: 'u-1', resourceVersion: '7', generation: 2 };
const condition = {
  type: 'Ready',
  status: 'True',
  reason: 'Provisioned',
  message: 'ok',
  lastTransitionTime: '2026-11-25T10:00:00Z',
  observedGeneration: 2,
};

describe('parsing objects at the boundary', () => {
  it('fills the defaults of a minimal Vps and keeps conditions with date-time fields', () => {
    const v = parseVps({
      ...vpsManifest(meta.namespace, meta.name, {}, meta),
      status: { ready: true, conditions: [condition] },
    });
    expect(v.spec).toMatchObject({
      image: 'docker-ce',
      gateway: { port: 18789 },
      sshKeyRotation: { interval: '720h' },
      purgeCloudTokenAfterSetup: true,
      deletionPolicy: 'Delete',
    });
    expect(v.spec.gateway.image).toMatch(/^ghcr\.io\/openclaw\/openclaw:/);
    expect(v.status.conditions).toHaveLength(1);
  });

  it('rejects a ModelKey whose spec breaks the schema, naming the field', () => {
    expect(() =>
      parseModelKey(modelKeyManifest(meta.namespace, meta.name, { provider: 'acme' }, meta)),
    ).toThrow(/provider/);
  });

  it('rejects a non-boolean status field and a bad condition time', () => {
    const base = modelKeyManifest(meta.namespace, meta.name, { provider: 'openai' }, meta);
    expect(parseModelKey({ ...base, status: { hasKey: true, conditions: [condition] } }).status.hasKey).toBe(
      true,
    );
    expect(() => parseModelKey({ ...base, status: { hasKey: 'yes' } })).toThrow(/hasKey/);
    expect(() =>
      parseModelKey({ ...base, status: { conditions: [{ ...condition, lastTransitionTime: 'yesterday' }] } }),
    ).toThrow(/lastTransitionTime/);
  });

  it('fills spec.tailnet defaults (hostname from the Vps name, Tailscale login server) and refuses http', () => {
    const vps = (tailnet: unknown, name = 'my.agent') =>
      parseVps({
        apiVersion: 'cannes.dev/v1alpha1',
        kind: 'Vps',
        metadata: { ...meta, name },
        spec: { serverType: 'cx23', location: 'fsn1', cloudTokenSecretRef: { name: 'h', key: 't' }, tailnet },
        status: {},
      });
    expect(vps({ authKeySecretRef: { name: 'ts', key: 'authkey' } }).spec.tailnet).toEqual({
      authKeySecretRef: { name: 'ts', key: 'authkey' },
      hostname: 'my-agent',
      tags: [],
      loginServer: 'https://controlplane.tailscale.com',
      purgeAuthKeyAfterJoin: true,
      owners: [],
    });
    expect(() =>
      vps({ authKeySecretRef: { name: 'ts', key: 'k' }, loginServer: 'http://headscale.example' }),
    ).toThrow(/loginServer/);
    expect(() => vps({ authKeySecretRef: { name: 'ts', key: 'k' }, tags: ['cannes'] })).toThrow(/tags/);
    expect(() => vps({ authKeySecretRef: { name: 'ts', key: 'k' }, hostname: 'a.b' })).toThrow(/hostname/);
    expect(vps(undefined).spec.tailnet).toBeUndefined();
  });
});
