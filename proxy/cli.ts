import { CannesError } from '../common/errors.ts';
import { validPathPrefix } from './endpoints.ts';
import { isLogLevel, type LogLevel } from './log.ts';
import { DEFAULT_ALLOW, DEFAULT_PORT, type HostPort, isUnspecified, parseHostPort } from './net.ts';

export const USAGE = `cannes-proxy: the host-side LLM proxy that injects real API keys for Docker bridge clients

usage: node cannes-proxy.mjs --keys FILE [--listen HOST:PORT ...] [--allow CIDR ...] [--metrics HOST:PORT]

  --keys FILE                     key file (mode 600, owned by this user); reloaded on change and SIGHUP
  --direct-keys FILE              the owner's keys for the key file's Direct routes (written by the key
                                  intake; same checks; may be missing). Default: none (Direct routes refused)
  --listen HOST:PORT              address to listen on (repeatable). Default: every IPv4 address of the
                                  Docker bridges (docker0, br-*) on port --port; refuses to start if none.
                                  0.0.0.0 and :: are refused.
  --port N                        port for the bridge addresses found without --listen (default ${DEFAULT_PORT})
  --allow CIDR                    client source range (repeatable, default ${DEFAULT_ALLOW}); checked on
                                  every connection, IPv4-mapped IPv6 included
  --bridges-only                  narrow --allow to the subnets of the Docker bridges present (docker0, br-*),
                                  re-read (at most once a second) when a source is in none of them
  --metrics HOST:PORT|off         Prometheus listener (default 127.0.0.1:9464)
  --max-body-bytes N              request body cap, larger → 413 (default 67108864 = 64 MiB)
  --upstream-headers-timeout S    seconds to wait for upstream response headers (default 900)
  --upstream-body-timeout S       longest upstream silence between body chunks, seconds (default 300)
  --upstream-connect-timeout S    seconds to connect upstream (default 10)
  --client-headers-timeout S      seconds a client has to send its headers (default 20)
  --client-request-timeout S      seconds a client has to send its whole request (default 300)
  --allow-path-prefix PATH         also allow this path prefix (relative to a route's base URL, e.g. /files)
                                  for every route, with GET, HEAD, POST, DELETE, PATCH (repeatable)
  --allow-any-path                turn the per-provider endpoint allow list off (any path, those methods)
  --watch-key-file on|off         reload the key file when it changes (default on); SIGHUP always reloads
  --drain-timeout S               on SIGTERM, how long open streams may finish (default 60)
  --threads N                     threads serving the listen addresses, 1..16 (default 1); more than one
                                  share each port (SO_REUSEPORT), each costs ~20 MB
  --log-level LEVEL               debug | info | warn | error | silent (default info)
  --help                          this text

Routes: /proxy/<id>/<path> → <baseUrl of id>/<path>, for the provider's inference endpoints only
(docs/proxy.md). GET /healthz answers bridge clients.
`;

export interface CliOptions {
  readonly keys: string;
  /** The Direct keys file (`--direct-keys`), or undefined. */
  readonly directKeys: string | undefined;
  readonly listen: readonly HostPort[];
  readonly port: number;
  readonly allow: readonly string[];
  /** `--bridges-only`: `allow` narrowed to the Docker bridges present. */
  readonly bridgesOnly: boolean;
  readonly metrics: HostPort | null;
  readonly maxBodyBytes: number;
  readonly upstreamHeadersTimeoutMs: number;
  readonly upstreamBodyTimeoutMs: number;
  readonly upstreamConnectTimeoutMs: number;
  readonly clientHeadersTimeoutMs: number;
  readonly clientRequestTimeoutMs: number;
  readonly drainTimeoutMs: number;
  readonly threads: number;
  readonly logLevel: LogLevel;
  readonly watchKeyFile: boolean;
  /** Extra path prefixes allowed for every route (`--allow-path-prefix`). */
  readonly allowPathPrefixes: readonly string[];
  /** The endpoint allow list is off (`--allow-any-path`). */
  readonly allowAnyPath: boolean;
}

export type ParsedArgs = { readonly help: true } | ({ readonly help: false } & CliOptions);

const VALUE_FLAGS = new Set([
  '--keys',
  '--direct-keys',
  '--listen',
  '--port',
  '--allow',
  '--metrics',
  '--max-body-bytes',
  '--upstream-headers-timeout',
  '--upstream-body-timeout',
  '--upstream-connect-timeout',
  '--client-headers-timeout',
  '--client-request-timeout',
  '--drain-timeout',
  '--threads',
  '--log-level',
  '--watch-key-file',
  '--allow-path-prefix',
]);
const BOOLEAN_FLAGS = new Set(['--allow-any-path', '--bridges-only']);

