import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ownerAuthorizedKeys, parseOwnerKey } from '../../../operator/host/owner-access.ts';

/** A fresh ed25519 public key as an OpenSSH line (made here: no key material in the repo). */
function ed25519Line(comment = 'owner@laptop'): string {
  const { publicKey } = generateKeyPairSync('ed25519');
  const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
  const str = (b: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, b.length]), b]);
  const blob = Buffer.concat([str(Buffer.from('ssh-ed25519')), str(raw)]).toString('base64');
  return `ssh-ed25519 ${blob}${comment ? ` ${comment}` : ''}`;
}

describe("the owner's SSH keys", () => {
  it('gives each key only a forward to the gateway port, nothing else', () => {
    const line = ed25519Line();
    const out = ownerAuthorizedKeys([line], 18789)
      .split('\n')
      .filter((l) => l && !l.startsWith('#'));
    expect(out).toEqual([`restrict,port-forwarding,permitopen="127.0.0.1:18789" ${line}`]);
  });

  it('writes a file that lets nobody in when there is no key', () => {
    expect(
      ownerAuthorizedKeys([], 18789)
        .split('\n')
        .filter((l) => l && !l.startsWith('#')),
    ).toEqual([]);
  });

  it.each([
    ['options smuggled in front', (l: string) => `command="/bin/sh",permitopen="*:*" ${l}`, /key type/],
    ['a second line', (l: string) => `${l}\n${l}`, /line break/],
    ['a blob that is not base64', (l: string) => l.replace(/ [A-Za-z0-9+/=]+ /, ' not-base64! '), /base64/],
    ['a blob of another type', (l: string) => l.replace('ssh-ed25519', 'ssh-rsa'), /own type/],
    ['a cut blob', (l: string) => l.replace(/ ([A-Za-z0-9+/]{8})[A-Za-z0-9+/=]+ /, ' $1 '), /own type|short/],
    ['a comment with control characters', (l: string) => `${l}\u0007`, /printable/],
  ])('refuses %s, naming the entry', (_what, mangle, why) => {
    const bad = mangle(ed25519Line());
    let err: unknown;
    try {
      parseOwnerKey(bad, 3);
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ reason: 'InvalidSshPublicKey', terminal: true });
    expect(String((err as Error).message)).toMatch(/spec\.access\.sshAuthorizedKeys\[3\]/);
    expect(String((err as Error).message)).toMatch(why);
  });
});
