/**
 * A kubeconfig that needs `@kubernetes/client-node` (an exec or auth-provider plugin, a proxy,
 * several files merged): its KubeConfig supplies the credentials and the TLS material, the rest of
 * the operator sees a KubeConnection. Imported only for such a kubeconfig (connection.ts says why).
 */
import { createHash } from 'node:crypto';
import { KubeConfig, RequestContext } from '@kubernetes/client-node';
import { Agent, type Dispatcher } from 'undici';
import { CannesError } from '../../common/errors.ts';
import type { KubeConnection } from './connection.ts';

/** `loadFromDefault`'s KubeConfig as a KubeConnection. */
export function clientNodeConnection(): KubeConnection {
  const kc = new KubeConfig();
  kc.loadFromDefault();
  return fromKubeConfig(kc);
}

/**
 * client-node 2.0 builds a new undici Agent, with its own connection pool, on every
 * `applySecurityAuthentication`: each request would open a TLS connection of its own. Requests
 * share one dispatcher per distinct connection material instead (keep-alive, as client-go does).
 * The key is a digest of what makes the connection, read through the library's own public
 * `applyToHTTPSOptions`, so a rotated client certificate gets a new pool.
 */
export function fromKubeConfig(kc: KubeConfig): KubeConnection {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new CannesError('KubeConfigInvalid', 'kubeconfig has no current cluster');
  const dispatchers = new Map<string, Dispatcher>();
  return {
    server: cluster.server.replace(/\/+$/, ''),
    async prepare() {
      const ctx = new RequestContext(cluster.server, 'GET' as never);
      await kc.applySecurityAuthentication(ctx);
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(ctx.getHeaders())) headers[k.toLowerCase()] = v;
      const fresh = ctx.getDispatcher() as Dispatcher | undefined;
      const o: Parameters<KubeConfig['applyToHTTPSOptions']>[0] = {};
      await kc.applyToHTTPSOptions(o);
      const h = createHash('sha256');
      for (const part of [
        cluster.server,
        cluster.proxyUrl,
        cluster.skipTLSVerify,
        o.ca,
        o.cert,
        o.key,
        o.pfx,
        o.passphrase,
        o.rejectUnauthorized,
        o.servername,
      ]) {
        const bytes = Buffer.isBuffer(part) ? part : Buffer.from(JSON.stringify(part ?? null));
        h.update(String(bytes.length)).update(':').update(bytes);
      }
      const key = h.digest('hex');
      let shared = dispatchers.get(key);
      if (shared === undefined) {
        // Plain http (a test's loopback server) gets no dispatcher from the library: a pool of ours.
        shared = fresh ?? new Agent();
        dispatchers.set(key, shared);
      } else if (fresh !== undefined) void fresh.close().catch(() => {});
      return { headers, dispatcher: shared };
    },
    async close() {
      await Promise.all([...dispatchers.values()].map((d) => d.close().catch(() => {})));
    },
  };
}
