import { inspect } from 'node:util';

/**
 * The response side of promise 2 (issue 19 item 9): the container never receives the key
 * it cannot see in any form the upstream reflects. Real providers echo keys (OpenAI's 401
 * body names the key it refused; a Gemini passthrough once echoed `x-goog-api-key`), and an
 * upstream can put it in a redirect. So every response header value and every body byte, of
 * any status, is scanned for the route's key and the key is replaced.
 *
 * - What is looked for: the key's exact bytes, and its percent-encoded and JSON-escaped forms
 *   when they differ from it (never for the usual `[A-Za-z0-9_-]` keys, so those cost
 *   nothing). Base64 is not: it has three alignments and an upstream would have to encode the
 *   key on purpose, which no reflection bug does.
 * - Bodies: replaced by a marker of the same length (`[redacted]` padded with `*`), so a
 *   `content-length` stays true, nothing is re-framed and a sized body still goes out in one
 *   write. Headers: replaced by `[redacted]`; a header whose name holds the key is dropped.
 * - Streams: a key split over two chunks is caught by holding back only the bytes at a
 *   chunk's end that could begin the key (a suffix that is a prefix of it). An SSE event ends
 *   with `\n`, which no key contains, so normally nothing is held and nothing is delayed. The
 *   held bytes go out with the next chunk or at the end of the body.
 * - Cost: with no key in sight, one native `indexOf` per needle per chunk and a look at the
 *   chunk's last byte; no allocation. The tail check is KMP over at most key-length bytes, so
 *   the whole scan is O(n) whatever the upstream sends.
 */
export const MARKER = '[redacted]';

/** A replacement of exactly `length` bytes: `[redacted]` padded with `*`, or `*`s if shorter. */
export function markerOf(length: number): Buffer {
  const text = length >= MARKER.length ? MARKER + '*'.repeat(length - MARKER.length) : '*'.repeat(length);
  return Buffer.from(text, 'latin1');
}

/** Where a response keeps the bytes held back at a chunk's end (the exchange). */
export interface ScrubState {
  carry: Buffer | null;
}

/** The forms of a key that are looked for: the key, and its encodings that differ from it. */
export function keyForms(key: string): string[] {
  const forms = new Set<string>([key]);
  forms.add(encodeURIComponent(key));
  const json = JSON.stringify(key).slice(1, -1);
  forms.add(json);
  if (json.includes('/')) forms.add(json.replaceAll('/', '\\/'));
  return [...forms].filter((f) => f.length > 0);
}

/** One route's scrubber, built once per key file load; the per-response state is `ScrubState`. */
export class KeyScrubber {
  readonly #strings: readonly string[];
  /** The same, lower-cased: header names arrive lower-cased. */
  readonly #lower: readonly string[];
  readonly #needles: readonly Buffer[];
  readonly #markers: readonly Buffer[];
  readonly #first: readonly number[];
  /** KMP failure function of each needle. */
  readonly #fail: readonly Int32Array[];
  /** Bytes that occur in some needle: a chunk ending in any other byte holds nothing back. */
  readonly #inNeedle = new Uint8Array(256);

  constructor(key: string) {
    this.#strings = keyForms(key);
    this.#lower = this.#strings.map((f) => f.toLowerCase());
    this.#needles = this.#strings.map((s) => Buffer.from(s, 'latin1'));
    this.#markers = this.#needles.map((n) => markerOf(n.length));
    this.#first = this.#needles.map((n) => n[0]!);
    this.#fail = this.#needles.map(failure);
    for (const n of this.#needles) for (const b of n) this.#inNeedle[b] = 1;
  }

  /** A header value with every form of the key replaced by `[redacted]`. */
  header(value: string): string {
    let out = value;
    for (const s of this.#strings) if (out.includes(s)) out = out.replaceAll(s, MARKER);
    return out;
  }

  /** True when a header name holds the key (the header is then dropped). */
  inName(name: string): boolean {
    for (const s of this.#lower) if (name.includes(s)) return true;
    return false;
  }

  /**
   * The bytes of `chunk` that can go to the client now, every key replaced. Bytes that could
   * begin a key are kept in `state.carry` until the next chunk, unless `final`. Returns
   * `chunk` itself (no copy) when it holds no key and ends in nothing that could begin one.
   */
  push(state: ScrubState, chunk: Buffer, final: boolean): Buffer {
    let buf = chunk;
    let owned = false;
    if (state.carry !== null) {
      buf = Buffer.concat([state.carry, chunk]);
      state.carry = null;
      owned = true;
    }
    const needles = this.#needles;
    let from = 0;
    for (;;) {
      let at = -1;
      let which = -1;
      for (let i = 0; i < needles.length; i++) {
        const j = buf.indexOf(needles[i]!, from);
        if (j !== -1 && (at === -1 || j < at)) {
          at = j;
          which = i;
        }
      }
      if (at === -1) break;
      // Never write into undici's buffer: copy once, then replace in place (same length).
      if (!owned) {
        buf = Buffer.from(buf);
        owned = true;
      }
      this.#markers[which]!.copy(buf, at);
      from = at + needles[which]!.length;
    }
    if (final || buf.length === 0) return buf;
    const hold = this.#tail(buf, from);
    if (hold === 0) return buf;
    state.carry = Buffer.from(buf.subarray(buf.length - hold));
    return buf.subarray(0, buf.length - hold);
  }

  /** The bytes still held back, at the end of the body. */
  end(state: ScrubState): Buffer | null {
    const c = state.carry;
    state.carry = null;
    return c;
  }

  /** Length of the longest suffix of `buf[from..]` that is a proper prefix of a needle. */
  #tail(buf: Buffer, from: number): number {
    const len = buf.length;
    if (this.#inNeedle[buf[len - 1]!] === 0) return 0;
    let best = 0;
    for (let i = 0; i < this.#needles.length; i++) {
      const needle = this.#needles[i]!;
      const m = needle.length;
      const p = buf.indexOf(this.#first[i]!, Math.max(from, len - (m - 1)));
      if (p === -1) continue;
      // KMP from the first byte that could begin the needle: the state at the end is the
      // longest suffix that is a prefix. At most m-1 bytes, so O(m) per chunk.
      const fail = this.#fail[i]!;
      let q = 0;
      for (let k = p; k < len; k++) {
        const c = buf[k]!;
        while (q > 0 && needle[q] !== c) q = fail[q - 1]!;
        if (needle[q] === c) q++;
        if (q === m) q = fail[q - 1]!;
      }
      if (q > best) best = q;
    }
    return best;
  }

  [inspect.custom](): string {
    return 'KeyScrubber([redacted])';
  }

  toJSON(): string {
    return 'KeyScrubber([redacted])';
  }
}

function failure(p: Buffer): Int32Array {
  const f = new Int32Array(p.length);
  let k = 0;
  for (let i = 1; i < p.length; i++) {
    while (k > 0 && p[i] !== p[k]) k = f[k - 1]!;
    if (p[i] === p[k]) k++;
    f[i] = k;
  }
  return f;
}
