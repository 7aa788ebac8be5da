import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { endStdin, writeStdin } from '../../lib/stdin.ts';
import { waitFor } from '../../lib/wait.ts';

/**
 * The proxy test rig: real network namespaces and veth pairs (a 172.x "bridge" address for
 * the proxy in the root namespace, a 172.x client in one namespace, a 10.x client in another),
 * the proxy bundle run as a child process, and a client process inside each namespace.
 * Only loopback and addresses inside namespaces created here are used; everything is removed
 * in `destroy()`, which tests call from afterAll.
 */
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const CLIENT_SCRIPT = fileURLToPath(new URL('./ns-client.ts', import.meta.url));

export const rand = (n = 3) => randomBytes(n).toString('hex');
export const canaryKey = (tag: string) => `sk-${tag}-canary-${randomBytes(16).toString('hex')}`;

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}
function tryIp(...args: string[]): void {
  try {
    ip(...args);
  } catch {
    // already gone
  }
}

/** A /24 not present anywhere on this host's root namespace. */
function freeSubnet(first: number, second: number): string {
  const used = ip('-4', '-o', 'addr', 'show') + ip('-4', 'route', 'show');
  for (let i = 0; i < 50; i++) {
    const third = 1 + (randomBytes(1)[0]! % 250);
    const net = `${first}.${second}.${third}.`;
    if (!used.includes(net)) return net;
  }
  throw new Error('no free test subnet');
}

export interface NetRig {
  readonly suffix: string;
  /** The proxy's bridge-like address (root namespace, on the veth to the bridge client). */
  readonly bridgeAddr: string;
  /** The bridge client's address (inside `bridgeNs`). */
  readonly bridgeClientAddr: string;
  readonly bridgeNs: string;
  /** The root namespace's address on the outside link (not a bridge address). */
  readonly outsideHostAddr: string;
  readonly outsideClientAddr: string;
  readonly outsideNs: string;
  destroy(): void;
}

export function createNetRig(): NetRig {
  const s = rand();
  const bridgeNs = `cp-${s}-b`;
  const outsideNs = `cp-${s}-o`;
  const b = freeSubnet(172, 30 + (randomBytes(1)[0]! % 2));
  const o = freeSubnet(10, 200 + (randomBytes(1)[0]! % 50));
  const rig: NetRig = {
    suffix: s,
    bridgeAddr: `${b}1`,
    bridgeClientAddr: `${b}2`,
    bridgeNs,
    outsideHostAddr: `${o}1`,
    outsideClientAddr: `${o}2`,
    outsideNs,
    destroy() {
      tryIp('netns', 'del', bridgeNs);
      tryIp('netns', 'del', outsideNs);
      tryIp('link', 'del', `cpb${s}`);
      tryIp('link', 'del', `cpo${s}`);
    },
  };
  try {
    for (const [ns, host, peer, net] of [
      [bridgeNs, `cpb${s}`, `cpB${s}`, b],
      [outsideNs, `cpo${s}`, `cpO${s}`, o],
    ] as const) {
      ip('netns', 'add', ns);
      ip('link', 'add', host, 'type', 'veth', 'peer', 'name', peer);
      ip('link', 'set', peer, 'netns', ns);
      ip('addr', 'add', `${net}1/24`, 'dev', host);
      ip('link', 'set', host, 'up');
      ip('-n', ns, 'addr', 'add', `${net}2/24`, 'dev', peer);
      ip('-n', ns, 'link', 'set', peer, 'up');
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      ip('-n', ns, 'route', 'add', 'default', 'via', `${net}1`);
    }
  } catch (err) {
    rig.destroy();
    throw err;
  }
  return rig;
}

/** Builds the proxy bundle into a fresh temp dir (what ships), returns its path. */
export function buildBundle(): { file: string; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'cannes-proxy-bundle-'));
  const file = join(dir, 'cannes-proxy.mjs');
  execFileSync(process.execPath, ['tools/bundle-proxy.ts', '--outfile', file], { cwd: ROOT, stdio: 'pipe' });
  return { file, dir };
}

export interface KeyEntry {
  provider: string;
  apiKey: string;
  baseUrl?: string;
}

