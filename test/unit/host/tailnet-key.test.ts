/**
 * The Tailscale repository key the operator ships is the one pinned by fingerprint: the v4
 * fingerprint is SHA-1 over 0x99, the two-byte length and the public-key packet's body
 * (RFC 4880 §12.2), computed here from the armored text without gpg.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { TAILSCALE_REPO_KEY_ASC, TAILSCALE_REPO_KEY_FINGERPRINT } from '../../../operator/host/tailnet.ts';

function dearmor(asc: string): Buffer {
  const lines = asc.trim().split('\n');
  expect(lines[0]).toBe('-----BEGIN PGP PUBLIC KEY BLOCK-----');
  expect(lines.at(-1)).toBe('-----END PGP PUBLIC KEY BLOCK-----');
  const blank = lines.indexOf('');
  const body = lines.slice(blank + 1, -1).filter((l) => !l.startsWith('='));
  return Buffer.from(body.join(''), 'base64');
}

/** The first packet's tag and body (old and new packet formats). */
function firstPacket(b: Buffer): { tag: number; body: Buffer } {
  const h = b[0] ?? 0;
  expect(h & 0x80).toBe(0x80);
  if (h & 0x40) {
    const l0 = b[1] ?? 0;
    if (l0 < 192) return { tag: h & 0x3f, body: b.subarray(2, 2 + l0) };
    if (l0 < 224) {
      const len = ((l0 - 192) << 8) + (b[2] ?? 0) + 192;
      return { tag: h & 0x3f, body: b.subarray(3, 3 + len) };
    }
    const len = b.readUInt32BE(2);
    return { tag: h & 0x3f, body: b.subarray(6, 6 + len) };
  }
  const lenType = h & 0x03;
  const n = [1, 2, 4][lenType] ?? 0;
  const len = n === 1 ? (b[1] ?? 0) : n === 2 ? b.readUInt16BE(1) : b.readUInt32BE(1);
  return { tag: (h >> 2) & 0x0f, body: b.subarray(1 + n, 1 + n + len) };
}

describe("Tailscale's repository key", () => {
  it('is shipped, armored, and has the pinned v4 fingerprint', () => {
    expect(TAILSCALE_REPO_KEY_ASC).not.toBe('');
    const { tag, body } = firstPacket(dearmor(TAILSCALE_REPO_KEY_ASC));
    expect(tag).toBe(6); // a public-key packet
    expect(body[0]).toBe(4); // version 4
    const head = Buffer.from([0x99, body.length >> 8, body.length & 0xff]);
    const fpr = createHash('sha1').update(head).update(body).digest('hex').toUpperCase();
    expect(fpr).toBe(TAILSCALE_REPO_KEY_FINGERPRINT);
  });

  it('fails the check when one byte of the key changes', () => {
    const bytes = dearmor(TAILSCALE_REPO_KEY_ASC);
    const { body } = firstPacket(bytes);
    const changed = Buffer.from(body);
    changed[20] = (changed[20] ?? 0) ^ 1;
    const head = Buffer.from([0x99, changed.length >> 8, changed.length & 0xff]);
    const fpr = createHash('sha1').update(head).update(changed).digest('hex').toUpperCase();
    expect(fpr).not.toBe(TAILSCALE_REPO_KEY_FINGERPRINT);
  });
});
