import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { TerminalError } from '../../../common/errors.ts';
import { loadKeyringFile, parseKeyring, parseKeyringSecretData } from '../../../operator/store/keyring.ts';

const b64 = (n: number): string => randomBytes(n).toString('base64');

async function failure(p: Promise<unknown>): Promise<TerminalError> {
  const err = await p.catch((e: unknown) => e);
  expect(err).toBeInstanceOf(TerminalError);
  return err as TerminalError;
}

describe('master keyring', () => {
  it('parses kid/base64 lines with comments and blank lines; the first key encrypts', async () => {
    const text = `# rotated 2026-11\n\nk-new ${b64(32)}\n  # old one\nk-old ${b64(32)}\n`;
    const kr = await parseKeyring(text, 'keys.txt');
    expect(kr.activeKid).toBe('k-new');
    expect(kr.kids).toEqual(['k-new', 'k-old']);
    expect(kr.has('k-old')).toBe(true);
  });

  it('accepts unpadded base64url keys too', async () => {
    const kr = await parseKeyring(`k1 ${randomBytes(32).toString('base64url')}`, 'keys.txt');
    expect(kr.kids).toEqual(['k1']);
  });

  it.each([
    ['an empty ring', '# nothing here\n\n', 'KeyringEmpty', /no keys/],
    [
      'a short key',
      `k1 ${b64(32)}\nk2 ${b64(16)}`,
      'KeyringBadKeyLength',
      /line 2: key k2 decodes to 16 bytes/,
    ],
    ['a long key', `k1 ${b64(33)}`, 'KeyringBadKeyLength', /line 1: key k1 decodes to 33 bytes/],
    ['bad base64', `k1 ${b64(32).slice(0, -2)}!!`, 'KeyringBadBase64', /line 1: key k1 is not valid base64/],
    [
      'a duplicate kid',
      `k1 ${b64(32)}\n\nk1 ${b64(32)}`,
      'KeyringDuplicateKid',
      /line 3: key id k1 already defined on line 1/,
    ],
    ['a line with three fields', `k1 ${b64(32)} extra`, 'KeyringBadLine', /line 1: expected/],
    ['a line with only a key', b64(32), 'KeyringBadLine', /line 1: expected/],
    ['a bad kid', `k/1 ${b64(32)}`, 'KeyringBadKid', /line 1: key id must match/],
  ])('refuses %s, naming the problem but never the key', async (_name, text, reason, message) => {
    const err = await failure(parseKeyring(text, 'keys.txt'));
    expect(err.reason).toBe(reason);
    expect(err.message).toMatch(message);
    for (const token of text.split(/\s+/)) {
      if (token.length >= 20) expect(err.message).not.toContain(token);
    }
  });

  it('never prints key material through inspect or JSON', async () => {
    const key = b64(32);
    const kr = await parseKeyring(`k1 ${key}`, 'keys.txt');
    expect(inspect(kr, { depth: 10, showHidden: true })).not.toContain(key);
    expect(JSON.stringify(kr)).not.toContain(key);
    expect(String(kr)).toBe('Keyring(active=k1, kids=k1)');
  });

  it('loads a key file and names an unreadable path', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cannes-keyring-'));
    try {
      const path = join(dir, 'keys');
      writeFileSync(path, `file-k ${b64(32)}\n`, { mode: 0o600 });
      expect((await loadKeyringFile(path)).activeKid).toBe('file-k');
      const err = await failure(loadKeyringFile(join(dir, 'missing')));
      expect(err.reason).toBe('KeyringUnreadable');
      expect(err.message).toContain('ENOENT');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a key file others may read or change, naming the mode and never a key', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cannes-keyring-'));
    try {
      const path = join(dir, 'keys');
      const key = b64(32);
      writeFileSync(path, `file-k ${key}\n`);
      for (const mode of [0o644, 0o604, 0o660]) {
        chmodSync(path, mode);
        const err = await failure(loadKeyringFile(path));
        expect(err.reason).toBe('KeyringFileMode');
        expect(err.message).toContain(mode.toString(8));
        expect(err.message).not.toContain(key);
      }
      // 0600, 0400 and a Secret volume's 0440 (read through fsGroup) are fine.
      for (const mode of [0o600, 0o400, 0o440]) {
        chmodSync(path, mode);
        expect((await loadKeyringFile(path)).activeKid).toBe('file-k');
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reads the keyring from a Kubernetes Secret data entry (bytes or string)', async () => {
    const text = `sec-a ${b64(32)}\nsec-b ${b64(32)}`;
    const fromBytes = await parseKeyringSecretData(
      { keys: new TextEncoder().encode(text) },
      { secretName: 'cannes/master-keys' },
    );
    expect(fromBytes.kids).toEqual(['sec-a', 'sec-b']);
    const fromString = await parseKeyringSecretData({ custom: text }, { key: 'custom' });
    expect(fromString.activeKid).toBe('sec-a');
  });

  it('names the Secret and the missing data key, and rejects non-UTF-8 data', async () => {
    const missing = await failure(
      parseKeyringSecretData({ other: 'x' }, { secretName: 'cannes/master-keys' }),
    );
    expect(missing.reason).toBe('KeyringEmpty');
    expect(missing.message).toContain('cannes/master-keys');
    expect(missing.message).toContain('other');
    const binary = await failure(parseKeyringSecretData({ keys: new Uint8Array([0xff, 0xfe]) }));
    expect(binary.reason).toBe('KeyringBadLine');
    const bad = await failure(parseKeyringSecretData({ keys: `k1 ${b64(31)}` }, { secretName: 'ns/s' }));
    expect(bad.message).toContain('Secret ns/s key keys line 1');
  });
});
