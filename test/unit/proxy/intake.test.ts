/**
 * The key intake on real loopback HTTP and real files (the whois answer is tailscaled's part;
 * the e2e asks the real one). Every refusal is checked to leave a valid Direct key file as it was
 * and never to echo the key.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { KeyIntake, type PeerIdentity } from '../../../proxy/intake.ts';
import { parseWhois } from '../../../proxy/intake-main.ts';
import { readKeyFile } from '../../../proxy/keys.ts';
import { createLogger } from '../../../proxy/log.ts';

const canary = () => `sk-direct-canary-${randomBytes(12).toString('hex')}`;
const dir = mkdtempSync(join(tmpdir(), 'cannes-intake-'));
const keysPath = join(dir, 'model-keys.json');
const directPath = join(dir, 'model-keys.direct.json');
const uid = process.getuid?.() ?? 0;
const peers: Record<string, PeerIdentity> = {
  '100.64.0.10': { loginName: 'alice@example.com', tags: [] },
  '100.64.0.11': { loginName: 'mallory@example.com', tags: [] },
  '100.64.0.12': { loginName: undefined, tags: ['tag:laptops'] },
};
const logged: string[] = [];
let now = 0;
const intake = new KeyIntake({
  keysPath,
  directPath,
  ownersOf: () => ['alice@example.com', 'tag:laptops'],
  whois: async (ip) => peers[ip],
  uid,
  logger: createLogger({ level: 'debug', write: (line: string) => logged.push(line) }),
  perMinute: 20,
  now: () => now,
});
let server: Server;
let port = 0;

afterAll(() => {
  server?.close();
  rmSync(dir, { recursive: true, force: true });
});

beforeEach(async () => {
  now += 120_000; // a fresh rate-limit window per test
  server ??= await intake.listen('127.0.0.1', 0);
  port = (server.address() as AddressInfo).port;
  writeFileSync(
    keysPath,
    JSON.stringify({
      version: 1,
      keys: {
        mine: { provider: 'anthropic', delivery: 'direct' },
        other: { provider: 'openai', apiKey: 'sk-fake-op' },
      },
    }),
    { mode: 0o600 },
  );
  rmSync(directPath, { force: true });
});

function call(
  method: string,
  path: string,
  o: { peer?: string; body?: string | Buffer; type?: string; header?: boolean } = {},
): Promise<{ status: number; text: string; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {};
    if (o.peer) headers['x-forwarded-for'] = o.peer;
    if (o.type) headers['content-type'] = o.type;
    if (o.header !== false) headers['cannes-intake'] = '1';
    const req = request({ host: '127.0.0.1', port, method, path, headers }, (res) => {
      let text = '';
      res.on('data', (c) => (text += c));
      res.on('end', () => {
        let json: Record<string, unknown> = {};
        try {
          json = JSON.parse(text);
        } catch {}
        resolve({ status: res.statusCode ?? 0, text, json });
      });
    });
    req.on('error', reject);
    req.end(o.body);
  });
}

const put = (
  key: string | Buffer,
  o: { peer?: string; type?: string; header?: boolean; route?: string } = {},
) =>
  call('PUT', `/cannes-keys/keys/${o.route ?? 'mine'}`, {
    peer: '100.64.0.10',
    type: 'text/plain',
    ...o,
    body: key,
  });

describe('key intake', () => {
  it('takes a key from an owner for a declared Direct route: file mode 600, proxy serves it, answer is a boolean', async () => {
    const key = canary();
    const r = await put(key);
    expect(r.status, r.text).toBe(200);
    expect(r.json).toEqual({ route: 'mine', hasKey: true });
    expect(statSync(directPath).mode & 0o777).toBe(0o600);
    const routes = readKeyFile(keysPath, { uid, directPath }).routes;
    expect(routes.get('mine')?.toWire().apiKey).toBe(key);
    const st = await call('GET', '/cannes-keys/keys', { peer: '100.64.0.12' });
    expect(st.json).toEqual({ routes: { mine: true } });
    expect(logged.join('')).not.toContain(key);
  });

  it('replaces and deletes a key', async () => {
    await put(canary());
    const second = canary();
    expect((await put(second)).status).toBe(200);
    expect(readKeyFile(keysPath, { uid, directPath }).routes.get('mine')?.toWire().apiKey).toBe(second);
    const del = await call('DELETE', '/cannes-keys/keys/mine', { peer: '100.64.0.10' });
    expect(del.json).toEqual({ route: 'mine', hasKey: false });
    expect(readKeyFile(keysPath, { uid, directPath }).routes.has('mine')).toBe(false);
  });

  it('a tag owner may set a key; a peer that is not an owner, or has no identity, is refused', async () => {
    expect((await put(canary(), { peer: '100.64.0.12' })).status).toBe(200);
    const no = await put(canary(), { peer: '100.64.0.11' });
    expect(no.status).toBe(403);
    expect(no.json['error']).toBe('NotAnOwner');
    expect(no.json['message']).toContain('mallory@example.com is not in spec.tailnet.owners');
    for (const peer of [undefined, '198.18.0.5', '100.64.0.99', '100.64.0.10, 8.8.8.8']) {
      const r = await put(canary(), peer === undefined ? { peer: '' } : { peer });
      expect(r.status, String(peer)).toBe(403);
      expect(r.json['error']).toBe('NoTailnetIdentity');
    }
    // A forged first hop does not help: the last hop (what Serve appends) decides.
    expect((await put(canary(), { peer: '100.64.0.10, 100.64.0.11' })).json['error']).toBe('NotAnOwner');
  });

  it('refuses bad input with a clear error, never echoes the key, never damages a valid file', async () => {
    const good = canary();
    await put(good);
    const before = readFileSync(directPath);
    const bad = canary();
    const cases: [
      Promise<{ status: number; text: string; json: Record<string, unknown> }>,
      number,
      string,
    ][] = [
      [put(bad, { route: 'nope' }), 404, 'UnknownRoute'],
      [put(bad, { route: 'other' }), 404, 'UnknownRoute'],
      [put(`${bad} with spaces`), 400, 'KeyMalformed'],
      [put(`${bad}\n`), 400, 'KeyMalformed'],
      [put(''), 400, 'KeyMalformed'],
      [put(Buffer.alloc(9000, 0x41)), 413, 'BodyTooLarge'],
      [put(bad, { type: 'application/json' }), 415, 'WrongContentType'],
      [put(bad, { type: 'application/x-www-form-urlencoded' }), 415, 'WrongContentType'],
      [put(bad, { header: false }), 403, 'MissingIntakeHeader'],
      [put(bad, { route: 'Bad..Name' }), 400, 'BadRouteName'],
    ];
    for (const [p, status, error] of cases) {
      const r = await p;
      expect([r.status, r.json['error']]).toEqual([status, error]);
      expect(typeof r.json['message']).toBe('string');
      expect(r.text).not.toContain(bad);
    }
    expect(readFileSync(directPath).equals(before)).toBe(true);
    expect(readKeyFile(keysPath, { uid, directPath }).routes.get('mine')?.toWire().apiKey).toBe(good);
    expect(logged.join('')).not.toContain(bad);
  });

  it('rate-limits each peer', async () => {
    const codes: number[] = [];
    for (let i = 0; i < 25; i++)
      codes.push((await call('GET', '/cannes-keys/keys', { peer: '100.64.0.10' })).status);
    expect(codes.slice(0, 20).every((c) => c === 200)).toBe(true);
    expect(codes.slice(20).every((c) => c === 429)).toBe(true);
  });

  it('drops keys of routes no longer declared with the next write', async () => {
    await put(canary());
    writeFileSync(
      keysPath,
      JSON.stringify({ version: 1, keys: { two: { provider: 'openai', delivery: 'direct' } } }),
      { mode: 0o600 },
    );
    await put(canary(), { route: 'two' });
    expect(Object.keys(JSON.parse(readFileSync(directPath, 'utf8')).keys)).toEqual(['two']);
  });

  it('serves the page to anyone on the tailnet (it holds nothing)', async () => {
    const r = await call('GET', '/cannes-keys/');
    expect(r.status).toBe(200);
    expect(r.text).toContain('<form id="set">');
  });

  it("reads tailscaled's whois: tags for a tagged node, the login otherwise", () => {
    expect(parseWhois({ Node: { Tags: ['tag:a'] }, UserProfile: { LoginName: 'tagged-devices' } })).toEqual({
      tags: ['tag:a'],
      loginName: undefined,
    });
    expect(parseWhois({ Node: {}, UserProfile: { LoginName: 'alice@example.com' } })).toEqual({
      tags: [],
      loginName: 'alice@example.com',
    });
    expect(parseWhois({})).toBeUndefined();
  });
});

describe('direct-status, the root-only helper the operator runs over SSH', () => {
  it('prints one line of booleans per declared Direct route, never a key; --prune 1 drops keys of removed routes', async () => {
    const { execFileSync } = await import('node:child_process');
    const key = canary();
    const stale = canary();
    writeFileSync(
      directPath,
      JSON.stringify({ version: 1, keys: { mine: { apiKey: key }, gone: { apiKey: stale } } }),
      {
        mode: 0o600,
      },
    );
    const main = new URL('../../../proxy/main.ts', import.meta.url).pathname;
    const run = (...extra: string[]) =>
      execFileSync(
        process.execPath,
        [main, 'direct-status', '--keys', keysPath, '--direct-keys', directPath, ...extra],
        {
          encoding: 'utf8',
        },
      );
    const out = run();
    expect(out).toBe('{"mine":true}\n');
    expect(readFileSync(directPath, 'utf8')).toContain(stale);
    expect(run('--prune', '1')).toBe('{"mine":true}\n');
    const after = readFileSync(directPath, 'utf8');
    expect(after).not.toContain(stale);
    expect(after).toContain(key);
    expect(statSync(directPath).mode & 0o777).toBe(0o600);
    expect(out).not.toContain(key);
  });
});
