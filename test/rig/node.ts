import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmdirSync,
  writeFileSync,
} from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createServer as createTlsServer } from 'node:tls';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { REPO_ROOT } from './binaries.ts';
import { leaf } from './pki.ts';
import { type Rig, writeKubeconfig } from './rig.ts';

const run = promisify(execFile);

/**
 * The rig's node (docs/rig.md, "A real node"): Debian's containerd 1.6 with runc and a private config,
 * root, state and socket; the kubelet, kube-controller-manager and kube-scheduler built from the
 * control plane's wrapper module (test/controlplane/build-node.sh); a CNI bridge for the pods.
 *
 * It must run inside the sandbox that tools/cluster-e2e.sh makes (its own network and mount
 * namespaces): the bridge, ip_forward and every mount containerd and the kubelet make stay there.
 */
export const POD_SUBNET = '10.88.0.0/16';
/** The bridge's address: what pods reach the sandbox's own listeners on (see `forward`). */
export const POD_GATEWAY = '10.88.0.1';
/** The node's InternalIP (on the sandbox's loopback). */
export const NODE_IP = '10.89.0.1';
export const NODE_NAME = 'cannes-node';
/** The `kubernetes` Service's ClusterIP (the first address of the rig's service range). */
export const KUBERNETES_SERVICE_IP = '10.0.0.1';

export type NodeBinaries = {
  dir: string;
  kubelet: string;
  kcm: string;
  scheduler: string;
  pauseArchive: string;
};

export function nodeBinaries(): NodeBinaries {
  const dir = execFileSyncText('bash', [join(REPO_ROOT, 'test', 'controlplane', 'build-node.sh'), '--print']);
  const b: NodeBinaries = {
    dir,
    kubelet: join(dir, 'kubelet'),
    kcm: join(dir, 'kube-controller-manager'),
    scheduler: join(dir, 'kube-scheduler'),
    pauseArchive: join(dir, 'pause.oci.tar'),
  };
  for (const p of [b.kubelet, b.kcm, b.scheduler, b.pauseArchive])
    if (!existsSync(p)) throw new Error(`${p} is missing: run \`make node\` first`);
  return b;
}

function execFileSyncText(file: string, args: string[]): string {
  return execFileSync(file, args, { encoding: 'utf8' }).trim();
}

export type RigNode = {
  dir: string;
  /** containerd's socket (for `ctr --address`). */
  socket: string;
  /** The kubelet's cgroup root (`/cannes-node-<id>`) in every cgroup v1 hierarchy. */
  cgroupRoot: string;
  /** Imports an OCI archive into containerd's k8s.io namespace. */
  importImage(archive: string): Promise<void>;
  /** `ctr -n k8s.io ...` against this node's containerd. */
  ctr(args: string[]): Promise<string>;
  logs(name: 'containerd' | 'kubelet' | 'kcm' | 'scheduler'): string;
  stop(): Promise<void>;
};

type Proc = { name: string; child: ChildProcess; log: string };

function spawnLogged(name: string, file: string, args: string[], dir: string): Proc {
  const log = join(dir, 'logs', `${name}.log`);
  const fd = openSync(log, 'a', 0o600);
  const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', file, ...args], {
    cwd: dir,
    stdio: ['ignore', fd, fd],
    env: { PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin', HOME: dir },
  });
  return { name, child, log };
}

async function stopProc(p: Proc | undefined, graceMs = 10_000): Promise<void> {
  if (!p || p.child.exitCode !== null || p.child.signalCode !== null) return;
  const exited = new Promise<void>((r) => p.child.once('exit', () => r()));
  p.child.kill('SIGTERM');
  if ((await Promise.race([exited.then(() => 'ok'), sleep(graceMs).then(() => 'late')])) === 'late') {
    p.child.kill('SIGKILL');
    await exited;
  }
}

function containerdConfig(dir: string, pauseImage: string): string {
  const c = join(dir, 'containerd');
  return `version = 2
root = "${c}/root"
state = "${c}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "${c}/containerd.sock"
[ttrpc]
  address = "${c}/containerd.sock.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "${c}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${pauseImage}"
  enable_selinux = false
  # Processes on this machine lack CAP_SYS_RESOURCE (CapEff 000001fffeffffff), so no one may lower an
  # oom_score_adj: runc died writing the sandbox's -998 ("failed to update /proc/self/oom_score_adj:
  # Permission denied"). Clamp to containerd's own score, as rootless setups do.
  restrict_oom_score_adj = true
  # The pods' network namespaces under containerd's own state folder, not /run/netns.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "${c}/runc"${process.env['CANNES_NODE_RUNC'] ? `\n        BinaryName = "${process.env['CANNES_NODE_RUNC']}"` : ''}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${dir}/cni/net.d"
`;
}

