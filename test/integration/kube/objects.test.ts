import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FINALIZER as CANNES_FINALIZER } from '../../../operator/api/schema.ts';
import { isConflict, type KubeApi, KubeApiError, type KubeClient } from '../../../operator/kube/client.ts';
import {
  type Condition,
  findCondition,
  parseConditions,
  setCondition,
} from '../../../operator/kube/conditions.ts';
import { EventRecorder } from '../../../operator/kube/events.ts';
import { addFinalizer, removeFinalizer } from '../../../operator/kube/finalizers.ts';
import { isRecord, type KubeObject, ownerReference, parseKubeObject } from '../../../operator/kube/object.ts';
import { updateStatus } from '../../../operator/kube/status.ts';
import { vpsManifest } from '../../lib/manifests.ts';
import type { Rig } from '../../rig/rig.ts';
import { useRig } from '../../rig/shared.ts';
import { adminClient, suffix, tempNamespace } from './helpers.ts';

const VPS = {
  group: 'cannes.dev',
  version: 'v1alpha1',
  plural: 'vpses',
  kind: 'Vps',
  namespaced: true,
} as const;

interface Vps extends KubeObject {
  spec: Record<string, unknown>;
  status: { conditions: Condition[]; raw: Record<string, unknown> };
}
function parseVps(raw: unknown): Vps {
  const base = parseKubeObject(raw);
  const r = isRecord(raw) ? raw : {};
  const spec = isRecord(r['spec']) ? r['spec'] : {};
  const status = isRecord(r['status']) ? r['status'] : {};
  return { ...base, spec, status: { conditions: parseConditions(status['conditions']), raw: status } };
}

let rig: Rig;
let api: KubeClient;
let ns: { name: string; remove: () => Promise<void> };

beforeAll(async () => {
  rig = await useRig();
  api = adminClient(rig);
  // The project's CRDs (idempotent: other test files may apply them too).
  await rig.kubectl(['apply', '--server-side', '--force-conflicts', '-f', 'crds/']);
  await rig.kubectl(['wait', '--for=condition=Established', '--timeout=60s', 'crd/vpses.cannes.dev']);
  ns = await tempNamespace(rig, 'kube-objects');
});
afterAll(async () => {
  await ns?.remove();
});

async function createVps(): Promise<Vps> {
  const name = `vps-${suffix()}`;
  const raw = await api.request('POST', `/apis/cannes.dev/v1alpha1/namespaces/${ns.name}/vpses`, {
    body: vpsManifest(undefined, name),
  });
  return parseVps(raw);
}

async function readVps(name: string): Promise<Vps> {
  return parseVps(await api.request('GET', `/apis/cannes.dev/v1alpha1/namespaces/${ns.name}/vpses/${name}`));
}

