/**
 * The proxy's Node runtime, installed by the deploy as on a real server: simulated servers that
 * start without Node (as Hetzner's docker-ce image), the real install script over a real SSH
 * session, downloading with curl from the rig's mirror (the npm registry's Node builds,
 * repacked as nodejs.org ships them) on a rig address the servers can reach.
 */
import { execFile } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CannesError } from '../../../common/errors.ts';
import { Secret } from '../../../common/secret.ts';
import { makeBundle } from '../../../operator/adapters/bundle.ts';
import { RemotePort } from '../../../operator/adapters/ssh.ts';
import type { VpsObject } from '../../../operator/controllers/ports.ts';
import {
  HOST,
  NODE_RUNTIME_VERSION,
  type NodeArch,
  RUNTIME_MARKER,
  runtimeDir,
} from '../../../operator/host/index.ts';
import { parsePublicKey } from '../../../operator/ssh/keys.ts';
import type { RotationStore } from '../../../operator/ssh/rotation.ts';
import { connectPinned, type SshSession } from '../../../operator/ssh/session.ts';
import { runScript } from '../../../operator/ssh/shell.ts';
import { randomTestIpv4 } from '../../hosts/leftovers.ts';
import { RealHostProvider } from '../../hosts/real-host-provider.ts';
import {
  MIRROR_DIR,
  type NodeMirror,
  sha256Hex,
  startNodeMirror,
  tarballPath,
} from '../../lib/node-mirror.ts';
import { ed25519TestPair } from '../../unit/ssh/test-keys.ts';

const run = promisify(execFile);
/** This file's own rig address for the mirror (the e2e system uses .253). */
const MIRROR_IPV4 = '198.19.255.251';

const vps = {
  apiVersion: 'cannes.dev/v1alpha1',
  kind: 'Vps',
  metadata: { name: 'rt', namespace: 'ns', uid: 'u', annotations: {}, labels: {}, finalizers: [] },
  spec: {
    serverType: 'cx23',
    location: 'fsn1',
    image: 'docker-ce',
    cloudTokenSecretRef: { name: 'h', key: 'token' },
    gateway: { image: 'ghcr.io/openclaw/openclaw:2026.9.6', port: 18789 },
    sshKeyRotation: { interval: '720h' },
    purgeCloudTokenAfterSetup: true,
    deletionPolicy: 'Delete',
    access: { sshAuthorizedKeys: [] },
  },
  status: {},
} as unknown as VpsObject;
const keys = [
  {
    name: 'claude',
    provider: 'anthropic' as const,
    apiKey: Secret.of('sk-ant-fake-runtime'),
    models: [],
    default: true,
  },
];
const gwToken = Secret.of(`gw-fake-${randomBytes(12).toString('hex')}`);

interface TestServer {
  id: number;
  ipv4: string;
  hostKey: string;
  session: SshSession;
}

