import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { alive, sweepStaleDirs, tailnetBinDir } from './control.ts';

const run = promisify(execFile);

/** Same values as test/hosts/real-host-provider.ts: a namespace here sits where a simulated server sits. */
const GATEWAY_IPV4 = '198.19.255.254';
const RIG_CIDR = '198.19.255.0/24';
/** One record per namespace made here (owner pid, veth), for the sweep after a killed run. */
const RECORDS = join(tmpdir(), 'cannes-tailnet-ns');
const NS_NAME = /^[a-z][a-z0-9-]{0,20}-[0-9a-f]{6}$/;
const VETH_NAME = /^vt[0-9a-f]{10}$/;

export interface ExecResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs argv inside network namespace ns; never throws on a non-zero exit. */
export function nsExec(
  ns: string,
  argv: readonly string[],
  opts: { stdin?: string; timeoutMs?: number; env?: Record<string, string> } = {},
): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const p = spawn('ip', ['netns', 'exec', ns, ...argv], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', ...opts.env },
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (c: Buffer) => {
      stdout += c.toString('utf8');
    });
    p.stderr.on('data', (c: Buffer) => {
      stderr += c.toString('utf8');
    });
    const t = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    p.on('error', reject);
    p.on('close', (code, signal) => {
      clearTimeout(t);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
    p.stdin.end(opts.stdin ?? '');
  });
}

export interface RigNamespace {
  readonly name: string;
  /** Its address, in the rig block: the root namespace routes it over the veth. */
  readonly ipv4: string;
  exec(argv: readonly string[], opts?: { stdin?: string; timeoutMs?: number }): Promise<ExecResult>;
  /**
   * Adds `ip name` to the namespace's /etc/hosts (what MagicDNS answers on a real laptop; the
   * rig's tailnet has no resolver), seen by every later `ip netns exec` in it.
   */
  addHost(name: string, ip: string): Promise<void>;
  destroy(): Promise<void>;
}

/**
 * A network namespace in the network position of a simulated server (test/hosts): a veth to the
 * root namespace whose root end carries the gateway 198.19.255.254, a route to the rig block
 * 198.19.255.0/24 via it, and nothing else (default route `unreachable`). Its own address is a free
 * one in 198.19.255.64-191. The root namespace does not forward between veths (ip_forward=0), so two
 * such namespaces cannot reach each other directly: tailnet traffic between them goes through the
 * rig's DERP relay. `/etc/netns/<name>/resolv.conf` (empty) keeps tailscaled's DNS away from this
 * machine's /etc/resolv.conf.
 */
export async function createRigNamespace(prefix: string): Promise<RigNamespace> {
  if (!/^[a-z][a-z0-9-]{0,20}$/.test(prefix)) throw new Error(`bad namespace prefix ${prefix}`);
  const rand = randomBytes(3).toString('hex');
  const name = `${prefix}-${rand}`;
  const veth = `vt${rand}${randomBytes(2).toString('hex')}`;
  const etcDir = join('/etc/netns', name);
  const record = join(RECORDS, `${name}.json`);
  let ipv4 = '';
  await sweepStaleNamespaces();
  await mkdir(RECORDS, { recursive: true, mode: 0o700 });
  await writeFile(record, `${JSON.stringify({ pid: process.pid, name, veth })}\n`);
  const destroy = async (): Promise<void> => {
    // Kill whatever still runs in it (a test that failed half-way), then remove it.
    await run('ip', ['netns', 'pids', name])
      .then(({ stdout }) => {
        for (const pid of stdout.split(/\s+/).filter(Boolean)) {
          try {
            process.kill(Number(pid), 'SIGKILL');
          } catch {}
        }
      })
      .catch(() => undefined);
    if (ipv4) await run('ip', ['route', 'del', `${ipv4}/32`, 'dev', veth]).catch(() => undefined);
    await run('ip', ['link', 'del', veth]).catch(() => undefined);
    await run('ip', ['netns', 'del', name]).catch(() => undefined);
    await rm(etcDir, { recursive: true, force: true });
    await rm(record, { force: true });
  };
  try {
    await mkdir(etcDir, { recursive: true });
    await writeFile(join(etcDir, 'resolv.conf'), '');
    await run('ip', ['netns', 'add', name]);
    await run('ip', ['link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', name]);
    await run('ip', ['addr', 'add', `${GATEWAY_IPV4}/32`, 'dev', veth]);
    await run('ip', ['link', 'set', veth, 'up']);
    for (let attempt = 0; ; attempt++) {
      const candidate = `198.19.255.${randomInt(64, 192)}`;
      try {
        // Fails with "File exists" when another namespace already has this address.
        await run('ip', ['route', 'add', `${candidate}/32`, 'dev', veth, 'src', GATEWAY_IPV4]);
        ipv4 = candidate;
        break;
      } catch (err) {
        if (attempt > 20) throw err;
      }
    }
    const steps: string[][] = [
      ['-n', name, 'link', 'set', 'lo', 'up'],
      ['-n', name, 'addr', 'add', `${ipv4}/32`, 'dev', 'eth0'],
      ['-n', name, 'link', 'set', 'eth0', 'up'],
      ['-n', name, 'route', 'add', `${GATEWAY_IPV4}/32`, 'dev', 'eth0'],
      ['-n', name, 'route', 'add', RIG_CIDR, 'via', GATEWAY_IPV4, 'dev', 'eth0'],
      ['-n', name, 'route', 'add', 'unreachable', 'default'],
    ];
    for (const args of steps) await run('ip', args);
  } catch (err) {
    await destroy();
    throw err;
  }
  const hosts: string[] = [];
  const addHost = async (host: string, ip: string): Promise<void> => {
    if (!/^[a-z0-9.-]+$/i.test(host) || !/^[0-9a-f.:]+$/i.test(ip))
      throw new Error(`bad host entry ${host} ${ip}`);
    hosts.push(`${ip} ${host}`);
    const base = await readFile('/etc/hosts', 'utf8').catch(() => '127.0.0.1 localhost\n');
    await writeFile(join(etcDir, 'hosts'), `${base.trimEnd()}\n${hosts.join('\n')}\n`);
  };
  return { name, ipv4, exec: (argv, opts) => nsExec(name, argv, opts), addHost, destroy };
}

