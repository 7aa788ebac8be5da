/**
 * `cannes-operator run` configuration: flags and environment, validated at start-up. A bad
 * value stops the operator with a message naming the flag or variable, never its value
 * when the value could be a secret (DATABASE_URL carries a password).
 */
import { parseArgs } from 'node:util';
import { CannesError, TerminalError } from '../common/errors.ts';
import { isProviderName, type ProviderName } from '../common/providers.ts';
import { Secret } from '../common/secret.ts';
import { parseGoDuration } from './lib/duration.ts';

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
  /** Long steps (boots, deploys) running at once, off the workers (controllers/inflight.ts). */
  readonly maxInFlight: number;
  readonly resyncMs: number;
  /** Operator-set upstream origins per provider (the test rig's fake upstreams). */
  readonly providerOrigins: Partial<Record<ProviderName, string>>;
  /** Base URL the servers download Node from (`<url>/v<version>/node-v<version>-linux-<arch>.tar.xz`). */
  readonly nodeDistUrl: string | undefined;
  /** Replaces built-in Node tarball SHA-256s per architecture (a mirror that repacks; the rig). */
  readonly nodeSha256: Partial<Record<'x64' | 'arm64', string>>;
  readonly sshPort: number | undefined;
  readonly logLevel: LogLevel;
  readonly logFormat: LogFormat;
  /** Watch only this namespace (a namespace-scoped install); undefined: every namespace. */
  readonly watchNamespace: string | undefined;
}

/** The levels `--log-level` and `LOG_LEVEL` accept: pino's, which the logger uses as they are. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ['json', 'console'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/** The default Lease name; the chart grants get/update on this name only unless told another. */
export const DEFAULT_LEASE_NAME = 'cannes-operator';
/** `--resync` when not given: a full relist every 10 minutes. */
export const DEFAULT_RESYNC_MS = 600_000;

/**
 * Every environment variable the operator reads (a test greps the sources and fails when one is
 * missing here), shown by `--help`.
 */
export const ENVIRONMENT = `environment:
  DATABASE_URL             Postgres URL, required (use sslmode=verify-full); never logged
  CANNES_MASTER_KEYS_FILE  master keys file, required: lines "kid base64-of-32-bytes", the first encrypts
  HCLOUD_ENDPOINT          Hetzner Cloud API base URL (default https://api.hetzner.cloud/v1)
  PGSSLMODE                sslmode when DATABASE_URL has none
  PGSSLROOTCERT            CA file for the database when DATABASE_URL has no sslrootcert
  LOG_LEVEL                as --log-level (the flag wins)
  LOG_FORMAT               as --log-format (the flag wins)
  WATCH_NAMESPACE          as --watch-namespace (the flag wins)
  POD_NAMESPACE            default namespace of the Lease (the chart sets it)
  POD_NAME                 first part of the leader identity (the chart sets it)
  KUBECONFIG               kubeconfig path; else $HOME/.kube/config, else in-cluster
  HOME                     where ~/.kube/config is looked for
  KUBERNETES_SERVICE_HOST  in-cluster: the API server (with KUBERNETES_SERVICE_PORT and the
  KUBERNETES_SERVICE_PORT  pod's ServiceAccount token and CA), set by the kubelet
  CANNES_PROXY_BUNDLE      path of the proxy bundle (default: next to the operator in dist/)
  CANNES_FAULT_POINT       tests only: crash at a named step
`;

/** Where the image links its platform's jemalloc (Debian's libjemalloc2), preloaded by its ENV. */
export const IMAGE_JEMALLOC = '/usr/local/lib/libjemalloc.so.2';

