import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { statusError } from '../../../operator/kube/client.ts';
import { EventRecorder } from '../../../operator/kube/events.ts';
import { isRecord } from '../../../operator/kube/object.ts';
import { parseConfigMap } from '../../lib/configmaps.ts';
import { FakeApi } from './fakes.ts';

const regarding = parseConfigMap({
  apiVersion: 'cannes.dev/v1alpha1',
  kind: 'Vps',
  metadata: { name: 'my-vps', namespace: 'team', uid: 'uid-1', resourceVersion: '9' },
});

describe('EventRecorder', () => {
  it('creates an events.k8s.io/v1 Event about the object', async () => {
    const api = new FakeApi();
    api.handler = async () => ({});
    const rec = new EventRecorder({ api, reportingInstance: 'pod-1' });
    rec.normal(regarding, 'ServerCreated', 'CreateServer', 'server 42 created');
    await rec.flush();
    const call = api.calls[0];
    expect(call?.method).toBe('POST');
    expect(call?.path).toBe('/apis/events.k8s.io/v1/namespaces/team/events');
    expect(call?.opts.body).toMatchObject({
      apiVersion: 'events.k8s.io/v1',
      kind: 'Event',
      reason: 'ServerCreated',
      action: 'CreateServer',
      note: 'server 42 created',
      type: 'Normal',
      reportingController: 'cannes.dev/operator',
      reportingInstance: 'pod-1',
      regarding: {
        apiVersion: 'cannes.dev/v1alpha1',
        kind: 'Vps',
        name: 'my-vps',
        namespace: 'team',
        uid: 'uid-1',
      },
    });
    const body = call?.opts.body;
    expect(isRecord(body) && body['eventTime']).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
  });

  it('never throws into the caller when the API server refuses, and counts the failure', async () => {
    const api = new FakeApi();
    api.handler = async () => {
      throw statusError(403, { reason: 'Forbidden' }, 'post');
    };
    const registry = new Registry();
    const rec = new EventRecorder({ api, reportingInstance: 'pod-1', registry });
    expect(() => rec.warning(regarding, 'HostKeyMismatch', 'Connect', 'host key changed')).not.toThrow();
    await rec.flush();
    const m = await registry.getSingleMetric('cannes_events_failed_total')?.get();
    expect(m?.values[0]?.value).toBe(1);
  });

  it('folds a repeat of the same event into a series instead of a new Event', async () => {
    const api = new FakeApi();
    api.handler = async () => ({});
    const rec = new EventRecorder({ api, reportingInstance: 'pod-1' });
    rec.warning(regarding, 'SshUnreachable', 'Connect', 'no answer');
    await rec.flush();
    rec.warning(regarding, 'SshUnreachable', 'Connect', 'no answer');
    await rec.flush();
    expect(api.calls.map((c) => c.method)).toEqual(['POST', 'PATCH']);
    expect(api.calls[1]?.opts.body).toMatchObject({ series: { count: 2 } });
  });

  it('truncates a note to 1 KiB', async () => {
    const api = new FakeApi();
    api.handler = async () => ({});
    const rec = new EventRecorder({ api, reportingInstance: 'pod-1' });
    rec.normal(regarding, 'Long', 'Test', 'é'.repeat(2000));
    await rec.flush();
    const body = api.calls[0]?.opts.body;
    const note = isRecord(body) ? body['note'] : undefined;
    expect(typeof note === 'string' && Buffer.byteLength(note)).toBeLessThanOrEqual(1024);
  });
});
