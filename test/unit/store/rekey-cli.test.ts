import { afterEach, describe, expect, it, vi } from 'vitest';
import { rekeyCommand } from '../../../operator/cli/rekey.ts';

describe('cannes-operator rekey (argument handling)', () => {
  afterEach(() => vi.restoreAllMocks());

  function capture(): { out: () => string; err: () => string } {
    let out = '';
    let err = '';
    vi.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => {
      out += String(c);
      return true;
    });
    vi.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => {
      err += String(c);
      return true;
    });
    return { out: () => out, err: () => err };
  }

  it('prints its help and exits 0', async () => {
    const io = capture();
    expect(await rekeyCommand(['--help'], {})).toBe(0);
    expect(io.out()).toMatch(/Usage: cannes-operator rekey/);
    expect(io.out()).toMatch(/remove the old key/);
  });

  it('exits 2 on an unknown option or a bad batch size', async () => {
    const io = capture();
    expect(await rekeyCommand(['--frobnicate'], {})).toBe(2);
    expect(await rekeyCommand(['--batch-size', '0'], {})).toBe(2);
    expect(io.err()).toMatch(/batch-size/);
  });

  it('refuses to start without a keyring, naming the variable', async () => {
    const io = capture();
    expect(
      await rekeyCommand([], { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/x', LOG_LEVEL: 'silent' }),
    ).toBe(2);
    expect(io.err()).toMatch(/KeyringMissing: CANNES_MASTER_KEYS_FILE/);
  });
});
