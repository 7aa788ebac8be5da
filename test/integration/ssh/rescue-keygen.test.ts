import { randomBytes, randomInt } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CannesError } from '../../../common/errors.ts';
import { Secret } from '../../../common/secret.ts';
import { rescueKeygen } from '../../../operator/ssh/rescue.ts';
import {
  connectPinned,
  connectRescueAcceptingUnknownHostKey,
  type SshSession,
} from '../../../operator/ssh/session.ts';
import { readRemoteFile, runScriptOk, statRemote } from '../../../operator/ssh/shell.ts';
import { randomTestIpv4 } from '../../hosts/leftovers.ts';
import { RealHostProvider } from '../../hosts/real-host-provider.ts';

/** Catches the typed error of a promise (fails the test if it resolves). */
async function errorOf(p: Promise<unknown>): Promise<CannesError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof CannesError) return err;
    throw err;
  }
  throw new Error('expected a failure');
}

describe('rescue keygen on a real sshd in a simulated server', () => {
  const provider = new RealHostProvider();
  const serverId = randomInt(100_000, 900_000);
  const ipv4 = randomTestIpv4();
  const name = `keygen-${randomBytes(3).toString('hex')}`;
  // A one-time rescue password made at run time (never a literal in the repo).
  const rescuePassword = Secret.of(randomBytes(18).toString('base64url'));
  let result: Awaited<ReturnType<typeof rescueKeygen>>;
  const open: SshSession[] = [];

  beforeAll(async () => {
    await provider.create({ serverId, name, ipv4, image: 'docker-ce' });
    await provider.boot(serverId, { kind: 'rescue', rootPassword: rescuePassword.reveal(), sshKeys: [] });
  });

  afterAll(async () => {
    for (const s of open) s.close();
    await provider.close();
  });

  it('refuses a wrong rescue password with SshAuthFailed', async () => {
    const err = await errorOf(
      connectRescueAcceptingUnknownHostKey({ host: ipv4 }, Secret.of('not-the-password')),
    );
    expect(err.reason).toBe('SshAuthFailed');
  });

  it('makes a key in rescue, installs it on the OS disk and returns the OS host key', async () => {
    const rescue = await connectRescueAcceptingUnknownHostKey({ host: ipv4 }, rescuePassword, {
      retryForMs: 30_000,
    });
    open.push(rescue);
    result = await rescueKeygen(rescue);
    expect(result.publicKey.type).toBe('ssh-ed25519');
    expect(result.privateKey.reveal()).toMatch(/^-----BEGIN OPENSSH PRIVATE KEY-----\n/);
    expect(result.osHostKey.type).toBe('ssh-ed25519');
    // The rescue system's own host key is not the OS's.
    expect(rescue.hostKeyFingerprint).not.toBe(result.osHostKey.fingerprint);
    // The private key file is gone from the server: no keygen dir is left in rescue's /tmp.
    const left = await runScriptOk(rescue, 'ls -A /tmp');
    expect(left.stdout).not.toContain('cannes-keygen');
    rescue.close();
  });

  it('logs into the OS with the new key and the pinned host key after reboot', async () => {
    await provider.boot(serverId, { kind: 'os' });
    const os = await connectPinned(
      { host: ipv4 },
      { privateKey: result.privateKey, hostKey: result.osHostKey },
      { retryForMs: 30_000 },
    );
    open.push(os);
    expect(os.hostKeyFingerprint).toBe(result.osHostKey.fingerprint);
    const host = await runScriptOk(os, 'hostname');
    expect(host.stdout.trim()).toBe(name);
  });

  it('leaves /root/.ssh at 700 and authorized_keys at 600, owned by root', async () => {
    const os = await connectPinned(
      { host: ipv4 },
      { privateKey: result.privateKey, hostKey: result.osHostKey },
    );
    open.push(os);
    expect(await statRemote(os, '/root/.ssh')).toEqual({ mode: 0o700, uid: 0, gid: 0, type: 'directory' });
    expect(await statRemote(os, '/root/.ssh/authorized_keys')).toEqual({
      mode: 0o600,
      uid: 0,
      gid: 0,
      type: 'file',
    });
    const ak = await readRemoteFile(os, '/root/.ssh/authorized_keys');
    expect(ak).toContain(result.publicKey.line);
  });

  it('refuses to run keygen outside the rescue system (NotRescueSystem)', async () => {
    const os = await connectPinned(
      { host: ipv4 },
      { privateKey: result.privateKey, hostKey: result.osHostKey },
    );
    open.push(os);
    const before = await readRemoteFile(os, '/root/.ssh/authorized_keys');
    const err = await errorOf(rescueKeygen(os));
    expect(err.reason).toBe('NotRescueSystem');
    expect(await readRemoteFile(os, '/root/.ssh/authorized_keys')).toBe(before);
  });

  it('a second rescue keygen leaves one key: the earlier key no longer logs in', async () => {
    // An earlier rescue run whose key was never stored (a crash before the store) left its key
    // on the disk; the next run must replace it, not add to it.
    await provider.boot(serverId, { kind: 'rescue', rootPassword: rescuePassword.reveal(), sshKeys: [] });
    const rescue = await connectRescueAcceptingUnknownHostKey({ host: ipv4 }, rescuePassword, {
      retryForMs: 30_000,
    });
    open.push(rescue);
    const second = await rescueKeygen(rescue);
    rescue.close();
    await provider.boot(serverId, { kind: 'os' });
    const os = await connectPinned(
      { host: ipv4 },
      { privateKey: second.privateKey, hostKey: second.osHostKey },
      { retryForMs: 30_000 },
    );
    open.push(os);
    const lines =
      (await readRemoteFile(os, '/root/.ssh/authorized_keys'))?.split('\n').filter((l) => l.trim()) ?? [];
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(second.publicKey.line);
    const old = await errorOf(
      connectPinned(
        { host: ipv4 },
        { privateKey: result.privateKey, hostKey: result.osHostKey },
        { retryForMs: 0 },
      ),
    );
    expect(old.reason).toBe('SshAuthFailed');
    result = second;
  });

  it('refuses a changed OS host key with HostKeyMismatch and never authenticates', async () => {
    // Someone replaced the server (or sits in the middle): the OS now serves another host key.
    const info = provider.info(serverId);
    if (!info) throw new Error('server gone');
    await rm(join(info.diskDir, 'etc/ssh/ssh_host_ed25519_key'));
    await rm(join(info.diskDir, 'etc/ssh/ssh_host_ed25519_key.pub'));
    const { execFile } = await import('node:child_process');
    const { promisify } = await import('node:util');
    await promisify(execFile)('ssh-keygen', [
      '-q',
      '-t',
      'ed25519',
      '-N',
      '',
      '-f',
      join(info.diskDir, 'etc/ssh/ssh_host_ed25519_key'),
    ]);
    await provider.boot(serverId, { kind: 'os' });
    const err = await errorOf(
      connectPinned(
        { host: ipv4 },
        { privateKey: result.privateKey, hostKey: result.osHostKey },
        { retryForMs: 10_000 },
      ),
    );
    expect(err.reason).toBe('HostKeyMismatch');
    expect(err.terminal).toBe(true);
    expect(err.message).toContain(result.osHostKey.fingerprint);
    expect(err.message).not.toContain(result.privateKey.reveal().slice(40, 80));
  });
});
