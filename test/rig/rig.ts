import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { endStdin } from '../lib/stdin.ts';
import type { ControlPlaneBinaries } from './binaries.ts';

/**
 * Everything a process needs to talk to a running rig. Serialisable: the shared rig's supervisor writes
 * it as JSON and every test file rebuilds its runners from it.
 */
export type RigInfo = {
  /** The rig's private temp dir (mode 700): certificates, etcd data, kubeconfigs, logs. */
  dir: string;
  /** https://127.0.0.1:<port> */
  server: string;
  /** Admin kubeconfig (client certificate in system:masters). */
  kubeconfigPath: string;
  caCert: string;
  adminCert: string;
  adminKey: string;
  binaries: ControlPlaneBinaries;
  /** Milliseconds from spawn to /readyz ok, default ServiceAccount created. */
  startMs: number;
  /** etcd's client URL (http, loopback): its JSON gateway dumps every key (`/v3/kv/range`). */
  etcdUrl?: string;
  /** The API server's audit log (policy: every request and response body, test/rig/controlplane.ts). */
  auditLogPath?: string;
};

export type RunResult = { code: number; stdout: string; stderr: string };

export type RunOptions = {
  /** Written to the command's stdin. */
  stdin?: string;
  /** Throw when the exit code is not 0 (default true). */
  check?: boolean;
  /** Use this kubeconfig instead of the admin one (e.g. a service account's). */
  kubeconfig?: string;
  timeoutMs?: number;
};

export type Rig = RigInfo & {
  /** Runs the rig's kubectl against the rig (admin unless `opts.kubeconfig`). */
  kubectl(args: string[], opts?: RunOptions): Promise<RunResult>;
  /** Runs the rig's helm against the rig with its own private helm home. */
  helm(args: string[], opts?: RunOptions): Promise<RunResult>;
  /**
   * A kubeconfig that authenticates as ServiceAccount `ns/name` with a TokenRequest token (1 h), so code
   * runs with exactly the RBAC bound to that account. Creates the ServiceAccount when absent (there is
   * no controller-manager here); the namespace must exist.
   */
  serviceAccountKubeconfig(namespace: string, name: string): Promise<string>;
  /**
   * A raw request as admin; the body is parsed JSON when the response is JSON. `contentType` defaults to
   * application/json (use application/merge-patch+json for a merge PATCH).
   */
  adminRequest(
    method: string,
    path: string,
    body?: unknown,
    contentType?: string,
  ): Promise<{ status: number; body: unknown }>;
};

export class CommandError extends Error {
  readonly result: RunResult;
  constructor(command: string, result: RunResult) {
    super(`${command} exited ${result.code}: ${result.stderr.trim().slice(0, 2000)}`);
    this.name = 'CommandError';
    this.result = result;
  }
}

function runCommand(
  file: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  opts: RunOptions,
  label: string,
): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      { env, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' },
      (err, stdout, stderr) => {
        let code = 0;
        if (err) {
          const c: unknown = Reflect.get(err, 'code');
          if (typeof c !== 'number') {
            // Not an exit code: the binary is missing (ENOENT) or was killed (timeout, signal).
            const signal: unknown = Reflect.get(err, 'signal');
            const why =
              typeof signal === 'string' ? `killed by ${signal} (timeout ${timeoutMs} ms?)` : err.message;
            reject(new Error(`${label} ${args.join(' ')}: ${why}; stderr: ${stderr.trim().slice(0, 2000)}`));
            return;
          }
          code = c;
        }
        const result = { code, stdout, stderr };
        if (code !== 0 && opts.check !== false)
          reject(new CommandError(`${label} ${args.join(' ')}`, result));
        else resolve(result);
      },
    );
    endStdin(child.stdin, opts.stdin);
  });
}

/** The environment every rig tool runs with: no user kubeconfig, kuberc or helm home leaks in. */
function toolEnv(info: RigInfo, kubeconfig: string): NodeJS.ProcessEnv {
  return {
    PATH: process.env['PATH'] ?? '/usr/bin:/bin',
    HOME: join(info.dir, 'home'),
    KUBECONFIG: kubeconfig,
    KUBERC: 'off',
    KUBECACHEDIR: join(info.dir, 'kube-cache'),
    HELM_CACHE_HOME: join(info.dir, 'helm', 'cache'),
    HELM_CONFIG_HOME: join(info.dir, 'helm', 'config'),
    HELM_DATA_HOME: join(info.dir, 'helm', 'data'),
  };
}