/**
 * Removes namespaces made by createRigNamespace in a process that is gone (killed before its
 * cleanup): whatever still runs in them, their veth (and with it the route), the namespace, its
 * /etc/netns folder. Only names and veths of the shapes made here are touched.
 */
async function sweepStaleNamespaces(): Promise<void> {
  for (const f of await readdir(RECORDS).catch(() => [] as string[])) {
    const path = join(RECORDS, f);
    const rec = JSON.parse(await readFile(path, 'utf8').catch(() => '{}')) as {
      pid?: unknown;
      name?: unknown;
      veth?: unknown;
    };
    if (typeof rec.pid !== 'number' || alive(rec.pid)) continue;
    if (typeof rec.name === 'string' && NS_NAME.test(rec.name)) {
      const { stdout } = await run('ip', ['netns', 'pids', rec.name]).catch(() => ({ stdout: '' }));
      for (const pid of stdout.split(/\s+/).filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {}
      }
      await run('ip', ['netns', 'del', rec.name]).catch(() => undefined);
      await rm(join('/etc/netns', rec.name), { recursive: true, force: true });
    }
    if (typeof rec.veth === 'string' && VETH_NAME.test(rec.veth))
      await run('ip', ['link', 'del', rec.veth]).catch(() => undefined);
    await rm(path, { force: true });
  }
}

export interface TailscaleNodeOptions {
  /** The network namespace tailscaled runs in. */
  readonly netns: string;
  /** `tun` (default: a real TUN device, kernel routing) or `userspace` (netstack). */
  readonly mode?: 'tun' | 'userspace';
  readonly binDir?: string;
  /**
   * PEM file of the CA the control server's certificate chains to (TailnetControl.caFile); given to
   * tailscaled as SSL_CERT_FILE, so it trusts that CA alone (nothing else is reachable anyway).
   */
  readonly caFile?: string;
}

export interface UpOptions {
  readonly loginServer: string;
  /** The auth key; it goes to `tailscale up` through a 0600 file (default) or stdin, never argv. */
  readonly authKey: string;
  readonly via?: 'file' | 'stdin';
  readonly hostname?: string;
  readonly advertiseTags?: readonly string[];
  readonly timeoutSeconds?: number;
}

/**
 * A real tailscaled in a network namespace, with its own state dir and socket, and the real
 * tailscale CLI talking to it (run in the same namespace).
 */
export class TailscaleNode {
  readonly netns: string;
  readonly dir: string;
  readonly socket: string;
  readonly #bin: string;
  readonly #proc: ChildProcess;
  readonly #logPath: string;

  private constructor(netns: string, dir: string, bin: string, proc: ChildProcess, logPath: string) {
    this.netns = netns;
    this.dir = dir;
    this.socket = join(dir, 'tailscaled.sock');
    this.#bin = bin;
    this.#proc = proc;
    this.#logPath = logPath;
  }

