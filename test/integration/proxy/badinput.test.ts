import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openai, type RunningUpstream } from '../../upstreams/index.ts';
import {
  canaryKey,
  type NetRig,
  type NsClient,
  type ProxyProcess,
  type ProxyRig,
  scrape,
  startProxyRig,
} from './harness.ts';

// Each bad input gets a clean error or close, and the proxy keeps serving the next client.
const key = canaryKey('bad');
const captured: string[] = [];
let pr: ProxyRig;
let rig: NetRig;
let proxy: ProxyProcess;
let oai: RunningUpstream;
let slow: RunningUpstream;
let client: NsClient;
let port: number;
let metricsPort: number;

beforeAll(async () => {
  oai = await openai.start({ keys: [key] });
  // Never answers /v1/chat/completions; on /v1/stall sends headers and one event, then nothing.
  slow = await openai.start({
    keys: [key],
    override: (rec, _req, res) => {
      if (rec.path === '/v1/stall') {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write('data: {"first":true}\n\n');
      }
      return true;
    },
  });
  pr = await startProxyRig(
    'bad',
    {
      gpt: { provider: 'openai', apiKey: key, baseUrl: `${oai.url}/v1` },
      slow: { provider: 'openai', apiKey: key, baseUrl: `${slow.url}/v1` },
    },
    {
      args: [
        '--client-headers-timeout',
        '1',
        '--max-body-bytes',
        String(1024 * 1024),
        '--upstream-headers-timeout',
        '1',
        '--upstream-body-timeout',
        '1',
        // Large uploads and the stalled stream go to paths outside the inference allow list.
        '--allow-path-prefix',
        '/files',
        '--allow-path-prefix',
        '/stall',
      ],
    },
  );
  ({ rig, proxy, port, metricsPort, client } = pr);
});
afterAll(async () => {
  await pr?.close();
  await oai?.close();
  await slow?.close();
});

const raw = (pieces: string[], opts: { gapMs?: number; waitMs?: number } = {}) =>
  client.raw(rig.bridgeAddr, port, pieces, opts).then((r) => {
    captured.push(r.data);
    return r;
  });
const statusOf = (data: string) => Number(/^HTTP\/1\.1 (\d{3})/.exec(data)?.[1] ?? 0);

async function stillServing(): Promise<void> {
  const before = oai.requests.length;
  const res = await client.fetch({ host: rig.bridgeAddr, port, path: '/proxy/gpt/models' });
  captured.push(JSON.stringify(res));
  expect(res.status).toBe(200);
  expect(oai.requests.length).toBe(before + 1);
}

