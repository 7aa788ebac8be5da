import { type ChildProcess, spawn } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { controlPlaneBinaries } from './binaries.ts';
import { generatePki } from './pki.ts';
import { type Rig, type RigInfo, rigFrom, writeKubeconfig } from './rig.ts';

export type StartedRig = Rig & {
  /** The serialisable description (what the shared rig's supervisor hands to test files). */
  info: RigInfo;
  /** Resolves with a reason if etcd or kube-apiserver exits on its own after the start. */
  exited: Promise<string>;
  /** Kills etcd and kube-apiserver (TERM, then KILL) and removes the rig's temp dir. Idempotent. */
  stop(): Promise<void>;
};

export type StartOptions = {
  /** Parent folder for the rig's temp dir (default os.tmpdir()). */
  parentDir?: string;
  /** Keep the temp dir after stop() (debugging). */
  keepDir?: boolean;
  /** Called with progress lines (default: nothing). */
  log?: (line: string) => void;
};

/** A free TCP port on 127.0.0.1 (bind to 0, read it, close). The caller retries if it races away. */
export async function freePort(): Promise<number> {
  // Outside the kernel's ephemeral range (32768-60999 by default): any process's outgoing
  // connection may take an ephemeral port between this check and the listen that needs it
  // (an operator started by a test then failed at start with EADDRINUSE, once in a full run).
  for (let i = 0; i < 100; i++) {
    const port = 20_000 + randomInt(10_000);
    if (await canListen(port)) return port;
  }
  throw new Error('no free port on 127.0.0.1 in 20000-29999');
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

function tail(path: string, lines = 25): string {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/**
 * Spawns `file` so that it dies with this process even on SIGKILL of this process: `setpriv --pdeathsig`
 * sets PR_SET_PDEATHSIG before exec, so no etcd or kube-apiserver outlives the process that owns the rig.
 */
function spawnOwned(file: string, args: string[], logPath: string, cwd: string): ChildProcess {
  const fd = openSync(logPath, 'a', 0o600);
  return spawn('setpriv', ['--pdeathsig', 'KILL', '--', file, ...args], {
    cwd,
    stdio: ['ignore', fd, fd],
    env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: cwd },
  });
}

async function stopChild(child: ChildProcess | undefined, graceMs: number): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = sleep(graceMs).then(() => 'timeout' as const);
  if ((await Promise.race([exited.then(() => 'exited' as const), timer])) === 'timeout') {
    child.kill('SIGKILL');
    await exited;
  }
}

/**
 * Starts etcd + kube-apiserver (the envtest model: no kubelet, no controller-manager, no scheduler) on
 * free 127.0.0.1 ports with secure serving from a fresh CA, RBAC authorization, service-account token
 * signing (TokenRequest works) and an admin kubeconfig; creates the `default` ServiceAccount in the
 * `default` namespace by hand, since no controller-manager exists to do it.
 *
 * Everything lives in one temp dir (mode 700) that stop() removes; the processes die with this process.
 */
