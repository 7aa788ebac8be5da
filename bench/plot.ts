/**
 * The operator benchmark's memory curve as a PNG, with no dependency: an RGB canvas, a 3x5
 * pixel font for the labels, and a PNG encoder on node:zlib (IHDR, one IDAT, IEND).
 */
import { deflateSync } from 'node:zlib';

export interface CurvePoint {
  readonly vps: number;
  readonly rss: { readonly peak: number; readonly afterIdle: number };
}

/** Least-squares slope of idle RSS against N (MiB per Vps); null below two sizes. */
export function idleSlope(points: readonly CurvePoint[]): number | null {
  if (points.length < 2) return null;
  const n = points.length;
  const mx = points.reduce((a, p) => a + p.vps, 0) / n;
  const my = points.reduce((a, p) => a + p.rss.afterIdle, 0) / n;
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += (p.vps - mx) * (p.rss.afterIdle - my);
    den += (p.vps - mx) ** 2;
  }
  return den === 0 ? null : Math.round((num / den) * 1000) / 1000;
}

type Rgb = readonly [number, number, number];

class Canvas {
  readonly w: number;
  readonly h: number;
  readonly px: Uint8Array;
  constructor(w: number, h: number) {
    this.w = w;
    this.h = h;
    this.px = new Uint8Array(w * h * 3).fill(255);
  }
  set(x: number, y: number, c: Rgb): void {
    if (x < 0 || y < 0 || x >= this.w || y >= this.h) return;
    const i = (Math.round(y) * this.w + Math.round(x)) * 3;
    this.px[i] = c[0];
    this.px[i + 1] = c[1];
    this.px[i + 2] = c[2];
  }
  line(x0: number, y0: number, x1: number, y1: number, c: Rgb, width = 1): void {
    const steps = Math.max(Math.abs(x1 - x0), Math.abs(y1 - y0), 1);
    for (let i = 0; i <= steps; i++) {
      const x = x0 + ((x1 - x0) * i) / steps;
      const y = y0 + ((y1 - y0) * i) / steps;
      for (let d = 0; d < width; d++) {
        this.set(x, y + d, c);
        this.set(x + d, y, c);
      }
    }
  }
  dot(x: number, y: number, c: Rgb): void {
    for (let dx = -3; dx <= 3; dx++) for (let dy = -3; dy <= 3; dy++) this.set(x + dx, y + dy, c);
  }
  text(x: number, y: number, s: string, c: Rgb, scale = 2): void {
    let cx = x;
    for (const ch of s.toUpperCase()) {
      const g = FONT[ch] ?? FONT[' '];
      for (let row = 0; row < 5; row++)
        for (let col = 0; col < 3; col++)
          if ((g?.[row] ?? 0) & (4 >> col))
            for (let a = 0; a < scale; a++)
              for (let b = 0; b < scale; b++) this.set(cx + col * scale + a, y + row * scale + b, c);
      cx += 4 * scale;
    }
  }
  png(): Buffer {
    const raw = Buffer.alloc((this.w * 3 + 1) * this.h);
    for (let y = 0; y < this.h; y++) {
      raw[y * (this.w * 3 + 1)] = 0;
      Buffer.from(this.px.buffer, y * this.w * 3, this.w * 3).copy(raw, y * (this.w * 3 + 1) + 1);
    }
    const ihdr = Buffer.alloc(13);
    ihdr.writeUInt32BE(this.w, 0);
    ihdr.writeUInt32BE(this.h, 4);
    ihdr[8] = 8; // bit depth
    ihdr[9] = 2; // RGB
    return Buffer.concat([
      Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
      chunk('IHDR', ihdr),
      chunk('IDAT', deflateSync(raw)),
      chunk('IEND', Buffer.alloc(0)),
    ]);
  }
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(b: Buffer): number {
  let c = 0xffffffff;
  for (const x of b) c = (CRC_TABLE[(c ^ x) & 0xff] ?? 0) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function chunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}

/** 3x5 glyphs, one row per number (bit 4 = left column). */
const FONT: Record<string, readonly number[]> = {
  ' ': [0, 0, 0, 0, 0],
  '0': [7, 5, 5, 5, 7],
  '1': [2, 6, 2, 2, 7],
  '2': [7, 1, 7, 4, 7],
  '3': [7, 1, 3, 1, 7],
  '4': [5, 5, 7, 1, 1],
  '5': [7, 4, 7, 1, 7],
  '6': [7, 4, 7, 5, 7],
  '7': [7, 1, 1, 2, 2],
  '8': [7, 5, 7, 5, 7],
  '9': [7, 5, 7, 1, 7],
  '.': [0, 0, 0, 0, 2],
  '-': [0, 0, 7, 0, 0],
  '/': [1, 1, 2, 4, 4],
  ':': [0, 2, 0, 2, 0],
  A: [2, 5, 7, 5, 5],
  B: [6, 5, 6, 5, 6],
  C: [7, 4, 4, 4, 7],
  D: [6, 5, 5, 5, 6],
  E: [7, 4, 6, 4, 7],
  I: [7, 2, 2, 2, 7],
  K: [5, 5, 6, 5, 5],
  L: [4, 4, 4, 4, 7],
  M: [5, 7, 7, 5, 5],
  N: [5, 7, 7, 7, 5],
  O: [7, 5, 5, 5, 7],
  P: [6, 5, 6, 4, 4],
  R: [6, 5, 6, 5, 5],
  S: [7, 4, 7, 1, 7],
  T: [7, 2, 2, 2, 2],
  V: [5, 5, 5, 5, 2],
  Y: [5, 5, 2, 2, 2],
};

const BLACK: Rgb = [0, 0, 0];
const GREY: Rgb = [210, 210, 210];
const PEAK: Rgb = [200, 40, 40];
const IDLE: Rgb = [30, 90, 200];

/** Operator RSS (peak and idle) against the number of Vps. */
export function memoryPlot(points: readonly CurvePoint[]): Buffer {
  const W = 640;
  const H = 400;
  const L = 70;
  const R = 20;
  const T = 40;
  const B = 50;
  const c = new Canvas(W, H);
  const maxX = Math.max(...points.map((p) => p.vps), 1);
  const maxY = niceCeil(Math.max(...points.map((p) => Math.max(p.rss.peak, p.rss.afterIdle)), 1));
  const sx = (x: number) => L + (x / maxX) * (W - L - R);
  const sy = (y: number) => H - B - (y / maxY) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const y = (maxY * i) / 4;
    c.line(L, sy(y), W - R, sy(y), GREY);
    c.text(8, sy(y) - 5, String(Math.round(y)), BLACK);
  }
  for (const p of points) c.text(sx(p.vps) - 8, H - B + 10, String(p.vps), BLACK);
  c.line(L, T, L, H - B, BLACK, 2);
  c.line(L, H - B, W - R, H - B, BLACK, 2);
  c.text(L, 10, 'RSS MIB: PEAK', PEAK);
  c.text(L + 130, 10, 'IDLE', IDLE);
  c.text(W - R - 100, H - 18, 'N VPS', BLACK);
  const sorted = [...points].sort((a, b) => a.vps - b.vps);
  for (const [key, colour] of [
    ['peak', PEAK],
    ['afterIdle', IDLE],
  ] as const) {
    let prev: [number, number] | undefined;
    for (const p of sorted) {
      const xy: [number, number] = [sx(p.vps), sy(p.rss[key])];
      if (prev) c.line(prev[0], prev[1], xy[0], xy[1], colour, 2);
      c.dot(xy[0], xy[1], colour);
      prev = xy;
    }
  }
  return c.png();
}

function niceCeil(v: number): number {
  const step = 10 ** Math.floor(Math.log10(v));
  return Math.ceil(v / step) * step;
}