/**
 * The operator process's runtime environment (the image's ENV; the rig starts the operator
 * with it too, so the benchmark measures what ships; docs/robustness.md, "Memory"):
 * - `--max-semi-space-size=8`: V8 otherwise grows the young generation to 2 x 64 MB during a
 *   provisioning burst and keeps it, empty, for good (~100 MB of the idle RSS);
 * - `MALLOC_ARENA_MAX=1`: one glibc arena instead of one per thread that mallocs (the libuv
 *   pool's crypto and DNS), each fragmenting on its own;
 * - `MALLOC_MMAP_THRESHOLD_` and `MALLOC_TRIM_THRESHOLD_` at 128 KiB, fixed instead of glibc's
 *   sliding thresholds: a freed buffer of 128 KiB or more goes back at once and the heap's top is
 *   trimmed. With the sliding default the burst's SSH and deploy buffers stayed in RSS for good
 *   (50 Vps: idle RSS 204 → 130 MiB, same run otherwise). They apply when glibc allocates: a
 *   process started without the preload below;
 * - `MALLOC_CONF` for jemalloc, which the image preloads (`LD_PRELOAD`, {@link IMAGE_JEMALLOC};
 *   the rig preloads the host's copy of the same Debian package): glibc's heap kept the
 *   fragments of a provisioning burst for good (the idle RSS outside V8 grew with the burst,
 *   49 → 88 MiB from 1 to 200 Vps), jemalloc hands freed pages back on a timer, run by its
 *   background thread even when the process is idle; two arenas, not eight per core.
 */
export const OPERATOR_RUNTIME_ENV: Readonly<Record<string, string>> = {
  NODE_OPTIONS: '--max-semi-space-size=8',
  MALLOC_CONF: 'background_thread:true,narenas:2',
  MALLOC_ARENA_MAX: '1',
  MALLOC_MMAP_THRESHOLD_: '131072',
  MALLOC_TRIM_THRESHOLD_: '131072',
};

export const RUN_USAGE = `usage: cannes-operator run [flags]

  --metrics-bind-address HOST:PORT        /metrics (default :8080)
  --health-probe-bind-address HOST:PORT   /healthz and /readyz (default :8081)
  --leader-elect                          elect a leader on a Lease; only the leader reconciles (the chart always sets it)
  --leader-election-id NAME               name of the Lease (default ${DEFAULT_LEASE_NAME})
  --leader-election-namespace NS          namespace of the Lease (default $POD_NAMESPACE or cannes-system)
  --workers N                             concurrent reconciles per controller (default 4)
  --max-in-flight N                       long provisioning steps (boots, deploys) running at once, off the workers (default 100)
  --resync DURATION                       full relist interval: a duration (10m, 90s, 1h) or whole seconds (default 10m)
  --provider-origin PROVIDER=URL          upstream origin for a provider (repeatable; for private mirrors and tests)
  --node-dist-url URL                     where servers download the proxy's Node (default https://nodejs.org/dist)
  --node-sha256 ARCH=HEX                  SHA-256 of node-v<pinned>-linux-ARCH.tar.xz (x64|arm64), replacing
                                          the built-in official value (repeatable; for a mirror that repacks, e.g. the test rig)
  --ssh-port N                            SSH port of the servers (default 22)
  --log-level LEVEL                       ${LOG_LEVELS.join('|')} (default info)
  --log-format FORMAT                     json (one object per line) or console (for a terminal) (default json)
  --watch-namespace NS                    reconcile Vps and ModelKey objects of this namespace only (default: all)
  --version                               print the version and exit
  -h, --help                              this text

${ENVIRONMENT}`;

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

function oneOf<T extends string>(what: string, v: string, allowed: readonly T[]): T {
  if (!(allowed as readonly string[]).includes(v))
    bad(what, `expected one of ${allowed.join(', ')}, got ${JSON.stringify(v.slice(0, 32))}`);
  return v as T;
}

/** `--resync`: a Go duration (`10m`), or whole seconds as before (`600`). */
function resyncMs(v: string | undefined): number {
  if (v === undefined) return DEFAULT_RESYNC_MS;
  let ms: number;
  if (/^[0-9]{1,9}$/.test(v)) ms = Number(v) * 1000;
  else {
    try {
      ms = parseGoDuration(v);
    } catch {
      bad(
        '--resync',
        `expected a duration such as 10m, 90s or 1h, or whole seconds, got ${JSON.stringify(v.slice(0, 32))}`,
      );
    }
  }
  if (ms > 86_400_000) bad('--resync', 'at most 24h');
  return Math.round(ms);
}

