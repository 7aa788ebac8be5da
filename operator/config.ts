/**
 * `cannes-operator run` configuration: flags and environment, validated at start-up. A bad
 * value stops the operator with a message naming the flag or variable, never its value
 * when the value could be a secret (DATABASE_URL carries a password).
 */
import { parseArgs } from 'node:util';
import { isProviderName, type ProviderName } from '../proxy/providers.ts';
import { TerminalError } from './lib/errors.ts';
import { Secret } from './lib/secret.ts';

export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

export interface RunConfig {
  readonly databaseUrl: Secret;
  readonly masterKeysFile: string;
  readonly hcloudEndpoint: string;
  readonly metrics: ListenAddress;
  readonly probes: ListenAddress;
  readonly leaderElect: boolean;
  readonly leaseNamespace: string;
  readonly leaseName: string;
  readonly identity: string;
  readonly workers: number;
  readonly resyncMs: number;
  /** Operator-set upstream origins per provider (the test rig's fake upstreams). */
  readonly providerOrigins: Partial<Record<ProviderName, string>>;
  readonly sshPort: number | undefined;
  readonly logLevel: string;
  /** Watch only this namespace (a namespace-scoped install); undefined: every namespace. */
  readonly watchNamespace: string | undefined;
}

export const RUN_USAGE = `cannes-operator run [flags]

  --metrics-bind-address HOST:PORT        /metrics (default :8080)
  --health-probe-bind-address HOST:PORT   /healthz and /readyz (default :8081)
  --leader-elect                          elect a leader on a Lease (needed with replicas > 1)
  --leader-election-namespace NS          namespace of the Lease (default $POD_NAMESPACE or cannes-system)
  --workers N                             concurrent reconciles per controller (default 4)
  --resync DURATION                       full relist interval in seconds (default 600)
  --provider-origin PROVIDER=URL          upstream origin for a provider (repeatable; for private mirrors and tests)
  --ssh-port N                            SSH port of the servers (default 22)
  --log-level LEVEL                       pino level (default info)
  --watch-namespace NS                    reconcile Vps and ModelKey objects of this namespace only (default: all)

environment: DATABASE_URL, CANNES_MASTER_KEYS_FILE, HCLOUD_ENDPOINT, KUBECONFIG, POD_NAME, POD_NAMESPACE
`;

function bad(what: string, why: string): never {
  throw new TerminalError('InvalidConfig', `${what}: ${why}`);
}

export function parseListen(flag: string, value: string): ListenAddress {
  const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]*):([0-9]{1,5})$/.exec(value);
  if (!m) bad(flag, `expected HOST:PORT or :PORT, got ${JSON.stringify(value.slice(0, 64))}`);
  const port = Number(m[2]);
  if (port < 1 || port > 65535) bad(flag, 'port out of range');
  const host = (m[1] ?? '').replace(/^\[|\]$/g, '') || '0.0.0.0';
  return { host, port };
}

function intFlag(flag: string, v: string | undefined, def: number, min: number, max: number): number {
  if (v === undefined) return def;
  if (!/^[0-9]{1,9}$/.test(v)) bad(flag, 'expected a whole number');
  const n = Number(v);
  if (n < min || n > max) bad(flag, `expected ${min}..${max}`);
  return n;
}

function watchNamespace(v: string | undefined): string | undefined {
  if (v === undefined || v === '') return undefined;
  if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(v)) bad('--watch-namespace', 'not a namespace name');
  return v;
}

export function parseRunConfig(argv: readonly string[], env: NodeJS.ProcessEnv): RunConfig {
  let values: Record<string, string | boolean | string[] | undefined>;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        'metrics-bind-address': { type: 'string' },
        'health-probe-bind-address': { type: 'string' },
        'leader-elect': { type: 'boolean' },
        'leader-election-namespace': { type: 'string' },
        workers: { type: 'string' },
        resync: { type: 'string' },
        'provider-origin': { type: 'string', multiple: true },
        'ssh-port': { type: 'string' },
        'log-level': { type: 'string' },
        'watch-namespace': { type: 'string' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    bad('flags', err instanceof Error ? err.message : 'invalid');
  }
  const str = (k: string) => (typeof values[k] === 'string' ? (values[k] as string) : undefined);

  const dbUrl = env['DATABASE_URL'];
  if (!dbUrl) bad('DATABASE_URL', 'not set (a postgres:// URL; for Neon add sslmode=verify-full)');
  if (!/^postgres(ql)?:\/\//.test(dbUrl)) bad('DATABASE_URL', 'must start with postgres:// or postgresql://');
  const keysFile = env['CANNES_MASTER_KEYS_FILE'];
  if (!keysFile) bad('CANNES_MASTER_KEYS_FILE', 'not set (a file of lines "kid base64-of-32-bytes")');
  const endpoint = env['HCLOUD_ENDPOINT'] ?? 'https://api.hetzner.cloud/v1';
  try {
    const u = new URL(endpoint);
    if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new Error('scheme');
  } catch {
    bad('HCLOUD_ENDPOINT', 'must be an http(s) URL');
  }

  const origins: Partial<Record<ProviderName, string>> = {};
  const originFlags = Array.isArray(values['provider-origin']) ? values['provider-origin'] : [];
  for (const o of originFlags) {
    const eq = o.indexOf('=');
    const name = o.slice(0, eq);
    const url = o.slice(eq + 1);
    if (eq < 1 || !isProviderName(name))
      bad('--provider-origin', `expected PROVIDER=URL with a known provider`);
    if (!/^https?:\/\/[A-Za-z0-9.:[\]-]+(\/[A-Za-z0-9._~/-]*)?$/.test(url))
      bad('--provider-origin', 'bad URL');
    origins[name] = url.replace(/\/+$/, '');
  }

  const podName = env['POD_NAME'] ?? `local-${process.pid}`;
  return {
    databaseUrl: Secret.of(dbUrl),
    masterKeysFile: keysFile,
    hcloudEndpoint: endpoint.replace(/\/+$/, ''),
    metrics: parseListen('--metrics-bind-address', str('metrics-bind-address') ?? ':8080'),
    probes: parseListen('--health-probe-bind-address', str('health-probe-bind-address') ?? ':8081'),
    leaderElect: values['leader-elect'] === true,
    leaseNamespace: str('leader-election-namespace') ?? env['POD_NAMESPACE'] ?? 'cannes-system',
    leaseName: 'cannes-operator',
    identity: `${podName}_${crypto.randomUUID().slice(0, 8)}`,
    workers: intFlag('--workers', str('workers'), 4, 1, 64),
    resyncMs: intFlag('--resync', str('resync'), 600, 0, 86_400) * 1000,
    providerOrigins: origins,
    sshPort: str('ssh-port') === undefined ? undefined : intFlag('--ssh-port', str('ssh-port'), 22, 1, 65535),
    logLevel: str('log-level') ?? env['LOG_LEVEL'] ?? 'info',
    watchNamespace: watchNamespace(str('watch-namespace') ?? env['WATCH_NAMESPACE']),
  };
}
