import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isAlreadyExists, isNotFound } from '../../../operator/kube/client.ts';
import { Controller, done } from '../../../operator/kube/controller.ts';
import { Informer } from '../../../operator/kube/informer.ts';
import { ownerReference } from '../../../operator/kube/object.ts';
import { createLogger } from '../../../operator/lib/log.ts';
import { CONFIGMAPS, type ConfigMap, parseConfigMap } from '../../lib/configmaps.ts';
import type { Rig } from '../../rig/rig.ts';
import { useRig } from '../../rig/shared.ts';
import { adminClient, tempNamespace, until } from './helpers.ts';

const logger = createLogger('controller-it', { level: process.env['TEST_LOG_LEVEL'] ?? 'silent' });

let rig: Rig;
let ns: { name: string; remove: () => Promise<void> };

beforeAll(async () => {
  rig = await useRig();
  ns = await tempNamespace(rig, 'kube-controller');
});
afterAll(async () => {
  await ns?.remove();
});

describe('Controller against a real API server', () => {
  it('reconciles every input into an owned output and follows later changes', async () => {
    const api = adminClient(rig);
    const registry = new Registry();
    const inputs = new Informer<ConfigMap>({
      api,
      resource: CONFIGMAPS,
      namespace: ns.name,
      labelSelector: 'role=input',
      parse: parseConfigMap,
      registry,
      logger,
    });
    const controller = new Controller({
      name: 'mirror',
      informer: inputs,
      workers: 2,
      registry,
      logger,
      reconcile: async ({ key, namespace, name }, { signal }) => {
        const input = inputs.get(key);
        if (!input) return done();
        const path = `/api/v1/namespaces/${namespace}/configmaps`;
        const body = {
          metadata: {
            name: `${name}-out`,
            labels: { role: 'output' },
            ownerReferences: [ownerReference(input)],
          },
          data: input.data,
        };
        try {
          await api.request('POST', path, { body, signal });
        } catch (err) {
          if (!isAlreadyExists(err)) throw err;
          await api.request('PUT', `${path}/${name}-out`, { body, signal });
        }
        return done();
      },
    });
    const stop = new AbortController();
    const running = controller.run(stop.signal);
    const out = async (name: string): Promise<string | undefined> => {
      try {
        const raw = await api.request('GET', `/api/v1/namespaces/${ns.name}/configmaps/${name}-out`);
        return parseConfigMap(raw).data['v'];
      } catch (err) {
        if (isNotFound(err)) return undefined;
        throw err;
      }
    };
    try {
      for (let i = 0; i < 5; i++) {
        await rig.adminRequest('POST', `/api/v1/namespaces/${ns.name}/configmaps`, {
          metadata: { name: `in${i}`, labels: { role: 'input' } },
          data: { v: `v${i}` },
        });
      }
      await until(
        async () =>
          (await Promise.all([0, 1, 2, 3, 4].map((i) => out(`in${i}`)))).every((v, i) => v === `v${i}`),
        'all outputs',
      );
      await rig.adminRequest(
        'PATCH',
        `/api/v1/namespaces/${ns.name}/configmaps/in3`,
        { data: { v: 'changed' } },
        'application/merge-patch+json',
      );
      await until(async () => (await out('in3')) === 'changed', 'output follows the change');
      const text = await registry.metrics();
      expect(text).toMatch(
        /controller_runtime_reconcile_total\{controller="mirror",result="success"\} [1-9]/,
      );
    } finally {
      stop.abort();
      await running;
      await inputs.stop();
    }
  });
});
