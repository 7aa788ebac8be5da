import { randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { KeyScrubber, keyForms, MARKER, markerOf, type ScrubState } from '../../../proxy/scrub.ts';

const key = `sk-ant-api03-${randomBytes(24).toString('hex')}`;

/** Feeds `pieces` through a scrubber as one response, returns what the client would get. */
function run(s: KeyScrubber, pieces: readonly Buffer[]): { out: Buffer; perChunk: Buffer[] } {
  const state: ScrubState = { carry: null };
  const perChunk = pieces.map((p) => Buffer.from(s.push(state, p, false)));
  const rest = s.end(state);
  const out = Buffer.concat([...perChunk, rest ?? Buffer.alloc(0)]);
  return { out, perChunk };
}

const expected = (text: string, k: string) => text.replaceAll(k, markerOf(k.length).toString('latin1'));

describe('KeyScrubber', () => {
  const s = new KeyScrubber(key);

  it('replaces the key with a marker of the same length', () => {
    const body = Buffer.from(`{"error":{"message":"Incorrect API key provided: ${key}."}}`);
    const { out } = run(s, [body]);
    expect(out.length).toBe(body.length);
    expect(out.toString()).not.toContain(key);
    expect(out.toString()).toContain(MARKER);
    expect(out.toString()).toBe(expected(body.toString(), key));
  });

  it('catches the key split across two chunks at every position, and holds back nothing else', () => {
    const text = `data: {"a":"before ${key} after"}\n\n`;
    const body = Buffer.from(text);
    for (let cut = 0; cut <= body.length; cut++) {
      const { out } = run(s, [body.subarray(0, cut), body.subarray(cut)]);
      expect(out.toString(), `cut ${cut}`).toBe(expected(text, key));
    }
  });

  it('catches the key cut into three pieces at every pair of positions', () => {
    const text = `x${key}y${key}`;
    const body = Buffer.from(text);
    for (let a = 0; a <= body.length; a += 1) {
      for (let b = a; b <= body.length; b += 3) {
        const { out } = run(s, [body.subarray(0, a), body.subarray(a, b), body.subarray(b)]);
        expect(out.toString(), `${a},${b}`).toBe(expected(text, key));
      }
    }
  });

  it('catches the key sent one byte at a time', () => {
    const text = `data: ${key}\n\n`;
    const pieces = [...Buffer.from(text)].map((b) => Buffer.from([b]));
    expect(run(s, pieces).out.toString()).toBe(expected(text, key));
  });

  it('holds back only a suffix that could begin the key, and releases it when it does not', () => {
    const state: ScrubState = { carry: null };
    const first = Buffer.from(`data: {"t":"${key.slice(0, 7)}`);
    const out1 = s.push(state, first, false);
    expect(out1.toString()).toBe('data: {"t":"');
    expect(state.carry?.toString()).toBe(key.slice(0, 7));
    const out2 = s.push(state, Buffer.from('not the key"}\n\n'), false);
    expect(out2.toString()).toBe(`${key.slice(0, 7)}not the key"}\n\n`);
    expect(state.carry).toBeNull();
    // And at the end of a body, held bytes go out as they are.
    s.push(state, Buffer.from(`tail ${key.slice(0, 20)}`), false);
    expect(s.end(state)?.toString()).toBe(key.slice(0, 20));
  });

  it('returns the very chunk, without copying, when there is nothing to hide or hold', () => {
    const state: ScrubState = { carry: null };
    for (const text of ['data: {"choices":[{"delta":{"content":"sks"}}]}\n\n', '{"ok":true}', 'plain s!']) {
      const chunk = Buffer.from(text);
      expect(s.push(state, chunk, false)).toBe(chunk);
      expect(state.carry).toBeNull();
    }
  });

  it('never writes into the buffer it was given', () => {
    const chunk = Buffer.from(`a ${key} b`);
    const copy = Buffer.from(chunk);
    s.push({ carry: null }, chunk, false);
    expect(chunk.equals(copy)).toBe(true);
  });

  it('handles a self-overlapping key (KMP) split at every position', () => {
    const k = 'aaaabaaaab';
    const t = new KeyScrubber(k);
    const text = `aaaaaaabaaaabaaaaaaaaabaaaaabaaaab!aaa`;
    const body = Buffer.from(text);
    for (let cut = 0; cut <= body.length; cut++) {
      const { out } = run(t, [body.subarray(0, cut), body.subarray(cut)]);
      expect(out.toString(), `cut ${cut}`).toBe(expected(text, k));
    }
  });

  it('also finds the percent-encoded and JSON-escaped forms of an unusual key', () => {
    const odd = 'k3y+with/slash"quote=';
    expect(keyForms(odd)).toEqual([
      odd,
      encodeURIComponent(odd),
      'k3y+with/slash\\"quote=',
      'k3y+with\\/slash\\"quote=',
    ]);
    expect(keyForms(key)).toEqual([key]);
    const t = new KeyScrubber(odd);
    const text = `location: https://x/?k=${encodeURIComponent(odd)} json {"k":${JSON.stringify(odd)}} raw ${odd}`;
    const body = Buffer.from(text);
    for (let cut = 0; cut <= body.length; cut++) {
      const { out } = run(t, [body.subarray(0, cut), body.subarray(cut)]);
      const got = out.toString();
      expect(got.length, `cut ${cut}`).toBe(text.length);
      for (const f of keyForms(odd)) expect(got, `cut ${cut}`).not.toContain(f);
    }
    expect(t.header(`https://x/?k=${encodeURIComponent(odd)}`)).toBe(`https://x/?k=${MARKER}`);
  });

  it('scrubs header values and recognises a header name holding the key', () => {
    expect(s.header(`https://evil.example/cb?key=${key}&x=1`)).toBe(
      `https://evil.example/cb?key=${MARKER}&x=1`,
    );
    expect(s.header(`Bearer ${key}`)).toBe(`Bearer ${MARKER}`);
    expect(s.header('req_123')).toBe('req_123');
    expect(s.inName(`x-ratelimit-${key.toLowerCase()}`)).toBe(true);
    expect(s.inName('x-ratelimit-remaining')).toBe(false);
  });

  it('uses markers of exactly the key length, also for short keys', () => {
    expect(markerOf(10).toString()).toBe('[redacted]');
    expect(markerOf(14).toString()).toBe('[redacted]****');
    expect(markerOf(3).toString()).toBe('***');
    const t = new KeyScrubber('abc');
    expect(run(t, [Buffer.from('xxabcxxab'), Buffer.from('cx')]).out.toString()).toBe('xx***xx***x');
  });

  it('is O(n): a hostile 4 KiB key of one repeated byte against megabytes of it', () => {
    const k = 'a'.repeat(4095) + 'b';
    const t = new KeyScrubber(k);
    const chunk = Buffer.alloc(1024 * 1024, 'a');
    const state: ScrubState = { carry: null };
    const t0 = performance.now();
    let held = 0;
    for (let i = 0; i < 8; i++) held = t.push(state, chunk, false).length;
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(held).toBe(chunk.length);
    expect(state.carry?.length).toBe(4095);
  });

  it('never prints the key', () => {
    expect(inspect(s)).not.toContain(key);
    expect(JSON.stringify({ s })).not.toContain(key);
  });
});
