import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, closeSync, constants, openSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const HERE = dirname(fileURLToPath(import.meta.url));

/**
 * The rig's control server address: in the rig block (198.19.255.0/24, root namespace, on `lo`),
 * which every simulated server and every namespace made by ./node.ts routes to.
 */
export const CONTROL_IPV4 = '198.19.255.252';

/** Where `make tailnet` (test/tailnet/build.sh) put tailnet-control, tailscaled and tailscale. */
export function tailnetBinDir(env: NodeJS.ProcessEnv = process.env): string {
  const dir = execFileSync('bash', [join(HERE, 'build.sh'), '--print'], { encoding: 'utf8', env }).trim();
  for (const b of ['tailnet-control', 'tailscaled', 'tailscale']) {
    try {
      accessSync(join(dir, b), constants.X_OK);
    } catch {
      // The rig never builds: a cold build takes minutes and belongs in make, not in a test hook.
      throw new Error(
        `${join(dir, b)} is missing: run \`make tailnet\` first (it builds the rig's tailnet once)`,
      );
    }
  }
  return dir;
}

export interface MintedKey {
  readonly id: string;
  /** The secret: hand it to `tailscale up` by file or stdin only, never log it. */
  readonly key: string;
  readonly reusable: boolean;
  readonly tags: readonly string[];
}

export interface ControlNode {
  readonly id: number;
  readonly stableId: string;
  readonly name: string;
  readonly hostname: string;
  readonly addresses: readonly string[];
  readonly tags: readonly string[] | null;
  readonly userId: number;
  readonly nodeKey: string;
}

export interface TailnetControl {
  /** The login server URL for `tailscale up --login-server`: https://198.19.255.252:<port>. */
  readonly url: string;
  /**
   * The rig CA (PEM file) that signed the control server's certificate: a node trusts it through
   * SSL_CERT_FILE (TailscaleNode does this) or by having it in its CA bundle.
   */
  readonly caFile: string;
  readonly ipv4: string;
  readonly derpPort: number;
  readonly stunPort: number;
  /** Mints a pre-authorised auth key; one-off unless `reusable`; `tags` are what the node gets. */
  mintKey(opts?: { reusable?: boolean; tags?: readonly string[] }): Promise<MintedKey>;
  /** Every node the control server knows (identities and tags). */
  nodes(): Promise<ControlNode[]>;
  /** The control server's log so far (never holds a key: it logs key ids only). */
  log(): Promise<string>;
  stop(): Promise<void>;
}

export interface StartControlOptions {
  readonly ipv4?: string;
  readonly binDir?: string;
  /** Diagnostics; default silent. */
  readonly onLog?: (line: string) => void;
}

/**
 * Starts the rig's control server (testcontrol + DERP + STUN, see cmd/tailnet-control) bound to
 * `ipv4` in the root namespace, as a child that dies with this process (pdeathsig, and stdin EOF).
 * The address is put on `lo` if it is not there and taken off again when the last control server
 * of this machine that needed it stops (a claim file per process under $TMPDIR/cannes-tailnet-addr).
 */
