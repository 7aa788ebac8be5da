import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KubePort, MODELKEY_RESOURCE, VPS_RESOURCE } from '../../../operator/adapters/kube.ts';
import { parseModelKey, parseVps } from '../../../operator/api/parse.ts';
import type { KubeClient } from '../../../operator/kube/client.ts';
import { EventRecorder } from '../../../operator/kube/events.ts';
import { Informer } from '../../../operator/kube/informer.ts';
import { vpsManifest } from '../../lib/manifests.ts';
import { useRig } from '../../rig/shared.ts';
import { adminClient, tempNamespace } from './helpers.ts';

// Many Vps share one cloud-token Secret and purge it when the last is Ready: the purges race.
describe('purging a key from a Secret', () => {
  let api: KubeClient;
  let port: KubePort;
  let ns: { name: string; remove: () => Promise<void> };

  beforeAll(async () => {
    const rig = await useRig();
    api = adminClient(rig);
    ns = await tempNamespace(rig, 'purge');
    port = new KubePort({
      api,
      events: new EventRecorder({ api, reportingInstance: 'test' }),
      vpses: new Informer({ api, resource: VPS_RESOURCE, parse: parseVps }),
      modelKeys: new Informer({ api, resource: MODELKEY_RESOURCE, parse: parseModelKey }),
    });
  });
  afterAll(async () => {
    await ns?.remove();
  });

  it('succeeds for every one of 8 concurrent purges, and the key is gone', async () => {
    const canary = `token-canary-${randomBytes(12).toString('hex')}`;
    await api.request('POST', `/api/v1/namespaces/${ns.name}/secrets`, {
      body: {
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name: 'hcloud-token', labels: { 'cannes.dev/usage': 'cloud-token' } },
        stringData: { token: canary, other: 'kept' },
      },
    });
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, () => port.removeSecretKey(ns.name, 'hcloud-token', 'token', 'cloud-token')),
    );
    expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
    const after = (await api.request('GET', `/api/v1/namespaces/${ns.name}/secrets/hcloud-token`)) as {
      data: Record<string, string>;
    };
    expect(Object.keys(after.data)).toEqual(['other']);
    expect(JSON.stringify(after)).not.toContain(canary);
  });

  it('reads and purges only a Secret labelled for that use, and says how to label it', async () => {
    const canary = `llm-canary-${randomBytes(12).toString('hex')}`;
    const put = (name: string, labels: Record<string, string>) =>
      api.request('POST', `/api/v1/namespaces/${ns.name}/secrets`, {
        body: { apiVersion: 'v1', kind: 'Secret', metadata: { name, labels }, stringData: { key: canary } },
      });
    await put('unlabelled', {});
    await put('for-llm', { 'cannes.dev/usage': 'llm-key' });
    for (const name of ['unlabelled', 'for-llm']) {
      const r = await port.readSecretKey(ns.name, name, 'key', 'cloud-token');
      expect(r.value).toBeUndefined();
      expect(r.notLabelled).toContain(`kubectl label secret ${name} cannes.dev/usage=cloud-token`);
      expect(r.notLabelled).not.toContain(canary);
      await expect(port.removeSecretKey(ns.name, name, 'key', 'cloud-token')).rejects.toMatchObject({
        reason: 'SecretNotLabelled',
      });
      const after = (await api.request('GET', `/api/v1/namespaces/${ns.name}/secrets/${name}`)) as {
        data: Record<string, string>;
      };
      expect(Object.keys(after.data)).toEqual(['key']);
    }
    const ok = await port.readSecretKey(ns.name, 'for-llm', 'key', 'llm-key');
    expect(ok.value?.reveal()).toBe(canary);
  });

  it('never adopts a <vps>-gateway Secret that the Vps does not own', async () => {
    const planted = `planted-${randomBytes(12).toString('hex')}`;
    await api.request('POST', `/api/v1/namespaces/${ns.name}/secrets`, {
      body: {
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name: 'agent-gateway' },
        stringData: { token: planted },
      },
    });
    const vps = parseVps(
      vpsManifest(
        ns.name,
        'agent',
        { serverType: 'cx23', cloudTokenSecretRef: { name: 'hcloud-token', key: 'token' } },
        { uid: randomUUID(), resourceVersion: '1', generation: 1 },
      ),
    );
    const err = await port.ensureGatewayToken(vps).catch((e: unknown) => e);
    expect(err).toMatchObject({ reason: 'GatewaySecretNotOwned' });
    expect(String(err)).not.toContain(planted);
  });
});
