import { createHash, timingSafeEqual } from 'node:crypto';
import ssh2 from 'ssh2';
import { CannesError } from '../../common/errors.ts';
import { Secret } from '../../common/secret.ts';

/**
 * SSH key material parsed at the boundary. Everything that comes back from a server
 * (`ssh-keygen` output, `*.pub` files, `authorized_keys`) goes through here once.
 */

/** Key types we accept from a server. The operator itself only makes ed25519 keys. */
const PUBLIC_KEY_TYPES = new Set([
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'ssh-rsa',
]);

/** An OpenSSH public key: `type base64-blob [comment]`. Public, not secret. */
export interface PublicKey {
  readonly type: string;
  /** The wire blob (base64-decoded second field). */
  readonly blob: Buffer;
  /** `SHA256:<base64 without padding>` like `ssh-keygen -lf`. */
  readonly fingerprint: string;
  /** `type base64` without the comment: the canonical form we store and compare. */
  readonly line: string;
}

export function invalidKey(message: string): CannesError {
  return new CannesError('SshKeyInvalid', message);
}

export function fingerprintOf(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** Parses one public key line (an `authorized_keys` entry without options, or a `.pub` file). */
export function parsePublicKey(text: string): PublicKey {
  const fields = text.trim().split(/\s+/);
  const [type, b64] = fields;
  if (fields.length > 64 || type === undefined || b64 === undefined)
    throw invalidKey('not an OpenSSH public key line');
  if (!PUBLIC_KEY_TYPES.has(type))
    throw invalidKey(`unsupported public key type ${JSON.stringify(type.slice(0, 40))}`);
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64) || b64.length > 4096)
    throw invalidKey('public key blob is not base64');
  const blob = Buffer.from(b64, 'base64');
  // The blob starts with the key type as an SSH string; it must agree with the first field.
  if (blob.length < 4) throw invalidKey('public key blob too short');
  const n = blob.readUInt32BE(0);
  if (n + 4 > blob.length || blob.subarray(4, 4 + n).toString('latin1') !== type) {
    throw invalidKey('public key blob does not match its type');
  }
  const parsed = ssh2.utils.parseKey(`${type} ${b64}`);
  if (parsed instanceof Error || parsed.isPrivateKey()) throw invalidKey('public key does not parse');
  return { type, blob, fingerprint: fingerprintOf(blob), line: `${type} ${b64}` };
}

/** Constant-time equality of two public keys (by blob). */
export function samePublicKey(a: PublicKey, b: PublicKey): boolean {
  return a.blob.length === b.blob.length && timingSafeEqual(a.blob, b.blob);
}

/** An ed25519 private key in OpenSSH format, unencrypted, with its public half. */
export interface PrivateKeyPair {
  readonly privateKey: Secret;
  readonly publicKey: PublicKey;
}

/**
 * Validates a private key read back from a server: OpenSSH PEM armour, ed25519, no
 * passphrase, and (when given) the public key it must belong to. Never includes key bytes in
 * errors.
 */
export function parsePrivateKey(secret: Secret, expectedPublic?: PublicKey): PrivateKeyPair {
  const text = secret.reveal();
  if (
    !/^-----BEGIN OPENSSH PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+-----END OPENSSH PRIVATE KEY-----\n?$/.test(text)
  ) {
    throw invalidKey('private key is not an unencrypted OpenSSH key');
  }
  const parsed = ssh2.utils.parseKey(text);
  if (parsed instanceof Error || !parsed.isPrivateKey()) throw invalidKey('private key does not parse');
  if (parsed.type !== 'ssh-ed25519') throw invalidKey(`private key type ${parsed.type} is not ssh-ed25519`);
  const blob = parsed.getPublicSSH();
  const publicKey: PublicKey = {
    type: 'ssh-ed25519',
    blob,
    fingerprint: fingerprintOf(blob),
    line: `ssh-ed25519 ${blob.toString('base64')}`,
  };
  if (expectedPublic && !samePublicKey(publicKey, expectedPublic)) {
    throw invalidKey('private key does not belong to the expected public key');
  }
  return { privateKey: new Secret(text.endsWith('\n') ? text : `${text}\n`), publicKey };
}

/** One line of an authorized_keys file, kept verbatim, with its key when it has one. */
export interface AuthorizedKeysLine {
  readonly raw: string;
  readonly key: PublicKey | undefined;
}

/**
 * Parses authorized_keys leniently: lines we do not understand (comments, options we do not
 * parse, other people's key types) are kept verbatim, so editing never drops someone's access.
 */
export function parseAuthorizedKeys(text: string): AuthorizedKeysLine[] {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((raw) => {
      const t = raw.trim();
      if (t.startsWith('#')) return { raw, key: undefined };
      // Either `type blob ...` or `options type blob ...`: try both starting points.
      const fields = t.split(/\s+/);
      for (const start of [0, 1]) {
        try {
          return { raw, key: parsePublicKey(fields.slice(start).join(' ')) };
        } catch {
          // not at this position
        }
      }
      return { raw, key: undefined };
    });
}

export function renderAuthorizedKeys(lines: readonly AuthorizedKeysLine[]): string {
  return lines.map((l) => `${l.raw}\n`).join('');
}
