// Runs one control plane for as long as its owner lives:
//   node test/rig/supervisor.ts <stateDir> <ownerPid>   (ownerPid 0: until SIGTERM, for `make cluster-up`)
// Writes <stateDir>/supervisor.pid at once, then <stateDir>/ready.json (a RigInfo) when the API server
// answers, or <stateDir>/failed.txt. When the owner process is gone (vitest finished, crashed or was
// interrupted) or on SIGTERM/SIGINT/SIGHUP it stops etcd and kube-apiserver and removes <stateDir>.
// etcd and kube-apiserver carry PR_SET_PDEATHSIG, so even a SIGKILL of this process takes them along.
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type StartedRig, startRig } from './controlplane.ts';

const [stateDir, ownerArg] = process.argv.slice(2);
const owner = Number(ownerArg ?? 'NaN');
if (!stateDir || !Number.isInteger(owner) || owner < 0) {
  console.error('usage: supervisor.ts <stateDir> <ownerPid|0>');
  process.exit(2);
}

writeFileSync(join(stateDir, 'supervisor.pid'), `${process.pid}\n`);
const log = (line: string): void => console.error(`[rig ${new Date().toISOString()}] ${line}`);

let rig: StartedRig | undefined;
let stopping = false;

async function shutdown(why: string, code: number): Promise<void> {
  // The owner watch keeps firing while a stop is under way: only the first call stops and exits.
  if (stopping) return;
  stopping = true;
  log(`stopping: ${why}`);
  try {
    await rig?.stop();
  } finally {
    rmSync(stateDir ?? '', { recursive: true, force: true });
    process.exit(code);
  }
}

for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
  process.on(sig, () => {
    // During startup there is no rig object yet: exiting fires startRig's exit hook, which kills the
    // children and removes their dir.
    if (!rig) {
      rmSync(stateDir, { recursive: true, force: true });
      process.exit(1);
    }
    void shutdown(sig, 0);
  });
}

function ownerAlive(): boolean {
  if (owner === 0) return true;
  try {
    process.kill(owner, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

try {
  rig = await startRig({ parentDir: stateDir, log });
  const info = rig.info;
  const tmp = join(stateDir, 'ready.json.tmp');
  writeFileSync(tmp, JSON.stringify(info, null, 2), { mode: 0o600 });
  renameSync(tmp, join(stateDir, 'ready.json'));
} catch (err) {
  const message = err instanceof Error ? err.message : String(err);
  log(`failed: ${message}`);
  // The waiter reads failed.txt, reports it and removes the dir.
  writeFileSync(join(stateDir, 'failed.txt'), message);
  process.exit(1);
}

void rig.exited.then((why) => shutdown(why, 1));
if (owner !== 0) {
  setInterval(() => {
    if (!ownerAlive()) void shutdown(`owner ${owner} is gone`, 0);
  }, 500);
}