function cniConfig(dir: string): string {
  return JSON.stringify({
    cniVersion: '1.0.0',
    name: 'cannes-node',
    plugins: [
      {
        type: 'bridge',
        bridge: 'cannes0',
        isGateway: true,
        // Masquerading is one nft rule of the sandbox (tools/cluster-e2e.sh): the plugin's would need
        // the iptables binary's legacy chains.
        ipMasq: false,
        hairpinMode: true,
        ipam: {
          type: 'host-local',
          ranges: [[{ subnet: POD_SUBNET, gateway: POD_GATEWAY }]],
          routes: [{ dst: '0.0.0.0/0' }],
          dataDir: join(dir, 'cni', 'ipam'),
        },
      },
    ],
  });
}

function kubeletConfig(dir: string, rig: Rig, socket: string, cgroupRoot: string): string {
  return stringify({
    apiVersion: 'kubelet.config.k8s.io/v1beta1',
    kind: 'KubeletConfiguration',
    // This machine has cgroup v1 only (docs/rig.md): kubelet >= 1.35 refuses it unless told.
    failCgroupV1: false,
    // No systemd as PID 1, and containerd 1.6 cannot tell the kubelet its driver (no RuntimeConfig).
    cgroupDriver: 'cgroupfs',
    cgroupRoot,
    containerRuntimeEndpoint: `unix://${socket}`,
    authentication: {
      anonymous: { enabled: false },
      webhook: { enabled: false },
      x509: { clientCAFile: rig.caCert },
    },
    authorization: { mode: 'AlwaysAllow' },
    address: NODE_IP,
    readOnlyPort: 0,
    healthzBindAddress: '127.0.0.1',
    resolvConf: join(dir, 'resolv.conf'),
    podLogsDir: join(dir, 'pod-logs'),
    clusterDomain: 'cluster.local',
    failSwapOn: false,
    registerNode: true,
    serializeImagePulls: false,
    // The rig never pulls (images are imported): keep them whatever the disk holds.
    imageGCHighThresholdPercent: 100,
    evictionHard: { 'memory.available': '100Mi', 'nodefs.available': '1%', 'imagefs.available': '1%' },
    nodeStatusUpdateFrequency: '2s',
    syncFrequency: '5s',
    fileCheckFrequency: '5s',
  });
}

/** A client certificate from the rig's CA and a kubeconfig with it. */
async function clientKubeconfig(rig: Rig, dir: string, name: string, subject: string): Promise<string> {
  const pki = join(dir, 'pki');
  mkdirSync(pki, { recursive: true, mode: 0o700 });
  const ca = { cert: rig.caCert, key: join(rig.dir, 'pki', 'ca.key') };
  const ext = [
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    'extendedKeyUsage=clientAuth',
  ];
  const { cert, key } = await leaf(pki, name, subject, ext, ca);
  const path = join(dir, `${name}.kubeconfig`);
  await writeKubeconfig(path, rig, {
    'client-certificate-data': readFileSync(cert).toString('base64'),
    'client-key-data': readFileSync(key).toString('base64'),
  });
  return path;
}

/**
 * Starts containerd, the controller manager, the scheduler and the kubelet against `rig`, and waits
 * for the node to be Ready. `dir` is the node's work folder (the caller removes it once the mount
 * namespace is gone: containerd's overlay mounts live under it).
 */
