/**
 * The owner's own way in with an SSH key (Vps.spec.access.sshAuthorizedKeys), on the whole
 * system: the owner's key, made here, reaches the gateway through `ssh -N -L` with only the
 * published host key trusted (StrictHostKeyChecking=yes), and gets nothing else: no shell, no
 * sftp, no read of /root, no forward to the proxy or anywhere else. It survives two rotations
 * of the operator's own key, and removing it from the spec locks it out.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemotePort } from '../../operator/adapters/ssh.ts';
import { rotationStore } from '../../operator/adapters/store.ts';
import { ANNOTATION_SSH_HOST_KEY } from '../../operator/api/schema.ts';
import { PROXY_PORT } from '../../operator/host/index.ts';
import { OWNER_USER } from '../../operator/host/owner-access.ts';
import { loadKeyringFile, PostgresStore } from '../../operator/store/index.ts';
import { exampleManifests, type OperatorProcess, type System, startSystem, waitFor } from '../lib/system.ts';
import { freePort } from '../rig/controlplane.ts';

const run = promisify(execFile);

let s: System;
let op: OperatorProcess;
let ipv4: string;
let ownerKey: string;
let ownerPub: string;
let knownHosts: string;
let gatewayToken: string;
const tunnels: ChildProcess[] = [];
const diag = () => `operator log tail:\n${op.logs.join('').split('\n').slice(-40).join('\n')}`;

type VpsJson = {
  metadata: { annotations?: Record<string, string> };
  status?: {
    ready?: boolean;
    conditions?: { type: string; status: string; reason: string; message: string }[];
  };
};
const getVps = async () => (await s.getJson('vps', 'agent')) as VpsJson;

/** ssh as the owner would run it: only the published host key is trusted. */
const sshArgs = (extra: string[], known = knownHosts) => [
  '-o',
  'StrictHostKeyChecking=yes',
  '-o',
  `UserKnownHostsFile=${known}`,
  '-o',
  'IdentitiesOnly=yes',
  '-o',
  'BatchMode=yes',
  '-o',
  'ConnectTimeout=10',
  '-i',
  ownerKey,
  ...extra,
];

/** `ssh -N -L port:target` in the background; resolves once the local port listens (or ssh died). */
async function tunnel(target: string): Promise<{ port: number; proc: ChildProcess; log: () => string }> {
  const port = await freePort();
  let log = '';
  const proc = spawn(
    'ssh',
    sshArgs([
      '-N',
      '-o',
      'ExitOnForwardFailure=yes',
      '-L',
      `127.0.0.1:${port}:${target}`,
      `${OWNER_USER}@${ipv4}`,
    ]),
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  proc.stderr?.on('data', (b: Buffer) => {
    log += b.toString();
  });
  tunnels.push(proc);
  await waitFor(
    'the tunnel to listen',
    async () => (proc.exitCode !== null || (await listening(port)) ? true : undefined),
    30_000,
  );
  return { port, proc, log: () => log };
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = connect({ host: '127.0.0.1', port }, () => {
      c.destroy();
      resolve(true);
    });
    c.on('error', () => resolve(false));
  });
}

/** An HTTP GET through a tunnel; the status, or 0 when nothing answered. */
async function getThrough(port: number, path: string, token?: string): Promise<number> {
  try {
    const r = await fetch(`http://127.0.0.1:${port}${path}`, {
      headers: token ? { authorization: `Bearer ${token}` } : {},
      signal: AbortSignal.timeout(20_000),
    });
    await r.arrayBuffer();
    return r.status;
  } catch {
    return 0;
  }
}

async function waitReady(what: string, pred: (v: VpsJson) => boolean = (v) => v.status?.ready === true) {
  return waitFor(
    what,
    async () => {
      const v = await getVps();
      return pred(v) ? v : undefined;
    },
    1_200_000,
    diag,
  );
}

beforeAll(async () => {
  s = await startSystem();
  op = await s.startOperator();
  ownerKey = join(s.dir, 'owner_ed25519');
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'owner@laptop', '-f', ownerKey]);
  ownerPub = (await run('cat', [`${ownerKey}.pub`])).stdout.trim();
  await s.kubectl(['apply', '-f', '-'], exampleManifests(s, { ownerKeys: [ownerPub] }));
  const vps = await waitReady('Vps agent Ready');
  ipv4 = vps.metadata.annotations?.['cannes.dev/ipv4'] ?? '';
  const hostKey = vps.metadata.annotations?.[ANNOTATION_SSH_HOST_KEY] ?? '';
  expect(hostKey).toMatch(/^ssh-ed25519 AAAA/);
  // The known_hosts line the README tells the owner to write: only the published key.
  knownHosts = join(s.dir, 'known_hosts');
  writeFileSync(knownHosts, `${ipv4} ${hostKey.split(' ').slice(0, 2).join(' ')}\n`);
  const secret = JSON.parse(await s.kubectl(['get', 'secret', 'agent-gateway', '-o', 'json'])) as {
    data: { token: string };
  };
  gatewayToken = Buffer.from(secret.data.token, 'base64').toString('utf8');
}, 1_500_000);

afterAll(async () => {
  for (const t of tunnels) t.kill('SIGKILL');
  await s?.stop();
}, 180_000);