describe('bad input', () => {
  it('answers 400 to a malformed URL and keeps serving', async () => {
    const before = oai.requests.length;
    for (const target of ['/proxy/gpt/%zz/models', '/proxy/gpt/models?%zz=1']) {
      const r = await raw([`GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`]);
      expect(statusOf(r.data), target).toBe(400);
    }
    const garbage = await raw(['GARBAGE\r\n\r\n']);
    expect(statusOf(garbage.data)).toBe(400);
    expect(garbage.closed).toBe(true);
    expect(oai.requests.length).toBe(before);
    await stillServing();
  });

  it('refuses path traversal in the id and in the path', async () => {
    const before = oai.requests.length;
    const cases: [string, number][] = [
      ['/proxy/../gpt/models', 404],
      ['/proxy/%2e%2e/gpt/models', 404],
      ['/proxy/gpt%2f..%2fgpt/models', 404],
      ['/proxy/gpt/../../etc/passwd', 400],
      ['/proxy/gpt/%2e%2e/%2e%2e/admin', 400],
      ['/proxy/gpt/..%5c..%5cadmin', 400],
    ];
    for (const [target, status] of cases) {
      const r = await raw([`GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`]);
      expect(statusOf(r.data), target).toBe(status);
      expect(r.data).not.toContain('gpt"');
    }
    expect(oai.requests.length).toBe(before);
    await stillServing();
  });

  it('rejects CR/LF header injection and never forwards an injected header', async () => {
    const before = oai.requests.length;
    for (const h of ['X-Test: a\rX-Injected: yes', 'X-Test: a\r\n X-Injected: yes', 'X-Te\rst: a']) {
      const r = await raw([`GET /proxy/gpt/models HTTP/1.1\r\nHost: x\r\n${h}\r\n\r\n`]);
      expect(statusOf(r.data), JSON.stringify(h)).toBe(400);
      expect(r.closed).toBe(true);
    }
    expect(oai.requests.length).toBe(before);
    // Encoded CR/LF in the path stays encoded: it can never become a header upstream.
    const r = await raw([
      'GET /proxy/gpt/models/x%0d%0aX-Injected:%20yes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    ]);
    expect(statusOf(r.data)).toBe(404);
    const rec = oai.requests.at(-1)!;
    expect(rec.path).toBe('/v1/models/x%0d%0aX-Injected:%20yes');
    expect(rec.headers['x-injected']).toBeUndefined();
    await stillServing();
  });

  it('answers 431 to oversized headers', async () => {
    const r = await raw([
      `GET /proxy/gpt/models HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(32 * 1024)}\r\n\r\n`,
    ]);
    expect(statusOf(r.data)).toBe(431);
    expect(r.closed).toBe(true);
    await stillServing();
  });

  it('closes a slowloris connection after the headers timeout while serving others', async () => {
    const pieces = [
      'GET /healthz HTTP/1.1\r\nHost: x\r\n',
      ...Array.from({ length: 40 }, (_, i) => `X-${i}: y\r\n`),
    ];
    const slow = raw(pieces, { gapMs: 250, waitMs: 15_000 });
    await stillServing();
    const r = await slow;
    expect(r.closed).toBe(true);
    expect(statusOf(r.data)).toBe(408);
    expect(await scrape(metricsPort)).toMatch(
      /cannes_proxy_refusals_total\{reason="headers_timeout"\} [1-9]/,
    );
    await stillServing();
  });

  it('writes at most one log line for many slow or idle connections, and counts every one', async () => {
    const refusals = async () =>
      Number(
        /cannes_proxy_refusals_total\{reason="headers_timeout"\} (\d+)/.exec(await scrape(metricsPort))?.[1],
      );
    const before = await refusals();
    // Eight connections that start a request and then say nothing, all timed out together.
    const idle = await Promise.all(
      Array.from({ length: 8 }, () => raw(['GET /healthz HTTP/1.1\r\nHost: x\r\n'], { waitMs: 6000 })),
    );
    for (const r of idle) expect(statusOf(r.data)).toBe(408);
    expect(await refusals()).toBeGreaterThanOrEqual(before + 8);
    // The slowloris above wrote the one line of this minute; these eight wrote none.
    const lines = proxy.lines.filter(
      (l) => l.msg === 'bad client request' && l['reason'] === 'headers_timeout',
    );
    expect(lines.length).toBe(1);
    await stillServing();
  });

  it('answers 413 to a body over the cap, declared or chunked', async () => {
    const declared = await client.fetch({
      host: rig.bridgeAddr,
      port,
      path: '/proxy/gpt/files',
      method: 'POST',
      headers: ['content-length', String(2 * 1024 * 1024)],
      bodySize: 2 * 1024 * 1024,
    });
    expect(declared.status).toBe(413);
    const before = oai.requests.length;
    const chunked = await client.fetch({
      host: rig.bridgeAddr,
      port,
      path: '/proxy/gpt/files',
      method: 'POST',
      headers: ['transfer-encoding', 'chunked'],
      bodySize: 3 * 1024 * 1024,
    });
    captured.push(JSON.stringify(declared), JSON.stringify(chunked));
    // The chunked body was already streaming upstream when the cap hit: the upstream
    // request is cut, the client gets 413 (or a closed connection if it was still sending).
    if (chunked.status !== 0) expect(chunked.status).toBe(413);
    else expect(chunked.error).toBeDefined();
    const rec = oai.requests.slice(before).at(-1);
    if (rec) expect(rec.completed && rec.status === 200).toBe(false);
    await stillServing();
  });

  it('answers 504 when the upstream sends no headers within the headers timeout', async () => {
    const res = await client.fetch({
      host: rig.bridgeAddr,
      port,
      path: '/proxy/slow/chat/completions',
      method: 'POST',
      headers: ['content-type', 'application/json'],
      body: '{}',
    });
    captured.push(JSON.stringify(res));
    expect(res.status).toBe(504);
    expect(JSON.parse(res.body)).toEqual({
      error: { type: 'upstream_timeout', message: 'the upstream did not answer in time' },
    });
    await stillServing();
  });

  it('breaks the client stream when the upstream goes silent past the body timeout', async () => {
    const res = await client.fetch({ host: rig.bridgeAddr, port, path: '/proxy/slow/stall', stream: true });
    captured.push(JSON.stringify(res));
    expect(res.status).toBe(200);
    expect(res.body).toContain('"first":true');
    expect(res.error).toBeDefined();
    expect(await scrape(metricsPort)).toMatch(
      /cannes_proxy_upstream_errors_total\{provider="openai",kind="body_timeout"\} [1-9]/,
    );
    await stillServing();
  });

  it('never shows the key in anything it answered or logged', async () => {
    captured.push(proxy.stdout, proxy.stderr, client.received, await scrape(metricsPort));
    const all = captured.join('\n');
    expect(all).toContain('bad client request');
    expect(all).not.toContain(key);
  });
});