describe('status, finalizers, events and owner references against a real API server', () => {
  it('writes status through /status without touching spec or generation', async () => {
    const vps = await createVps();
    const written = await updateStatus(
      api,
      VPS,
      { namespace: ns.name, name: vps.metadata.name },
      {
        parse: parseVps,
        mutate: (fresh) => ({
          observedGeneration: fresh.metadata.generation,
          serverCreated: true,
          conditions: setCondition(fresh.status.conditions, {
            type: 'Ready',
            status: 'False',
            reason: 'Provisioning',
            message: 'creating the server',
            observedGeneration: fresh.metadata.generation,
          }),
        }),
      },
    );
    const after = await readVps(vps.metadata.name);
    expect(after.spec).toEqual(vps.spec);
    expect(after.metadata.generation).toBe(vps.metadata.generation);
    expect(after.status.raw['serverCreated']).toBe(true);
    expect(findCondition(after.status.conditions, 'Ready')).toMatchObject({
      reason: 'Provisioning',
      status: 'False',
    });
    expect(written.metadata.resourceVersion).toBe(after.metadata.resourceVersion);
  });

  it('keeps lastTransitionTime on the server while the status stays the same', async () => {
    const vps = await createVps();
    const ref = { namespace: ns.name, name: vps.metadata.name };
    const set = (reason: string, now: Date) =>
      updateStatus(api, VPS, ref, {
        parse: parseVps,
        mutate: (fresh) => ({
          conditions: setCondition(fresh.status.conditions, { type: 'Ready', status: 'False', reason }, now),
        }),
      });
    await set('Provisioning', new Date('2026-01-01T00:00:00Z'));
    await set('WaitingForSsh', new Date('2026-01-02T00:00:00Z'));
    const c = findCondition((await readVps(vps.metadata.name)).status.conditions, 'Ready');
    expect(c).toMatchObject({ reason: 'WaitingForSsh', lastTransitionTime: '2026-01-01T00:00:00Z' });
  });

  it('re-reads and retries when another writer changed the object in between (409)', async () => {
    const vps = await createVps();
    const path = `/apis/cannes.dev/v1alpha1/namespaces/${ns.name}/vpses/${vps.metadata.name}`;
    let poked = false;
    const statusPuts: number[] = [];
    // A concurrent writer lands between our read and our write, once.
    const racing: KubeApi = {
      request: async (method, p, opts) => {
        if (method === 'PUT' && p.endsWith('/status')) {
          if (!poked) {
            poked = true;
            const res = await rig.adminRequest(
              'PATCH',
              path,
              { metadata: { annotations: { 'test.cannes.dev/poke': '1' } } },
              'application/merge-patch+json',
            );
            expect(res.status).toBe(200);
          }
          try {
            const out = await api.request(method, p, opts);
            statusPuts.push(200);
            return out;
          } catch (err) {
            statusPuts.push(err instanceof KubeApiError ? err.code : 0);
            throw err;
          }
        }
        return api.request(method, p, opts);
      },
      watch: (p, q, e, d) => api.watch(p, q, e, d),
    };
    const registry = new Registry();
    const seenAnnotations: string[] = [];
    await updateStatus(
      racing,
      VPS,
      { namespace: ns.name, name: vps.metadata.name },
      {
        parse: parseVps,
        registry,
        mutate: (fresh) => {
          seenAnnotations.push(fresh.metadata.annotations['test.cannes.dev/poke'] ?? 'none');
          return { gatewayDeployed: true };
        },
      },
    );
    expect(statusPuts).toEqual([409, 200]);
    // The retry computed its status from the object as the other writer left it.
    expect(seenAnnotations).toEqual(['none', '1']);
    const after = await readVps(vps.metadata.name);
    expect(after.status.raw['gatewayDeployed']).toBe(true);
    expect(after.metadata.annotations['test.cannes.dev/poke']).toBe('1');
    const m = await registry.getSingleMetric('cannes_status_update_conflicts_total')?.get();
    expect(m?.values[0]?.value).toBe(1);
  });

  it('refuses a finalizer change computed from a stale resourceVersion, and applies a fresh one', async () => {
    const vps = await createVps();
    const path = `/apis/cannes.dev/v1alpha1/namespaces/${ns.name}/vpses/${vps.metadata.name}`;
    // Another controller adds its own finalizer after we read the object.
    const res = await rig.adminRequest(
      'PATCH',
      path,
      { metadata: { finalizers: ['other.example.com/cleanup'] } },
      'application/merge-patch+json',
    );
    expect(res.status).toBe(200);
    const err = await addFinalizer(api, VPS, vps, CANNES_FINALIZER).catch((e: unknown) => e);
    expect(isConflict(err)).toBe(true);
    // Without the precondition our list would have dropped the other finalizer.
    expect((await readVps(vps.metadata.name)).metadata.finalizers).toEqual(['other.example.com/cleanup']);

    const fresh = await readVps(vps.metadata.name);
    await addFinalizer(api, VPS, fresh, CANNES_FINALIZER);
    const withOurs = await readVps(vps.metadata.name);
    expect(withOurs.metadata.finalizers).toEqual(['other.example.com/cleanup', CANNES_FINALIZER]);
    await removeFinalizer(api, VPS, withOurs, CANNES_FINALIZER);
    expect((await readVps(vps.metadata.name)).metadata.finalizers).toEqual(['other.example.com/cleanup']);
    // Let the object go.
    await rig.adminRequest('PATCH', path, { metadata: { finalizers: null } }, 'application/merge-patch+json');
  });

  it('records events.k8s.io/v1 Events regarding the object, folding repeats into a series', async () => {
    const vps = await createVps();
    const rec = new EventRecorder({ api, reportingInstance: `it-${suffix()}` });
    rec.normal(vps, 'ServerCreated', 'CreateServer', 'server created');
    rec.warning(vps, 'SshUnreachable', 'Connect', 'no answer on port 22');
    await rec.flush();
    rec.warning(vps, 'SshUnreachable', 'Connect', 'no answer on port 22');
    await rec.flush();
    const list = await api.request('GET', `/apis/events.k8s.io/v1/namespaces/${ns.name}/events`);
    const items = isRecord(list) && Array.isArray(list['items']) ? list['items'].filter(isRecord) : [];
    const mine = items.filter((e) => isRecord(e['regarding']) && e['regarding']['uid'] === vps.metadata.uid);
    expect(mine.map((e) => `${e['type']}/${e['reason']}/${e['action']}`).sort()).toEqual([
      'Normal/ServerCreated/CreateServer',
      'Warning/SshUnreachable/Connect',
    ]);
    const warning = mine.find((e) => e['reason'] === 'SshUnreachable');
    expect(warning?.['reportingController']).toBe('cannes.dev/operator');
    expect(isRecord(warning?.['series']) && warning['series']['count']).toBe(2);
  });

  it('creates owned objects whose owner reference points at the owner by uid', async () => {
    const vps = await createVps();
    const cm = await api.request('POST', `/api/v1/namespaces/${ns.name}/configmaps`, {
      body: { metadata: { name: `owned-${suffix()}`, ownerReferences: [ownerReference(vps)] }, data: {} },
    });
    const owned = parseKubeObject({ apiVersion: 'v1', kind: 'ConfigMap', ...(isRecord(cm) ? cm : {}) });
    expect(owned.metadata.ownerReferences).toEqual([
      {
        apiVersion: 'cannes.dev/v1alpha1',
        kind: 'Vps',
        name: vps.metadata.name,
        uid: vps.metadata.uid,
        controller: true,
        blockOwnerDeletion: true,
      },
    ]);
  });
});
