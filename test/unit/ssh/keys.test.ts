import ssh2 from 'ssh2';
import { describe, expect, it } from 'vitest';
import { CannesError } from '../../../common/errors.ts';
import { Secret } from '../../../common/secret.ts';
import {
  parseAuthorizedKeys,
  parsePrivateKey,
  parsePublicKey,
  renderAuthorizedKeys,
  samePublicKey,
} from '../../../operator/ssh/keys.ts';
import { scriptCommand, shq } from '../../../operator/ssh/shell.ts';
import { ed25519TestPair } from './test-keys.ts';

// A public test vector (its private half was discarded); fingerprint as printed by `ssh-keygen -lf`.
const VECTOR = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEogBSYfP2nyqI85187qbnRBImqC9YH5ixo8XX9X5/zT test-vector';
const VECTOR_FP = 'SHA256:kBeaaakY7Xqh8UZifbcY24nKmVJxLhLLutdA42WzPDY';

function reason(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof CannesError) return err.reason;
    throw err;
  }
  return 'no error';
}

describe('SSH key parsing at the boundary', () => {
  it('computes the same SHA256 fingerprint as ssh-keygen', () => {
    const k = parsePublicKey(VECTOR);
    expect(k.fingerprint).toBe(VECTOR_FP);
    expect(k.line).toBe(VECTOR.replace(/ test-vector$/, ''));
  });

  it('rejects a blob whose embedded type disagrees with the declared type', () => {
    const b64 = VECTOR.split(' ')[1];
    expect(reason(() => parsePublicKey(`ecdsa-sha2-nistp256 ${b64}`))).toBe('SshKeyInvalid');
  });

  it('rejects garbage, unknown types and non-base64 blobs', () => {
    expect(reason(() => parsePublicKey(''))).toBe('SshKeyInvalid');
    expect(reason(() => parsePublicKey('ssh-dss AAAAB3NzaC1kc3M='))).toBe('SshKeyInvalid');
    expect(reason(() => parsePublicKey('ssh-ed25519 not*base64'))).toBe('SshKeyInvalid');
    expect(reason(() => parsePublicKey('ssh-ed25519 AAAA'))).toBe('SshKeyInvalid');
  });

  it('accepts an ed25519 OpenSSH private key only with its own public key', () => {
    const pair = ed25519TestPair();
    const pub = parsePublicKey(pair.public);
    const parsed = parsePrivateKey(Secret.of(pair.private), pub);
    expect(samePublicKey(parsed.publicKey, pub)).toBe(true);
    expect(reason(() => parsePrivateKey(Secret.of(pair.private), parsePublicKey(VECTOR)))).toBe(
      'SshKeyInvalid',
    );
  });

  it('never puts private key bytes in an error message', () => {
    const canary = `-----BEGIN OPENSSH PRIVATE KEY-----\nCANARY${Date.now()}\n-----END OPENSSH PRIVATE KEY-----\n`;
    try {
      parsePrivateKey(Secret.of(canary));
      throw new Error('accepted a broken key');
    } catch (err) {
      expect(err).toBeInstanceOf(CannesError);
      expect(String((err as Error).message)).not.toContain('CANARY');
    }
  });

  it('rejects a non-ed25519 private key (the operator makes ed25519 keys only)', () => {
    const pair = ssh2.utils.generateKeyPairSync('ecdsa', { bits: 256 });
    expect(reason(() => parsePrivateKey(Secret.of(pair.private)))).toBe('SshKeyInvalid');
  });

  it('keeps lines it does not understand when editing authorized_keys', () => {
    const text = `# managed by hand\n${VECTOR}\nfrom="10.0.0.1" ${VECTOR}\nsomething odd\n`;
    const lines = parseAuthorizedKeys(text);
    expect(lines.map((l) => l.key?.fingerprint)).toEqual([undefined, VECTOR_FP, VECTOR_FP, undefined]);
    expect(renderAuthorizedKeys(lines)).toBe(text);
  });
});

describe('shell quoting', () => {
  it('quotes single quotes and metacharacters into one literal word', () => {
    expect(shq(`a'b $(x) "c"`)).toBe(`'a'\\''b $(x) "c"'`);
    expect(scriptCommand('echo "$1"', ["it's"])).toBe(
      `bash -c 'set -euo pipefail\necho "$1"' cannes 'it'\\''s'`,
    );
  });
});

describe('writeFileAtomic', () => {
  it('sends the content over stdin only: the command line never holds it', async () => {
    const { writeFileAtomic } = await import('../../../operator/ssh/shell.ts');
    const canary = `canary-${Date.now()}-${Math.random()}`;
    const calls: { command: string; stdin: unknown }[] = [];
    const shell = {
      async exec(command: string, options: { stdin?: unknown } = {}) {
        calls.push({ command, stdin: options.stdin });
        return {
          exitCode: 0,
          signal: undefined,
          stdout: '',
          stderr: '',
          stdoutTruncated: false,
          stderrTruncated: false,
        };
      },
    };
    const secret = Secret.of(canary);
    await writeFileAtomic(shell, '/root/.model-keys.json', secret, 0o600, 'root:root');
    expect(calls).toHaveLength(1);
    expect(calls[0]?.command).not.toContain(canary);
    // The byte count (checked on the server before the rename) is the only thing said about it.
    expect(calls[0]?.command).toContain(
      `'/root/.model-keys.json' '0600' 'root:root' '${Buffer.byteLength(canary)}'`,
    );
    expect(calls[0]?.stdin).toBe(secret);
  });
});
