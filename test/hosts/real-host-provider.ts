import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { chmod, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { build } from 'esbuild';
import type { BootMode, HostProvider, HostSpec } from '../hcloud-sim/host-provider.ts';
import { endStdin } from '../lib/stdin.ts';
import { waitFor, waitUntil } from '../lib/wait.ts';

const run = promisify(execFile);
const HERE = dirname(fileURLToPath(import.meta.url));

/**
 * The root-namespace end of every server's veth carries this address, and each server's
 * default route points at it (like Hetzner's 172.31.1.1 gateway, but inside the
 * 198.18.0.0/15 benchmarking range so no real network is ever named). A test service that a
 * server must reach (a fake LLM upstream) can listen on it.
 */
export const GATEWAY_IPV4 = '198.19.255.254';

/** The rig's reserved block: servers route it to the root namespace (fake upstreams live there). */
export const RIG_CIDR = '198.19.255.0/24';
/** root's PATH on a server (boot, and what sshd gives a root session): the shims come first. */
export const SERVER_ROOT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Where a server is: what tests and `make sim` need to reach or inspect it (nothing secret). */
export interface HostInfo {
  readonly serverId: number;
  readonly name: string;
  readonly ipv4: string;
  /** Network namespace name (`ip netns exec <netns> ...`). */
  readonly netns: string;
  /** The server's OS disk on this machine (etc/ssh, root, opt, ...). */
  readonly diskDir: string;
  /** Current boot: 'off' or the mode it runs in, and the pid of its namespace init (via unshare). */
  readonly state: 'off' | 'rescue' | 'os';
  readonly bootPid: number | undefined;
}

export interface RealHostProviderOptions {
  /** Parent folder for every server's files; default a fresh folder under os.tmpdir(). */
  readonly baseDir?: string;
  /** How long boot() waits for sshd to listen. */
  readonly bootTimeoutMs?: number;
  /** Diagnostics (boot failures); default silent. */
  readonly log?: (line: string) => void;
  /**
   * How the docker shim runs an image (no image can be pulled here): image name (with or
   * without tag) → entrypoint, default command, extra read-only binds `host:container`, env.
   * See docs/hosts.md.
   */
  readonly images?: Readonly<Record<string, ImageMapping>>;
  /**
   * The rig's tool cache, bound read-only at /run/cannes/cache in every server (default
   * $CANNES_CACHE or ~/.cache/cannes): the docker shim finds `x-cannes.npmPackage` installs there.
   */
  readonly cacheDir?: string;
  /**
   * Benchmarks only: a "light" server. The long-running services the operator deploys (a
   * systemd unit running `node`, every compose service) are replaced by a tiny HTTP stand-in
   * (socat answering 200 on the same addresses), so hundreds of servers fit on one machine.
   * Everything else stays real: namespaces, boots, sshd, the shims, files, nftables, the
   * container's namespace and its port forward (socat instead of a Node forwarder).
   */
  readonly standInServices?: boolean;
  /**
   * CA certificates (PEM) every server trusts from its next boot on, appended to its per-boot
   * /etc/ssl/certs/ca-certificates.crt: the rig's own services with TLS (the tailnet's control
   * server) are then trusted as a real server trusts public CAs. More can be added with trustCa().
   */
  readonly trustedCaPems?: readonly string[];
}

export interface ImageMapping {
  readonly entrypoint?: readonly string[];
  readonly command?: readonly string[];
  readonly binds?: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
}

interface Host {
  readonly spec: HostSpec;
  readonly dir: string;
  readonly diskDir: string;
  readonly netns: string;
  readonly veth: string;
  state: 'off' | 'rescue' | 'os';
  proc: ChildProcess | undefined;
  bootCount: number;
  /** Serialises boot/powerOff/destroy of one server. */
  queue: Promise<unknown>;
}

/**
 * A HostProvider that makes every simulated server a real Linux host on this machine:
 * a network namespace holding its public IPv4 (reachable from the root namespace over a
 * veth; it reaches nothing else), and per boot a pid + mount + UTS namespace running a real OpenSSH sshd, with the
 * server's own /root, /etc/ssh, /etc/systemd/system, /opt, /mnt, /var/lib from its disk
 * folder (see boot.sh and docs/hosts.md). Needs root.
 */
export class RealHostProvider implements HostProvider {
  readonly #hosts = new Map<number, Host>();
  readonly #baseDir: string;
  readonly #bootTimeoutMs: number;
  readonly #log: (line: string) => void;
  readonly #images: Readonly<Record<string, ImageMapping>>;
  readonly #standIn: boolean;
  readonly #cacheDir: string;
  readonly #caPems: string[];
  #prepared: Promise<void> | undefined;
  #closed = false;

  constructor(options: RealHostProviderOptions = {}) {
    this.#baseDir =
      options.baseDir ?? join(tmpdir(), `cannes-hosts-${process.pid}-${randomBytes(3).toString('hex')}`);
    this.#bootTimeoutMs = options.bootTimeoutMs ?? 60_000;
    this.#log = options.log ?? (() => {});
    this.#images = options.images ?? {};
    this.#standIn = options.standInServices ?? false;
    this.#cacheDir = options.cacheDir ?? process.env['CANNES_CACHE'] ?? join(homedir(), '.cache', 'cannes');
    this.#caPems = (options.trustedCaPems ?? []).map(checkPem);
  }

  /** Adds a CA certificate (PEM) that every server trusts from its next boot on. */
  trustCa(pem: string): void {
    this.#caPems.push(checkPem(pem));
  }

  get baseDir(): string {
    return this.#baseDir;
  }

  /** Layout, bundled shims, boot script: once per provider. */
  #prepare(): Promise<void> {
    this.#prepared ??= (async () => {
      if (process.getuid?.() !== 0)
        throw new Error('RealHostProvider needs root (namespaces, mounts, veths)');
      await sweepStale(dirname(this.#baseDir), this.#log);
      // Safety net: an address of a server that does not exist (yet, or any more) must never be
      // routed off this machine. Each server's /32 is more specific and wins. Idempotent, shared
      // by every provider on the machine, and deliberately left in place (docs/hosts.md).
      await run('ip', ['route', 'replace', 'unreachable', '198.18.0.0/15']);
      await mkdir(join(this.#baseDir, 'shims', 'bin'), { recursive: true, mode: 0o755 });
      await chmod(this.#baseDir, 0o711);
      await writeFile(join(this.#baseDir, 'owner.pid'), `${process.pid}\n`);
      await writeFile(join(this.#baseDir, 'boot.sh'), await readFile(join(HERE, 'boot.sh')), { mode: 0o755 });
      await bundleShims(join(this.#baseDir, 'shims'));
      await writeFile(join(this.#baseDir, 'shims', 'images.json'), `${JSON.stringify(this.#images)}\n`);
      if (this.#standIn) await writeFile(join(this.#baseDir, 'shims', 'stand-in'), 'services\n');
    })();
    return this.#prepared;
  }

  async create(spec: HostSpec): Promise<void> {
    if (this.#closed) throw new Error('provider closed');
    await this.#prepare();
    if (this.#hosts.has(spec.serverId)) throw new Error(`server ${spec.serverId} already exists`);
    assertTestIpv4(spec.ipv4);
    for (const h of this.#hosts.values()) {
      if (h.spec.ipv4 === spec.ipv4)
        throw new Error(`IPv4 ${spec.ipv4} already used by server ${h.spec.serverId}`);
    }
    const rand = randomBytes(3).toString('hex');
    const dir = join(this.#baseDir, `${spec.serverId}-${rand}`);
    const host: Host = {
      spec,
      dir,
      diskDir: join(dir, 'disk'),
      netns: `cs-${spec.serverId}-${rand}`,
      // Interface names are limited to 15 bytes.
      veth: `vh${rand}${randomBytes(2).toString('hex')}`,
      state: 'off',
      proc: undefined,
      bootCount: 0,
      queue: Promise.resolve(),
    };
    this.#hosts.set(spec.serverId, host);
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      // What a later sweep needs if this process dies without close() (see sweepStale).
      await writeFile(
        join(dir, 'host.json'),
        `${JSON.stringify({ netns: host.netns, veth: host.veth, ipv4: spec.ipv4 })}\n`,
      );
      await layoutDisk(host);
      await createNetwork(host);
    } catch (err) {
      await this.#teardown(host);
      this.#hosts.delete(spec.serverId);
      throw err;
    }
  }

  boot(serverId: number, mode: BootMode): Promise<void> {
    const host = this.#get(serverId);
    return this.#serial(host, async () => {
      await this.#stop(host);
      await this.#start(host, mode);
    });
  }

  powerOff(serverId: number): Promise<void> {
    const host = this.#get(serverId);
    return this.#serial(host, () => this.#stop(host));
  }

  destroy(serverId: number): Promise<void> {
    const host = this.#hosts.get(serverId);
    if (!host) return Promise.resolve();
    return this.#serial(host, async () => {
      await this.#teardown(host);
      this.#hosts.delete(serverId);
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    const errors: unknown[] = [];
    for (const id of [...this.#hosts.keys()]) {
      await this.destroy(id).catch((err: unknown) => errors.push(err));
    }
    await rm(this.#baseDir, { recursive: true, force: true }).catch((err: unknown) => errors.push(err));
    if (errors.length > 0) throw new AggregateError(errors, 'RealHostProvider.close left errors');
  }

  /** Where a server is and what it runs; undefined once destroyed. */
  info(serverId: number): HostInfo | undefined {
    const h = this.#hosts.get(serverId);
    if (!h) return undefined;
    return {
      serverId,
      name: h.spec.name,
      ipv4: h.spec.ipv4,
      netns: h.netns,
      diskDir: h.diskDir,
      state: h.state,
      bootPid: h.proc?.pid,
    };
  }

  /**
   * Runs a command inside the running server (its network, mount, pid and UTS namespaces), as
   * root, like a console session. Test equipment: the operator only ever uses SSH.
   */
  async exec(serverId: number, argv: readonly string[]): Promise<{ stdout: string; stderr: string }> {
    const h = this.#get(serverId);
    const pid = h.proc?.pid;
    if (pid === undefined || h.state === 'off') throw new Error(`server ${serverId} is off`);
    const init = await childPid(pid);
    return run('nsenter', ['-t', String(init), '-n', '-m', '-p', '-u', '--', ...argv], {
      maxBuffer: 16 * 1024 * 1024,
    });
  }

  #get(serverId: number): Host {
    const host = this.#hosts.get(serverId);
    if (!host) throw new Error(`no server ${serverId}`);
    return host;
  }

  #serial<T>(host: Host, fn: () => Promise<T>): Promise<T> {
    const next = host.queue.then(fn, fn);
    host.queue = next.catch(() => undefined);
    return next;
  }

  async #start(host: Host, mode: BootMode): Promise<void> {
    host.bootCount += 1;
    const env: Record<string, string> = {
      PATH: SERVER_ROOT_PATH,
      CS_MODE: mode.kind,
      CS_HOSTNAME: mode.kind === 'rescue' ? 'rescue' : host.spec.name,
      CS_IPV4: host.spec.ipv4,
      CS_DISK: host.diskDir,
      CS_NODE_PREFIX: dirname(dirname(process.execPath)),
      CS_SHIMS: join(this.#baseDir, 'shims'),
      CS_CACHE: this.#cacheDir,
      CS_EXTRA_CA_PEMS: this.#caPems.join('\n'),
    };
    if (mode.kind === 'rescue') {
      env['CS_ROOT_HASH'] = await sha512Crypt(mode.rootPassword);
      env['CS_RESCUE_KEYS'] = mode.sshKeys.join('\n');
    }
    const logPath = join(host.dir, `boot-${host.bootCount}-${mode.kind}.log`);
    const fd = openSync(logPath, 'a', 0o600);
    let proc: ChildProcess;
    try {
      proc = spawn(
        'ip',
        [
          'netns',
          'exec',
          host.netns,
          'unshare',
          '--mount',
          '--uts',
          '--pid',
          '--fork',
          '--mount-proc',
          '--propagation',
          'private',
          // If unshare dies (even SIGKILL), its child (pid 1 of the server) is killed, and with
          // it every process of the server.
          '--kill-child',
          '--',
          '/bin/bash',
          join(this.#baseDir, 'boot.sh'),
        ],
        { env, stdio: ['ignore', fd, fd] },
      );
    } finally {
      closeSync(fd);
    }
    host.proc = proc;
    host.state = mode.kind;
    if (proc.pid !== undefined) await writeFile(join(host.dir, 'boot.pid'), `${proc.pid}\n`);
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    try {
      await waitForSsh(host.spec.ipv4, this.#bootTimeoutMs, exited);
    } catch (err) {
      const tail = await readFile(logPath, 'utf8').catch(() => '');
      this.#log(`server ${host.spec.serverId} boot failed: ${tail.slice(-2000)}`);
      await this.#stop(host);
      // The boot log holds sshd's and boot.sh's output (no secrets): its tail says why.
      throw new Error(`server ${host.spec.serverId} did not boot (${mode.kind}): ${tail.slice(-1500)}`, {
        cause: err,
      });
    }
  }

  async #stop(host: Host): Promise<void> {
    const proc = host.proc;
    host.state = 'off';
    host.proc = undefined;
    if (!proc || proc.pid === undefined) return;
    const pidNs = await nsInode(proc.pid, 'pid', true);
    if (proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
      proc.kill('SIGKILL');
      await exited;
    }
    // pid 1 of the server dies with unshare; the kernel then kills the rest. Wait until no
    // process is left in that pid namespace, so the next boot starts on a clean slate.
    if (pidNs !== undefined)
      await waitUntil(
        'a server to stop',
        async () => (await pidsInNamespace('pid', pidNs)).length === 0,
        30_000,
        { intervalMs: 50 },
      );
    // Every process of the server also sits in its network namespace (which outlives the boot):
    // when none is left there, nothing holds port 22 and the next sshd can bind it.
    const netNs = await stat(`/run/netns/${host.netns}`).then(
      (st) => `net:[${st.ino}]`,
      () => undefined,
    );
    if (netNs !== undefined)
      await waitUntil(
        'a server to stop',
        async () => (await pidsInNamespace('net', netNs)).length === 0,
        30_000,
        { intervalMs: 50 },
      );
  }

  async #teardown(host: Host): Promise<void> {
    await this.#stop(host);
    await run('ip', ['route', 'del', `${host.spec.ipv4}/32`, 'dev', host.veth]).catch(() => undefined);
    await run('ip', ['link', 'del', host.veth]).catch(() => undefined);
    await run('ip', ['netns', 'del', host.netns]).catch(() => undefined);
    await rm(host.dir, { recursive: true, force: true });
  }
}

/**
 * Removes what an earlier provider left when its process died without close() (a killed
 * `make sim`, a crashed test worker): base folders named cannes-hosts-* whose owner process is
 * gone. Their boot processes are killed only if their command line names that folder.
 */
async function sweepStale(parent: string, log: (line: string) => void): Promise<void> {
  const { readdir, readFile: read } = await import('node:fs/promises');
  for (const base of await readdir(parent).catch(() => [] as string[])) {
    if (!base.startsWith('cannes-hosts-')) continue;
    const dir = join(parent, base);
    const owner = Number((await read(join(dir, 'owner.pid'), 'utf8').catch(() => '')).trim());
    if (!Number.isInteger(owner) || owner <= 0 || isAlive(owner)) continue;
    log(`sweeping stale simulated hosts in ${dir}`);
    for (const sub of await readdir(dir).catch(() => [] as string[])) {
      const hostJson = await read(join(dir, sub, 'host.json'), 'utf8').catch(() => undefined);
      if (!hostJson) continue;
      const pid = Number((await read(join(dir, sub, 'boot.pid'), 'utf8').catch(() => '')).trim());
      if (Number.isInteger(pid) && pid > 0) {
        const cmd = await read(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
        if (cmd.includes(dir)) {
          const pidNs = await nsInode(pid, 'pid', true);
          process.kill(pid, 'SIGKILL');
          if (pidNs !== undefined) {
            await waitUntil(
              'a server to stop',
              async () => (await pidsInNamespace('pid', pidNs)).length === 0,
              10_000,
              { intervalMs: 50 },
            ).catch(() => undefined);
          }
        }
      }
      const h: unknown = JSON.parse(hostJson);
      if (typeof h !== 'object' || h === null) continue;
      const { netns, veth } = h as { netns?: unknown; veth?: unknown };
      if (typeof veth === 'string' && /^vh[0-9a-f]+$/.test(veth))
        await run('ip', ['link', 'del', veth]).catch(() => undefined);
      if (typeof netns === 'string' && /^cs-\d+-[0-9a-f]+$/.test(netns)) {
        await run('ip', ['netns', 'del', netns]).catch(() => undefined);
      }
    }
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err instanceof Error && 'code' in err && err.code === 'EPERM';
  }
}

function checkPem(pem: string): string {
  const t = pem.trim();
  if (!/^-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+\n-----END CERTIFICATE-----$/.test(t))
    throw new Error('trusted CA: expected one PEM certificate');
  return t;
}

function assertTestIpv4(ipv4: string): void {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ipv4);
  const octets = m ? m.slice(1).map(Number) : [];
  const ok =
    octets.length === 4 &&
    octets.every((o) => o <= 255) &&
    octets[0] === 198 &&
    (octets[1] === 18 || octets[1] === 19);
  if (!ok) throw new Error(`server IPv4 ${ipv4} is outside 198.18.0.0/15`);
  if (ipv4 === GATEWAY_IPV4) throw new Error(`${GATEWAY_IPV4} is the simulated servers' gateway`);
}

async function layoutDisk(host: Host): Promise<void> {
  const d = host.diskDir;
  for (const sub of ['etc/ssh', 'etc/systemd/system', 'opt', 'mnt', 'var/lib/docker-shim', 'tmp']) {
    await mkdir(join(d, sub), { recursive: true, mode: 0o755 });
  }
  await mkdir(join(d, 'root', '.ssh'), { recursive: true, mode: 0o700 });
  await chmod(join(d, 'root'), 0o700);
  // The image's first boot would make the host keys; the disk has them from the start.
  await run('ssh-keygen', [
    '-q',
    '-t',
    'ed25519',
    '-N',
    '',
    '-C',
    `root@${host.spec.name}`,
    '-f',
    join(d, 'etc/ssh/ssh_host_ed25519_key'),
  ]);
  await writeFile(
    join(d, 'etc/ssh/sshd_config'),
    [
      '# The installed OS: keys only, host key from this disk.',
      'Port 22',
      'HostKey /etc/ssh/ssh_host_ed25519_key',
      'PermitRootLogin prohibit-password',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'PubkeyAuthentication yes',
      'AuthorizedKeysFile .ssh/authorized_keys',
      'UsePAM no',
      'StrictModes yes',
      'PidFile /run/sshd.pid',
      'LogLevel VERBOSE',
      'Subsystem sftp /usr/lib/openssh/sftp-server',
      '',
    ].join('\n'),
    { mode: 0o644 },
  );
  await writeFile(join(d, 'etc/hostname'), `${host.spec.name}\n`);
  // SSH keys given at create are root's keys in the installed OS (Hetzner: via cloud-init).
  // A root password given at create is NOT honoured: the OS has password login off (docs/hosts.md).
  const keys = (host.spec.sshKeys ?? []).map((k) => k.trim()).filter((k) => k !== '');
  await writeFile(join(d, 'root/.ssh/authorized_keys'), keys.map((k) => `${k}\n`).join(''), { mode: 0o600 });
}

async function createNetwork(host: Host): Promise<void> {
  const { netns, veth } = host;
  const ip = host.spec.ipv4;
  const steps: string[][] = [
    ['netns', 'add', netns],
    ['link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns],
    ['addr', 'add', `${GATEWAY_IPV4}/32`, 'dev', veth],
    ['link', 'set', veth, 'up'],
    ['route', 'add', `${ip}/32`, 'dev', veth, 'src', GATEWAY_IPV4],
    ['-n', netns, 'link', 'set', 'lo', 'up'],
    ['-n', netns, 'addr', 'add', `${ip}/32`, 'dev', 'eth0'],
    ['-n', netns, 'link', 'set', 'eth0', 'up'],
    ['-n', netns, 'route', 'add', `${GATEWAY_IPV4}/32`, 'dev', 'eth0'],
    // The rig's own addresses (198.19.255.0/24, which the simulator never hands out: the
    // gateway, fake LLM upstreams on 198.19.255.253, ...) live in the root namespace.
    ['-n', netns, 'route', 'add', RIG_CIDR, 'via', GATEWAY_IPV4, 'dev', 'eth0'],
    // Nothing beyond this machine exists for a server: every other destination fails at once
    // (no packet of a server, or of its containers, can leave through the root namespace).
    ['-n', netns, 'route', 'add', 'unreachable', 'default'],
  ];
  for (const args of steps) await run('ip', args);
}

/** sha512-crypt for /etc/shadow; the password goes over stdin, never argv. */
async function sha512Crypt(password: string): Promise<string> {
  const out = await new Promise<string>((resolve, reject) => {
    const p = spawn('openssl', ['passwd', '-6', '-stdin'], { stdio: ['pipe', 'pipe', 'inherit'] });
    let buf = '';
    p.stdout.on('data', (c: Buffer) => {
      buf += c.toString('utf8');
    });
    p.on('error', reject);
    // 'close', not 'exit': a loaded machine can report the exit before stdout is all read.
    p.on('close', (code) => (code === 0 ? resolve(buf) : reject(new Error(`openssl passwd exited ${code}`))));
    endStdin(p.stdin, `${password}\n`);
  });
  const hash = out.trim();
  if (!/^\$6\$[./0-9A-Za-z]+\$[./0-9A-Za-z]+$/.test(hash))
    throw new Error('openssl passwd gave an unexpected hash');
  return hash;
}

async function waitForSsh(ipv4: string, timeoutMs: number, exited: Promise<void>): Promise<void> {
  let dead = false;
  void exited.then(() => {
    dead = true;
  });
  await waitFor(
    `an SSH banner from ${ipv4}:22`,
    async () => ((await bannerSeen(ipv4)) ? true : undefined),
    timeoutMs,
    {
      intervalMs: 100,
      giveUp: () => (dead ? 'the server init exited' : undefined),
    },
  );
}

/** True once something on ipv4:22 speaks SSH. */
function bannerSeen(ipv4: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: ipv4, port: 22 });
    const done = (v: boolean) => {
      s.destroy();
      resolve(v);
    };
    s.setTimeout(2000, () => done(false));
    s.once('error', () => done(false));
    s.once('data', (c: Buffer) => done(c.toString('latin1').startsWith('SSH-')));
  });
}

/** The inode of /proc/<pid>/ns/<kind>; with `ofChild`, of its first child (unshare --fork's pid 1). */
export async function nsInode(
  pid: number,
  kind: 'pid' | 'net' | 'mnt',
  ofChild = false,
): Promise<string | undefined> {
  try {
    const target = ofChild ? await childPid(pid) : pid;
    const { stdout } = await run('readlink', [`/proc/${target}/ns/${kind}`]);
    return stdout.trim();
  } catch {
    return undefined;
  }
}

async function childPid(pid: number): Promise<number> {
  const children = (await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8')).trim().split(/\s+/);
  const first = Number(children[0]);
  if (!Number.isInteger(first) || first <= 0) throw new Error(`process ${pid} has no child`);
  return first;
}

/** Every pid on this machine whose namespace of `kind` is `ns` (e.g. `pid:[4026532]`). */
export async function pidsInNamespace(kind: 'pid' | 'net' | 'mnt', ns: string): Promise<number[]> {
  const { readdir, readlink } = await import('node:fs/promises');
  const out: number[] = [];
  for (const e of await readdir('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const link = await readlink(`/proc/${e}/ns/${kind}`).catch(() => undefined);
    if (link === ns) out.push(Number(e));
  }
  return out;
}

/** Bundles the docker and systemctl shims into self-contained files plus PATH wrappers. */
async function bundleShims(dir: string): Promise<void> {
  for (const name of ['docker', 'systemctl']) {
    await build({
      entryPoints: [join(HERE, 'shims', `${name}.ts`)],
      outfile: join(dir, `${name}.mjs`),
      bundle: true,
      platform: 'node',
      target: 'node22',
      format: 'esm',
      logLevel: 'warning',
      banner: {
        js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
      },
    });
    await writeFile(
      join(dir, 'bin', name),
      `#!/bin/sh\nexec /run/cannes/node/bin/node /run/cannes/shims/${name}.mjs "$@"\n`,
      { mode: 0o755 },
    );
  }
  await writeFile(join(dir, 'bin', 'mount'), await readFile(join(HERE, 'shims', 'mount.sh')), {
    mode: 0o755,
  });
  // apt-get installs only tailscale, from the rig's cache; `tailscale` works once it did.
  for (const name of ['apt-get', 'tailscale'])
    await writeFile(join(dir, 'bin', name), await readFile(join(HERE, 'shims', `${name}.sh`)), {
      mode: 0o755,
    });
  await writeFile(join(dir, 'stand-in-http.sh'), await readFile(join(HERE, 'shims', 'stand-in-http.sh')), {
    mode: 0o755,
  });
}