export async function startNode(
  rig: Rig,
  dir: string,
  log: (l: string) => void = () => {},
): Promise<RigNode> {
  const bins = nodeBinaries();
  const procs: Proc[] = [];
  const cgroupRoot = `/cannes-node-${randomBytes(4).toString('hex')}`;
  for (const d of ['logs', 'containerd', 'cni/net.d', 'cni/ipam', 'kubelet'])
    mkdirSync(join(dir, d), { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, 'cgroup-root'), cgroupRoot);
  // The kubelet wants its cgroup root to exist in every hierarchy (it makes kubepods/ below it).
  for (const h of cgroupHierarchies()) mkdirSync(join(h, cgroupRoot), { recursive: true });
  const socket = join(dir, 'containerd', 'containerd.sock');
  const pauseImage = readFileSync(join(bins.dir, 'pause.image'), 'utf8').trim();
  const ctr = async (args: string[]) =>
    (await run('ctr', ['--address', socket, '-n', 'k8s.io', ...args], { maxBuffer: 16 << 20 })).stdout;
  const node: RigNode = {
    dir,
    socket,
    cgroupRoot,
    ctr,
    importImage: async (archive) => {
      await ctr(['images', 'import', '--no-unpack', archive]);
    },
    logs: (name) => readFileSync(join(dir, 'logs', `${name}.log`), 'utf8'),
    stop: async () => {
      for (const name of ['kubelet', 'scheduler', 'kcm']) await stopProc(procs.find((p) => p.name === name));
      await killPods(cgroupRoot, dir);
      await stopProc(procs.find((p) => p.name === 'containerd'));
      removeCgroups(cgroupRoot);
    },
  };
  try {
    writeFileSync(join(dir, 'containerd', 'config.toml'), containerdConfig(dir, pauseImage));
    writeFileSync(join(dir, 'cni', 'net.d', '10-cannes.conflist'), cniConfig(dir));
    writeFileSync(join(dir, 'resolv.conf'), '');
    procs.push(
      spawnLogged('containerd', 'containerd', ['--config', join(dir, 'containerd', 'config.toml')], dir),
    );
    await waitFor(() => existsSync(socket), 30_000, 'containerd socket', procs);
    await node.importImage(bins.pauseArchive);
    log('containerd up, pause image imported');

    const admin = rig.kubeconfigPath;
    const kubeletKc = await clientKubeconfig(
      rig,
      dir,
      'kubelet',
      `/O=system:nodes/CN=system:node:${NODE_NAME}`,
    );
    procs.push(
      spawnLogged(
        'kcm',
        bins.kcm,
        [
          `--kubeconfig=${admin}`,
          `--authentication-kubeconfig=${admin}`,
          `--authorization-kubeconfig=${admin}`,
          '--bind-address=127.0.0.1',
          '--leader-elect=false',
          '--controllers=*',
          `--root-ca-file=${rig.caCert}`,
          `--service-account-private-key-file=${join(rig.dir, 'pki', 'sa.key')}`,
          '--use-service-account-credentials=true',
          '--node-monitor-period=2s',
          '--v=1',
        ],
        dir,
      ),
      spawnLogged(
        'scheduler',
        bins.scheduler,
        [
          `--kubeconfig=${admin}`,
          `--authentication-kubeconfig=${admin}`,
          `--authorization-kubeconfig=${admin}`,
          '--bind-address=127.0.0.1',
          '--leader-elect=false',
          '--v=1',
        ],
        dir,
      ),
    );
    writeFileSync(join(dir, 'kubelet.yaml'), kubeletConfig(dir, rig, socket, cgroupRoot));
    procs.push(
      spawnLogged(
        'kubelet',
        bins.kubelet,
        [
          `--config=${join(dir, 'kubelet.yaml')}`,
          `--kubeconfig=${kubeletKc}`,
          `--root-dir=${join(dir, 'kubelet')}`,
          `--hostname-override=${NODE_NAME}`,
          `--node-ip=${NODE_IP}`,
          '--v=1',
        ],
        dir,
      ),
    );
    await waitFor(
      async () => {
        const res = await rig.kubectl(['get', 'node', NODE_NAME, '-o', 'json'], { check: false });
        if (res.code !== 0) return false;
        const n = JSON.parse(res.stdout) as {
          status?: { conditions?: { type: string; status: string }[] };
          spec?: { taints?: unknown[] };
        };
        const ready = n.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
        return ready === true && (n.spec?.taints ?? []).length === 0;
      },
      180_000,
      `node ${NODE_NAME} Ready and untainted`,
      procs,
    );
    log(`node ${NODE_NAME} Ready`);
    return node;
  } catch (err) {
    await node.stop().catch(() => {});
    const tails = procs.map((p) => `--- ${p.name}\n${tail(p.log)}`).join('\n');
    throw new Error(`${err instanceof Error ? err.message : String(err)}\n${tails}`);
  }
}

function tail(path: string, lines = 15): string {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

async function waitFor(
  check: () => boolean | Promise<boolean>,
  timeoutMs: number,
  what: string,
  procs: Proc[],
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const dead = procs.find((p) => p.child.exitCode !== null || p.child.signalCode !== null);
    if (dead) throw new Error(`${dead.name} exited (${dead.child.exitCode ?? dead.child.signalCode})`);
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(500);
  }
}