/** Writes the key file the way the operator does: mode 600, atomic rename. */
export function writeKeyFile(path: string, keys: Record<string, KeyEntry>, mode = 0o600): void {
  const tmp = `${path}.tmp-${rand()}`;
  writeFileSync(tmp, JSON.stringify({ version: 1, keys }), { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}

export function writeRaw(path: string, text: string, mode = 0o600): void {
  const tmp = `${path}.tmp-${rand()}`;
  writeFileSync(tmp, text, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}

export interface LogLine {
  readonly [k: string]: unknown;
  readonly msg?: string;
}

/** The proxy as a child process; stdout/stderr are captured for assertions and canary scans. */
export class ProxyProcess {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  readonly lines: LogLine[] = [];
  readonly exited: Promise<number | null>;

  constructor(bundle: string, args: string[], opts: { netns?: string; cwd?: string } = {}) {
    const argv = opts.netns
      ? ['ip', ['netns', 'exec', opts.netns, process.execPath, bundle, ...args]]
      : [process.execPath, [bundle, ...args]];
    this.child = spawn(argv[0] as string, argv[1] as string[], {
      cwd: opts.cwd ?? tmpdir(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    createInterface({ input: this.child.stdout! }).on('line', (l) => {
      this.stdout += `${l}\n`;
      try {
        this.lines.push(JSON.parse(l));
      } catch {
        this.lines.push({ msg: `(not json) ${l}` });
      }
    });
    this.child.stderr!.on('data', (b: Buffer) => {
      this.stderr += b.toString('utf8');
    });
    this.exited = new Promise((r) => this.child.on('exit', (code) => r(code)));
  }

  get pid(): number {
    return this.child.pid!;
  }

  async waitForLine(pred: (l: LogLine) => boolean, timeoutMs = 15_000): Promise<LogLine> {
    return waitFor('a proxy log line', () => this.lines.find(pred), timeoutMs, this.#untilExit());
  }

  /** Ports the proxy reports after binding (`listening` lines), by address. */
  async listening(count: number): Promise<Map<string, number>> {
    const ls = await waitFor(
      `${count} listening lines from the proxy`,
      () => {
        const got = this.lines.filter((l) => l.msg === 'listening');
        return got.length >= count ? got : undefined;
      },
      15_000,
      this.#untilExit(),
    );
    return new Map(ls.map((l) => [String(l['address']), Number(l['port'])]));
  }

  /** Polls every 25 ms and stops at once when the proxy has exited, naming its stderr. */
  #untilExit() {
    return {
      intervalMs: 25,
      giveUp: () =>
        this.child.exitCode !== null
          ? `proxy exited (${this.child.exitCode}): ${this.stderr.slice(0, 500)}`
          : undefined,
    };
  }

  async metricsPort(): Promise<number> {
    const l = await this.waitForLine((x) => x.msg === 'metrics listening');
    return Number(l['port']);
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
  }

  /** Resident set size and its peak, from /proc (bytes). */
  memory(): { rss: number; hwm: number } {
    const st = readFileSync(`/proc/${this.pid}/status`, 'utf8');
    const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(st)?.[1] ?? 'NaN') * 1024;
    return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
  }
}

export type ClientEvent =
  | { id: string; ev: 'response'; status: number; headers: string[] }
  | { id: string; ev: 'chunk'; data: string }
  | { id: string; ev: 'end'; bytes: number; body: string }
  | { id: string; ev: 'error'; code: string }
  | { id: string; ev: 'sent'; sha256: string }
  | { id: string; ev: 'raw'; closed: boolean; code?: string; data: string }
  | { id: string; ev: 'aborted' };

export interface RequestSpec {
  host: string;
  port: number;
  path: string;
  method?: string;
  headers?: string[];
  body?: string;
  bodySize?: number;
  stream?: boolean;
}

export interface Response {
  status: number;
  headers: string[];
  body: string;
  error?: string;
  sentSha256?: string;
}

/** A client process inside a namespace (or the root namespace when `netns` is null). */
export class NsClient {
  readonly #child: ChildProcess;
  readonly #listeners = new Map<string, (e: ClientEvent) => void>();
  readonly #ready: Promise<void>;
  #n = 0;
  /** Everything the client received, for the canary scan. */
  received = '';

  constructor(netns: string | null) {
    const args = ['--disable-warning=ExperimentalWarning', CLIENT_SCRIPT];
    this.#child = netns
      ? spawn('ip', ['netns', 'exec', netns, process.execPath, ...args], {
          stdio: ['pipe', 'pipe', 'inherit'],
        })
      : spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    let ready: () => void;
    this.#ready = new Promise((r) => {
      ready = r;
    });
    createInterface({ input: this.#child.stdout! }).on('line', (line) => {
      this.received += `${line}\n`;
      const e = JSON.parse(line) as ClientEvent | { ev: 'ready' };
      if (e.ev === 'ready') ready();
      else this.#listeners.get(e.id)?.(e);
    });
  }

  ready(): Promise<void> {
    return this.#ready;
  }

  /** Starts a request; `onEvent` sees every event; resolves with the whole outcome. */
  request(
    spec: RequestSpec,
    onEvent?: (e: ClientEvent, id: string) => void,
  ): { id: string; done: Promise<Response> } {
    const id = `r${++this.#n}`;
    const res: Response = { status: 0, headers: [], body: '' };
    const done = new Promise<Response>((resolve) => {
      this.#listeners.set(id, (e) => {
        onEvent?.(e, id);
        if (e.ev === 'response') {
          res.status = e.status;
          res.headers = e.headers;
        } else if (e.ev === 'chunk') res.body += e.data;
        else if (e.ev === 'sent') res.sentSha256 = e.sha256;
        else if (e.ev === 'end') {
          if (!spec.stream) res.body = e.body;
          this.#listeners.delete(id);
          resolve(res);
        } else if (e.ev === 'error') {
          res.error = e.code;
          this.#listeners.delete(id);
          resolve(res);
        }
      });
    });
    this.#send({ op: 'request', id, ...spec });
    return { id, done };
  }

  fetch(spec: RequestSpec): Promise<Response> {
    return this.request(spec).done;
  }

  abort(id: string): void {
    this.#send({ op: 'abort', id });
  }

  /** Raw TCP: sends `pieces` (gapMs apart), returns what came back and whether the server closed. */
  raw(host: string, port: number, pieces: string[], opts: { gapMs?: number; waitMs?: number } = {}) {
    const id = `r${++this.#n}`;
    return new Promise<{ closed: boolean; code?: string; data: string }>((resolve) => {
      this.#listeners.set(id, (e) => {
        if (e.ev === 'raw') {
          this.#listeners.delete(id);
          resolve({ closed: e.closed, code: e.code, data: e.data });
        }
      });
      this.#send({ op: 'raw', id, host, port, pieces, ...opts });
    });
  }

  #send(o: unknown): void {
    writeStdin(this.#child.stdin, `${JSON.stringify(o)}\n`);
  }

  close(): void {
    endStdin(this.#child.stdin);
    this.#child.kill('SIGKILL');
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `waitFor` for a truthy value, polled every 20 ms (the proxy tests' in-process checks). */
export async function until<T>(
  fn: () => T | undefined | false | Promise<T | undefined | false>,
  what: string,
  timeoutMs = 10_000,
): Promise<T> {
  return waitFor(what, async () => (await fn()) || undefined, timeoutMs, {
    intervalMs: 20,
    failOnError: true,
  });
}

export function header(headers: string[], name: string): string | undefined {
  for (let i = 0; i < headers.length; i += 2) if (headers[i]!.toLowerCase() === name) return headers[i + 1];
  return undefined;
}

export async function scrape(port: number): Promise<string> {
  const r = await fetch(`http://127.0.0.1:${port}/metrics`);
  return r.text();
}

export function tempDir(tag: string): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), `cannes-proxy-${tag}-`));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * What each proxy test file starts from: the bridge rig, the bundle as it ships, a key file
 * with `routes`, the bundle listening on the bridge address (and on `extraListen`), its
 * metrics on loopback, and a client in the bridge namespace. `close()` undoes all of it, as
 * does a failure half-way through before it is rethrown.
 */
