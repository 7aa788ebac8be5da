/**
 * operator/run.ts's probe wiring: `/healthz` is the elector's health (issue 19 item 6). A real
 * LeaderElector (its renew loop stuck on a Lease request that never answers) behind the real
 * probe server, wired by the same `operatorProbes` that runOperator uses.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { type RunningServer, startProbeServer } from '../../operator/http/server.ts';
import type { KubeApi } from '../../operator/kube/client.ts';
import { statusError } from '../../operator/kube/client.ts';
import { LeaderElector } from '../../operator/kube/leader.ts';
import { operatorProbes } from '../../operator/run.ts';
import { ManualClock, until } from './kube/fakes.ts';

let server: RunningServer | undefined;
const stop = new AbortController();
afterEach(async () => {
  stop.abort();
  await server?.close();
});

/** One Lease: created on the first POST, renewed by PUT, until `hang` makes every request hang. */
function leaseApi(): KubeApi & { hang: boolean } {
  let lease: Record<string, unknown> | undefined;
  let rv = 1;
  const api = {
    hang: false,
    async request(method: string, path: string, opts: { body?: unknown } = {}): Promise<unknown> {
      if (api.hang) return new Promise(() => {});
      if (method === 'GET') {
        if (!lease) throw statusError(404, undefined, path);
        return structuredClone(lease);
      }
      const body = structuredClone(opts.body) as Record<string, unknown> & {
        metadata: Record<string, unknown>;
      };
      body.metadata = { ...body.metadata, resourceVersion: String(++rv) };
      lease = body;
      return structuredClone(lease);
    },
    watch: () => {
      throw new Error('no watch here');
    },
  };
  return api as unknown as KubeApi & { hang: boolean };
}

describe('operator probes', () => {
  it('answers /healthz 500 while the leader cannot renew its Lease, 200 before', async () => {
    const clock = new ManualClock();
    const api = leaseApi();
    const elector = new LeaderElector({
      api,
      namespace: 'ns',
      name: 'cannes-operator',
      identity: 'a',
      leaseDurationMs: 1000,
      renewDeadlineMs: 600,
      retryPeriodMs: 100,
      clock,
      onStartedLeading: () => {},
    });
    const synced = { hasSynced: true };
    server = await startProbeServer({
      host: '127.0.0.1',
      port: 0,
      ...operatorProbes({ elector: () => elector, vpses: synced, modelKeys: synced }),
    });
    const healthz = async () => {
      const res = await fetch(`${server!.url}/healthz?verbose`);
      return { status: res.status, body: await res.text() };
    };
    void elector.run(stop.signal);
    await until(() => elector.isLeader, 'leads');
    expect(await healthz()).toEqual({ status: 200, body: expect.stringContaining('[+]leader-election ok') });
    api.hang = true;
    await clock.advance(100);
    await clock.advance(60_000);
    expect(elector.isLeader).toBe(true);
    const stuck = await healthz();
    expect(stuck.status).toBe(500);
    expect(stuck.body).toContain('[-]leader-election failed');
  });

  it('is healthy without leader election, and ready only once both informers synced', async () => {
    const vpses = { hasSynced: false };
    server = await startProbeServer({
      host: '127.0.0.1',
      port: 0,
      ...operatorProbes({ elector: () => undefined, vpses, modelKeys: { hasSynced: true } }),
    });
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${server.url}/readyz`)).status).toBe(500);
    vpses.hasSynced = true;
    expect((await fetch(`${server.url}/readyz`)).status).toBe(200);
  });
});
