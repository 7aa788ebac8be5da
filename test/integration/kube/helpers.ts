import { randomBytes } from 'node:crypto';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { KubeClient } from '../../../operator/kube/client.ts';
import { type KubeConnection, NativeConnection } from '../../../operator/kube/connection.ts';
import { waitUntil } from '../../lib/wait.ts';
import type { Rig } from '../../rig/rig.ts';

/** The rig's admin identity (client certificate), optionally pointed at another address (a TcpProxy). */
export function adminConnection(rig: Rig, server: string = rig.server): KubeConnection {
  return new NativeConnection({
    server,
    ca: { file: rig.caCert },
    cert: { file: rig.adminCert },
    key: { file: rig.adminKey },
  });
}

export function adminClient(rig: Rig, server?: string): KubeClient {
  return new KubeClient(adminConnection(rig, server));
}

export function suffix(): string {
  return randomBytes(4).toString('hex');
}

/** Creates a namespace with a random name; the returned function deletes it. */
export async function tempNamespace(
  rig: Rig,
  prefix: string,
): Promise<{ name: string; remove: () => Promise<void> }> {
  const name = `${prefix}-${suffix()}`;
  const res = await rig.adminRequest('POST', '/api/v1/namespaces', { metadata: { name } });
  if (res.status !== 201) throw new Error(`create namespace ${name}: ${res.status}`);
  return {
    name,
    remove: async () => {
      // No controller-manager runs on the rig: the namespace stays Terminating, but its objects are
      // deleted with it by the API server's finalization only when a controller runs. Delete
      // what the tests created explicitly where it matters; the namespace delete is best effort.
      await rig.adminRequest('DELETE', `/api/v1/namespaces/${name}`);
    },
  };
}

/**
 * A loopback TCP relay in front of the API server: the client's TLS passes through untouched, and
 * a test can cut every connection (a network failure mid-watch) or refuse new ones (an outage).
 */
export class TcpProxy {
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  readonly #target: { host: string; port: number };
  #refusing = false;
  port = 0;
  /** TCP connections accepted so far (refused ones included). */
  accepted = 0;

  constructor(target: string) {
    const u = new URL(target);
    this.#target = { host: u.hostname, port: Number(u.port) };
    this.#server = createServer((client) => {
      this.accepted++;
      if (this.#refusing) {
        client.destroy();
        return;
      }
      const upstream = connect(this.#target.port, this.#target.host);
      this.#sockets.add(client);
      this.#sockets.add(upstream);
      const close = (): void => {
        client.destroy();
        upstream.destroy();
        this.#sockets.delete(client);
        this.#sockets.delete(upstream);
      };
      client.on('error', close).on('close', close);
      upstream.on('error', close).on('close', close);
      client.pipe(upstream);
      upstream.pipe(client);
    });
  }

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    const addr = this.#server.address();
    if (!addr || typeof addr === 'string') throw new Error('proxy has no port');
    this.port = addr.port;
    return `https://127.0.0.1:${this.port}`;
  }

  /** Resets every open connection (RST): in-flight watches fail with a network error. */
  cut(): void {
    for (const s of this.#sockets) s.resetAndDestroy();
    this.#sockets.clear();
  }

  /** While refusing, new connections are closed at once (the API server is "down"). */
  refuse(on: boolean): void {
    this.#refusing = on;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

/**
 * Waits until `cond` holds (bounded by `timeoutMs`), polling often: these conditions are watch
 * events the test expects within moments. A `cond` that throws fails the test at once.
 */
export function until(
  cond: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 30_000,
): Promise<void> {
  return waitUntil(what, cond, timeoutMs, { intervalMs: 50, failOnError: true });
}
