import { webcrypto } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { TerminalError } from '../../common/errors.ts';

/**
 * Master keys for the envelope. A keyring is an ordered list of `kid` + 32 random bytes:
 * the FIRST entry encrypts, every entry decrypts. Text form (a file, or one entry of a
 * Kubernetes Secret), one key per line:
 *
 *     # comments and blank lines are ignored
 *     k2026-11 3q2+7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
 *     k2026-05 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
 *
 * Errors name the source, the line number and the kid, never the key material. Keys are
 * imported as non-extractable WebCrypto keys and the decoded bytes are zeroed right away,
 * so nothing in this process can print a master key by accident.
 */

export const KID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const BASE64_PATTERN = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const BASE64URL_PATTERN = /^[A-Za-z0-9_-]+$/;
export const MASTER_KEY_BYTES = 32;

/** The Secret data key the operator reads when the keyring comes from a Kubernetes Secret. */
export const KEYRING_SECRET_KEY = 'keys';

export interface KeyringEntry {
  readonly kid: string;
  readonly key: webcrypto.CryptoKey;
}

/**
 * HKDF-SHA-256 `info` of the MAC key derived from each master key for the routing fields
 * (operator/store/routing.ts). A separate key per use: the AES key never MACs, the MAC key
 * never encrypts.
 */
export const ROUTING_MAC_INFO = 'cannes.dev/v1 routing-mac';

export class Keyring {
  readonly #entries: ReadonlyMap<string, webcrypto.CryptoKey>;
  readonly #macKeys: ReadonlyMap<string, webcrypto.CryptoKey>;
  readonly #activeKid: string;

  private constructor(
    entries: Map<string, webcrypto.CryptoKey>,
    macKeys: Map<string, webcrypto.CryptoKey>,
    activeKid: string,
  ) {
    this.#entries = entries;
    this.#macKeys = macKeys;
    this.#activeKid = activeKid;
  }

  /** Builds a keyring from already validated raw keys; zeroes the byte arrays it was given. */
  static async fromRaw(raw: ReadonlyArray<{ kid: string; bytes: Uint8Array }>): Promise<Keyring> {
    if (raw.length === 0) throw new TerminalError('KeyringEmpty', 'the master keyring has no keys');
    const entries = new Map<string, webcrypto.CryptoKey>();
    const macKeys = new Map<string, webcrypto.CryptoKey>();
    try {
      for (const { kid, bytes } of raw) {
        if (!KID_PATTERN.test(kid))
          throw new TerminalError(
            'KeyringBadKid',
            `master key id ${JSON.stringify(kid)} is not [A-Za-z0-9._-]{1,64}`,
          );
        if (entries.has(kid))
          throw new TerminalError('KeyringDuplicateKid', `master key id ${kid} appears twice`);
        if (bytes.length !== MASTER_KEY_BYTES) {
          throw new TerminalError(
            'KeyringBadKeyLength',
            `master key ${kid} is ${bytes.length} bytes, need ${MASTER_KEY_BYTES}`,
          );
        }
        const key = await webcrypto.subtle.importKey('raw', bytes, { name: 'AES-GCM' }, false, [
          'encrypt',
          'decrypt',
        ]);
        entries.set(kid, key);
        macKeys.set(kid, await deriveMacKey(bytes));
      }
    } finally {
      for (const { bytes } of raw) bytes.fill(0);
    }
    const first = raw[0]!.kid;
    return new Keyring(entries, macKeys, first);
  }

  /** The kid new ciphertexts are written with. */
  get activeKid(): string {
    return this.#activeKid;
  }