export interface ProxyRig {
  readonly rig: NetRig;
  readonly dir: string;
  readonly keyFile: string;
  readonly proxy: ProxyProcess;
  /** Bound ports by address. */
  readonly ports: ReadonlyMap<string, number>;
  /** The port on the bridge address. */
  readonly port: number;
  readonly metricsPort: number;
  readonly client: NsClient;
  close(): Promise<void>;
}

export async function startProxyRig(
  tag: string,
  routes: Record<string, KeyEntry>,
  opts: { readonly args?: readonly string[]; readonly extraListen?: readonly string[] } = {},
): Promise<ProxyRig> {
  const undo: (() => unknown)[] = [];
  const close = async () => {
    for (const u of undo.splice(0).reverse()) await u();
  };
  try {
    const rig = createNetRig();
    undo.push(() => rig.destroy());
    const tmp = tempDir(tag);
    undo.push(() => tmp.cleanup());
    const bundle = buildBundle();
    undo.push(() => rmSync(bundle.dir, { recursive: true, force: true }));
    const keyFile = join(tmp.dir, 'model-keys.json');
    writeKeyFile(keyFile, routes);
    const listen = [`${rig.bridgeAddr}:0`, ...(opts.extraListen ?? [])];
    const proxy = new ProxyProcess(bundle.file, [
      '--keys',
      keyFile,
      ...listen.flatMap((l) => ['--listen', l]),
      '--metrics',
      '127.0.0.1:0',
      ...(opts.args ?? []),
    ]);
    undo.push(() => proxy.stop());
    const ports = await proxy.listening(listen.length);
    const metricsPort = await proxy.metricsPort();
    const client = new NsClient(rig.bridgeNs);
    undo.push(() => client.close());
    await client.ready();
    const port = ports.get(rig.bridgeAddr)!;
    return { rig, dir: tmp.dir, keyFile, proxy, ports, port, metricsPort, client, close };
  } catch (err) {
    await close();
    throw err;
  }
}
