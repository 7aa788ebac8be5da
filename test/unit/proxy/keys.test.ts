import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { parseKeyFile, readKeyFile } from '../../../proxy/keys.ts';

const canary = () => `sk-canary-${randomBytes(12).toString('hex')}`;
const dir = mkdtempSync(join(tmpdir(), 'cannes-keys-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const uid = process.getuid?.() ?? 0;

function write(name: string, text: string, mode = 0o600): string {
  const p = join(dir, name);
  writeFileSync(p, text, { mode });
  chmodSync(p, mode);
  return p;
}

function caught(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    if (err instanceof Error) return err;
  }
  throw new Error('expected a throw');
}

describe('key file parsing', () => {
  it('builds routes with the provider default origin or the given baseUrl', () => {
    const key = canary();
    const routes = parseKeyFile(
      JSON.stringify({
        version: 1,
        keys: {
          claude: { provider: 'anthropic', apiKey: key },
          gem: { provider: 'google', apiKey: key },
          mine: { provider: 'custom', apiKey: key, baseUrl: 'http://127.0.0.1:8080/base/' },
        },
      }),
    );
    expect(routes.get('claude')).toMatchObject({
      origin: 'https://api.anthropic.com',
      basePath: '',
      authHeader: 'x-api-key',
    });
    expect(routes.get('gem')).toMatchObject({
      origin: 'https://generativelanguage.googleapis.com',
      basePath: '/v1beta',
      authHeader: 'x-goog-api-key',
    });
    expect(routes.get('mine')).toMatchObject({
      origin: 'http://127.0.0.1:8080',
      basePath: '/base',
      authHeader: 'authorization',
    });
    const h: string[] = [];
    routes.get('mine')!.injectCredential(h);
    expect(h).toEqual(['authorization', `Bearer ${key}`]);
  });

  it('never prints the key through JSON or inspect', () => {
    const key = canary();
    const routes = parseKeyFile(
      JSON.stringify({ version: 1, keys: { a: { provider: 'openai', apiKey: key } } }),
    );
    const r = routes.get('a')!;
    expect(JSON.stringify(r)).not.toContain(key);
    expect(inspect(r)).not.toContain(key);
    expect(inspect(routes, { depth: 5 })).not.toContain(key);
    expect(`${JSON.stringify([...routes])}`).not.toContain(key);
  });

  it('rejects bad files with messages that contain no key material', () => {
    const key = canary();
    const cases: [string, RegExp][] = [
      [`{"version":1,"keys":{"a":{"provider":"openai","apiKey":"${key}"`, /not valid JSON/],
      [`{"version":2,"keys":{}, "x":"${key}"}`, /version/],
      [`{"version":1,"keys":{"${key}/..":{"provider":"openai","apiKey":"x"}}}`, /not a valid name/],
      [`{"version":1,"keys":{"a":{"provider":"${key}","apiKey":"x"}}}`, /provider/],
      [`{"version":1,"keys":{"a":{"provider":"openai","apiKey":"${key}\\r\\nx-evil: 1"}}}`, /apiKey/],
      [
        `{"version":1,"keys":{"a":{"provider":"openai","apiKey":"${key}","baseUrl":"https://u:${key}@h/"}}}`,
        /credentials/,
      ],
      [
        `{"version":1,"keys":{"a":{"provider":"openai","apiKey":"x","baseUrl":"https://h/?key=${key}"}}}`,
        /query/,
      ],
      [`{"version":1,"keys":{"a":{"provider":"custom","apiKey":"${key}"}}}`, /baseUrl is required/],
      [`{"version":1,"keys":{"a":{"provider":"openai","apiKey":"x","baseUrl":"file:///${key}"}}}`, /http/],
    ];
    for (const [text, re] of cases) {
      const err = caught(() => parseKeyFile(text));
      expect(err.message, text).toMatch(re);
      expect(err.message).not.toContain(key);
      expect(inspect(err)).not.toContain(key);
    }
  });

  it('rejects traversal and encoded ids', () => {
    for (const id of ['..', 'a/b', '%2e%2e', 'A', '-a', 'a..b', '']) {
      expect(
        () =>
          parseKeyFile(JSON.stringify({ version: 1, keys: { [id]: { provider: 'openai', apiKey: 'x' } } })),
        id,
      ).toThrow(/not a valid name/);
    }
  });
});

describe('key file checks', () => {
  const good = JSON.stringify({ version: 1, keys: { a: { provider: 'openai', apiKey: 'sk-fake' } } });

  it('reads a mode 600 file owned by the proxy user', () => {
    const p = write('good.json', good);
    expect(readKeyFile(p, { uid }).routes.size).toBe(1);
  });

  it('refuses a group- or world-readable file (mode 0644)', () => {
    const p = write('open.json', good, 0o644);
    expect(caught(() => readKeyFile(p, { uid })).message).toMatch(/mode 644.*chmod 600/);
    const g = write('group.json', good, 0o640);
    expect(caught(() => readKeyFile(g, { uid })).message).toMatch(/mode 640/);
  });

  it("refuses a file not owned by the proxy's user", () => {
    const p = write('other.json', good);
    chownSync(p, 65534, 65534);
    expect(caught(() => readKeyFile(p, { uid })).message).toMatch(/owned by uid 65534/);
  });

  it('refuses a symlink and a missing file', () => {
    const target = write('target.json', good);
    const link = join(dir, 'link.json');
    symlinkSync(target, link);
    expect(caught(() => readKeyFile(link, { uid })).message).toMatch(/symbolic link/);
    expect(caught(() => readKeyFile(join(dir, 'missing.json'), { uid })).message).toMatch(/does not exist/);
  });
});

describe('Direct routes (declared by the operator, keyed by the owner)', () => {
  const declared = JSON.stringify({
    version: 1,
    keys: {
      sec: { provider: 'openai', apiKey: 'sk-fake-secret-route' },
      mine: { provider: 'anthropic', delivery: 'direct' },
    },
  });

  it('leaves a Direct route out (fail closed) until the direct key file holds its key', () => {
    const p = write('declared.json', declared);
    const missing = join(dir, 'no-direct.json');
    expect([...readKeyFile(p, { uid, directPath: missing }).routes.keys()]).toEqual(['sec']);
    // No direct file given at all: the same.
    expect([...readKeyFile(p, { uid }).routes.keys()]).toEqual(['sec']);
  });

  it('serves a Direct route with the key from the direct file, and ignores keys of undeclared routes', () => {
    const key = canary();
    const p = write('declared2.json', declared);
    const d = write(
      'direct.json',
      JSON.stringify({ version: 1, keys: { mine: { apiKey: key }, stray: { apiKey: canary() } } }),
    );
    const routes = readKeyFile(p, { uid, directPath: d }).routes;
    expect([...routes.keys()].sort()).toEqual(['mine', 'sec']);
    expect(routes.get('mine')?.toWire()).toMatchObject({ provider: 'anthropic', apiKey: key });
  });

  it('refuses a Direct entry carrying a key, and a direct file that is world-readable or bad, without quoting it', () => {
    const key = canary();
    const withKey = JSON.stringify({
      version: 1,
      keys: { mine: { provider: 'openai', delivery: 'direct', apiKey: key } },
    });
    const e1 = caught(() => parseKeyFile(withKey));
    expect(e1.message).toMatch(/direct route and must not carry an apiKey/);
    const p = write('declared3.json', declared);
    const open = write(
      'direct-open.json',
      JSON.stringify({ version: 1, keys: { mine: { apiKey: key } } }),
      0o644,
    );
    expect(caught(() => readKeyFile(p, { uid, directPath: open })).message).toMatch(
      /direct key file .* mode 644/,
    );
    const bad = write(
      'direct-bad.json',
      JSON.stringify({ version: 1, keys: { mine: { apiKey: `${key} x` } } }),
    );
    const e2 = caught(() => readKeyFile(p, { uid, directPath: bad }));
    expect(e2.message).toMatch(/keys\.mine\.apiKey must be/);
    for (const e of [e1, e2]) expect(e.message).not.toContain(key);
  });
});
