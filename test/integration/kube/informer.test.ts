import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type KubeApi, KubeClient } from '../../../operator/kube/client.ts';
import { Informer, type InformerEvent } from '../../../operator/kube/informer.ts';
import { type KubeObject, parseKubeObject } from '../../../operator/kube/object.ts';
import { createLogger } from '../../../operator/lib/log.ts';
import { CONFIGMAPS, type ConfigMap, parseConfigMap } from '../../lib/configmaps.ts';
import { vpsManifest } from '../../lib/manifests.ts';
import type { Rig } from '../../rig/rig.ts';
import { useRig } from '../../rig/shared.ts';
import { adminClient, adminConnection, TcpProxy, tempNamespace, until } from './helpers.ts';

const logger = createLogger('informer-it', { level: process.env['TEST_LOG_LEVEL'] ?? 'silent' });

async function metric(registry: Registry, name: string, labels: Record<string, string>): Promise<number> {
  const m = await registry.getSingleMetric(name)?.get();
  return (m?.values ?? [])
    .filter((x) => Object.entries(labels).every(([k, v]) => x.labels[k] === v))
    .reduce((a, x) => a + x.value, 0);
}

let rig: Rig;
let ns: { name: string; remove: () => Promise<void> };

beforeAll(async () => {
  rig = await useRig();
  ns = await tempNamespace(rig, 'kube-informer');
});
afterAll(async () => {
  await ns?.remove();
});

async function putConfigMap(name: string, data: Record<string, string>): Promise<void> {
  const path = `/api/v1/namespaces/${ns.name}/configmaps`;
  const res = await rig.adminRequest('POST', path, { metadata: { name }, data });
  if (res.status === 409) {
    const upd = await rig.adminRequest('PATCH', `${path}/${name}`, { data }, 'application/merge-patch+json');
    if (upd.status !== 200) throw new Error(`patch ${name}: ${upd.status}`);
  } else if (res.status !== 201) throw new Error(`create ${name}: ${res.status}`);
}
async function deleteConfigMap(name: string): Promise<void> {
  await rig.adminRequest('DELETE', `/api/v1/namespaces/${ns.name}/configmaps/${name}`);
}

describe('Informer against a real API server', () => {
  it('sees objects added, updated and deleted', async () => {
    await putConfigMap('before', { v: '0' });
    const informer = new Informer<ConfigMap>({
      api: adminClient(rig),
      resource: CONFIGMAPS,
      namespace: ns.name,
      parse: parseConfigMap,
      logger,
    });
    const events: string[] = [];
    informer.on((ev: InformerEvent<ConfigMap>) => events.push(`${ev.type}:${ev.object.metadata.name}`));
    informer.start();
    try {
      await informer.waitForSync();
      expect(informer.get(`${ns.name}/before`)?.data).toEqual({ v: '0' });
      await putConfigMap('a', { v: '1' });
      await until(() => informer.get(`${ns.name}/a`)?.data['v'] === '1', 'a added');
      await putConfigMap('a', { v: '2' });
      await until(() => informer.get(`${ns.name}/a`)?.data['v'] === '2', 'a updated');
      await deleteConfigMap('a');
      await until(() => informer.get(`${ns.name}/a`) === undefined, 'a deleted');
      expect(events).toEqual(['add:before', 'add:a', 'update:a', 'delete:a']);
    } finally {
      await informer.stop();
    }
  });

  it('survives its connections being cut and catches up with what changed meanwhile', async () => {
    const proxy = new TcpProxy(rig.server);
    const url = await proxy.start();
    const registry = new Registry();
    await putConfigMap('stay', { v: '1' });
    await putConfigMap('doomed', { v: '1' });
    const informer = new Informer<ConfigMap>({
      api: new KubeClient(adminConnection(rig, url)),
      resource: CONFIGMAPS,
      namespace: ns.name,
      parse: parseConfigMap,
      logger,
      registry,
      backoffInitialMs: 200,
      backoffMaxMs: 1000,
    });
    informer.start();
    try {
      await informer.waitForSync();
      await until(() => informer.get(`${ns.name}/doomed`) !== undefined, 'initial list');
      // The API server becomes unreachable; meanwhile the world changes.
      proxy.refuse(true);
      proxy.cut();
      await putConfigMap('stay', { v: '2' });
      await deleteConfigMap('doomed');
      await putConfigMap('born', { v: '1' });
      await until(
        async () =>
          (await metric(registry, 'cannes_informer_watch_restarts_total', { reason: 'error' })) >= 2,
        'failed reconnect attempts',
      );
      proxy.refuse(false);
      await until(
        () =>
          informer.get(`${ns.name}/stay`)?.data['v'] === '2' &&
          informer.get(`${ns.name}/doomed`) === undefined &&
          informer.get(`${ns.name}/born`) !== undefined,
        'cache caught up after the outage',
      );
      // And it keeps watching afterwards.
      await putConfigMap('after', { v: '1' });
      await until(() => informer.get(`${ns.name}/after`) !== undefined, 'event after recovery');
    } finally {
      await informer.stop();
      await proxy.close();
    }
  });

  it('relists when the API server answers 410 Gone for a resourceVersion older than its history', async () => {
    await rig.kubectl(['apply', '--server-side', '--force-conflicts', '-f', 'crds/']);
    await rig.kubectl(['wait', '--for=condition=Established', '--timeout=60s', 'crd/vpses.cannes.dev']);
    const registry = new Registry();
    const real = adminClient(rig);
    const vpsPath = `/apis/cannes.dev/v1alpha1/namespaces/${ns.name}/vpses`;
    const createVps = (name: string) =>
      real.request('POST', vpsPath, {
        body: vpsManifest(undefined, name),
      });
    const watchedFrom: string[] = [];
    // As if the informer had last seen resourceVersion 1 (long compacted, older than the Vps watch
    // cache): the API server itself answers with an ERROR event, code 410, reason Expired.
    const api: KubeApi = {
      request: (method, path, opts) => real.request(method, path, opts),
      watch: (path, query, onEvent, onDone) => {
        const rv = watchedFrom.length === 0 ? '1' : String(query['resourceVersion']);
        watchedFrom.push(rv);
        return real.watch(path, { ...query, resourceVersion: rv }, onEvent, onDone);
      },
    };
    await createVps('g1');
    const informer = new Informer<KubeObject>({
      api,
      resource: { group: 'cannes.dev', version: 'v1alpha1', plural: 'vpses', kind: 'Vps', namespaced: true },
      namespace: ns.name,
      parse: parseKubeObject,
      logger,
      registry,
    });
    informer.start();
    try {
      await informer.waitForSync();
      await until(
        async () => (await metric(registry, 'cannes_informer_relists_total', { reason: 'expired' })) >= 1,
        'relist after 410',
      );
      expect(await metric(registry, 'cannes_informer_watch_restarts_total', { reason: 'expired' })).toBe(1);
      await createVps('g2');
      await until(() => informer.get(`${ns.name}/g2`) !== undefined, 'watching again after the relist');
      expect(informer.get(`${ns.name}/g1`)?.kind).toBe('Vps');
      expect(watchedFrom[0]).toBe('1');
      expect(watchedFrom[1]).not.toBe('1');
    } finally {
      await informer.stop();
    }
  });
});
