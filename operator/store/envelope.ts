import { CompactEncrypt, compactDecrypt, errors as joseErrors } from 'jose';
import { CannesError } from '../../common/errors.ts';
import { Secret } from '../../common/secret.ts';
import type { Keyring } from './keyring.ts';

/**
 * Envelope encryption for every secret column.
 *
 * Format: JWE compact serialization, `alg: dir`, `enc: A256GCM` (AES-256-GCM, random 96-bit
 * IV per encryption, 128-bit tag), through `jose`. Why jose rather than node:crypto with a
 * format of our own: the JWE protected header IS the GCM associated data, so the key id and
 * the row/column binding are authenticated without us inventing a byte layout, a version
 * scheme or an AAD encoding; the format is a standard any JOSE library can inspect; jose is
 * zero-dependency and uses the platform's WebCrypto, so the only crypto here is composition.
 *
 * Protected header: `{alg, enc, kid, v: 1, tbl, col, rid}`. `tbl`/`col`/`rid` name the table,
 * column and row the ciphertext belongs to: a ciphertext copied to another row or column
 * decrypts authentically but fails the binding check (EnvelopeBindingMismatch); editing the
 * header to match fails the tag (EnvelopeTampered).
 *
 * Error reasons (all `CannesError`, never carrying plaintext or key material):
 * EnvelopeMalformed (empty, truncated, not five parts, bad base64url, wrong IV/tag size,
 * header not the expected JSON), EnvelopeUnsupported (another alg/enc/version/zip),
 * EnvelopeUnknownKey (kid not in the keyring), EnvelopeTampered (authentication failed),
 * EnvelopeBindingMismatch (authentic but belongs to another row/column), EnvelopeNotUtf8
 * (plaintext is not UTF-8 where text was expected), EnvelopeEmptyPlaintext (refuse to
 * encrypt nothing).
 */

export const ENVELOPE_VERSION = 1;

/** Where a ciphertext lives; bound into the authenticated header. */
export interface Binding {
  readonly table: string;
  readonly column: string;
  readonly rowId: string;
}

export class EnvelopeError extends CannesError {
  constructor(reason: string, message: string, cause?: unknown) {
    super(reason, message, { cause });
    this.name = 'EnvelopeError';
  }
}

const B64URL = /^[A-Za-z0-9_-]*$/;
const HEADER_KEYS = new Set(['alg', 'enc', 'kid', 'v', 'tbl', 'col', 'rid']);
const utf8 = new TextDecoder('utf-8', { fatal: true });

interface ParsedHeader {
  kid: string;
  tbl: string;
  col: string;
  rid: string;
}

function where(b: Binding): string {
  return `${b.table}.${b.column} row ${b.rowId}`;
}

export async function encryptBytes(
  keyring: Keyring,
  plaintext: Uint8Array,
  binding: Binding,
): Promise<string> {
  if (plaintext.length === 0)
    throw new EnvelopeError(
      'EnvelopeEmptyPlaintext',
      `refusing to encrypt an empty value for ${where(binding)}`,
    );
  const { kid, key } = keyring.activeKey;
  return new CompactEncrypt(plaintext)
    .setProtectedHeader({
      alg: 'dir',
      enc: 'A256GCM',
      kid,
      v: ENVELOPE_VERSION,
      tbl: binding.table,
      col: binding.column,
      rid: binding.rowId,
    })
    .encrypt(key);
}

export async function encryptSecret(
  keyring: Keyring,
  secret: Secret<string>,
  binding: Binding,
): Promise<string> {
  return encryptBytes(keyring, new TextEncoder().encode(secret.reveal()), binding);
}

/** Reads the kid without decrypting (for rekey planning and diagnostics). */
export function envelopeKid(envelope: string, binding: Binding): string {
  return parseEnvelope(envelope, binding).kid;
}

