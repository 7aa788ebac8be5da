import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { type Dirent, readdirSync, readFileSync, statSync } from 'node:fs';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { GatewayModelKey } from '../../../operator/host/index.ts';
import { openclawEntry, openclawPackageDir } from '../../lib/openclaw.ts';

/** Helpers to run the real OpenClaw CLI and gateway from the cache install (test/lib/openclaw.ts). */

/**
 * What the chat tests give the gateway: three ModelKeys (one per provider, claude the default), a fake real key for
 * each (random canaries, so a test can scan for leaks) and a gateway token.
 */
export function chatFixture() {
  const canary = (what: string) => `sk-${what}-canary-${randomBytes(18).toString('base64url')}`;
  const MODEL_KEYS: GatewayModelKey[] = [
    // Several keys: exactly one names the agent's default model.
    {
      name: 'claude',
      provider: 'anthropic',
      models: [{ id: 'claude-fake-1', name: 'Claude Fake' }],
      default: true,
    },
    { name: 'gpt', provider: 'openai', models: [{ id: 'gpt-fake-1', name: 'GPT Fake' }] },
    { name: 'gemini', provider: 'google', models: [{ id: 'gemini-fake-1', name: 'Gemini Fake' }] },
  ];
  return {
    // The first agent turn warms up for 20-70 s on a quiet machine and far longer under a full
    // parallel `make test`: generous, and never a timing assertion.
    CHAT_TIMEOUT_MS: 420_000,
    REAL: { claude: canary('ant'), gpt: canary('oai'), gemini: canary('goog') },
    TOKEN: canary('gwtoken'),
    MODEL_KEYS,
  };
}

export interface OpenClawEnv {
  readonly home: string;
  readonly stateDir: string;
  readonly configPath: string;
}

/** A clean environment: nothing of the machine's own HOME, provider keys or proxies leaks in. */
export function baseEnv(e: OpenClawEnv, extra: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: process.env['PATH'] ?? '/usr/bin:/bin',
    HOME: e.home,
    OPENCLAW_STATE_DIR: e.stateDir,
    OPENCLAW_CONFIG_PATH: e.configPath,
    NO_COLOR: '1',
    ...extra,
  };
}

export interface Validation {
  readonly valid: boolean;
  readonly issues: readonly { readonly path: string; readonly message: string }[];
}

/** `openclaw config validate --json`: the package's own validator. */
export async function validateConfig(e: OpenClawEnv): Promise<Validation> {
  const out = await promisify(execFile)(process.execPath, [openclawEntry(), 'config', 'validate', '--json'], {
    cwd: openclawPackageDir(),
    env: baseEnv(e),
    timeout: 120_000,
  }).then(
    (r) => r.stdout,
    (err: { stdout?: string }) => err.stdout ?? '',
  );
  const doc: unknown = JSON.parse(out);
  if (typeof doc !== 'object' || doc === null || !('valid' in doc) || typeof doc.valid !== 'boolean') {
    throw new Error(`unexpected validator output: ${out.slice(0, 500)}`);
  }
  const issues: { path: string; message: string }[] = [];
  if ('issues' in doc && Array.isArray(doc.issues)) {
    for (const i of doc.issues) issues.push({ path: String(i?.path), message: String(i?.message) });
  }
  return { valid: doc.valid, issues };
}

export interface RunningGateway {
  readonly child: ChildProcess;
  readonly output: () => string;
  stop(): Promise<void>;
}

/**
 * Starts `node openclaw.mjs <args>` in the package directory, as the image does in /app.
 * `argv0` replaces `node openclaw.mjs` with a wrapper that ends in exec'ing the gateway
 * (e.g. entering a network namespace), so the child's pid is the gateway's.
 */
export function startGateway(
  args: readonly string[],
  env: Record<string, string>,
  argv0: readonly string[] = [process.execPath, openclawEntry()],
): RunningGateway {
  let out = '';
  const argv = [...argv0, ...args];
  const child = spawn(argv[0]!, argv.slice(1), {
    cwd: openclawPackageDir(),
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // its own process group: stop() ends the gateway and every helper it spawned
  });
  child.stdout?.on('data', (b: Buffer) => {
    out = (out + b.toString()).slice(-200_000);
  });
  child.stderr?.on('data', (b: Buffer) => {
    out = (out + b.toString()).slice(-200_000);
  });
  return {
    child,
    output: () => out,
    async stop() {
      if (child.exitCode !== null || child.pid === undefined) return;
      // The gateway renames itself `openclaw-gateway` and starts helpers, some in a process
      // group of their own: note them all now, end them by pid after the gateway is gone.
      const helpers = descendants(child.pid);
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      killGroup(child.pid, 'SIGTERM');
      const timer = setTimeout(() => killGroup(child.pid!, 'SIGKILL'), 15_000);
      await exited;
      clearTimeout(timer);
      killGroup(child.pid, 'SIGKILL');
      for (const pid of helpers) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    },
  };
}

/** Every regular file under `d`; entries that vanish while listing are skipped. */
export function walk(d: string): string[] {
  let entries: Dirent[];
  try {
    entries = readdirSync(d, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const out: string[] = [];
  for (const e of entries) {
    const p = join(d, e.name);
    if (e.isDirectory()) out.push(...walk(p));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

/**
 * Reads a file of a running gateway's directory, or null when it vanished since it was
 * listed (sqlite journals and lock files come and go).
 */
export function readIfPresent(path: string): { text: string; uid: number } | null {
  try {
    const uid = statSync(path).uid;
    return { text: readFileSync(path).toString('latin1'), uid };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/** Every live descendant of `root` (from /proc), deepest last. */
export function descendants(root: number): number[] {
  const parent = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // pid (comm) state ppid …: comm may contain spaces and parentheses.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parent.set(Number(name), ppid);
    } catch {
      // exited meanwhile
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const [pid, pp] of parent) {
      if (pp === p) {
        out.push(pid);
        walk(pid);
      }
    }
  };
  walk(root);
  return out;
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}

/** Polls `url` until it answers 200, the process dies, or `timeoutMs` passes. */
export async function waitReady(url: string, gw: RunningGateway, timeoutMs: number): Promise<number> {
  const start = Date.now();
  for (;;) {
    if (gw.child.exitCode !== null) throw new Error(`gateway exited (${gw.child.exitCode}):\n${gw.output()}`);
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(2_000) });
      if (r.status === 200) return Date.now() - start;
    } catch {
      // not listening yet
    }
    if (Date.now() - start > timeoutMs)
      throw new Error(`gateway not ready after ${timeoutMs} ms:\n${gw.output()}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export interface Tap {
  readonly url: string;
  /** Credential headers of every request the gateway sent, in order. */
  readonly seen: { path: string; credentials: Record<string, string> }[];
  close(): Promise<void>;
}

const CREDENTIAL_HEADERS = ['authorization', 'x-api-key', 'x-goog-api-key', 'api-key'];

/**
 * A recording pass-through in front of the proxy: proves what the gateway itself sends
 * (`proxy-managed`), which the proxy then strips before the upstream sees anything.
 */
export async function startTap(target: string): Promise<Tap> {
  const seen: Tap['seen'] = [];
  const t = new URL(target);
  const server = createServer((req, res) => {
    const credentials: Record<string, string> = {};
    for (const h of CREDENTIAL_HEADERS) {
      const v = req.headers[h];
      if (typeof v === 'string') credentials[h] = v;
    }
    seen.push({ path: req.url ?? '', credentials });
    const up = request(
      { host: t.hostname, port: t.port, method: req.method, path: req.url, headers: req.headers },
      (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}
