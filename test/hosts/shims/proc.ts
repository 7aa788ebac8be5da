// Process checks shared by the docker and systemctl shims (run inside a simulated server).
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

const ZOMBIE = /^\d+ \(.*\) Z/;

/** The process exists and is not a zombie. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !ZOMBIE.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/**
 * Some process of the group `pgid` still runs (zombies aside): a service is stopped only when
 * its children are gone too (a stand-in's socat, a unit's forks), as systemd waits for its cgroup.
 */
export function groupAlive(pgid: number): boolean {
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${e}/stat`, 'utf8');
    } catch {
      continue;
    }
    // pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses, so split after it.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (f[0] !== 'Z' && Number(f[2]) === pgid) return true;
  }
  return false;
}

const LOCKED = 'CANNES_SHIM_LOCK_HELD';

/**
 * Runs this shim's command once more under an exclusive flock on `lock` and exits with its
 * status; returns at once in the run that holds it. dockerd and systemd take one change at a
 * time, whoever asks: two sessions changing the same server together (one of them left running
 * by an operator that died) get their changes one after the other, not a second copy of a
 * service started beside the first. The lock belongs to a bash that waits for the command; the
 * command, and what it starts, do not inherit the lock's fd.
 */
export function serialised(lock: string, argv: readonly string[]): void {
  if (process.env[LOCKED] === lock) {
    delete process.env[LOCKED];
    return;
  }
  const self = process.argv[1]!;
  const r = spawnSync(
    '/bin/bash',
    [
      '-c',
      'exec 9>"$1"; /usr/bin/flock -w 600 9 || { echo "$0: $1 still held after 600 s" >&2; exit 1; }; shift; "$@" 9>&-',
      self,
      lock,
      process.execPath,
      self,
      ...argv,
    ],
    { stdio: 'inherit', env: { ...process.env, [LOCKED]: lock } },
  );
  process.exit(r.status ?? 1);
}
