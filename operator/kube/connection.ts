/**
 * How the operator reaches the API server: the server's address, TLS material and credentials,
 * read from a kubeconfig or the pod's ServiceAccount, as client-go and client-node's
 * `loadFromDefault` do ($KUBECONFIG, else ~/.kube/config, else in-cluster).
 *
 * Why not client-node's KubeConfig: loading it loads the library's whole generated API (every
 * model and API class), ~24 MiB of heap and ~75 MiB of RSS in a process that sends a handful of
 * JSON requests (issue 24, docs/robustness.md). The common cases are read here: a certificate or a
 * token (inline or in files) and the in-cluster ServiceAccount. A kubeconfig that needs more (an
 * exec or auth-provider plugin, a proxy, several files merged) is handed to client-node, loaded
 * only then (client-node.ts).
 *
 * Files are re-read at most once a minute (a projected ServiceAccount token rotates; a rotated
 * client certificate gets a new connection pool), as client-go does.
 */
import { readFileSync, statSync } from 'node:fs';
import { isIPv6 } from 'node:net';
import { homedir } from 'node:os';
import { delimiter, dirname, isAbsolute, join } from 'node:path';
import { Agent, type Dispatcher } from 'undici';
import { parse } from 'yaml';
import { CannesError } from '../../common/errors.ts';
import { isRecord } from './object.ts';

export interface KubeConnection {
  /** The API server's base URL, without a trailing slash. */
  readonly server: string;
  /** The Authorization header (if any) and the shared dispatcher for one request. */
  prepare(): Promise<{ headers: Record<string, string>; dispatcher: Dispatcher }>;
  /** Closes the connection pools. */
  close(): Promise<void>;
}

const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
const REREAD_MS = 60_000;

/** Where the material comes from: inline bytes or a file (re-read at most once a minute). */
type Source = { data: Buffer } | { file: string };

export interface ConnectionSpec {
  server: string;
  ca?: Source;
  insecureSkipTlsVerify?: boolean;
  tlsServerName?: string;
  cert?: Source;
  key?: Source;
  token?: Source;
  basic?: { username: string; password: string };
}

/** A connection from plain material: one keep-alive pool per distinct TLS material. */
export class NativeConnection implements KubeConnection {
  readonly server: string;
  readonly #spec: ConnectionSpec;
  readonly #files = new Map<string, { at: number; bytes: Buffer }>();
  #pool: { material: (Buffer | undefined)[]; agent: Agent } | undefined;
  readonly #old: Agent[] = [];

  constructor(spec: ConnectionSpec) {
    let url: URL;
    try {
      url = new URL(spec.server);
    } catch {
      throw new CannesError('KubeConfigInvalid', 'the kubeconfig cluster server is not a URL');
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:')
      throw new CannesError(
        'KubeConfigInvalid',
        `the kubeconfig cluster server is ${url.protocol}, not https`,
      );
    this.server = spec.server.replace(/\/+$/, '');
    this.#spec = spec;
  }

  #read(s: Source | undefined, what: string): Buffer | undefined {
    if (s === undefined) return undefined;
    if ('data' in s) return s.data;
    const now = Date.now();
    const cached = this.#files.get(s.file);
    if (cached && now - cached.at < REREAD_MS) return cached.bytes;
    let bytes: Buffer;
    try {
      bytes = readFileSync(s.file);
    } catch (e) {
      // The path is configuration, not a secret; the contents never appear in an error.
      throw new CannesError(
        'KubeConfigInvalid',
        `cannot read the ${what} file ${s.file}: ${(e as Error).message}`,
      );
    }
    this.#files.set(s.file, { at: now, bytes });
    return bytes;
  }