describe("the owner's SSH key", () => {
  it('reaches the gateway with ssh -N -L, verifying the published host key', async () => {
    const t = await tunnel('127.0.0.1:18789');
    expect(t.proc.exitCode, t.log()).toBeNull();
    expect(await getThrough(t.port, '/v1/models', gatewayToken), t.log()).toBe(200);
    t.proc.kill();
  });

  it('refuses a host key other than the published one (no trust on first use)', async () => {
    const other = join(s.dir, 'other_known_hosts');
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(s.dir, 'impostor')]);
    const impostor = (await run('cat', [join(s.dir, 'impostor.pub')])).stdout.trim().split(' ');
    writeFileSync(other, `${ipv4} ${impostor[0]} ${impostor[1]}\n`);
    const r = await run(
      'ssh',
      // ssh keeps the first value of an option: the impostor's known_hosts is the only one given.
      sshArgs(['-N', `${OWNER_USER}@${ipv4}`], other),
      { timeout: 30_000 },
    ).catch((e: { code?: number; stderr?: string }) => e);
    expect('stderr' in r ? r.stderr : '').toMatch(
      /HOST IDENTIFICATION HAS CHANGED|Host key verification failed/,
    );
  });

  it('gets no shell, no command, no sftp and no read of /root/.model-keys.json', async () => {
    const host = `${OWNER_USER}@${ipv4}`;
    for (const cmd of [
      [host, 'id'],
      [host, 'cat', '/root/.model-keys.json'],
      ['-tt', host, 'sh'],
    ]) {
      const r = await run('ssh', sshArgs(cmd), { timeout: 30_000 }).catch(
        (e: { code?: number; stdout?: string }) => e,
      );
      expect('code' in r ? r.code : 0, `ssh ${cmd.join(' ')}`).not.toBe(0);
      expect('stdout' in r ? r.stdout : '').not.toMatch(/uid=|apiKey|sk-/);
    }
    const sftp = await run('sftp', [...sshArgs([]), '-b', '/dev/null', `${OWNER_USER}@${ipv4}`], {
      timeout: 30_000,
    }).catch((e: { code?: number }) => e);
    expect('code' in sftp ? sftp.code : 0).not.toBe(0);
  });

  it('cannot forward to the proxy (3101), to sshd or anywhere but the gateway', async () => {
    for (const target of [
      `172.17.0.1:${PROXY_PORT}`,
      `127.0.0.1:${PROXY_PORT}`,
      '127.0.0.1:22',
      '198.19.255.253:80',
    ]) {
      const t = await tunnel(target);
      // ssh opens the local port; the server refuses the channel, so nothing answers through it.
      expect(await getThrough(t.port, '/healthz'), `${target}: ${t.log()}`).toBe(0);
      t.proc.kill();
    }
  });

  it('still works after two rotations of the operator key', async () => {
    const { store } = await PostgresStore.open({
      connectionString: s.db.url,
      keyring: await loadKeyringFile(s.masterKeysFile),
      env: {},
    });
    try {
      const remote = new RemotePort({ rotationStore: rotationStore(store) });
      const vps = await getVps();
      const uid = (await s.kubectl(['get', 'vps', 'agent', '-o', 'jsonpath={.metadata.uid}'])).trim();
      const hostKey = vps.metadata.annotations?.[ANNOTATION_SSH_HOST_KEY] ?? '';
      await remote.rotate(uid, { ipv4, hostKey });
      await remote.rotate(uid, { ipv4, hostKey });
    } finally {
      await store.close();
    }
    const t = await tunnel('127.0.0.1:18789');
    expect(await getThrough(t.port, '/v1/models', gatewayToken), t.log()).toBe(200);
    t.proc.kill();
  });

  it('is locked out once removed from the spec', async () => {
    const before = (await getVps()).metadata.annotations?.['cannes.dev/deployed'];
    await s.kubectl([
      'patch',
      'vps',
      'agent',
      '--type=merge',
      '-p',
      '{"spec":{"access":{"sshAuthorizedKeys":[]}}}',
    ]);
    await waitReady(
      'the redeploy without the key',
      (v) => v.status?.ready === true && v.metadata.annotations?.['cannes.dev/deployed'] !== before,
    );
    const r = await run('ssh', sshArgs(['-N', `${OWNER_USER}@${ipv4}`]), { timeout: 30_000 }).catch(
      (e: { stderr?: string }) => e,
    );
    expect('stderr' in r ? r.stderr : '').toMatch(/Permission denied/);
  });

  it('says clearly which entry is wrong when a key is not a key, and never deploys it', async () => {
    // Passes the CRD's pattern (type, base64) but the blob is of another type.
    const wrong = ownerPub.replace('ssh-ed25519', 'ssh-rsa');
    await s.kubectl([
      'patch',
      'vps',
      'agent',
      '--type=merge',
      '-p',
      JSON.stringify({ spec: { access: { sshAuthorizedKeys: [wrong] } } }),
    ]);
    const v = await waitReady('the InvalidSshPublicKey condition', (x) =>
      (x.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.reason === 'InvalidSshPublicKey'),
    );
    const ready = v.status?.conditions?.find((c) => c.type === 'Ready');
    expect(ready?.message).toMatch(/spec\.access\.sshAuthorizedKeys\[0\]/);
    // Options in front are refused by the API server already, with its own clear message.
    const withOptions = `command="/bin/sh" ${ownerPub}`;
    const refused = await s
      .kubectl([
        'patch',
        'vps',
        'agent',
        '--type=merge',
        '-p',
        JSON.stringify({ spec: { access: { sshAuthorizedKeys: [withOptions] } } }),
      ])
      .catch((e: unknown) => String(e));
    expect(refused).toMatch(/sshAuthorizedKeys/);
  });
});
