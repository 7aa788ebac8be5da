/**
 * Runs the operator image with podman the way the chart's pod spec runs it on a node: the same
 * user and group, a read-only root filesystem, no capabilities, no privilege escalation, the
 * emptyDir volumes as tmpfs and the Secret volumes as read-only bind mounts of files made by the
 * caller. No kubelet exists on this machine (docs/rig.md, "A real node (not built yet)"), so this is
 * the nearest real thing for the image's own checks.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';

export const REPO = resolve(import.meta.dirname, '..', '..');

export type PodSpecForPodman = {
  securityContext?: { runAsUser?: number; runAsGroup?: number; fsGroup?: number };
  containers: {
    securityContext?: {
      runAsUser?: number;
      runAsGroup?: number;
      readOnlyRootFilesystem?: boolean;
      allowPrivilegeEscalation?: boolean;
      privileged?: boolean;
      capabilities?: { drop?: string[]; add?: string[] };
    };
    volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
  }[];
  volumes?: {
    name: string;
    emptyDir?: { sizeLimit?: string };
    secret?: { secretName: string };
  }[];
};

export type RunResult = { code: number; stdout: string; stderr: string };

/**
 * Global podman flags for this machine: runc, because crun 1.8 refuses its hybrid cgroup v1
 * hierarchy; cgroupfs, because no systemd manages cgroups here; events in a file, not journald.
 */
export function podmanGlobalArgs(): string[] {
  const args = ['--cgroup-manager', 'cgroupfs', '--events-backend', 'file'];
  for (const dir of ['/usr/sbin', '/usr/bin']) {
    if (existsSync(`${dir}/runc`)) return ['--runtime', `${dir}/runc`, ...args];
  }
  return args;
}

/** Sizes podman takes for `--tmpfs size=`: the Kubernetes quantity `64Mi` becomes `64m`. */
function tmpfsSize(quantity: string | undefined): string {
  const m = /^(\d+)(Ki|Mi|Gi)$/.exec(quantity ?? '');
  if (!m) return '';
  return `,size=${m[1]}${{ Ki: 'k', Mi: 'm', Gi: 'g' }[m[2] as 'Ki' | 'Mi' | 'Gi']}`;
}

/**
 * `podman run` flags for the pod spec's first container. `secretDirs` maps a Secret volume's name
 * to a host directory holding its projected files; a Secret volume without one is an error, so a
 * spec that grows a new Secret cannot be run half-mounted.
 */
export function podmanRunArgs(spec: PodSpecForPodman, secretDirs: Record<string, string>): string[] {
  const c = spec.containers[0];
  if (!c) throw new Error('pod spec has no container');
  const sc = c.securityContext ?? {};
  const user = sc.runAsUser ?? spec.securityContext?.runAsUser;
  const group = sc.runAsGroup ?? spec.securityContext?.runAsGroup;
  const args = ['--rm', '--network', 'none', '--read-only-tmpfs=false'];
  // The host's hard limits are lower than podman's defaults; a kubelet's runtime inherits them.
  args.push('--ulimit', 'nofile=4096:4096', '--ulimit', 'nproc=4096:4096');
  if (user !== undefined) args.push('--user', group !== undefined ? `${user}:${group}` : String(user));
  if (spec.securityContext?.fsGroup !== undefined)
    args.push('--group-add', String(spec.securityContext.fsGroup));
  if (sc.readOnlyRootFilesystem) args.push('--read-only');
  if (sc.allowPrivilegeEscalation === false) args.push('--security-opt', 'no-new-privileges');
  if (sc.privileged) args.push('--privileged');
  for (const cap of sc.capabilities?.drop ?? []) args.push('--cap-drop', cap);
  for (const cap of sc.capabilities?.add ?? []) args.push('--cap-add', cap);
  const volumes = new Map((spec.volumes ?? []).map((v) => [v.name, v]));
  for (const m of c.volumeMounts ?? []) {
    const v = volumes.get(m.name);
    if (!v) throw new Error(`volumeMount ${m.name} has no volume`);
    if (v.emptyDir) args.push('--tmpfs', `${m.mountPath}:rw,nosuid,nodev${tmpfsSize(v.emptyDir.sizeLimit)}`);
    else if (v.secret) {
      const dir = secretDirs[m.name];
      if (!dir) throw new Error(`no host directory for Secret volume ${m.name}`);
      args.push('-v', `${dir}:${m.mountPath}:ro`);
    } else throw new Error(`volume ${m.name}: only emptyDir and secret volumes are supported here`);
  }
  return args;
}

/** Runs podman; never throws on a non-zero exit. */
export function podman(args: string[], timeoutMs = 120_000): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    execFile(
      'podman',
      [...podmanGlobalArgs(), ...args],
      { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024, timeout: timeoutMs },
      (err, stdout, stderr) => {
        const code: unknown = err ? Reflect.get(err, 'code') : 0;
        if (typeof code !== 'number') reject(new Error(`podman failed to run: ${err?.message}`));
        else resolvePromise({ code, stdout, stderr });
      },
    );
  });
}

/**
 * Builds the image if it is missing or stale, with the script `make image` runs (a no-op when
 * its inputs are unchanged), and returns its name and how long that took.
 */
export function ensureImage(): Promise<{ image: string; seconds: number }> {
  const start = Date.now();
  return new Promise((resolvePromise, reject) => {
    execFile(
      resolve(REPO, 'tools/image.sh'),
      [],
      { cwd: REPO, encoding: 'utf8', maxBuffer: 16 * 1024 * 1024, timeout: 30 * 60_000 },
      (err, stdout, stderr) => {
        if (err)
          reject(new Error(`tools/image.sh failed: ${stderr.trim().split('\n').slice(-20).join('\n')}`));
        else
          resolvePromise({
            image: stdout.trim().split('\n').at(-1) ?? '',
            seconds: (Date.now() - start) / 1000,
          });
      },
    );
  });
}
