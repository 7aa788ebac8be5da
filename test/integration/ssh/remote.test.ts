import { randomBytes, randomInt } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CannesError } from '../../../common/errors.ts';
import { Secret } from '../../../common/secret.ts';
import { type PublicKey, parsePublicKey } from '../../../operator/ssh/keys.ts';
import { connectPinned, type ExecOptions, type SshSession } from '../../../operator/ssh/session.ts';
import { readRemoteFile, runScript, statRemote, writeFileAtomic } from '../../../operator/ssh/shell.ts';
import { randomTestIpv4 } from '../../hosts/leftovers.ts';
import { RealHostProvider } from '../../hosts/real-host-provider.ts';
import { ed25519TestPair } from '../../unit/ssh/test-keys.ts';

async function errorOf(p: Promise<unknown>): Promise<CannesError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof CannesError) return err;
    throw err;
  }
  throw new Error('expected a failure');
}

describe('remote steps over a pinned session to a real sshd', () => {
  const provider = new RealHostProvider();
  const serverId = randomInt(100_000, 900_000);
  const ipv4 = randomTestIpv4();
  // Test harness key (the operator's keys are born on the server; this one only opens the door).
  const pair = ed25519TestPair();
  const privateKey = Secret.of(pair.private);
  let hostKey: PublicKey;
  let s: SshSession;

  beforeAll(async () => {
    await provider.create({
      serverId,
      name: `remote-${randomBytes(3).toString('hex')}`,
      ipv4,
      image: 'docker-ce',
    });
    const disk = provider.info(serverId)?.diskDir ?? '';
    await writeFile(join(disk, 'root/.ssh/authorized_keys'), `${pair.public}\n`, { mode: 0o600 });
    hostKey = parsePublicKey(await readFile(join(disk, 'etc/ssh/ssh_host_ed25519_key.pub'), 'utf8'));
  });

  afterAll(async () => {
    s?.close();
    await provider.close();
  });

  it('keeps retrying while the server boots, then connects', async () => {
    // The server is still off: connection refused until boot() brings sshd up.
    const retries: string[] = [];
    const connecting = connectPinned(
      { host: ipv4 },
      { privateKey, hostKey },
      { retryForMs: 60_000, onRetry: (_n, reason) => retries.push(reason) },
    );
    await new Promise((r) => setTimeout(r, 800));
    await provider.boot(serverId, { kind: 'os' });
    s = await connecting;
    expect(retries.length).toBeGreaterThan(0);
    expect(s.hostKeyFingerprint).toBe(hostKey.fingerprint);
  });

  it('writes a file atomically with its mode and owner, byte for byte', async () => {
    const content = `{"line":1}\n'quotes' "and" $(not a command)\n${randomBytes(8).toString('hex')}\n`;
    await writeFileAtomic(s, '/opt/atomic.json', content, 0o640, '1000:1000');
    expect(await statRemote(s, '/opt/atomic.json')).toEqual({
      mode: 0o640,
      uid: 1000,
      gid: 1000,
      type: 'file',
    });
    expect(await readRemoteFile(s, '/opt/atomic.json')).toBe(content);
    const left = await runScript(s, 'ls -A /opt');
    expect(left.stdout).not.toContain('.cannes-tmp');
  });

  it('writes a Secret through stdin: it never appears on the command line', async () => {
    const canary = `canary-${randomBytes(12).toString('hex')}`;
    await writeFileAtomic(s, '/root/.model-keys.json', Secret.of(`{"k":"${canary}"}\n`), 0o600, 'root:root');
    expect(await statRemote(s, '/root/.model-keys.json')).toEqual({
      mode: 0o600,
      uid: 0,
      gid: 0,
      type: 'file',
    });
    expect(await readRemoteFile(s, '/root/.model-keys.json')).toContain(canary);
  });

  it('leaves the old file untouched and no temp file when a write fails', async () => {
    await writeFileAtomic(s, '/opt/keep.txt', 'old\n', 0o644, 'root:root');
    const err = await errorOf(writeFileAtomic(s, '/opt/keep.txt', 'new\n', 0o644, 'no-such-user'));
    expect(err.reason).toBe('RemoteScriptFailed');
    expect(await readRemoteFile(s, '/opt/keep.txt')).toBe('old\n');
    expect((await runScript(s, 'ls -A /opt')).stdout).not.toContain('.cannes-tmp');
    const missingDir = await errorOf(writeFileAtomic(s, '/opt/nope/x.txt', 'x', 0o644, 'root'));
    expect(missingDir.reason).toBe('RemoteScriptFailed');
  });

  it('keeps the old file when the content arrives cut short (its sender died mid-send)', async () => {
    await writeFileAtomic(s, '/opt/cut.json', 'old\n', 0o644, 'root:root');
    const content = `{"complete":true,"pad":"${randomBytes(64).toString('hex')}"}\n`;
    // What sshd hands the command when the operator dies half-way: the first part, then EOF.
    const dying = {
      exec: (command: string, options: ExecOptions = {}) =>
        s.exec(command, { ...options, stdin: content.slice(0, 40) }),
    };
    const err = await errorOf(writeFileAtomic(dying, '/opt/cut.json', content, 0o644, 'root:root'));
    expect(err.reason).toBe('RemoteScriptFailed');
    expect(err.message).toContain(`short write: 40 of ${content.length} bytes`);
    expect(err.message).not.toContain('complete');
    expect(await readRemoteFile(s, '/opt/cut.json')).toBe('old\n');
    expect((await runScript(s, 'ls -A /opt')).stdout).not.toContain('.cannes-tmp');
  });

  it('refuses paths and owners that are not plain', async () => {
    expect((await errorOf(writeFileAtomic(s, 'relative.txt', 'x', 0o644, 'root'))).reason).toBe(
      'InvalidArgument',
    );
    expect((await errorOf(writeFileAtomic(s, '/opt/../etc/x', 'x', 0o644, 'root'))).reason).toBe(
      'InvalidArgument',
    );
    expect((await errorOf(writeFileAtomic(s, '/opt/x', 'x', 0o644, 'root; rm -rf /'))).reason).toBe(
      'InvalidArgument',
    );
  });

  it('runs scripts with arguments, exit codes and bounded output', async () => {
    const r = await runScript(s, 'echo "$1"; echo err >&2; exit 7', { args: ["it's $HOME"] });
    expect(r).toMatchObject({ exitCode: 7, stdout: "it's $HOME\n", stderr: 'err\n' });
    const big = await runScript(s, 'head -c 100000 /dev/zero | tr "\\0" a', { maxOutputBytes: 1000 });
    expect(big.stdout.length).toBe(1000);
    expect(big.stdoutTruncated).toBe(true);
    expect(await readRemoteFile(s, '/opt/missing', { missingOk: true })).toBeUndefined();
  });

  it('never puts secret stdout into an error when the command fails', async () => {
    const canary = `canary-${randomBytes(12).toString('hex')}`;
    const err = await errorOf(s.execForSecret(`echo ${canary}; exit 3`));
    expect(err.reason).toBe('SshCommandFailed');
    expect(err.message).not.toContain(canary);
  });

  it('while a server boots, tries SSH only once its port 22 takes connections (SSH attempts do not grow with boot time)', async () => {
    s.close();
    await provider.powerOff(serverId);
    let attempts = 0;
    const retries: string[] = [];
    const connecting = connectPinned(
      { host: ipv4 },
      { privateKey, hostKey },
      { retryForMs: 60_000, onAttempt: () => attempts++, onRetry: (_n, reason) => retries.push(reason) },
    );
    await new Promise((r) => setTimeout(r, 2500));
    expect(attempts).toBe(0);
    await provider.boot(serverId, { kind: 'os' });
    s = await connecting;
    expect(attempts).toBe(1);
    expect(retries.length).toBeGreaterThan(1);
  });
});
