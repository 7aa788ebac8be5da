import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { statusError } from '../../../operator/kube/client.ts';
import { addFinalizer, removeFinalizer } from '../../../operator/kube/finalizers.ts';
import { isRecord } from '../../../operator/kube/object.ts';
import { updateStatus } from '../../../operator/kube/status.ts';
import { CONFIGMAPS, parseConfigMap } from '../../lib/configmaps.ts';
import { FakeApi } from './fakes.ts';

describe('updateStatus', () => {
  it('re-reads and retries after a 409 Conflict, computing status from the fresh object', async () => {
    const api = new FakeApi();
    let version = 1;
    const puts: unknown[] = [];
    api.handler = async (method, _path, opts) => {
      if (method === 'GET') {
        return {
          apiVersion: 'v1',
          kind: 'X',
          metadata: { name: 'a', uid: 'u', resourceVersion: String(version) },
          data: { v: String(version) },
        };
      }
      puts.push(opts.body);
      if (puts.length === 1) {
        version = 2;
        throw statusError(409, { reason: 'Conflict' }, 'put');
      }
      return opts.body;
    };
    const registry = new Registry();
    const out = await updateStatus(
      api,
      CONFIGMAPS,
      { namespace: 'ns', name: 'a' },
      {
        parse: parseConfigMap,
        mutate: (fresh) => ({ seen: fresh.data['v'] }),
        registry,
      },
    );
    expect(puts).toHaveLength(2);
    const second = puts[1];
    expect(isRecord(second) && second['status']).toEqual({ seen: '2' });
    expect(isRecord(second) && isRecord(second['metadata']) && second['metadata']['resourceVersion']).toBe(
      '2',
    );
    expect(out.metadata.resourceVersion).toBe('2');
    expect(api.calls.filter((c) => c.method === 'PUT').every((c) => c.path.endsWith('/a/status'))).toBe(true);
  });

  it('gives up with the conflict after the last attempt', async () => {
    const api = new FakeApi();
    api.handler = async (method) => {
      if (method === 'GET')
        return { apiVersion: 'v1', kind: 'X', metadata: { name: 'a', uid: 'u', resourceVersion: '1' } };
      throw statusError(409, { reason: 'Conflict' }, 'put');
    };
    await expect(
      updateStatus(
        api,
        CONFIGMAPS,
        { namespace: 'ns', name: 'a' },
        { parse: parseConfigMap, mutate: () => ({ n: 1 }), attempts: 3 },
      ),
    ).rejects.toMatchObject({ code: 409 });
    expect(api.calls.filter((c) => c.method === 'PUT')).toHaveLength(3);
  });

  it('does not write when the status is already what mutate computes', async () => {
    const api = new FakeApi();
    api.handler = async (method) => {
      if (method === 'GET') {
        return {
          apiVersion: 'v1',
          kind: 'X',
          metadata: { name: 'a', uid: 'u', resourceVersion: '1' },
          status: { b: 1, a: [1] },
        };
      }
      throw new Error('must not write');
    };
    await updateStatus(
      api,
      CONFIGMAPS,
      { namespace: 'ns', name: 'a' },
      { parse: parseConfigMap, mutate: () => ({ a: [1], b: 1 }) },
    );
    expect(api.calls.map((c) => c.method)).toEqual(['GET']);
  });
});

describe('finalizers', () => {
  const obj = parseConfigMap({
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: 'a', namespace: 'ns', uid: 'u', resourceVersion: '7', finalizers: ['other.io/x'] },
  });

  it('adds with a merge patch carrying the resourceVersion it was computed from', async () => {
    const api = new FakeApi();
    api.handler = async () => ({});
    await addFinalizer(api, CONFIGMAPS, obj, 'cannes.dev/finalizer');
    const call = api.calls[0];
    expect(call?.method).toBe('PATCH');
    expect(call?.opts.contentType).toBe('application/merge-patch+json');
    expect(call?.opts.body).toEqual({
      metadata: { resourceVersion: '7', finalizers: ['other.io/x', 'cannes.dev/finalizer'] },
    });
  });

  it('does nothing when the finalizer is already there or already gone', async () => {
    const api = new FakeApi();
    expect(await addFinalizer(api, CONFIGMAPS, obj, 'other.io/x')).toBeUndefined();
    expect(await removeFinalizer(api, CONFIGMAPS, obj, 'cannes.dev/finalizer')).toBeUndefined();
    expect(api.calls).toHaveLength(0);
  });

  it('removes only its own finalizer, deleting the field when the list empties', async () => {
    const api = new FakeApi();
    api.handler = async () => ({});
    await removeFinalizer(api, CONFIGMAPS, obj, 'other.io/x');
    expect(api.calls[0]?.opts.body).toEqual({ metadata: { resourceVersion: '7', finalizers: null } });
  });
});
