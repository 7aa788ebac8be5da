import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KubeClient } from '../../../operator/kube/client.ts';
import type { Rig } from '../../rig/rig.ts';
import { useRig } from '../../rig/shared.ts';
import { adminClient, TcpProxy } from './helpers.ts';

// client-node 2.0 makes a new connection pool per request; KubeClient shares one per
// connection material, so requests reuse keep-alive TLS connections (operator/kube/client.ts).
describe('KubeClient reuses its connections to the API server', () => {
  let rig: Rig;
  let proxy: TcpProxy;
  let api: KubeClient;

  beforeAll(async () => {
    rig = await useRig();
    proxy = new TcpProxy(rig.server);
    api = adminClient(rig, await proxy.start());
  });
  afterAll(async () => {
    await proxy?.close();
  });

  it('sends 30 sequential requests over one TLS connection', async () => {
    for (let i = 0; i < 30; i++) await api.request('GET', '/api/v1/namespaces/default');
    expect(proxy.accepted).toBe(1);
  });

  it('opens a new connection when the old one is cut, and keeps using that one', async () => {
    proxy.cut();
    // The reset reaches the client's pool before the next request (as when an API server
    // restarts between two reconciles; a request racing a reset fails and is retried by the
    // controller's backoff).
    await new Promise((r) => setTimeout(r, 200));
    const before = proxy.accepted;
    for (let i = 0; i < 10; i++) await api.request('GET', '/api/v1/namespaces/default');
    expect(proxy.accepted - before).toBe(1);
  });
});