  async prepare(): Promise<{ headers: Record<string, string>; dispatcher: Dispatcher }> {
    const s = this.#spec;
    const ca = this.#read(s.ca, 'certificate authority');
    const cert = this.#read(s.cert, 'client certificate');
    const key = this.#read(s.key, 'client key');
    const token = this.#read(s.token, 'token')?.toString('utf8').trim();
    const headers: Record<string, string> = {};
    if (token) headers['authorization'] = `Bearer ${token}`;
    else if (s.basic)
      headers['authorization'] =
        `Basic ${Buffer.from(`${s.basic.username}:${s.basic.password}`).toString('base64')}`;
    const material = [ca, cert, key];
    if (!this.#pool || !sameMaterial(this.#pool.material, material)) {
      // A new pool for new material; the old one closes once its requests (and watches) end.
      if (this.#pool) this.#old.push(this.#pool.agent);
      this.#pool = {
        material,
        agent: new Agent({
          connect: {
            ...(ca ? { ca } : {}),
            ...(cert ? { cert } : {}),
            ...(key ? { key } : {}),
            ...(s.tlsServerName ? { servername: s.tlsServerName } : {}),
            rejectUnauthorized: s.insecureSkipTlsVerify !== true,
          },
        }),
      };
      for (const old of this.#old.splice(0)) void old.close().catch(() => {});
    }
    return { headers, dispatcher: this.#pool.agent };
  }

  async close(): Promise<void> {
    await Promise.all([this.#pool?.agent, ...this.#old].map((a) => a?.close().catch(() => {})));
  }
}

/** The same CA, certificate and key (a file re-read to the same bytes keeps its pool). */
function sameMaterial(a: (Buffer | undefined)[], b: (Buffer | undefined)[]): boolean {
  return a.every((x, i) => {
    const y = b[i];
    return x === y || (x !== undefined && y !== undefined && x.equals(y));
  });
}

/**
 * The connection `loadFromDefault` would make: $KUBECONFIG, else ~/.kube/config, else the pod's
 * ServiceAccount. Returns `undefined` when the kubeconfig needs client-node (a plugin, a proxy,
 * several files): the caller then loads it with client-node (client-node.ts).
 */
export function defaultConnectionSpec(env: NodeJS.ProcessEnv = process.env): ConnectionSpec | undefined {
  const files = (env['KUBECONFIG'] ?? '').split(delimiter).filter((f) => f !== '');
  if (files.length > 1) return undefined;
  if (files.length === 1) return kubeconfigSpec(files[0]!);
  const home = env['HOME'] || homeOfUser();
  if (home && exists(join(home, '.kube', 'config'))) return kubeconfigSpec(join(home, '.kube', 'config'));
  const host = env['KUBERNETES_SERVICE_HOST'];
  const port = env['KUBERNETES_SERVICE_PORT'];
  if (host && port && exists(join(SA_DIR, 'token'))) {
    const scheme = port === '80' || port === '8080' || port === '8001' ? 'http' : 'https';
    return {
      server: `${scheme}://${isIPv6(host) ? `[${host}]` : host}:${port}`,
      ca: { file: join(SA_DIR, 'ca.crt') },
      token: { file: join(SA_DIR, 'token') },
    };
  }
  throw new CannesError(
    'KubeConfigInvalid',
    'no kubeconfig: set KUBECONFIG, create ~/.kube/config, or run in a pod with its ServiceAccount',
  );
}

/** The user's home from the password database; none for a uid without an entry (the image's 65532). */
function homeOfUser(): string {
  try {
    return homedir();
  } catch {
    return '';
  }
}

const exists = (p: string) => {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
};

/** One kubeconfig file's current context, or `undefined` when it needs client-node. */
export function kubeconfigSpec(file: string): ConnectionSpec | undefined {
  let doc: unknown;
  try {
    doc = parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new CannesError('KubeConfigInvalid', `cannot read the kubeconfig ${file}: ${(e as Error).name}`);
  }
  if (!isRecord(doc)) throw new CannesError('KubeConfigInvalid', `the kubeconfig ${file} is not a mapping`);
  const named = (list: string, name: unknown, field: string): Record<string, unknown> => {
    const items = Array.isArray(doc[list]) ? (doc[list] as unknown[]) : [];
    const hit = items.find((i) => isRecord(i) && i['name'] === name);
    const body = isRecord(hit) ? hit[field] : undefined;
    if (!isRecord(body))
      throw new CannesError(
        'KubeConfigInvalid',
        `the kubeconfig ${file} has no ${field} ${JSON.stringify(name)}`,
      );
    return body;
  };
  const context = named('contexts', doc['current-context'], 'context');
  const cluster = named('clusters', context['cluster'], 'cluster');
  const user = context['user'] === undefined ? {} : named('users', context['user'], 'user');
  if (user['exec'] !== undefined || user['auth-provider'] !== undefined || cluster['proxy-url'] !== undefined)
    return undefined;
  const dir = dirname(file);
  const str = (o: Record<string, unknown>, k: string): string | undefined => {
    const v = o[k];
    if (v === undefined || v === null || v === '') return undefined;
    if (typeof v !== 'string')
      throw new CannesError('KubeConfigInvalid', `the kubeconfig ${file}: ${k} is not a string`);
    return v;
  };
  const source = (o: Record<string, unknown>, dataKey: string, fileKey: string): Source | undefined => {
    const data = str(o, dataKey);
    if (data !== undefined) return { data: Buffer.from(data, 'base64') };
    const f = str(o, fileKey);
    return f === undefined ? undefined : { file: isAbsolute(f) ? f : join(dir, f) };
  };
  const server = str(cluster, 'server');
  if (server === undefined)
    throw new CannesError('KubeConfigInvalid', `the kubeconfig ${file} has no cluster server`);
  const token = str(user, 'token');
  const tokenFile = str(user, 'tokenFile');
  const username = str(user, 'username');
  const password = str(user, 'password');
  const spec: ConnectionSpec = { server };
  const ca = source(cluster, 'certificate-authority-data', 'certificate-authority');
  if (ca) spec.ca = ca;
  if (cluster['insecure-skip-tls-verify'] === true) spec.insecureSkipTlsVerify = true;
  const sni = str(cluster, 'tls-server-name');
  if (sni) spec.tlsServerName = sni;
  const cert = source(user, 'client-certificate-data', 'client-certificate');
  const key = source(user, 'client-key-data', 'client-key');
  if (cert) spec.cert = cert;
  if (key) spec.key = key;
  if (token !== undefined) spec.token = { data: Buffer.from(token) };
  else if (tokenFile !== undefined)
    spec.token = { file: isAbsolute(tokenFile) ? tokenFile : join(dir, tokenFile) };
  if (username !== undefined && password !== undefined) spec.basic = { username, password };
  return spec;
}

/** The default connection: native when it can be, client-node's loader when it must be. */
export async function loadConnection(env: NodeJS.ProcessEnv = process.env): Promise<KubeConnection> {
  const spec = defaultConnectionSpec(env);
  if (spec) return new NativeConnection(spec);
  const { clientNodeConnection } = await import('./client-node.ts');
  return clientNodeConnection();
}
