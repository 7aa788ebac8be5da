import { execFileSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Absolute path of the repository this file lives in. */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BUILD_SCRIPT = join(REPO_ROOT, 'test', 'controlplane', 'build.sh');

export type ControlPlaneBinaries = {
  kubeApiserver: string;
  etcd: string;
  kubectl: string;
  helm: string;
};

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Where the control plane binaries are. `KUBEBUILDER_ASSETS` (the envtest variable) wins for
 * kube-apiserver, etcd and kubectl when it holds them; everything else comes from the cache folder that
 * `make controlplane` (test/controlplane/build.sh) fills. The rig never builds: a cold build takes many
 * minutes and belongs in make, not inside a test hook.
 */
export function controlPlaneBinaries(env: NodeJS.ProcessEnv = process.env): ControlPlaneBinaries {
  const cacheBin = execFileSync('bash', [BUILD_SCRIPT, '--print'], { encoding: 'utf8', env }).trim();
  const assets = env['KUBEBUILDER_ASSETS'];
  const pick = (name: string, fromAssets: boolean): string => {
    if (fromAssets && assets) {
      const p = join(assets, name);
      if (executable(p)) return p;
      if (name !== 'kubectl') throw new Error(`KUBEBUILDER_ASSETS=${assets} has no executable ${name}`);
    }
    const p = join(cacheBin, name);
    if (!executable(p)) {
      throw new Error(`${p} is missing: run \`make controlplane\` first (it builds the rig's binaries once)`);
    }
    return p;
  };
  return {
    kubeApiserver: pick('kube-apiserver', true),
    etcd: pick('etcd', true),
    kubectl: pick('kubectl', true),
    helm: pick('helm', false),
  };
}