function leaseName(v: string | undefined): string {
  if (v === undefined) return DEFAULT_LEASE_NAME;
  if (!/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(v))
    bad('--leader-election-id', 'not a valid object name');
  return v;
}

function watchNamespace(v: string | undefined): string | undefined {
  if (v === undefined || v === '') return undefined;
  if (!/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(v)) bad('--watch-namespace', 'not a namespace name');
  return v;
}

type FlagValues = Record<string, string | boolean | string[] | undefined>;

const RUN_OPTIONS = {
  'metrics-bind-address': { type: 'string' },
  'health-probe-bind-address': { type: 'string' },
  'leader-elect': { type: 'boolean' },
  'leader-election-id': { type: 'string' },
  'leader-election-namespace': { type: 'string' },
  workers: { type: 'string' },
  'max-in-flight': { type: 'string' },
  resync: { type: 'string' },
  'provider-origin': { type: 'string', multiple: true },
  'node-dist-url': { type: 'string' },
  'node-sha256': { type: 'string', multiple: true },
  'ssh-port': { type: 'string' },
  'log-level': { type: 'string' },
  'log-format': { type: 'string' },
  'watch-namespace': { type: 'string' },
} as const;

function parseRunFlags(argv: readonly string[]): FlagValues {
  try {
    return parseArgs({ args: [...argv], options: RUN_OPTIONS, strict: true, allowPositionals: false })
      .values as FlagValues;
  } catch (err) {
    // node's message goes on about positionals after `--`; its first sentence is the point.
    const first = err instanceof Error ? (err.message.split('. ')[0] ?? 'invalid') : 'invalid';
    bad('flags', `${first} (see cannes-operator run --help)`);
  }
}

/** HCLOUD_ENDPOINT (default the real API), checked to be an http(s) URL, without a trailing slash. */
export function hcloudEndpointFromEnv(env: NodeJS.ProcessEnv): string {
  const endpoint = env['HCLOUD_ENDPOINT'] ?? 'https://api.hetzner.cloud/v1';
  try {
    const u = new URL(endpoint);
    if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new Error('scheme');
  } catch {
    bad('HCLOUD_ENDPOINT', 'must be an http(s) URL');
  }
  return endpoint.replace(/\/+$/, '');
}