describe('the deploy installs the proxy runtime on servers that start without Node', () => {
  const provider = new RealHostProvider();
  const pair = ed25519TestPair();
  const privateKey = Secret.of(pair.private);
  let mirror: NodeMirror;
  let x86: TestServer;
  let arm: TestServer;

  const bundle = (architecture: 'x86' | 'arm', sha256?: Partial<Record<NodeArch, string>>) =>
    makeBundle({
      proxyBundle: '// proxy',
      providerOrigins: {},
      nodeDistUrl: mirror.url,
      nodeSha256: { ...mirror.sha256, ...sha256 },
    })(vps, keys, gwToken, { architecture });
  const served = (arch: NodeArch) => mirror.served.get(tarballPath(arch)) ?? { requests: 0, bytes: 0 };
  const sh = async (s: TestServer, script: string) => runScript(s.session, script, { timeoutMs: 600_000 });

  async function server(name: string): Promise<TestServer> {
    const id = randomInt(100_000, 900_000);
    const ipv4 = randomTestIpv4();
    await provider.create({
      serverId: id,
      name: `${name}-${randomBytes(3).toString('hex')}`,
      ipv4,
      image: 'docker-ce',
    });
    const disk = provider.info(id)?.diskDir ?? '';
    await writeFile(join(disk, 'root/.ssh/authorized_keys'), `${pair.public}\n`, { mode: 0o600 });
    const hostKey = (await readFile(join(disk, 'etc/ssh/ssh_host_ed25519_key.pub'), 'utf8')).trim();
    await provider.boot(id, { kind: 'os' });
    const session = await connectPinned(
      { host: ipv4 },
      { privateKey, hostKey: parsePublicKey(hostKey) },
      { retryForMs: 60_000 },
    );
    return { id, ipv4, hostKey, session };
  }

  beforeAll(async () => {
    await run('ip', ['addr', 'add', `${MIRROR_IPV4}/32`, 'dev', 'lo']).catch(() => {});
    mirror = await startNodeMirror(MIRROR_IPV4);
    [x86, arm] = await Promise.all([server('rt-x86'), server('rt-arm')]);
  }, 120_000);

  afterAll(async () => {
    x86?.session.close();
    arm?.session.close();
    await provider.close();
    await mirror?.close();
    await run('ip', ['addr', 'del', `${MIRROR_IPV4}/32`, 'dev', 'lo']).catch(() => {});
  });

  it('starts as the docker-ce image: no node for root, nft and curl there, ssh.service active', async () => {
    const r = await sh(
      x86,
      'command -v node || echo no-node; command -v nodejs || echo no-nodejs; command -v npm || echo no-npm; ' +
        'command -v nft >/dev/null && echo nft; command -v curl >/dev/null && echo curl; systemctl is-active ssh',
    );
    expect(r.stdout.trim().split('\n')).toEqual(['no-node', 'no-nodejs', 'no-npm', 'nft', 'curl', 'active']);
    expect((await sh(x86, 'node --version')).exitCode).toBe(127);
  });

  it('refuses a tarball whose SHA-256 is not the pinned one: a clear error, nothing written, nothing unpacked', async () => {
    const port = new RemotePort({ rotationStore: {} as RotationStore, verifyTimeoutMs: 1000 });
    const wrong = randomBytes(32).toString('hex');
    const err = await port
      .deploy({ ipv4: x86.ipv4, hostKey: x86.hostKey, privateKey }, bundle('x86', { x64: wrong }))
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(CannesError);
    expect((err as CannesError).reason).toBe('RuntimeInstallFailed');
    expect((err as CannesError).message).toContain(`checksum mismatch`);
    expect((err as CannesError).message).toContain(`expected SHA-256 ${wrong}, got ${mirror.sha256.x64}`);
    // The deploy stopped before its first file: no unit, no bundle, no runtime, no temp folder.
    const left = await sh(
      x86,
      `ls -A /opt/cannes 2>/dev/null; test -e ${HOST.proxyUnit.path} && echo unit; test -e ${HOST.keyFile.path} && echo keys; true`,
    );
    expect(left.stdout.trim()).toBe('');
    expect(served('x64').requests).toBe(1);
  });

  it('refuses a corrupted download and a verified tarball that does not unpack, then recovers', async () => {
    const real = await readFile(join(MIRROR_DIR, `node-v${NODE_RUNTIME_VERSION}-linux-x64.tar.xz`));
    // Bytes changed on the way (same length): the pinned checksum catches it before tar runs.
    const corrupted = Buffer.from(real);
    corrupted[corrupted.length >> 1] = (corrupted[corrupted.length >> 1] ?? 0) ^ 0xff;
    mirror.override(tarballPath('x64'), corrupted);
    let r = await sh(x86, bundle('x86').prepare ?? '');
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toContain(`checksum mismatch`);
    expect(r.stderr).toContain('nothing was unpacked');
    // A pin that matches garbage (an operator error): verified, but tar refuses it; nothing left.
    const garbage = randomBytes(4096);
    mirror.override(tarballPath('x64'), garbage);
    r = await sh(x86, bundle('x86', { x64: sha256Hex(garbage) }).prepare ?? '');
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toContain('does not unpack');
    expect((await sh(x86, 'ls -A /opt/cannes')).stdout.trim()).toBe('');
    // A download cut short by a killed try leaves a temp folder; the next try sweeps it.
    await sh(
      x86,
      'mkdir -p /opt/cannes/.node-install.cut && head -c 1000 /dev/zero >/opt/cannes/.node-install.cut/node.tar.xz',
    );
    mirror.override(tarballPath('x64'), undefined);
    const bytes = served('x64').bytes;
    const start = performance.now();
    r = await sh(x86, bundle('x86').prepare ?? '');
    // For docs/robustness.md: what a first install costs here.
    console.log(
      `runtime install (x64): ${served('x64').bytes - bytes} bytes in ${((performance.now() - start) / 1000).toFixed(1)} s`,
    );
    expect(r.stderr).toContain('installed Node');
    expect(r.exitCode).toBe(0);
    expect((await sh(x86, 'ls -A /opt/cannes')).stdout.trim()).toBe(
      `node-v${NODE_RUNTIME_VERSION}-linux-x64`,
    );
    const dir = runtimeDir({ version: NODE_RUNTIME_VERSION, arch: 'x64' });
    expect((await sh(x86, `${dir}/bin/node --version`)).stdout.trim()).toBe(`v${NODE_RUNTIME_VERSION}`);
    expect((await sh(x86, `cat ${dir}/${RUNTIME_MARKER}`)).stdout.trim()).toBe(mirror.sha256.x64);
  });

  it('transfers no runtime bytes when the runtime is already in place', async () => {
    const before = { ...served('x64') };
    const start = performance.now();
    const r = await sh(x86, bundle('x86').prepare ?? '');
    const ms = performance.now() - start;
    expect(r.exitCode).toBe(0);
    expect(r.stderr).toBe('');
    expect(served('x64')).toEqual(before);
    expect(ms).toBeLessThan(5000);
  });

  it('gives an arm server type the arm64 build, verified by checksum, never the x64 one', async () => {
    const x64Before = { ...served('x64') };
    const b = bundle('arm');
    // The x64 tarball offered under the arm64 name, with its own (valid) checksum pinned as
    // arm64's: the checksum passes, the ELF machine check refuses it.
    mirror.override(
      tarballPath('arm64'),
      await readFile(join(MIRROR_DIR, `node-v${NODE_RUNTIME_VERSION}-linux-x64.tar.xz`)),
    );
    let r = await sh(arm, bundle('arm', { arm64: mirror.sha256.x64 }).prepare ?? '');
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toContain(`the tarball has no node-v${NODE_RUNTIME_VERSION}-linux-arm64/bin/node`);
    // An x86-64 executable in an arm64-named folder (a mislabelled build): the ELF check refuses it.
    const fake = await mislabelledTarball();
    mirror.override(tarballPath('arm64'), fake);
    r = await sh(arm, bundle('arm', { arm64: sha256Hex(fake) }).prepare ?? '');
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toContain('bin/node in the tarball is not a linux-arm64 executable');
    expect((await sh(arm, 'ls -A /opt/cannes')).stdout.trim()).toBe('');
    mirror.override(tarballPath('arm64'), undefined);

    const armBytes = served('arm64').bytes;
    const start = performance.now();
    r = await sh(arm, b.prepare ?? '');
    expect(r.exitCode).toBe(0);
    console.log(
      `runtime install (arm64): ${served('arm64').bytes - armBytes} bytes in ${((performance.now() - start) / 1000).toFixed(1)} s`,
    );
    const dir = runtimeDir({ version: NODE_RUNTIME_VERSION, arch: 'arm64' });
    expect((await sh(arm, 'ls -A /opt/cannes')).stdout.trim()).toBe(
      `node-v${NODE_RUNTIME_VERSION}-linux-arm64`,
    );
    // e_machine 0xb7 (AArch64) at offset 18; the marker is the arm64 tarball's checksum.
    expect((await sh(arm, `od -An -tx1 -j18 -N2 ${dir}/bin/node | tr -d ' \\n'`)).stdout).toBe('b700');
    expect((await sh(arm, `cat ${dir}/${RUNTIME_MARKER}`)).stdout.trim()).toBe(mirror.sha256.arm64);
    // The unit runs exactly that node; the x64 tarball was never fetched for this server.
    const unit = b.files.find((f) => f.path === HOST.proxyUnit.path)?.content;
    expect(unit).toContain(`ExecStart=${dir}/bin/node `);
    expect(served('x64')).toEqual(x64Before);
    expect(served('arm64').bytes).toBeGreaterThan(10_000_000);
  });
});

/** node-v<V>-linux-arm64/bin/node that is this machine's (x86-64) `true`, as a .tar.xz. */
async function mislabelledTarball(): Promise<Buffer> {
  const dir = await mkdtemp(join(tmpdir(), 'cannes-rt-fake-'));
  try {
    const name = `node-v${NODE_RUNTIME_VERSION}-linux-arm64`;
    await run('sh', [
      '-c',
      'mkdir -p "$1/$2/bin" && cp /bin/true "$1/$2/bin/node" && tar -C "$1" -cf - "$2" | xz -0 >"$1/t.tar.xz"',
      'sh',
      dir,
      name,
    ]);
    return await readFile(join(dir, 't.tar.xz'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
