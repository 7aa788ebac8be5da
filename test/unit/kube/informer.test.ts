import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { statusError } from '../../../operator/kube/client.ts';
import { Informer, type InformerEvent } from '../../../operator/kube/informer.ts';
import { CONFIGMAPS, type ConfigMap, parseConfigMap } from '../../lib/configmaps.ts';
import { FakeApi, flush, ManualClock } from './fakes.ts';

function setup(opts: { resyncMs?: number; staleMs?: number } = {}) {
  const api = new FakeApi();
  const clock = new ManualClock();
  const registry = new Registry();
  const informer = new Informer<ConfigMap>({
    api,
    resource: CONFIGMAPS,
    namespace: 'ns',
    parse: parseConfigMap,
    clock,
    registry,
    resyncMs: opts.resyncMs ?? 0,
    staleMs: opts.staleMs ?? 60_000,
    backoffInitialMs: 1000,
  });
  const events: string[] = [];
  informer.on((ev: InformerEvent<ConfigMap>) => events.push(`${ev.type}:${ev.object.metadata.name}`));
  return { api, clock, registry, informer, events };
}

async function metric(registry: Registry, name: string, labels: Record<string, string>): Promise<number> {
  const m = await registry.getSingleMetric(name)?.get();
  const v = m?.values.find((x) => Object.entries(labels).every(([k, val]) => x.labels[k] === val));
  return v?.value ?? 0;
}

describe('Informer', () => {
  it('lists into the cache, signals sync, then watches from the list resourceVersion', async () => {
    const { api, informer, events } = setup();
    api.put('a', { x: '1' });
    informer.start();
    await informer.waitForSync();
    await flush();
    expect(informer.hasSynced).toBe(true);
    expect(informer.get('ns/a')?.data).toEqual({ x: '1' });
    expect(informer.get('ns/a')?.kind).toBe('ConfigMap');
    expect(events).toEqual(['add:a']);
    expect(api.lastWatch.query['resourceVersion']).toBe(String(api.rv));
    expect(api.lastWatch.query['allowWatchBookmarks']).toBe(true);
    await informer.stop();
  });

  it('applies added, modified and deleted watch events to the cache', async () => {
    const { api, informer, events } = setup();
    informer.start();
    await informer.waitForSync();
    await flush();
    api.lastWatch.send({ type: 'ADDED', object: api.put('b', { v: '1' }) });
    api.lastWatch.send({ type: 'MODIFIED', object: api.put('b', { v: '2' }) });
    expect(informer.get('ns/b')?.data).toEqual({ v: '2' });
    api.lastWatch.send({ type: 'DELETED', object: api.remove('b') });
    expect(informer.get('ns/b')).toBeUndefined();
    expect(events).toEqual(['add:b', 'update:b', 'delete:b']);
    await informer.stop();
  });

  it('restarts a failed watch after a backoff, resuming from the last resourceVersion seen', async () => {
    const { api, clock, informer, registry } = setup();
    informer.start();
    await informer.waitForSync();
    await flush();
    const obj = api.put('c');
    api.lastWatch.send({ type: 'ADDED', object: obj });
    api.lastWatch.send({ type: 'BOOKMARK', object: { metadata: { resourceVersion: '5000' } } });
    api.lastWatch.end(statusError(500, undefined, 'watch'));
    await flush();
    expect(api.watches).toHaveLength(1);
    await clock.advance(2000);
    expect(api.watches).toHaveLength(2);
    expect(api.lastWatch.query['resourceVersion']).toBe('5000');
    expect(await metric(registry, 'cannes_informer_watch_restarts_total', { reason: 'error' })).toBe(1);
    // No relist was needed.
    expect(api.calls.filter((c) => c.method === 'GET')).toHaveLength(1);
    await informer.stop();
  });

  it('reopens a watch the server closed cleanly at once, without a relist', async () => {
    const { api, clock, informer } = setup({ staleMs: 600_000 });
    informer.start();
    await informer.waitForSync();
    await flush();
    await clock.advance(300_000); // the server's watch timeout
    api.lastWatch.end(null);
    await flush();
    expect(api.watches).toHaveLength(2);
    expect(api.calls.filter((c) => c.method === 'GET')).toHaveLength(1);
    await informer.stop();
  });

  it('backs off instead of spinning when every watch is closed the moment it opens', async () => {
    const { api, clock, informer } = setup();
    informer.start();
    await informer.waitForSync();
    await flush();
    api.lastWatch.end(null);
    await flush();
    expect(api.watches).toHaveLength(1);
    await clock.advance(2000);
    expect(api.watches).toHaveLength(2);
    await informer.stop();
  });

  it('relists on 410 Gone and reports objects deleted meanwhile as deletes', async () => {
    const { api, informer, events, registry } = setup();
    api.put('keep');
    api.put('gone');
    informer.start();
    await informer.waitForSync();
    await flush();
    api.remove('gone');
    api.put('new');
    api.lastWatch.send({
      type: 'ERROR',
      object: { kind: 'Status', code: 410, reason: 'Expired', message: 'too old' },
    });
    await flush();
    expect(informer.get('ns/gone')).toBeUndefined();
    expect(informer.get('ns/new')).toBeDefined();
    expect(events.sort()).toEqual(['add:gone', 'add:keep', 'add:new', 'delete:gone'].sort());
    expect(await metric(registry, 'cannes_informer_relists_total', { reason: 'expired' })).toBe(1);
    await informer.stop();
  });

  it('relists when the watch request itself answers 410', async () => {
    const { api, informer } = setup();
    informer.start();
    await informer.waitForSync();
    await flush();
    api.lastWatch.end(statusError(410, undefined, 'watch'));
    await flush();
    expect(api.calls.filter((c) => c.method === 'GET')).toHaveLength(2);
    expect(api.watches).toHaveLength(2);
    await informer.stop();
  });

  it('restarts a watch that delivered nothing for staleMs', async () => {
    const { api, clock, informer, registry } = setup({ staleMs: 30_000 });
    informer.start();
    await informer.waitForSync();
    await flush();
    await clock.advance(29_000);
    api.lastWatch.send({ type: 'BOOKMARK', object: { metadata: { resourceVersion: '200' } } });
    await clock.advance(29_000);
    expect(api.watches).toHaveLength(1);
    await clock.advance(2_000);
    expect(api.watches[0]?.aborted).toBe(true);
    expect(api.watches).toHaveLength(2);
    expect(await metric(registry, 'cannes_informer_watch_restarts_total', { reason: 'stale' })).toBe(1);
    await informer.stop();
  });

  it('keeps retrying a failing list with backoff until it succeeds', async () => {
    const { api, clock, informer } = setup();
    api.listFailures = 3;
    api.put('a');
    informer.start();
    await flush();
    expect(informer.hasSynced).toBe(false);
    await clock.advance(60_000);
    expect(informer.hasSynced).toBe(true);
    expect(api.calls.filter((c) => c.method === 'GET')).toHaveLength(4);
    await informer.stop();
  });

  it('re-delivers every unchanged object on the periodic resync', async () => {
    const { api, clock, informer, events } = setup({ resyncMs: 600_000 });
    api.put('a');
    api.put('b');
    informer.start();
    await informer.waitForSync();
    await flush();
    events.length = 0;
    await clock.advance(600_000);
    expect(events.sort()).toEqual(['resync:a', 'resync:b']);
    await informer.stop();
  });

  it('leaves an object that fails to parse out of the cache and counts it', async () => {
    const { api, informer, registry } = setup();
    api.objects.set('ns/bad', { metadata: { name: 'bad', namespace: 'ns' } });
    api.put('good');
    informer.start();
    await informer.waitForSync();
    expect(informer.keys()).toEqual(['ns/good']);
    expect(await metric(registry, 'cannes_informer_parse_errors_total', {})).toBe(1);
    await informer.stop();
  });
});