/** What the environment must provide: the database, the master keys, the Hetzner endpoint. */
function requiredEnv(env: NodeJS.ProcessEnv) {
  const dbUrl = env['DATABASE_URL'];
  if (!dbUrl) bad('DATABASE_URL', 'not set (a postgres:// URL; for Neon add sslmode=verify-full)');
  if (!/^postgres(ql)?:\/\//.test(dbUrl)) bad('DATABASE_URL', 'must start with postgres:// or postgresql://');
  const keysFile = env['CANNES_MASTER_KEYS_FILE'];
  if (!keysFile) bad('CANNES_MASTER_KEYS_FILE', 'not set (a file of lines "kid base64-of-32-bytes")');
  return {
    databaseUrl: Secret.of(dbUrl),
    masterKeysFile: keysFile,
    hcloudEndpoint: hcloudEndpointFromEnv(env),
  };
}

const PLAIN_URL = /^https?:\/\/[A-Za-z0-9.:[\]-]+(\/[A-Za-z0-9._~/-]*)?$/;

function providerOrigins(flags: readonly string[]): Partial<Record<ProviderName, string>> {
  const origins: Partial<Record<ProviderName, string>> = {};
  for (const o of flags) {
    const eq = o.indexOf('=');
    const name = o.slice(0, eq);
    const url = o.slice(eq + 1);
    if (eq < 1 || !isProviderName(name))
      bad('--provider-origin', `expected PROVIDER=URL with a known provider`);
    if (!PLAIN_URL.test(url)) bad('--provider-origin', 'bad URL');
    origins[name] = url.replace(/\/+$/, '');
  }
  return origins;
}

/** `--node-dist-url` and `--node-sha256`: where the servers fetch Node, and its checksums. */
function nodeSettings(values: FlagValues): Pick<RunConfig, 'nodeDistUrl' | 'nodeSha256'> {
  const nodeDistUrl = typeof values['node-dist-url'] === 'string' ? values['node-dist-url'] : undefined;
  if (nodeDistUrl !== undefined && !PLAIN_URL.test(nodeDistUrl))
    bad('--node-dist-url', 'expected a plain http(s) URL');
  const nodeSha256: Partial<Record<'x64' | 'arm64', string>> = {};
  for (const v of Array.isArray(values['node-sha256']) ? values['node-sha256'] : []) {
    const m = /^(x64|arm64)=([0-9a-fA-F]{64})$/.exec(v);
    if (!m) bad('--node-sha256', 'expected x64=<64 hex digits> or arm64=<64 hex digits>');
    nodeSha256[m[1] as 'x64' | 'arm64'] = m[2]!.toLowerCase();
  }
  return { nodeDistUrl: nodeDistUrl?.replace(/\/+$/, ''), nodeSha256 };
}

/** `--log-level`/`LOG_LEVEL` and `--log-format`/`LOG_FORMAT` (the flag wins, the error names the one used). */
function logSettings(
  str: (k: string) => string | undefined,
  env: NodeJS.ProcessEnv,
): Pick<RunConfig, 'logLevel' | 'logFormat'> {
  return {
    logLevel: oneOf(
      str('log-level') === undefined ? 'LOG_LEVEL' : '--log-level',
      str('log-level') ?? (env['LOG_LEVEL'] || 'info'),
      LOG_LEVELS,
    ),
    logFormat: oneOf(
      str('log-format') === undefined ? 'LOG_FORMAT' : '--log-format',
      str('log-format') ?? (env['LOG_FORMAT'] || 'json'),
      LOG_FORMATS,
    ),
  };
}

export function parseRunConfig(argv: readonly string[], env: NodeJS.ProcessEnv): RunConfig {
  const values = parseRunFlags(argv);
  const str = (k: string) => (typeof values[k] === 'string' ? (values[k] as string) : undefined);
  const required = requiredEnv(env);
  const origins = providerOrigins(Array.isArray(values['provider-origin']) ? values['provider-origin'] : []);
  const node = nodeSettings(values);
  const podName = env['POD_NAME'] ?? `local-${process.pid}`;
  return {
    ...required,
    metrics: parseListen('--metrics-bind-address', str('metrics-bind-address') ?? ':8080'),
    probes: parseListen('--health-probe-bind-address', str('health-probe-bind-address') ?? ':8081'),
    leaderElect: values['leader-elect'] === true,
    leaseNamespace: str('leader-election-namespace') ?? env['POD_NAMESPACE'] ?? 'cannes-system',
    leaseName: leaseName(str('leader-election-id')),
    identity: `${podName}_${crypto.randomUUID().slice(0, 8)}`,
    workers: intFlag('--workers', str('workers'), 4, 1, 64),
    maxInFlight: intFlag('--max-in-flight', str('max-in-flight'), 100, 1, 10_000),
    resyncMs: resyncMs(str('resync')),
    providerOrigins: origins,
    ...node,
    sshPort: str('ssh-port') === undefined ? undefined : intFlag('--ssh-port', str('ssh-port'), 22, 1, 65535),
    ...logSettings(str, env),
    watchNamespace: watchNamespace(str('watch-namespace') ?? env['WATCH_NAMESPACE']),
  };
}

/** A configuration error as the one line `main` prints: never a stack, never a secret value. */
export function configErrorLine(err: unknown): string | undefined {
  return err instanceof CannesError && err.reason === 'InvalidConfig' ? err.message : undefined;
}
