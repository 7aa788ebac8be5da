/**
 * `cannes-operator key set|delete` against a real key intake on loopback, behind a stand-in for
 * `tailscale serve` that adds the peer's X-Forwarded-For as Serve does (the e2e goes through the
 * real Serve from the laptop namespace).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { keyCommand } from '../../operator/cli/key.ts';
import { KeyIntake } from '../../proxy/intake.ts';
import { createLogger } from '../../proxy/log.ts';

const dir = mkdtempSync(join(tmpdir(), 'cannes-cli-key-'));
const keysPath = join(dir, 'keys.json');
const directPath = join(dir, 'keys.direct.json');
let peer = '100.64.0.10';
let intake: Server;
let serve: Server;
let url = '';
const canary = () => `sk-cli-canary-${randomBytes(12).toString('hex')}`;

beforeAll(async () => {
  process.env['KUBECONFIG'] = join(dir, 'no-kubeconfig');
  const k = new KeyIntake({
    keysPath,
    directPath,
    ownersOf: () => ['alice@example.com'],
    whois: async (ip) =>
      ({
        '100.64.0.10': { loginName: 'alice@example.com', tags: [] },
        '100.64.0.11': { loginName: 'mallory@example.com', tags: [] },
      })[ip],
    uid: process.getuid?.() ?? 0,
    logger: createLogger({ level: 'silent' }),
  });
  intake = await k.listen('127.0.0.1', 0);
  const intakePort = (intake.address() as AddressInfo).port;
  serve = createServer((req, res) => {
    const up = request(
      {
        host: '127.0.0.1',
        port: intakePort,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, 'x-forwarded-for': peer },
      },
      (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      },
    );
    req.pipe(up);
  });
  await new Promise<void>((r) => serve.listen(0, '127.0.0.1', () => r()));
  url = `http://127.0.0.1:${(serve.address() as AddressInfo).port}/`;
});
afterAll(() => {
  intake?.close();
  serve?.close();
  rmSync(dir, { recursive: true, force: true });
});
beforeEach(() => {
  peer = '100.64.0.10';
  writeFileSync(
    keysPath,
    JSON.stringify({ version: 1, keys: { mine: { provider: 'anthropic', delivery: 'direct' } } }),
    {
      mode: 0o600,
    },
  );
  rmSync(directPath, { force: true });
});

async function run(args: string[], stdin = '') {
  const out = new PassThrough();
  const err = new PassThrough();
  let o = '';
  let e = '';
  out.on('data', (c) => (o += c));
  err.on('data', (c) => (e += c));
  const code = await keyCommand(args, { stdin: Readable.from([Buffer.from(stdin)]), out, err });
  return { code, out: o, err: e };
}

describe('cannes-operator key', () => {
  it('sets a key from stdin (final newline dropped), replaces it, deletes it', async () => {
    const key = canary();
    const r = await run(['set', 'ns/mine', '--from-stdin', '--gateway-url', url], `${key}\n`);
    expect(r.code, r.err + r.out).toBe(0);
    expect(r.out).toContain('the server holds a key for ns/mine');
    // No API server here: the annotation is skipped with a note, the key is on the server.
    expect(r.out).toContain('could not annotate the ModelKey');
    expect(JSON.parse(readFileSync(directPath, 'utf8')).keys.mine.apiKey).toBe(key);
    const second = canary();
    expect((await run(['set', 'ns/mine', '--from-stdin', '--gateway-url', url], second)).code).toBe(0);
    expect(JSON.parse(readFileSync(directPath, 'utf8')).keys.mine.apiKey).toBe(second);
    const d = await run(['delete', 'ns/mine', '--gateway-url', url]);
    expect(d.out).toContain('holds no key');
    expect(JSON.parse(readFileSync(directPath, 'utf8')).keys).toEqual({});
    expect(r.out + r.err + d.out + d.err).not.toContain(key);
  });

  it('says why the server refused, and never prints the key', async () => {
    const key = canary();
    peer = '100.64.0.11';
    const r = await run(['set', 'ns/mine', '--from-stdin', '--gateway-url', url], key);
    expect(r.code).toBe(1);
    expect(r.out).toContain('refused (403 NotAnOwner): mallory@example.com is not in spec.tailnet.owners');
    peer = '100.64.0.10';
    const u = await run(['set', 'ns/other', '--from-stdin', '--gateway-url', url], key);
    expect(u.out).toContain('404 UnknownRoute');
    for (const x of [r, u]) expect(x.out + x.err).not.toContain(key);
  });

  it('refuses a malformed key, a key on the command line, a bad name, before any request', async () => {
    const key = canary();
    const m = await run(['set', 'ns/mine', '--from-stdin', '--gateway-url', url], `${key} two words`);
    expect(m.code).toBe(2);
    expect(m.err).toContain('must be one line of 1 to 4096 visible ASCII characters');
    expect(m.err).not.toContain(key);
    expect((await run(['set', 'ns/mine', '--gateway-url', url])).err).toContain('--from-stdin');
    expect((await run(['set', 'mine', '--from-stdin', '--gateway-url', url], key)).err).toContain(
      '<namespace>/<name>',
    );
    expect(() => readFileSync(directPath)).toThrow();
  });
});