export async function startRig(opts: StartOptions = {}): Promise<StartedRig> {
  const log = opts.log ?? (() => {});
  const binaries = controlPlaneBinaries();
  const parent = opts.parentDir ?? tmpdir();
  mkdirSync(parent, { recursive: true });
  const dir = mkdtempSync(join(parent, 'cannes-rig-'));
  const started = Date.now();
  let etcd: ChildProcess | undefined;
  let apiserver: ChildProcess | undefined;
  let stopped = false;

  // Synchronous last resort when the owning process exits without calling stop() (pdeathsig covers
  // SIGKILL; this covers normal exit, where children would otherwise be reparented and survive).
  const onExit = (): void => {
    for (const c of [apiserver, etcd]) if (c && c.exitCode === null) c.kill('SIGKILL');
    if (!opts.keepDir) rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', onExit);

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await stopChild(apiserver, 10_000);
    await stopChild(etcd, 10_000);
    process.removeListener('exit', onExit);
    if (!opts.keepDir) rmSync(dir, { recursive: true, force: true });
  };

  try {
    await Promise.all(
      ['pki', 'etcd', 'home', 'kube-cache', 'logs'].map((d) => mkdir(join(dir, d), { mode: 0o700 })),
    );
    const pki = await generatePki(join(dir, 'pki'));
    // Every request with its bodies, as a cluster that logs Secrets would: the Direct keys e2e
    // scans it for keys that must never reach the API server.
    const auditPolicy = join(dir, 'audit-policy.yaml');
    await writeFile(
      auditPolicy,
      'apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  - level: RequestResponse\n',
      { mode: 0o600 },
    );
    const auditLogPath = join(dir, 'logs', 'audit.log');
    log(`pki ready after ${Date.now() - started} ms`);

    // Ports are picked by binding :0 then released; another process can grab one in between, so a failed
    // start retries with fresh ports.
    let info: RigInfo | undefined;
    for (let attempt = 1; attempt <= 3 && !info; attempt++) {
      const [etcdClient, etcdPeer, apiPort] = [await freePort(), await freePort(), await freePort()];
      const etcdLog = join(dir, 'logs', `etcd.${attempt}.log`);
      const apiLog = join(dir, 'logs', `kube-apiserver.${attempt}.log`);
      const etcdUrl = `http://127.0.0.1:${etcdClient}`;
      const peerUrl = `http://127.0.0.1:${etcdPeer}`;
      etcd = spawnOwned(
        binaries.etcd,
        [
          `--data-dir=${join(dir, 'etcd', String(attempt))}`,
          `--listen-client-urls=${etcdUrl}`,
          `--advertise-client-urls=${etcdUrl}`,
          `--listen-peer-urls=${peerUrl}`,
          `--initial-advertise-peer-urls=${peerUrl}`,
          `--initial-cluster=default=${peerUrl}`,
          // Throwaway data: fsync buys nothing and costs seconds on a busy disk.
          '--unsafe-no-fsync=true',
          '--log-level=warn',
        ],
        etcdLog,
        dir,
      );
      apiserver = spawnOwned(
        binaries.kubeApiserver,
        [
          `--etcd-servers=${etcdUrl}`,
          '--bind-address=127.0.0.1',
          '--advertise-address=127.0.0.1',
          `--secure-port=${apiPort}`,
          `--cert-dir=${join(dir, 'pki')}`,
          `--tls-cert-file=${pki.servingCert}`,
          `--tls-private-key-file=${pki.servingKey}`,
          `--client-ca-file=${pki.caCert}`,
          // Node: a kubelet (test/rig/node.ts) gets exactly its node's rights, as on a real cluster.
          '--authorization-mode=Node,RBAC',
          '--enable-admission-plugins=NodeRestriction',
          // `kubectl logs` on the node's pods: the node's name resolves nowhere; its InternalIP does.
          '--kubelet-preferred-address-types=InternalIP',
          '--anonymous-auth=false',
          `--service-account-key-file=${pki.saPub}`,
          `--service-account-signing-key-file=${pki.saKey}`,
          '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
          '--service-cluster-ip-range=10.0.0.0/24',
          // No kubelet or nodes: the `kubernetes` Service endpoints (127.0.0.1) would only be rejected.
          '--endpoint-reconciler-type=none',
          '--allow-privileged=true',
          '--profiling=false',
          // One test client at a time has no one to be fair to; skipping APF's bootstrap saves ~1 s of start.
          '--enable-priority-and-fairness=false',
          `--audit-policy-file=${auditPolicy}`,
          `--audit-log-path=${auditLogPath}`,
          '--audit-log-maxbackup=1',
          '--v=1',
        ],
        apiLog,
        dir,
      );
      const candidate: RigInfo = {
        dir,
        server: `https://127.0.0.1:${apiPort}`,
        kubeconfigPath: join(dir, 'kubeconfig'),
        caCert: pki.caCert,
        adminCert: pki.adminCert,
        adminKey: pki.adminKey,
        binaries,
        startMs: 0,
        etcdUrl,
        auditLogPath,
      };
      const rig = rigFrom(candidate);
      const ready = await waitReady(rig, [etcd, apiserver], 90_000);
      if (ready === 'ok') {
        info = candidate;
        break;
      }
      log(`attempt ${attempt} failed (${ready});\netcd: ${tail(etcdLog, 8)}\napiserver: ${tail(apiLog, 15)}`);
      await stopChild(apiserver, 5_000);
      await stopChild(etcd, 5_000);
      if (attempt === 3) {
        throw new Error(`control plane did not start: ${ready}\n${tail(apiLog)}\n--- etcd\n${tail(etcdLog)}`);
      }
    }
    if (!info) throw new Error('control plane did not start');
    await writeKubeconfig(info.kubeconfigPath, info, {
      'client-certificate-data': readFileSync(pki.adminCert).toString('base64'),
      'client-key-data': readFileSync(pki.adminKey).toString('base64'),
    });
    await ensureDefaultServiceAccount(rigFrom(info));
    info.startMs = Date.now() - started;
    log(`control plane ready at ${info.server} in ${(info.startMs / 1000).toFixed(1)} s`);
    const children = [etcd, apiserver].filter((c): c is ChildProcess => c !== undefined);
    const exited = new Promise<string>((resolve) => {
      for (const [i, c] of children.entries()) {
        c.once('exit', (code, signal) => {
          if (!stopped) resolve(`${i === 0 ? 'etcd' : 'kube-apiserver'} exited (${code ?? signal})`);
        });
      }
    });
    return { ...rigFrom(info), info, exited, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

async function waitReady(rig: Rig, children: ChildProcess[], timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let last = 'not answering';
  while (Date.now() < deadline) {
    for (const c of children) {
      if (c.exitCode !== null || c.signalCode !== null)
        return `a process exited (${c.exitCode ?? c.signalCode})`;
    }
    try {
      const res = await rig.adminRequest('GET', '/readyz');
      if (res.status === 200) return 'ok';
      last = `readyz HTTP ${res.status}`;
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    await sleep(250);
  }
  return `timeout: ${last}`;
}

/** No controller-manager runs here, so the `default` ServiceAccount of `default` is made by hand. */
async function ensureDefaultServiceAccount(rig: Rig): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const res = await rig.adminRequest('POST', '/api/v1/namespaces/default/serviceaccounts', {
      apiVersion: 'v1',
      kind: 'ServiceAccount',
      metadata: { name: 'default' },
    });
    if (res.status === 201 || res.status === 409) return;
    // The `default` namespace is created by a post-start hook and can trail /readyz by a moment.
    if (Date.now() > deadline) throw new Error(`creating default/default ServiceAccount: HTTP ${res.status}`);
    await sleep(200);
  }
}
