import { randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import { CompactEncrypt } from 'jose';
import { describe, expect, it } from 'vitest';
import { CannesError } from '../../../common/errors.ts';
import { Secret } from '../../../common/secret.ts';
import {
  type Binding,
  decryptBytes,
  decryptSecret,
  EnvelopeError,
  encryptBytes,
  encryptSecret,
} from '../../../operator/store/envelope.ts';
import { Keyring, parseKeyringText } from '../../../operator/store/keyring.ts';
import { keyringText, testKeyring } from './helpers.ts';

const row1: Binding = { table: 'cannes_ssh_key', column: 'private_key_enc', rowId: 'uid-1/key-1' };
const row2: Binding = { table: 'cannes_ssh_key', column: 'private_key_enc', rowId: 'uid-2/key-2' };

async function reasonOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(EnvelopeError);
    expect(err).toBeInstanceOf(CannesError);
    return (err as CannesError).reason;
  }
  throw new Error('expected a rejection');
}

/** Flips one bit in the middle of one base64url part of a compact JWE. */
function flip(envelope: string, part: number): string {
  const parts = envelope.split('.');
  const bytes = Buffer.from(parts[part]!, 'base64url');
  const i = Math.floor(bytes.length / 2);
  bytes[i] = bytes[i]! ^ 0x01;
  parts[part] = bytes.toString('base64url');
  return parts.join('.');
}

