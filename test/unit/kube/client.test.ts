import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { isConflict, isGone, KubeApiError, KubeClient, resourcePath } from '../../../operator/kube/client.ts';
import { type KubeConnection, NativeConnection } from '../../../operator/kube/connection.ts';

let server: Server | undefined;
afterEach(async () => {
  server?.closeAllConnections();
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  server = undefined;
});

/** A loopback HTTP server standing in for the API server, and a connection to it. */
async function serve(handler: Parameters<typeof createServer>[1]): Promise<KubeConnection> {
  server = createServer(handler);
  await new Promise<void>((r) => server?.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return new NativeConnection({ server: `http://127.0.0.1:${port}` });
}

describe('KubeClient', () => {
  it('builds core and group paths', () => {
    expect(
      resourcePath(
        { group: '', version: 'v1', plural: 'secrets', kind: 'Secret', namespaced: true },
        { namespace: 'a', name: 'b' },
      ),
    ).toBe('/api/v1/namespaces/a/secrets/b');
    expect(
      resourcePath(
        { group: 'cannes.dev', version: 'v1alpha1', plural: 'vpses', kind: 'Vps', namespaced: true },
        { namespace: 'a', name: 'b', subresource: 'status' },
      ),
    ).toBe('/apis/cannes.dev/v1alpha1/namespaces/a/vpses/b/status');
  });

  it('turns a metav1.Status answer into a KubeApiError carrying code and reason', async () => {
    const kc = await serve((_req, res) => {
      res.writeHead(409, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          kind: 'Status',
          status: 'Failure',
          reason: 'Conflict',
          message: 'modified',
          code: 409,
        }),
      );
    });
    const registry = new Registry();
    const err = await new KubeClient(kc, { registry })
      .request('PUT', '/api/v1/x', { body: {} })
      .catch((e) => e);
    expect(err).toBeInstanceOf(KubeApiError);
    expect(isConflict(err)).toBe(true);
    expect(isGone(err)).toBe(false);
    expect(err instanceof KubeApiError && err.reason).toBe('KubeConflict');
    const m = await registry.getSingleMetric('rest_client_requests_total')?.get();
    expect(m?.values[0]?.labels).toMatchObject({ code: '409', method: 'PUT' });
  });

  it('gives up on a request the server never answers', async () => {
    const kc = await serve(() => {
      // Accept and never answer.
    });
    const err = await new KubeClient(kc, { timeoutMs: 200 }).request('GET', '/api/v1/x').catch((e) => e);
    expect(err instanceof Error && err.name).toBe('TimeoutError');
  });

  it('ends a watch that carries nothing for watchIdleMs with a TimeoutError (the informer re-watches at once)', async () => {
    const conn = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.flushHeaders(); // then nothing: a quiet watch
    });
    const ended = new Promise<unknown>((resolve) => {
      void new KubeClient(conn, { watchIdleMs: 200 }).watch('/api/v1/configmaps', {}, () => {}, resolve);
    });
    const err = await ended;
    expect(err instanceof Error && err.name).toBe('TimeoutError');
  });
});