function usageError(message: string): CannesError {
  return new CannesError('InvalidArgument', message, { terminal: true });
}

export function parseArgs(argv: readonly string[]): ParsedArgs {
  const values = new Map<string, string[]>();
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i]!;
    if (arg === '--help' || arg === '-h') return { help: true };
    let value: string | undefined;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq !== -1) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    if (BOOLEAN_FLAGS.has(arg) && value === undefined) {
      values.set(arg, ['on']);
      continue;
    }
    if (!VALUE_FLAGS.has(arg)) throw usageError(`unknown argument ${JSON.stringify(arg)} (see --help)`);
    if (value === undefined) {
      value = argv[++i];
      if (value === undefined) throw usageError(`${arg} needs a value`);
    }
    const list = values.get(arg) ?? [];
    list.push(value);
    values.set(arg, list);
  }
  const one = (flag: string): string | undefined => {
    const v = values.get(flag);
    if (v && v.length > 1) throw usageError(`${flag} given more than once`);
    return v?.[0];
  };
  const keys = one('--keys');
  if (keys === undefined || keys === '') throw usageError('--keys FILE is required');
  const listen = (values.get('--listen') ?? []).map((v) => {
    const hp = parseHostPort(v, '--listen');
    if (isUnspecified(hp.host)) {
      throw usageError(`--listen ${v}: listening on every address is refused; give a bridge address`);
    }
    return hp;
  });
  const metricsArg = one('--metrics') ?? '127.0.0.1:9464';
  let metrics: HostPort | null = null;
  if (metricsArg !== 'off') {
    metrics = parseHostPort(metricsArg, '--metrics');
    if (isUnspecified(metrics.host))
      throw usageError(`--metrics ${metricsArg}: listening on every address is refused`);
  }
  const logLevel = one('--log-level') ?? 'info';
  if (!isLogLevel(logLevel)) throw usageError(`--log-level ${JSON.stringify(logLevel)}: unknown level`);
  const watch = one('--watch-key-file') ?? 'on';
  if (watch !== 'on' && watch !== 'off') throw usageError('--watch-key-file must be on or off');
  const allowPathPrefixes = values.get('--allow-path-prefix') ?? [];
  for (const p of allowPathPrefixes) {
    if (!validPathPrefix(p)) {
      throw usageError(
        `--allow-path-prefix ${JSON.stringify(p)}: expected a path such as /files (no query, no dot segments)`,
      );
    }
  }
  return {
    help: false,
    watchKeyFile: watch === 'on',
    allowPathPrefixes,
    allowAnyPath: values.has('--allow-any-path'),
    keys,
    directKeys: one('--direct-keys') || undefined,
    listen,
    port: integer(one('--port'), '--port', DEFAULT_PORT, 1, 65535),
    allow: values.get('--allow') ?? [DEFAULT_ALLOW],
    bridgesOnly: values.has('--bridges-only'),
    metrics,
    maxBodyBytes: integer(
      one('--max-body-bytes'),
      '--max-body-bytes',
      64 * 1024 * 1024,
      0,
      Number.MAX_SAFE_INTEGER,
    ),
    upstreamHeadersTimeoutMs: seconds(one('--upstream-headers-timeout'), '--upstream-headers-timeout', 900),
    upstreamBodyTimeoutMs: seconds(one('--upstream-body-timeout'), '--upstream-body-timeout', 300),
    upstreamConnectTimeoutMs: seconds(one('--upstream-connect-timeout'), '--upstream-connect-timeout', 10),
    clientHeadersTimeoutMs: seconds(one('--client-headers-timeout'), '--client-headers-timeout', 20),
    clientRequestTimeoutMs: seconds(one('--client-request-timeout'), '--client-request-timeout', 300),
    drainTimeoutMs: seconds(one('--drain-timeout'), '--drain-timeout', 60),
    threads: integer(one('--threads'), '--threads', 1, 1, 16),
    logLevel,
  };
}

function integer(v: string | undefined, flag: string, dflt: number, min: number, max: number): number {
  if (v === undefined) return dflt;
  if (!/^[0-9]+$/.test(v)) throw usageError(`${flag} ${JSON.stringify(v)}: expected a whole number`);
  const n = Number(v);
  if (n < min || n > max) throw usageError(`${flag} ${v}: expected ${min}..${max}`);
  return n;
}

function seconds(v: string | undefined, flag: string, dflt: number): number {
  if (v === undefined) return dflt * 1000;
  if (!/^[0-9]+(\.[0-9]+)?$/.test(v)) throw usageError(`${flag} ${JSON.stringify(v)}: expected seconds`);
  const ms = Math.round(Number(v) * 1000);
  if (ms <= 0) throw usageError(`${flag} ${v}: must be positive`);
  return ms;
}