export async function startControl(opts: StartControlOptions = {}): Promise<TailnetControl> {
  if (process.getuid?.() !== 0) throw new Error('the rig tailnet needs root (an address on lo, namespaces)');
  const ipv4 = opts.ipv4 ?? CONTROL_IPV4;
  if (!/^198\.19\.255\.\d{1,3}$/.test(ipv4))
    throw new Error(`control address ${ipv4} is outside the rig block`);
  const bin = opts.binDir ?? tailnetBinDir();
  await sweepStaleDirs('cannes-tailnet-control-');
  const dir = join(tmpdir(), `cannes-tailnet-control-${process.pid}-${randomBytes(3).toString('hex')}`);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const release = await claimAddress(ipv4);
  const logPath = join(dir, 'control.log');
  const readyPath = join(dir, 'ready.json');
  let child: ChildProcess | undefined;
  const stop = async (): Promise<void> => {
    process.removeListener('exit', onExit);
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((r) => child?.once('exit', () => r()));
      child.stdin?.end();
      const t = setTimeout(() => child?.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(t);
    }
    await release();
    await rm(dir, { recursive: true, force: true });
  };
  const onExit = (): void => {
    if (child && child.exitCode === null) child.kill('SIGKILL');
  };
  process.once('exit', onExit);
  try {
    const fd = openSync(logPath, 'a', 0o600);
    try {
      child = spawn(
        'setpriv',
        [
          '--pdeathsig',
          'KILL',
          '--',
          join(bin, 'tailnet-control'),
          '--listen',
          `${ipv4}:0`,
          '--admin',
          '127.0.0.1:0',
          '--ready',
          readyPath,
        ],
        { stdio: ['pipe', fd, fd], env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin' } },
      );
    } finally {
      closeSync(fd);
    }
    const ready = await waitForReady(readyPath, child, logPath, 30_000);
    opts.onLog?.(`[tailnet] control server on ${ready.url}`);
    const admin = ready.adminUrl;
    return {
      url: ready.url,
      caFile: ready.caFile,
      ipv4,
      derpPort: ready.derpPort,
      stunPort: ready.stunPort,
      async mintKey(o = {}) {
        const res = await fetch(`${admin}/keys`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ reusable: o.reusable ?? false, tags: o.tags ?? [] }),
        });
        if (!res.ok) throw new Error(`mint key: ${res.status} ${await res.text()}`);
        return (await res.json()) as MintedKey;
      },
      async nodes() {
        const res = await fetch(`${admin}/nodes`);
        if (!res.ok) throw new Error(`nodes: ${res.status}`);
        return (await res.json()) as ControlNode[];
      },
      log: () => readFile(logPath, 'utf8').catch(() => ''),
      stop,
    };
  } catch (err) {
    const tail = await readFile(logPath, 'utf8').catch(() => '');
    await stop();
    throw new Error(`the tailnet control server did not start: ${tail.slice(-1500)}`, { cause: err });
  }
}

interface Ready {
  url: string;
  caFile: string;
  adminUrl: string;
  derpPort: number;
  stunPort: number;
}

async function waitForReady(
  path: string,
  child: ChildProcess,
  logPath: string,
  timeoutMs: number,
): Promise<Ready> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await readFile(path, 'utf8').catch(() => undefined);
    if (text) return JSON.parse(text) as Ready;
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`tailnet-control exited (${child.exitCode ?? child.signalCode}); log ${logPath}`);
    if (Date.now() > deadline) throw new Error(`tailnet-control not ready within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const CLAIMS = join(tmpdir(), 'cannes-tailnet-addr');

/**
 * Puts ipv4/32 on lo (if absent) and records this process's claim; the returned release drops the
 * claim and removes the address when no live process still claims it. Several test files (or a
 * `make dev` beside a test run) can share the address this way without pulling it from each other.
 * An address that was on lo before any claimant added it (someone else's) is never removed.
 */
async function claimAddress(ipv4: string): Promise<() => Promise<void>> {
  const dir = join(CLAIMS, ipv4);
  const added = join(CLAIMS, `${ipv4}.added`);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const mine = join(dir, `${process.pid}-${randomBytes(3).toString('hex')}`);
  await writeFile(mine, `${process.pid}\n`);
  const { stdout } = await run('ip', ['-o', '-4', 'addr', 'show', 'dev', 'lo']);
  if (!stdout.includes(` ${ipv4}/32 `)) {
    await run('ip', ['addr', 'add', `${ipv4}/32`, 'dev', 'lo']).then(
      () => writeFile(added, `${process.pid}\n`),
      (err: unknown) => {
        // Another process may have added it a moment ago.
        if (!String(err).includes('File exists')) throw err;
      },
    );
  }
  return async () => {
    await rm(mine, { force: true });
    for (const f of await readdir(dir).catch(() => [] as string[])) {
      const pid = Number(f.split('-')[0]);
      if (Number.isInteger(pid) && pid > 0 && alive(pid)) return;
      await rm(join(dir, f), { force: true });
    }
    if ((await readFile(added, 'utf8').catch(() => undefined)) === undefined) return;
    await rm(added, { force: true });
    await run('ip', ['addr', 'del', `${ipv4}/32`, 'dev', 'lo']).catch(() => undefined);
  };
}

/**
 * Removes $TMPDIR/<prefix><pid>-* folders whose process is gone (a test run killed before its
 * cleanup; its children died with it through pdeathsig, their folders stayed).
 */
export async function sweepStaleDirs(prefix: string): Promise<void> {
  for (const f of await readdir(tmpdir()).catch(() => [] as string[])) {
    if (!f.startsWith(prefix)) continue;
    const pid = Number(f.slice(prefix.length).split('-')[0]);
    if (!Number.isInteger(pid) || pid <= 0 || alive(pid)) continue;
    await rm(join(tmpdir(), f), { recursive: true, force: true });
  }
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err instanceof Error && 'code' in err && err.code === 'EPERM';
  }
}