  static async start(opts: TailscaleNodeOptions): Promise<TailscaleNode> {
    const bin = opts.binDir ?? tailnetBinDir();
    await sweepStaleDirs('cannes-tailscaled-');
    const dir = join(
      tmpdir(),
      `cannes-tailscaled-${process.pid}-${opts.netns}-${randomBytes(3).toString('hex')}`,
    );
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const logPath = join(dir, 'tailscaled.log');
    const fd = openSync(logPath, 'a', 0o600);
    let proc: ChildProcess;
    try {
      proc = spawn(
        'ip',
        [
          'netns',
          'exec',
          opts.netns,
          // `ip netns exec` execs in place, so tailscaled's parent is this process: pdeathsig
          // takes it down with us even on SIGKILL.
          'setpriv',
          '--pdeathsig',
          'KILL',
          '--',
          join(bin, 'tailscaled'),
          `--state=${join(dir, 'tailscaled.state')}`,
          `--statedir=${dir}`,
          `--socket=${join(dir, 'tailscaled.sock')}`,
          `--tun=${opts.mode === 'userspace' ? 'userspace-networking' : 'tailscale0'}`,
          '--port=0',
          // No log upload to Tailscale's log servers (nothing may leave this machine).
          '--no-logs-no-support',
        ],
        {
          stdio: ['ignore', fd, fd],
          env: {
            PATH: process.env['PATH'] ?? '/usr/bin:/bin',
            HOME: dir,
            TS_NO_LOGS_NO_SUPPORT: 'true',
            ...(opts.caFile ? { SSL_CERT_FILE: opts.caFile } : {}),
          },
        },
      );
    } finally {
      closeSync(fd);
    }
    const node = new TailscaleNode(opts.netns, dir, bin, proc, logPath);
    try {
      const deadline = Date.now() + 30_000;
      for (;;) {
        if (proc.exitCode !== null || proc.signalCode !== null) throw new Error('tailscaled exited');
        const r = await node.cli(['status', '--json'], { timeoutMs: 5_000 });
        if (r.stdout.includes('"BackendState"')) break;
        if (Date.now() > deadline) throw new Error('tailscaled did not answer on its socket within 30 s');
        await new Promise((res) => setTimeout(res, 100));
      }
    } catch (err) {
      const tail = await node.log();
      await node.stop();
      throw new Error(`tailscaled in ${opts.netns} did not start: ${tail.slice(-1500)}`, { cause: err });
    }
    return node;
  }

