import { afterEach, describe, expect, it, vi } from 'vitest';
import { Secret } from '../../../common/secret.ts';
import { parseArgs } from '../../../proxy/cli.ts';
import { REQUEST_DROP, responseHeaderAllowed } from '../../../proxy/headers.ts';
import { createLogger } from '../../../proxy/log.ts';

describe('command line', () => {
  it('has safe defaults', () => {
    const a = parseArgs(['--keys', '/root/.model-keys.json']);
    expect(a).toMatchObject({
      help: false,
      listen: [],
      port: 3101,
      allow: ['172.16.0.0/12'],
      metrics: { host: '127.0.0.1', port: 9464 },
      maxBodyBytes: 64 * 1024 * 1024,
      threads: 1,
      allowAnyPath: false,
      allowPathPrefixes: [],
    });
  });

  it('widens the endpoint allow list only by flag, and checks the prefixes', () => {
    expect(
      parseArgs([
        '--keys',
        'k',
        '--allow-path-prefix',
        '/files',
        '--allow-path-prefix=/batches',
        '--allow-any-path',
      ]),
    ).toMatchObject({ allowAnyPath: true, allowPathPrefixes: ['/files', '/batches'] });
    for (const p of ['files', '/a/../b', '/x?y=1']) {
      expect(() => parseArgs(['--keys', 'k', '--allow-path-prefix', p]), p).toThrow(/--allow-path-prefix/);
    }
  });

  it('takes --threads 1..16 and nothing else', () => {
    expect(parseArgs(['--keys', 'k', '--threads', '2'])).toMatchObject({ threads: 2 });
    for (const t of ['0', '17', '-1', '1.5', 'auto']) {
      expect(() => parseArgs(['--keys', 'k', '--threads', t]), t).toThrow(/--threads/);
    }
  });

  it('refuses to listen on every address', () => {
    const wildcards = [
      '0.0.0.0:3101',
      '[::]:3101',
      '[::ffff:0.0.0.0]:3101',
      '[::ffff:0:0]:3101',
      '[::%lo]:3101',
    ];
    for (const l of wildcards) {
      expect(() => parseArgs(['--keys', 'k', '--listen', l]), l).toThrow(/every address/);
      expect(() => parseArgs(['--keys', 'k', '--metrics', l]), l).toThrow(/every address/);
    }
  });

  it('takes repeated --listen and --allow, and --flag=value', () => {
    const a = parseArgs([
      '--keys=k',
      '--listen',
      '172.17.0.1:3101',
      '--listen=172.18.0.1:3101',
      '--allow',
      '10.0.0.0/8',
    ]);
    expect(a).toMatchObject({
      listen: [{ host: '172.17.0.1' }, { host: '172.18.0.1' }],
      allow: ['10.0.0.0/8'],
    });
  });

  it('requires --keys and rejects unknown flags', () => {
    expect(() => parseArgs([])).toThrow(/--keys/);
    expect(() => parseArgs(['--keys', 'k', '--insecure'])).toThrow(/unknown argument/);
  });
});

describe('logger', () => {
  it('redacts credential-shaped fields and Secrets, and drops foreign error messages', () => {
    const lines: string[] = [];
    const log = createLogger({ write: (l) => lines.push(l) });
    const canary = `sk-canary-${Math.random().toString(36).slice(2)}`;
    log.info('x', {
      apiKey: canary,
      nested: { authorization: `Bearer ${canary}`, 'x-api-key': canary },
      secret: new Secret(canary),
      wrapped: { s: new Secret(canary) },
      err: new Error(`Unexpected token in "${canary}"`),
    });
    expect(lines).toHaveLength(1);
    expect(lines[0]).not.toContain(canary);
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: 'info', msg: 'x', err: { name: 'Error' } });
  });

  it('keeps redacting a field name it has seen before, and writes numbers as JSON', () => {
    const lines: string[] = [];
    const log = createLogger({ write: (l) => lines.push(l) });
    const canary = `sk-canary-${Math.random().toString(36).slice(2)}`;
    for (let i = 0; i < 3; i++) log.info('request', { id: 'a', token: canary, ms: 12, bad: Number.NaN });
    expect(lines).toHaveLength(3);
    for (const l of lines) {
      expect(l).not.toContain(canary);
      expect(JSON.parse(l)).toMatchObject({ id: 'a', token: '[redacted]', ms: 12, bad: null });
    }
  });

  it('honours the level', () => {
    const lines: string[] = [];
    const log = createLogger({ level: 'warn', write: (l) => lines.push(l) });
    log.info('no');
    log.warn('yes');
    expect(lines.map((l) => JSON.parse(l).msg)).toEqual(['yes']);
  });

  describe('on stdout', () => {
    afterEach(() => {
      vi.useRealTimers();
      vi.restoreAllMocks();
    });
    const stdout = () => {
      vi.useFakeTimers();
      return vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    };
    const msgs = (w: ReturnType<typeof stdout>) =>
      w.mock.calls.map((c) =>
        String(c[0])
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l).msg),
      );

    it('writes the lines of one event-loop turn together', () => {
      const w = stdout();
      const log = createLogger({ name: 'turn' });
      log.info('a');
      log.info('b');
      expect(w).not.toHaveBeenCalled();
      vi.advanceTimersToNextTimer();
      expect(msgs(w)).toEqual([['a', 'b']]);
    });

    it('holds lines up to flushMs (worker threads), and flush() writes them at once', () => {
      const w = stdout();
      const log = createLogger({ name: 'worker', flushMs: 100 });
      log.info('a');
      vi.advanceTimersByTime(50);
      log.info('b');
      vi.advanceTimersByTime(49);
      expect(w).not.toHaveBeenCalled();
      vi.advanceTimersByTime(1);
      expect(msgs(w)).toEqual([['a', 'b']]);
      log.info('c');
      log.flush();
      expect(msgs(w)).toEqual([['a', 'b'], ['c']]);
      vi.advanceTimersByTime(200);
      expect(w).toHaveBeenCalledTimes(2);
    });
  });
});

describe('response header allowlist', () => {
  it('drops cookies and the client accept-encoding from requests (the proxy sends identity)', () => {
    for (const h of ['cookie', 'cookie2', 'accept-encoding', 'authorization', 'x-goog-api-key']) {
      expect(REQUEST_DROP.has(h), h).toBe(true);
    }
  });

  it('never relays a credential header or cookies, even if an upstream sends one', () => {
    for (const h of ['x-goog-api-key', 'x-api-key', 'authorization', 'api-key', 'set-cookie', 'x-secret']) {
      expect(responseHeaderAllowed(h), h).toBe(false);
    }
    for (const h of [
      'content-type',
      'retry-after',
      'x-ratelimit-remaining-requests',
      'anthropic-ratelimit-tokens-limit',
    ]) {
      expect(responseHeaderAllowed(h), h).toBe(true);
    }
  });
});