type TokenResponse = { status: { token: string } };
function isTokenResponse(v: unknown): v is TokenResponse {
  if (typeof v !== 'object' || v === null) return false;
  const status: unknown = Reflect.get(v, 'status');
  return typeof status === 'object' && status !== null && typeof Reflect.get(status, 'token') === 'string';
}

/** Writes a kubeconfig (mode 600) for the rig's server with the given user entry. */
export async function writeKubeconfig(
  path: string,
  info: Pick<RigInfo, 'server' | 'caCert'>,
  user: Record<string, string>,
  name = 'cannes-rig',
): Promise<void> {
  const config = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [
      {
        name,
        cluster: {
          server: info.server,
          'certificate-authority-data': readFileSync(info.caCert).toString('base64'),
        },
      },
    ],
    users: [{ name, user }],
    contexts: [{ name, context: { cluster: name, user: name, namespace: 'default' } }],
    'current-context': name,
  };
  await writeFile(path, stringify(config), { mode: 0o600 });
}

/** Builds the runners for a rig described by `info` (usable in any process on this machine). */
export function rigFrom(info: RigInfo): Rig {
  const adminRequest = (
    method: string,
    path: string,
    body?: unknown,
    contentType = 'application/json',
  ): Promise<{ status: number; body: unknown }> =>
    new Promise((resolve, reject) => {
      const url = new URL(path, info.server);
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const req = request(
        url,
        {
          method,
          ca: readFileSync(info.caCert),
          cert: readFileSync(info.adminCert),
          key: readFileSync(info.adminKey),
          headers: payload === undefined ? {} : { 'content-type': contentType },
          timeout: 30_000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown = text;
            if ((res.headers['content-type'] ?? '').includes('json')) {
              try {
                parsed = JSON.parse(text);
              } catch {
                parsed = text;
              }
            }
            resolve({ status: res.statusCode ?? 0, body: parsed });
          });
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: timeout`)));
      req.on('error', reject);
      req.end(payload);
    });

  const rig: Rig = {
    ...info,
    kubectl: (args, opts = {}) => {
      const kubeconfig = opts.kubeconfig ?? info.kubeconfigPath;
      return runCommand(info.binaries.kubectl, args, toolEnv(info, kubeconfig), opts, 'kubectl');
    },
    helm: (args, opts = {}) => {
      const kubeconfig = opts.kubeconfig ?? info.kubeconfigPath;
      return runCommand(info.binaries.helm, args, toolEnv(info, kubeconfig), opts, 'helm');
    },
    adminRequest,
    serviceAccountKubeconfig: async (namespace, name) => {
      const ns = encodeURIComponent(namespace);
      const sa = encodeURIComponent(name);
      const created = await adminRequest('POST', `/api/v1/namespaces/${ns}/serviceaccounts`, {
        apiVersion: 'v1',
        kind: 'ServiceAccount',
        metadata: { name },
      });
      if (created.status !== 201 && created.status !== 409) {
        throw new Error(`creating ServiceAccount ${namespace}/${name}: HTTP ${created.status}`);
      }
      const token = await adminRequest('POST', `/api/v1/namespaces/${ns}/serviceaccounts/${sa}/token`, {
        apiVersion: 'authentication.k8s.io/v1',
        kind: 'TokenRequest',
        spec: { expirationSeconds: 3600 },
      });
      if (token.status !== 201 || !isTokenResponse(token.body)) {
        throw new Error(`TokenRequest for ${namespace}/${name}: HTTP ${token.status}`);
      }
      const dir = join(info.dir, 'sa');
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const path = join(dir, `${namespace}.${name}.${process.pid}.kubeconfig`);
      await writeKubeconfig(path, info, { token: token.body.status.token }, `sa-${namespace}-${name}`);
      return path;
    },
  };
  return rig;
}
