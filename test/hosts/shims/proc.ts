// Process checks shared by the docker and systemctl shims (run inside a simulated server).
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