function parseEnvelope(envelope: string, binding: Binding): ParsedHeader {
  const bad = (detail: string): EnvelopeError =>
    new EnvelopeError('EnvelopeMalformed', `encrypted value for ${where(binding)} is malformed: ${detail}`);
  if (typeof envelope !== 'string' || envelope.length === 0) throw bad('empty');
  const parts = envelope.split('.');
  if (parts.length !== 5) throw bad(`expected 5 parts, found ${parts.length} (truncated?)`);
  const [h, ek, iv, ct, tag] = parts as [string, string, string, string, string];
  for (const p of parts) if (!B64URL.test(p)) throw bad('not base64url');
  if (ek !== '') throw bad('direct encryption must have an empty key part');
  if (Buffer.from(iv, 'base64url').length !== 12 || iv.length !== 16) throw bad('IV is not 96 bits');
  if (Buffer.from(tag, 'base64url').length !== 16 || tag.length !== 22) throw bad('tag is not 128 bits');
  if (ct.length === 0) throw bad('empty ciphertext');
  let header: unknown;
  try {
    header = JSON.parse(utf8.decode(Buffer.from(h, 'base64url')));
  } catch {
    throw bad('protected header is not JSON');
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header))
    throw bad('protected header is not an object');
  const rec = header as Record<string, unknown>;
  for (const k of Object.keys(rec)) {
    if (!HEADER_KEYS.has(k))
      throw new EnvelopeError(
        'EnvelopeUnsupported',
        `encrypted value for ${where(binding)} has unsupported header ${k}`,
      );
  }
  if (rec['alg'] !== 'dir' || rec['enc'] !== 'A256GCM' || rec['v'] !== ENVELOPE_VERSION) {
    throw new EnvelopeError(
      'EnvelopeUnsupported',
      `encrypted value for ${where(binding)} is not a v${ENVELOPE_VERSION} dir/A256GCM envelope`,
    );
  }
  const { kid, tbl, col, rid } = rec;
  if (
    typeof kid !== 'string' ||
    typeof tbl !== 'string' ||
    typeof col !== 'string' ||
    typeof rid !== 'string'
  ) {
    throw bad('protected header lacks kid/tbl/col/rid');
  }
  return { kid, tbl, col, rid };
}

export async function decryptBytes(
  keyring: Keyring,
  envelope: string,
  binding: Binding,
): Promise<Uint8Array> {
  const header = parseEnvelope(envelope, binding);
  const key = keyring.get(header.kid);
  if (key === undefined) {
    throw new EnvelopeError(
      'EnvelopeUnknownKey',
      `encrypted value for ${where(binding)} uses master key ${JSON.stringify(header.kid)}, which is not in the keyring`,
    );
  }
  let plaintext: Uint8Array;
  try {
    ({ plaintext } = await compactDecrypt(envelope, key, {
      keyManagementAlgorithms: ['dir'],
      contentEncryptionAlgorithms: ['A256GCM'],
      maxDecompressedLength: 0,
    }));
  } catch (err) {
    if (err instanceof joseErrors.JWEDecryptionFailed) {
      throw new EnvelopeError(
        'EnvelopeTampered',
        `encrypted value for ${where(binding)} failed authentication (tampered or corrupted)`,
      );
    }
    if (err instanceof joseErrors.JOSEError) {
      throw new EnvelopeError(
        'EnvelopeMalformed',
        `encrypted value for ${where(binding)} is malformed: ${err.code}`,
      );
    }
    throw err;
  }
  // Authentic, but is it THIS row's? (A ciphertext copied from another row/column.)
  if (header.tbl !== binding.table || header.col !== binding.column || header.rid !== binding.rowId) {
    plaintext.fill(0);
    throw new EnvelopeError(
      'EnvelopeBindingMismatch',
      `encrypted value in ${where(binding)} belongs to ${header.tbl}.${header.col} row ${header.rid}; refusing to use it`,
    );
  }
  return plaintext;
}

export async function decryptSecret(
  keyring: Keyring,
  envelope: string,
  binding: Binding,
): Promise<Secret<string>> {
  const bytes = await decryptBytes(keyring, envelope, binding);
  try {
    return new Secret(utf8.decode(bytes));
  } catch {
    throw new EnvelopeError('EnvelopeNotUtf8', `decrypted value for ${where(binding)} is not UTF-8 text`);
  } finally {
    bytes.fill(0);
  }
}
