import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { REPO_ROOT } from './binaries.ts';
import { type Rig, type RigInfo, rigFrom } from './rig.ts';

export type SupervisedRig = { rig: Rig; stateDir: string; supervisorPid: number; startedHere: boolean };

function alive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readPid(path: string): number {
  try {
    return Number(readFileSync(path, 'utf8').trim());
  } catch {
    return 0;
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Parses a supervisor's ready.json (wire data: checked field by field). */
export function parseRigInfo(text: string): RigInfo {
  const v: unknown = JSON.parse(text);
  const str = (o: Record<string, unknown>, k: string): string => {
    const x = o[k];
    if (typeof x !== 'string' || x === '') throw new Error(`rig info: ${k} is not a string`);
    return x;
  };
  if (!isRecord(v) || !isRecord(v['binaries'])) throw new Error('rig info: not an object');
  const b = v['binaries'];
  const startMs = v['startMs'];
  if (typeof startMs !== 'number') throw new Error('rig info: startMs is not a number');
  const opt = (k: string) => (typeof v[k] === 'string' && v[k] !== '' ? { [k]: v[k] as string } : {});
  return {
    ...opt('etcdUrl'),
    ...opt('auditLogPath'),
    dir: str(v, 'dir'),
    server: str(v, 'server'),
    kubeconfigPath: str(v, 'kubeconfigPath'),
    caCert: str(v, 'caCert'),
    adminCert: str(v, 'adminCert'),
    adminKey: str(v, 'adminKey'),
    binaries: {
      kubeApiserver: str(b, 'kubeApiserver'),
      etcd: str(b, 'etcd'),
      kubectl: str(b, 'kubectl'),
      helm: str(b, 'helm'),
    },
    startMs,
  };
}

/**
 * Starts (or joins) a control plane run by a detached supervisor in `stateDir`, which lives until
 * `ownerPid` exits (0: until SIGTERM). Whoever creates `stateDir` first starts it; everyone else waits
 * for its ready.json. Used by `useRig()` (owner: the vitest process) and `make cluster-up` (owner 0).
 */
export async function superviseRig(
  stateDir: string,
  ownerPid: number,
  timeoutMs = 300_000,
): Promise<SupervisedRig> {
  let startedHere = false;
  try {
    mkdirSync(stateDir, { mode: 0o700 });
    startedHere = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  if (startedHere) {
    const out = openSync(join(stateDir, 'supervisor.log'), 'a', 0o600);
    const child = spawn(
      process.execPath,
      [join(REPO_ROOT, 'test', 'rig', 'supervisor.ts'), stateDir, String(ownerPid)],
      { detached: true, stdio: ['ignore', out, out], cwd: REPO_ROOT },
    );
    child.unref();
  }
  const deadline = Date.now() + timeoutMs;
  const readyPath = join(stateDir, 'ready.json');
  const failedPath = join(stateDir, 'failed.txt');
  const pidPath = join(stateDir, 'supervisor.pid');
  const spawnedAt = Date.now();
  for (;;) {
    if (existsSync(readyPath)) {
      const rig = rigFrom(parseRigInfo(readFileSync(readyPath, 'utf8')));
      return { rig, stateDir, supervisorPid: readPid(pidPath), startedHere };
    }
    if (existsSync(failedPath)) {
      const why = readFileSync(failedPath, 'utf8');
      rmSync(stateDir, { recursive: true, force: true });
      throw new Error(`the rig's control plane failed to start: ${why}`);
    }
    const pid = readPid(pidPath);
    // Give the supervisor a few seconds to write its pid before calling it dead.
    if (Date.now() - spawnedAt > 10_000 && !alive(pid)) {
      let logText = '';
      try {
        logText = readFileSync(join(stateDir, 'supervisor.log'), 'utf8').slice(-3000);
      } catch {}
      rmSync(stateDir, { recursive: true, force: true });
      throw new Error(`the rig's supervisor died before the control plane was ready:\n${logText}`);
    }
    if (Date.now() > deadline) throw new Error(`the rig did not become ready within ${timeoutMs / 1000} s`);
    await sleep(200);
  }
}

/** Removes state dirs of shared rigs whose supervisor and owner are both gone (e.g. after a SIGKILL). */
function sweepStale(root: string): void {
  let entries: string[] = [];
  try {
    entries = readdirSync(root);
  } catch {
    return;
  }
  for (const name of entries) {
    const m = /^run-(\d+)$/.exec(name);
    if (!m) continue;
    const dir = join(root, name);
    if (!alive(Number(m[1])) && !alive(readPid(join(dir, 'supervisor.pid')))) {
      rmSync(dir, { recursive: true, force: true });
    }
  }
}

/**
 * The process whose lifetime bounds the shared rig: the vitest main process. Test files run in forked
 * workers (they have an IPC channel: `process.send`), whose parent is vitest; in a thread pool the
 * worker shares vitest's pid. `CANNES_RIG_OWNER_PID` overrides both.
 */
export function ownerPid(): number {
  const forced = Number(process.env['CANNES_RIG_OWNER_PID'] ?? '');
  if (Number.isInteger(forced) && forced > 0) return forced;
  return typeof process.send === 'function' ? process.ppid : process.pid;
}

let shared: Promise<Rig> | undefined;

/**
 * The control plane shared by every test file of this `vitest run`: started by the first file that asks
 * (its start time is printed), joined by the rest, stopped when vitest exits however it exits. Files
 * share the API server, so each test uses its own namespace (random suffix) and cluster-scoped objects
 * it creates must be safe to share (the CRDs are applied idempotently).
 */
export function useRig(): Promise<Rig> {
  shared ??= (async () => {
    const root = join(tmpdir(), 'cannes-rig');
    mkdirSync(root, { recursive: true, mode: 0o700 });
    sweepStale(root);
    const owner = ownerPid();
    const s = await superviseRig(join(root, `run-${owner}`), owner);
    if (s.startedHere) {
      console.log(`[rig] control plane started in ${(s.rig.startMs / 1000).toFixed(1)} s at ${s.rig.server}`);
    }
    return s.rig;
  })();
  return shared;
}