describe('Informer cache hygiene', () => {
  it('drops an object whose update no longer parses instead of keeping stale contents', async () => {
    const { api, informer } = setup();
    api.put('a', { v: '1' });
    informer.start();
    await informer.waitForSync();
    await flush();
    expect(informer.get('ns/a')).toBeDefined();
    api.lastWatch.send({
      type: 'MODIFIED',
      object: { metadata: { name: 'a', namespace: 'ns', resourceVersion: '999' } },
    });
    expect(informer.get('ns/a')).toBeUndefined();
    await informer.stop();
  });
});

describe('Informer backoff', () => {
  it('grows the delay over consecutive failed watches and starts afresh after a healthy one', async () => {
    const { api, clock, informer } = setup();
    informer.start();
    await informer.waitForSync();
    await flush();
    // A watch that delivered an event, then failed: retried after 1-2 s (initial delay).
    await clock.advance(10);
    api.lastWatch.send({ type: 'ADDED', object: api.put('a') });
    api.lastWatch.end(statusError(500, undefined, 'watch'));
    await clock.advance(2000);
    expect(api.watches).toHaveLength(2);
    // A watch that failed at once: the delay has doubled (2-4 s).
    api.lastWatch.end(statusError(500, undefined, 'watch'));
    await clock.advance(1999);
    expect(api.watches).toHaveLength(2);
    await clock.advance(2001);
    expect(api.watches).toHaveLength(3);
    // Healthy again (an event), then a failure: back to 1-2 s.
    await clock.advance(10);
    api.lastWatch.send({ type: 'MODIFIED', object: api.put('a', { v: '2' }) });
    api.lastWatch.end(statusError(500, undefined, 'watch'));
    await clock.advance(2000);
    expect(api.watches).toHaveLength(4);
    await informer.stop();
  });
});