describe('envelope (JWE dir + A256GCM, row-bound)', () => {
  const canary = `canary-${randomBytes(16).toString('hex')}`;

  it('round-trips a secret and returns it as a redacting Secret', async () => {
    const kr = await testKeyring();
    const env = await encryptSecret(kr, Secret.of(canary), row1);
    expect(env).not.toContain(canary);
    const out = await decryptSecret(kr, env, row1);
    expect(out).toBeInstanceOf(Secret);
    expect(out.reveal()).toBe(canary);
    expect(String(out)).not.toContain(canary);
    expect(inspect(out)).not.toContain(canary);
  });

  it('uses a fresh random 96-bit nonce for every encryption', async () => {
    const kr = await testKeyring();
    const a = (await encryptSecret(kr, Secret.of(canary), row1)).split('.');
    const b = (await encryptSecret(kr, Secret.of(canary), row1)).split('.');
    expect(Buffer.from(a[2]!, 'base64url')).toHaveLength(12);
    expect(a[2]).not.toBe(b[2]);
    expect(a[3]).not.toBe(b[3]);
  });

  it('writes alg dir, enc A256GCM, the active kid and the row binding in the protected header', async () => {
    const kr = await testKeyring(['new-key', 'old-key']);
    const env = await encryptSecret(kr, Secret.of(canary), row1);
    const header = JSON.parse(Buffer.from(env.split('.')[0]!, 'base64url').toString('utf8'));
    expect(header).toEqual({
      alg: 'dir',
      enc: 'A256GCM',
      kid: 'new-key',
      v: 1,
      tbl: 'cannes_ssh_key',
      col: 'private_key_enc',
      rid: 'uid-1/key-1',
    });
  });

  it.each([
    ['protected header', 0],
    ['nonce', 2],
    ['ciphertext', 3],
    ['tag', 4],
  ])('rejects a one-bit change in the %s as EnvelopeTampered', async (_name, part) => {
    const kr = await testKeyring();
    const env = await encryptSecret(kr, Secret.of(canary), row1);
    const reason = await reasonOf(decryptSecret(kr, flip(env, part), row1));
    // A flipped header byte may break its JSON first: malformed is also a refusal.
    expect(part === 0 ? ['EnvelopeTampered', 'EnvelopeMalformed'] : ['EnvelopeTampered']).toContain(reason);
  });

  it('rejects a header edited to claim another row, since the header is authenticated', async () => {
    const kr = await testKeyring();
    const env = await encryptSecret(kr, Secret.of(canary), row1);
    const parts = env.split('.');
    const header = JSON.parse(Buffer.from(parts[0]!, 'base64url').toString('utf8'));
    header.rid = row2.rowId;
    parts[0] = Buffer.from(JSON.stringify(header)).toString('base64url');
    expect(await reasonOf(decryptSecret(kr, parts.join('.'), row2))).toBe('EnvelopeTampered');
  });

  it('refuses a ciphertext copied into another row or column (EnvelopeBindingMismatch)', async () => {
    const kr = await testKeyring();
    const env = await encryptSecret(kr, Secret.of(canary), row1);
    expect(await reasonOf(decryptSecret(kr, env, row2))).toBe('EnvelopeBindingMismatch');
    expect(await reasonOf(decryptSecret(kr, env, { ...row1, column: 'public_key' }))).toBe(
      'EnvelopeBindingMismatch',
    );
    expect(await reasonOf(decryptSecret(kr, env, { ...row1, table: 'cannes_vps' }))).toBe(
      'EnvelopeBindingMismatch',
    );
  });

  it('rejects truncated, empty and garbage envelopes as EnvelopeMalformed without crashing', async () => {
    const kr = await testKeyring();
    const env = await encryptSecret(kr, Secret.of(canary), row1);
    const parts = env.split('.');
    const cases = [
      '',
      env.slice(0, env.length - 5),
      env.slice(0, env.lastIndexOf('.')),
      parts.slice(0, 3).join('.'),
      [parts[0], '', parts[2], '', parts[4]].join('.'), // empty ciphertext
      [parts[0], 'AAAA', parts[2], parts[3], parts[4]].join('.'), // a key part where dir has none
      [parts[0], '', parts[2], `${parts[3]}!`, parts[4]].join('.'),
      'not an envelope',
      `${env}.extra`,
    ];
    for (const c of cases) expect(await reasonOf(decryptSecret(kr, c, row1))).toBe('EnvelopeMalformed');
  });

  it('names an unknown kid (not the key) as EnvelopeUnknownKey', async () => {
    const writer = await testKeyring(['retired-2025']);
    const reader = await testKeyring(['current']);
    const env = await encryptSecret(writer, Secret.of(canary), row1);
    const err = await decryptSecret(reader, env, row1).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EnvelopeError);
    expect((err as EnvelopeError).reason).toBe('EnvelopeUnknownKey');
    expect((err as EnvelopeError).message).toContain('retired-2025');
  });

  it('rejects other algorithms and compression as EnvelopeUnsupported', async () => {
    const raw = parseKeyringText(keyringText(['k1']), 'test');
    const keyBytes = new Uint8Array(raw[0]!.bytes);
    const kr = await Keyring.fromRaw(raw);
    for (const header of [
      { alg: 'dir', enc: 'A128GCM', kid: 'k1', v: 1, tbl: row1.table, col: row1.column, rid: row1.rowId },
      { alg: 'dir', enc: 'A256GCM', kid: 'k1', v: 2, tbl: row1.table, col: row1.column, rid: row1.rowId },
      {
        alg: 'dir',
        enc: 'A256GCM',
        kid: 'k1',
        v: 1,
        zip: 'DEF',
        tbl: row1.table,
        col: row1.column,
        rid: row1.rowId,
      },
    ]) {
      const key = header.enc === 'A128GCM' ? keyBytes.subarray(0, 16) : keyBytes;
      const env = await new CompactEncrypt(new TextEncoder().encode(canary))
        .setProtectedHeader(header)
        .encrypt(key);
      expect(await reasonOf(decryptSecret(kr, env, row1))).toBe('EnvelopeUnsupported');
    }
  });

  it('returns EnvelopeNotUtf8 for an authentic value that is not UTF-8 text', async () => {
    const kr = await testKeyring();
    const env = await encryptBytes(kr, new Uint8Array([0xff, 0xfe, 0xc3, 0x28]), row1);
    expect(await decryptBytes(kr, env, row1)).toEqual(new Uint8Array([0xff, 0xfe, 0xc3, 0x28]));
    expect(await reasonOf(decryptSecret(kr, env, row1))).toBe('EnvelopeNotUtf8');
  });

  it('refuses to encrypt an empty value', async () => {
    const kr = await testKeyring();
    expect(await reasonOf(encryptSecret(kr, Secret.of(''), row1))).toBe('EnvelopeEmptyPlaintext');
  });

  it('decrypts with any key of the ring and encrypts with the first', async () => {
    const text = keyringText(['old']);
    const oldRing = await Keyring.fromRaw(parseKeyringText(text, 'test'));
    const env = await encryptSecret(oldRing, Secret.of(canary), row1);
    const rotated = await Keyring.fromRaw(parseKeyringText(`${keyringText(['new'])}\n${text}`, 'test'));
    expect((await decryptSecret(rotated, env, row1)).reveal()).toBe(canary);
    const fresh = await encryptSecret(rotated, Secret.of(canary), row1);
    expect(JSON.parse(Buffer.from(fresh.split('.')[0]!, 'base64url').toString()).kid).toBe('new');
  });
});
