import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseModelKey, parseVps } from '../../../operator/api/parse.ts';
import type { KubeClient } from '../../../operator/kube/client.ts';
import { EventRecorder } from '../../../operator/kube/events.ts';
import { Informer } from '../../../operator/kube/informer.ts';
import { KubePort, MODELKEY_RESOURCE, VPS_RESOURCE } from '../../../operator/wiring/kube.ts';
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
        metadata: { name: 'hcloud-token' },
        stringData: { token: canary, other: 'kept' },
      },
    });
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, () => port.removeSecretKey(ns.name, 'hcloud-token', 'token')),
    );
    expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
    const after = (await api.request('GET', `/api/v1/namespaces/${ns.name}/secrets/hcloud-token`)) as {
      data: Record<string, string>;
    };
    expect(Object.keys(after.data)).toEqual(['other']);
    expect(JSON.stringify(after)).not.toContain(canary);
  });
});
