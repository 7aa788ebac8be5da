// `make cluster-up` / `make cluster-down`: the rig's control plane alone (etcd + kube-apiserver, RBAC,
// secure serving), detached, with its admin kubeconfig at .rig/kubeconfig.
//   node tools/cluster.ts up | down | status
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { REPO_ROOT } from '../test/rig/binaries.ts';
import { superviseRig } from '../test/rig/shared.ts';

const rigDir = join(REPO_ROOT, '.rig');
const stateDir = join(rigDir, 'controlplane');
const kubeconfig = join(rigDir, 'kubeconfig');
const pidFile = join(stateDir, 'supervisor.pid');

function supervisorPid(): number {
  try {
    const pid = Number(readFileSync(pidFile, 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 0) return 0;
    process.kill(pid, 0);
    return pid;
  } catch {
    return 0;
  }
}

async function up(): Promise<void> {
  if (existsSync(stateDir) && supervisorPid() === 0) {
    // Left over from a crash or a reboot: nothing is running there any more.
    rmSync(stateDir, { recursive: true, force: true });
  }
  mkdirSync(rigDir, { recursive: true });
  const s = await superviseRig(stateDir, 0);
  copyFileSync(s.rig.kubeconfigPath, kubeconfig);
  const bin = dirname(s.rig.binaries.kubectl);
  const helmBin = dirname(s.rig.binaries.helm);
  const path = bin === helmBin ? bin : `${bin}:${helmBin}`;
  console.log(
    [
      s.startedHere
        ? `control plane started in ${(s.rig.startMs / 1000).toFixed(1)} s at ${s.rig.server}`
        : `control plane already running at ${s.rig.server}`,
      `supervisor pid ${s.supervisorPid}, logs in ${stateDir}`,
      '',
      'use it:',
      `  export KUBECONFIG=${kubeconfig}`,
      `  export PATH=${path}:$PATH   # kubectl, helm`,
      '  kubectl apply -f crds/ && kubectl get vps -A',
      '',
      'stop it: make cluster-down',
    ].join('\n'),
  );
}

async function down(): Promise<void> {
  const pid = supervisorPid();
  if (pid === 0) {
    console.log('control plane: not running');
  } else {
    process.kill(pid, 'SIGTERM');
    const deadline = Date.now() + 30_000;
    while (supervisorPid() !== 0 && Date.now() < deadline) await sleep(200);
    if (supervisorPid() !== 0) {
      // TERM was not enough; KILL takes etcd and kube-apiserver along (they carry PR_SET_PDEATHSIG).
      process.kill(pid, 'SIGKILL');
      await sleep(500);
    }
    console.log('control plane: stopped');
  }
  rmSync(stateDir, { recursive: true, force: true });
  rmSync(kubeconfig, { force: true });
}

const cmd = process.argv[2];
if (cmd === 'up') await up();
else if (cmd === 'down') await down();
else if (cmd === 'status')
  console.log(supervisorPid() ? `running (supervisor ${supervisorPid()})` : 'not running');
else {
  console.error('usage: node tools/cluster.ts up|down|status');
  process.exit(2);
}