  get activeKey(): KeyringEntry {
    return { kid: this.#activeKid, key: this.#entries.get(this.#activeKid)! };
  }

  get kids(): readonly string[] {
    return [...this.#entries.keys()];
  }

  get(kid: string): webcrypto.CryptoKey | undefined {
    return this.#entries.get(kid);
  }

  /** The HMAC-SHA-256 key derived (HKDF) from master key `kid`, for the routing fields. */
  macKey(kid: string): webcrypto.CryptoKey | undefined {
    return this.#macKeys.get(kid);
  }

  has(kid: string): boolean {
    return this.#entries.has(kid);
  }

  toString(): string {
    return `Keyring(active=${this.#activeKid}, kids=${this.kids.join(',')})`;
  }

  toJSON(): { activeKid: string; kids: readonly string[] } {
    return { activeKid: this.#activeKid, kids: this.kids };
  }
}

/** HKDF-SHA-256 (empty salt, `ROUTING_MAC_INFO`) from a master key to a non-extractable HMAC key. */
async function deriveMacKey(bytes: Uint8Array): Promise<webcrypto.CryptoKey> {
  const ikm = await webcrypto.subtle.importKey('raw', bytes, 'HKDF', false, ['deriveKey']);
  return webcrypto.subtle.deriveKey(
    {
      name: 'HKDF',
      hash: 'SHA-256',
      salt: new Uint8Array(0),
      info: new TextEncoder().encode(ROUTING_MAC_INFO),
    },
    ikm,
    { name: 'HMAC', hash: 'SHA-256', length: 256 },
    false,
    ['sign', 'verify'],
  );
}

/**
 * Validates keyring text without importing anything. Returns raw entries in file order;
 * the caller passes them to `Keyring.fromRaw` (which zeroes them).
 */
export function parseKeyringText(text: string, source: string): Array<{ kid: string; bytes: Uint8Array }> {
  const out: Array<{ kid: string; bytes: Uint8Array }> = [];
  const seen = new Map<string, number>();
  const lines = text.split(/\r?\n/);
  try {
    for (let i = 0; i < lines.length; i++) {
      const lineNo = i + 1;
      const line = (lines[i] ?? '').trim();
      if (line === '' || line.startsWith('#')) continue;
      const fields = line.split(/\s+/);
      const kid = fields[0] ?? '';
      if (fields.length !== 2) {
        // Do not echo the line: it may hold key material in an unexpected shape.
        throw new TerminalError(
          'KeyringBadLine',
          `${source} line ${lineNo}: expected "<kid> <base64 of 32 bytes>", found ${fields.length} field(s)`,
        );
      }
      if (!KID_PATTERN.test(kid)) {
        throw new TerminalError(
          'KeyringBadKid',
          `${source} line ${lineNo}: key id must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}`,
        );
      }
      const previous = seen.get(kid);
      if (previous !== undefined) {
        throw new TerminalError(
          'KeyringDuplicateKid',
          `${source} line ${lineNo}: key id ${kid} already defined on line ${previous}`,
        );
      }
      seen.set(kid, lineNo);
      const encoded = fields[1] ?? '';
      const bytes = decodeBase64Strict(encoded);
      if (bytes === null) {
        throw new TerminalError(
          'KeyringBadBase64',
          `${source} line ${lineNo}: key ${kid} is not valid base64`,
        );
      }
      if (bytes.length !== MASTER_KEY_BYTES) {
        bytes.fill(0);
        throw new TerminalError(
          'KeyringBadKeyLength',
          `${source} line ${lineNo}: key ${kid} decodes to ${bytes.length} bytes, need exactly ${MASTER_KEY_BYTES}`,
        );
      }
      out.push({ kid, bytes });
    }
  } catch (err) {
    for (const e of out) e.bytes.fill(0);
    throw err;
  }
  if (out.length === 0)
    throw new TerminalError('KeyringEmpty', `${source}: no keys (need at least one "<kid> <base64>" line)`);
  return out;
}

/** Standard base64 (padding required) or unpadded base64url; null when neither. */
function decodeBase64Strict(s: string): Uint8Array | null {
  if (s.length > 0 && BASE64_PATTERN.test(s)) return new Uint8Array(Buffer.from(s, 'base64'));
  if (s.length > 0 && s.length % 4 !== 1 && BASE64URL_PATTERN.test(s))
    return new Uint8Array(Buffer.from(s, 'base64url'));
  return null;
}

export async function parseKeyring(text: string, source: string): Promise<Keyring> {
  return Keyring.fromRaw(parseKeyringText(text, source));
}

/** Loads `CANNES_MASTER_KEYS_FILE`-style files. */
export async function loadKeyringFile(path: string): Promise<Keyring> {
  let text: string;
  try {
    // Nobody but the operator (and its group: a Kubernetes Secret volume read through fsGroup
    // is 0440) may read the master keys: world bits or a group that may write are refused.
    const mode = (await stat(path)).mode & 0o777;
    if ((mode & 0o027) !== 0) {
      throw new TerminalError(
        'KeyringFileMode',
        `master key file ${path} is mode ${mode.toString(8).padStart(4, '0')}: others may read or change it; make it 0600 (or 0440 for a Kubernetes Secret volume)`,
      );
    }
    text = await readFile(path, 'utf8');
  } catch (err) {
    if (err instanceof TerminalError) throw err;
    const code = err instanceof Error && 'code' in err ? String(err.code) : 'unknown error';
    throw new TerminalError('KeyringUnreadable', `cannot read master key file ${path}: ${code}`);
  }
  return parseKeyring(text, path);
}

/**
 * Reads the keyring from a Kubernetes Secret's data (values already base64-decoded by the
 * client: bytes, or strings for `stringData`). The keyring lives in ONE entry (default
 * `keys`) in the same text format as the file, because Secret data keys have no order and
 * the first line must say which key encrypts.
 */
export async function parseKeyringSecretData(
  data: Readonly<Record<string, Uint8Array | string>> | undefined,
  options: { secretName?: string; key?: string } = {},
): Promise<Keyring> {
  const key = options.key ?? KEYRING_SECRET_KEY;
  const source = `Secret ${options.secretName ?? '(master keys)'} key ${key}`;
  const value = data?.[key];
  if (value === undefined) {
    throw new TerminalError(
      'KeyringEmpty',
      `${source} is missing (data keys present: ${Object.keys(data ?? {}).join(', ') || 'none'})`,
    );
  }
  let text: string;
  if (typeof value === 'string') {
    text = value;
  } else {
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(value);
    } catch {
      throw new TerminalError('KeyringBadLine', `${source} is not UTF-8 text`);
    }
  }
  return parseKeyring(text, source);
}
