import { execFile } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { GATEWAY_IPV4, nsInode, pidsInNamespace, type RealHostProvider } from './real-host-provider.ts';

const run = promisify(execFile);

/** A random server address in 198.18.0.0/15 (never the gateway), so parallel runs rarely collide. */
export function randomTestIpv4(): string {
  for (;;) {
    const ip = `198.${18 + randomInt(2)}.${randomInt(1, 255)}.${randomInt(1, 255)}`;
    if (ip !== GATEWAY_IPV4) return ip;
  }
}

/** What a running server consists of on this machine, to prove later that none of it is left. */
export interface HostFootprint {
  readonly netns: string;
  readonly ipv4: string;
  readonly dir: string;
  readonly netNsInode: string | undefined;
  readonly pidNsInode: string | undefined;
  readonly mntNsInode: string | undefined;
  /** When this was taken, in clock ticks since boot (what /proc/<pid>/stat's starttime uses). */
  readonly takenAtTicks: number;
}

export async function footprint(provider: RealHostProvider, serverId: number): Promise<HostFootprint> {
  const info = provider.info(serverId);
  if (!info) throw new Error(`no server ${serverId}`);
  const pid = info.bootPid;
  return {
    netns: info.netns,
    ipv4: info.ipv4,
    dir: info.diskDir,
    netNsInode: pid === undefined ? undefined : await nsInode(pid, 'net', true),
    pidNsInode: pid === undefined ? undefined : await nsInode(pid, 'pid', true),
    mntNsInode: pid === undefined ? undefined : await nsInode(pid, 'mnt', true),
    takenAtTicks: await uptimeTicks(),
  };
}

/** Everything of the footprint still present on this machine (empty = clean). */
export async function leftovers(f: HostFootprint): Promise<string[]> {
  const found: string[] = [];
  const { stdout: netns } = await run('ip', ['netns', 'list']);
  if (netns.split('\n').some((l) => l.split(' ')[0] === f.netns)) found.push(`netns ${f.netns}`);
  const { stdout: routes } = await run('ip', ['route', 'show', `${f.ipv4}/32`]);
  if (routes.trim() !== '') found.push(`route ${routes.trim()}`);
  for (const [kind, ino] of [
    ['net', f.netNsInode],
    ['pid', f.pidNsInode],
    ['mnt', f.mntNsInode],
  ] as const) {
    if (ino === undefined) continue;
    // Namespace inode numbers are reused once freed (other test runs make namespaces too):
    // only processes that already existed when the footprint was taken are the server's.
    const pids = [];
    for (const p of await pidsInNamespace(kind, ino)) {
      if ((await startTicks(p)) <= f.takenAtTicks) pids.push(p);
    }
    if (pids.length > 0) found.push(`processes in ${kind} namespace ${ino}: ${pids.join(',')}`);
  }
  const mounts = await readFile('/proc/self/mounts', 'utf8');
  for (const line of mounts.split('\n')) {
    if (line.includes(f.dir) || line.includes(`/run/netns/${f.netns}`)) found.push(`mount ${line}`);
  }
  if (existsSync(f.dir)) found.push(`folder ${f.dir}`);
  return found;
}

// USER_HZ: 100 on every Linux architecture we run on (`getconf CLK_TCK`).
const TICKS_PER_SECOND = 100;

async function uptimeTicks(): Promise<number> {
  const up = Number((await readFile('/proc/uptime', 'utf8')).split(' ')[0]);
  return Math.ceil(up * TICKS_PER_SECOND);
}

/** Start time of a process in ticks since boot (Infinity when it is gone). */
async function startTicks(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  // Fields after the command (which may hold spaces) start after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const v = Number(rest[19]);
  return Number.isFinite(v) && stat !== '' ? v : Number.POSITIVE_INFINITY;
}
