import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { type KubeApi, type RequestOptions, statusError } from '../../../operator/kube/client.ts';
import { LeaderElector } from '../../../operator/kube/leader.ts';
import { isRecord } from '../../../operator/kube/object.ts';
import { ManualClock, until } from './fakes.ts';

/** One Lease with resourceVersion concurrency, as the API server keeps it. */
class LeaseStore {
  lease: Record<string, unknown> | undefined;
  rv = 1;
  holder(): string {
    const spec = this.lease?.['spec'];
    return isRecord(spec) && typeof spec['holderIdentity'] === 'string' ? spec['holderIdentity'] : '';
  }
  client(): KubeApi & { partitioned: boolean } {
    const store = this;
    return {
      partitioned: false,
      async request(method: string, path: string, opts: RequestOptions = {}): Promise<unknown> {
        if (this.partitioned) throw new Error('connection refused');
        const body = opts.body;
        if (method === 'GET') {
          if (!store.lease) throw statusError(404, undefined, path);
          return structuredClone(store.lease);
        }
        if (!isRecord(body) || !isRecord(body['metadata'])) throw statusError(400, undefined, path);
        if (method === 'POST') {
          if (store.lease) throw statusError(409, { reason: 'AlreadyExists' }, path);
        } else if (method === 'PUT') {
          const current =
            store.lease && isRecord(store.lease['metadata'])
              ? store.lease['metadata']['resourceVersion']
              : '';
          if (body['metadata']['resourceVersion'] !== current)
            throw statusError(409, { reason: 'Conflict' }, path);
        }
        store.rv++;
        store.lease = { ...body, metadata: { ...body['metadata'], resourceVersion: String(store.rv) } };
        return structuredClone(store.lease);
      },
      watch: () => Promise.reject(new Error('unused')),
    };
  }
}

function elector(store: LeaseStore, identity: string, registry?: Registry) {
  const api = store.client();
  const state = {
    leading: false,
    startedCount: 0,
    stoppedCount: 0,
    signal: undefined as AbortSignal | undefined,
  };
  const e = new LeaderElector({
    api,
    namespace: 'ns',
    name: 'cannes-operator',
    identity,
    leaseDurationMs: 1000,
    renewDeadlineMs: 600,
    retryPeriodMs: 100,
    ...(registry ? { registry } : {}),
    onStartedLeading: (signal) => {
      state.leading = true;
      state.startedCount++;
      state.signal = signal;
    },
    onStoppedLeading: () => {
      state.leading = false;
      state.stoppedCount++;
    },
  });
  const stop = new AbortController();
  const running = e.run(stop.signal);
  return { e, api, state, stop, running };
}

describe('LeaderElector', () => {
  it('lets exactly one of two candidates lead', async () => {
    const store = new LeaseStore();
    const a = elector(store, 'a');
    const b = elector(store, 'b');
    await until(() => a.state.leading || b.state.leading, 'a leader');
    // Several renew rounds later there is still exactly one.
    await new Promise((r) => setTimeout(r, 500));
    expect([a.state.leading, b.state.leading].filter(Boolean)).toHaveLength(1);
    expect(store.holder()).toBe(a.state.leading ? 'a' : 'b');
    a.stop.abort();
    b.stop.abort();
    await Promise.all([a.running, b.running]);
  });

  it('stops leading at once (signal aborted) when it cannot renew, and the other takes over', async () => {
    const store = new LeaseStore();
    const registry = new Registry();
    const a = elector(store, 'a', registry);
    await until(() => a.state.leading, 'a leads');
    const metric = async () =>
      (await registry.getSingleMetric('leader_election_master_status')?.get())?.values[0]?.value;
    expect(await metric()).toBe(1);
    const b = elector(store, 'b');
    a.api.partitioned = true;
    await until(() => a.state.signal?.aborted === true, 'a aborts its work');
    expect(a.state.stoppedCount).toBe(1);
    expect(await metric()).toBe(0);
    await a.running;
    await until(() => b.state.leading, 'b takes over');
    expect(store.holder()).toBe('b');
    b.stop.abort();
    await b.running;
  });

  it('releases the lease on graceful stop so a successor need not wait for expiry', async () => {
    const store = new LeaseStore();
    const a = elector(store, 'a');
    await until(() => a.state.leading, 'a leads');
    a.stop.abort();
    await a.running;
    expect(store.holder()).toBe('');
    expect(a.state.signal?.aborted).toBe(true);
  });

  it("waits for the leader's in-flight work before releasing the lease", async () => {
    const store = new LeaseStore();
    const order: string[] = [];
    const stop = new AbortController();
    const e = new LeaderElector({
      api: store.client(),
      namespace: 'ns',
      name: 'cannes-operator',
      identity: 'a',
      leaseDurationMs: 1000,
      renewDeadlineMs: 600,
      retryPeriodMs: 100,
      // A reconcile that needs a moment to stop after the abort (an SSH command finishing).
      onStartedLeading: (signal) =>
        new Promise<void>((resolve) =>
          signal.addEventListener('abort', () =>
            setTimeout(() => {
              order.push(`work stopped, holder ${store.holder() || 'none'}`);
              resolve();
            }, 200),
          ),
        ),
    });
    const running = e.run(stop.signal);
    await until(() => store.holder() === 'a', 'a leads');
    stop.abort();
    await running;
    order.push(`released, holder ${store.holder() || 'none'}`);
    expect(order).toEqual(['work stopped, holder a', 'released, holder none']);
  });

  it('rejects a renew deadline that is not shorter than the lease', () => {
    expect(
      () =>
        new LeaderElector({
          api: new LeaseStore().client(),
          namespace: 'ns',
          name: 'x',
          identity: 'a',
          leaseDurationMs: 1000,
          renewDeadlineMs: 1000,
          onStartedLeading: () => {},
        }),
    ).toThrow(RangeError);
  });
});

describe('LeaderElector health', () => {
  it('reports unhealthy while it believes it leads but its renew loop is stuck', async () => {
    const clock = new ManualClock();
    const real = new LeaseStore().client();
    let hang = false;
    // A request that never answers and ignores its abort signal: the worst case for the loop.
    const api: KubeApi = {
      request: (method, path, opts) => (hang ? new Promise(() => {}) : real.request(method, path, opts)),
      watch: real.watch,
    };
    const e = new LeaderElector({
      api,
      namespace: 'ns',
      name: 'x',
      identity: 'a',
      leaseDurationMs: 1000,
      renewDeadlineMs: 600,
      retryPeriodMs: 100,
      clock,
      onStartedLeading: () => {},
    });
    void e.run(new AbortController().signal);
    await until(() => e.isLeader, 'a leads');
    expect(e.healthy(0)).toBe(true);
    hang = true;
    await clock.advance(100);
    await clock.advance(5000);
    expect(e.isLeader).toBe(true);
    expect(e.healthy(0)).toBe(false);
    expect(e.healthy(10_000)).toBe(true);
  });
});