  /** `tailscale <args>` against this node's daemon, in its namespace. */
  cli(args: readonly string[], opts: { stdin?: string; timeoutMs?: number } = {}): Promise<ExecResult> {
    return nsExec(this.netns, [join(this.#bin, 'tailscale'), `--socket=${this.socket}`, ...args], opts);
  }

  /**
   * `tailscale up` with a pre-authorised key. The key reaches the CLI as `--auth-key=file:<path>`
   * (a 0600 file in a 0700 folder, removed right after) or `file:/dev/stdin`; argv never holds it.
   */
  async up(o: UpOptions): Promise<ExecResult> {
    const args = [
      'up',
      `--login-server=${o.loginServer}`,
      // The rig's tailnet has no DNS config; never let tailscaled touch resolv.conf.
      '--accept-dns=false',
      `--timeout=${o.timeoutSeconds ?? 60}s`,
    ];
    if (o.hostname) args.push(`--hostname=${o.hostname}`);
    if (o.advertiseTags?.length) args.push(`--advertise-tags=${o.advertiseTags.join(',')}`);
    if (o.via === 'stdin') {
      // Node gives a child a socket, not a pipe, as stdin, and /dev/stdin cannot be opened on a
      // socket (ENXIO); `cat |` hands tailscale a real pipe, as an SSH session would.
      return nsExec(
        this.netns,
        [
          'sh',
          '-c',
          'cat | exec "$0" "$@"',
          join(this.#bin, 'tailscale'),
          `--socket=${this.socket}`,
          ...args,
          '--auth-key=file:/dev/stdin',
        ],
        { stdin: `${o.authKey}\n`, timeoutMs: (o.timeoutSeconds ?? 60) * 1000 + 10_000 },
      );
    }
    const keyDir = join(this.dir, `key-${randomBytes(4).toString('hex')}`);
    await mkdir(keyDir, { mode: 0o700 });
    const keyFile = join(keyDir, 'authkey');
    try {
      await writeFile(keyFile, `${o.authKey}\n`, { mode: 0o600 });
      return await this.cli([...args, `--auth-key=file:${keyFile}`], {
        timeoutMs: (o.timeoutSeconds ?? 60) * 1000 + 10_000,
      });
    } finally {
      await rm(keyDir, { recursive: true, force: true });
    }
  }

  // biome-ignore lint/suspicious/noExplicitAny: tailscale's status JSON is large; tests read a few fields.
  async status(): Promise<any> {
    const r = await this.cli(['status', '--json']);
    return JSON.parse(r.stdout);
  }

  /** The node's tailnet IPv4 (100.64.0.0/10). */
  async ipv4(): Promise<string> {
    const r = await this.cli(['ip', '-4']);
    if (r.code !== 0) throw new Error(`tailscale ip -4: ${r.stderr.trim()}`);
    return r.stdout.trim();
  }

  /**
   * `tailscale serve --bg` of `target` (e.g. http://127.0.0.1:18789) on port 443 (HTTPS, needs
   * certificates: not in the rig) or as plain HTTP on `httpPort` (default 80). Returns the URL the
   * tailnet reaches it by (Serve routes by this name; the bare tailnet IP gets 404).
   */
  async serve(target: string, opts: { https?: boolean; httpPort?: number } = {}): Promise<string> {
    const port = opts.https ? 443 : (opts.httpPort ?? 80);
    const flag = opts.https ? '--https=443' : `--http=${port}`;
    const r = await this.cli(['serve', '--bg', '--yes', flag, target]);
    if (r.code !== 0) throw new Error(`tailscale serve ${flag}: ${r.stderr.trim()}`);
    const name = String((await this.status()).Self?.DNSName ?? '').replace(/\.$/, '');
    const scheme = opts.https ? 'https' : 'http';
    const dflt = opts.https ? 443 : 80;
    return `${scheme}://${name}${port === dflt ? '' : `:${port}`}/`;
  }

  // biome-ignore lint/suspicious/noExplicitAny: see status().
  async whois(addr: string): Promise<any> {
    const r = await this.cli(['whois', '--json', addr]);
    if (r.code !== 0) throw new Error(`tailscale whois ${addr}: ${r.stderr.trim()}`);
    return JSON.parse(r.stdout);
  }

  log(): Promise<string> {
    return readFile(this.#logPath, 'utf8').catch(() => '');
  }

  get pid(): number | undefined {
    return this.#proc.pid;
  }

  async stop(): Promise<void> {
    const p = this.#proc;
    if (p.exitCode === null && p.signalCode === null) {
      const exited = new Promise<void>((r) => p.once('exit', () => r()));
      p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    }
    await rm(this.dir, { recursive: true, force: true });
  }
}

export interface Laptop {
  readonly ns: RigNamespace;
  readonly node: TailscaleNode;
  /** Makes `name` resolve to `ip` in the laptop (MagicDNS's job on a real laptop). */
  knowHost(name: string, ip: string): Promise<void>;
  /** `curl -sS <url>` from the laptop. */
  curl(url: string, maxTimeS?: number): Promise<ExecResult>;
  stop(): Promise<void>;
}

/**
 * A "laptop" on the rig tailnet: its own namespace (rig network position), a real tailscaled joined
 * with a fresh untagged one-off key minted from `control`, and curl. For tests and `make dev`.
 */
export async function startLaptop(
  control: {
    url: string;
    caFile: string;
    mintKey(o?: { reusable?: boolean; tags?: readonly string[] }): Promise<{ key: string }>;
  },
  /** `tags`: a tagged laptop (the key gives them, the node advertises them: testcontrol expires a node that drops them). */
  opts: { prefix?: string; hostname?: string; binDir?: string; tags?: readonly string[] } = {},
): Promise<Laptop> {
  const ns = await createRigNamespace(opts.prefix ?? 'tailnet-laptop');
  let node: TailscaleNode | undefined;
  try {
    node = await TailscaleNode.start({ netns: ns.name, caFile: control.caFile, binDir: opts.binDir });
    const key = await control.mintKey(opts.tags?.length ? { tags: opts.tags } : {});
    const up = await node.up({
      loginServer: control.url,
      authKey: key.key,
      hostname: opts.hostname ?? 'laptop',
      ...(opts.tags?.length ? { advertiseTags: [...opts.tags] } : {}),
    });
    if (up.code !== 0) throw new Error(`laptop did not join: ${up.stderr.trim()}`);
  } catch (err) {
    await node?.stop();
    await ns.destroy();
    throw err;
  }
  const joined = node;
  return {
    ns,
    node: joined,
    knowHost: (name, ip) => ns.addHost(name, ip),
    curl: (url, maxTimeS = 10) =>
      ns.exec(['curl', '-sS', '--max-time', String(maxTimeS), url], { timeoutMs: (maxTimeS + 10) * 1000 }),
    async stop() {
      await joined.stop();
      await ns.destroy();
    },
  };
}