const CGROUP_FS = '/sys/fs/cgroup';

/** The mounted cgroup hierarchies (v1 controllers, name=systemd, the hybrid v2 one). */
function cgroupHierarchies(): string[] {
  if (!existsSync(CGROUP_FS)) return [];
  const seen = new Set<string>();
  return readdirSync(CGROUP_FS)
    .map((h) => join(CGROUP_FS, h))
    .filter((d) => {
      if (!existsSync(join(d, 'cgroup.procs'))) return false;
      const real = realpathSync(d);
      if (seen.has(real)) return false; // cpu and cpuacct are links to cpu,cpuacct
      seen.add(real);
      return true;
    });
}

/** Every cgroup v1 hierarchy's folder for `cgroupRoot` (those that exist). */
function cgroupDirs(cgroupRoot: string): string[] {
  if (!existsSync(CGROUP_FS)) return [];
  return cgroupHierarchies()
    .map((h) => join(h, cgroupRoot))
    .filter((d) => existsSync(d));
}

function walk(d: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(d, { withFileTypes: true }))
    if (e.isDirectory()) out.push(...walk(join(d, e.name)));
  out.push(d);
  return out; // children before parents
}

/** Pids in the node's cgroups (the pods' processes) and containerd shims started for this node. */
export function nodePids(cgroupRoot: string, dir: string): number[] {
  const pids = new Set<number>();
  for (const root of cgroupDirs(cgroupRoot)) {
    for (const d of walk(root)) {
      try {
        for (const l of readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n')) if (l) pids.add(Number(l));
      } catch {
        // removed meanwhile
      }
    }
  }
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const cmd = readFileSync(join('/proc', p, 'cmdline'), 'utf8');
      if (cmd.startsWith('/usr/bin/containerd-shim') && cmd.includes(dir)) pids.add(Number(p));
    } catch {
      // gone
    }
  }
  pids.delete(process.pid);
  return [...pids];
}

async function killPods(cgroupRoot: string, dir: string): Promise<void> {
  for (let i = 0; i < 20; i++) {
    const pids = nodePids(cgroupRoot, dir);
    if (pids.length === 0) return;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await sleep(250);
  }
}

/** Removes the node's cgroups (children first) in every hierarchy; what still holds a process stays. */
export function removeCgroups(cgroupRoot: string): string[] {
  const left: string[] = [];
  for (const root of cgroupDirs(cgroupRoot)) {
    for (const d of walk(root)) {
      try {
        rmdirSync(d);
      } catch {
        left.push(d);
      }
    }
  }
  return left;
}

export type Forwarder = { port: number; close(): Promise<void> };

/**
 * A TCP forwarder from `listenHost:listenPort` to `target`: how pods reach the sandbox's loopback
 * listeners (the API server as the `kubernetes` Service, Postgres, the simulator), the work kube-proxy
 * and a routable address do on a real cluster. The peer the target sees is the sandbox's loopback.
 */
export function forward(
  listenHost: string,
  listenPort: number,
  target: { host: string; port: number },
  /** Terminate TLS with this certificate (an https endpoint in front of a plain-HTTP test server). */
  tls?: { cert: string; key: string },
): Promise<Forwarder> {
  const open = new Set<Socket>();
  const onClient = (client: Socket) => {
    const upstream = connect(target.port, target.host);
    open.add(client);
    open.add(upstream);
    client.pipe(upstream).pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    client.on('error', end);
    upstream.on('error', end);
    client.on('close', end);
    upstream.on('close', end);
  };
  const server = tls
    ? createTlsServer({ cert: readFileSync(tls.cert), key: readFileSync(tls.key) }, onClient)
    : createServer(onClient);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(listenPort, listenHost, () => {
      const addr = server.address();
      resolve({
        port: typeof addr === 'object' && addr !== null ? addr.port : listenPort,
        close: () =>
          new Promise<void>((r) => {
            server.close(() => r());
            for (const sock of open) sock.destroy();
          }),
      });
    });
  });
}

/** A serving certificate from the rig's CA for `ips` (mode 600 key), in `dir`. */
export async function servingCert(rig: Rig, dir: string, name: string, ips: string[]) {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const ca = { cert: rig.caCert, key: join(rig.dir, 'pki', 'ca.key') };
  return leaf(
    dir,
    name,
    `/CN=${name}`,
    [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      'extendedKeyUsage=serverAuth',
      `subjectAltName=${ips.map((ip) => `IP:${ip}`).join(',')}`,
    ],
    ca,
  );
}
