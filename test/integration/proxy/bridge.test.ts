import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { anthropic, gemini, openai, type RunningUpstream } from '../../upstreams/index.ts';
import {
  canaryKey,
  header,
  type NetRig,
  NsClient,
  type ProxyProcess,
  type ProxyRig,
  rand,
  scrape,
  startProxyRig,
  writeKeyFile,
} from './harness.ts';

// Real namespaces: the proxy listens on a 172.x "bridge" address, clients run inside a
// 172.x namespace (allowed) and a 10.x namespace (refused).
const keys = { anthropic: canaryKey('ant'), openai: canaryKey('oai'), gemini: canaryKey('gem') };
const captured: string[] = [];
let pr: ProxyRig;
let rig: NetRig;
let proxy: ProxyProcess;
let ups: {
  ant: RunningUpstream;
  oai: RunningUpstream;
  gem: RunningUpstream;
  echo: RunningUpstream;
  far: RunningUpstream;
};
let bridgeClient: NsClient;
let outsideClient: NsClient;
let rootClient: NsClient;
let port: number;
let loopPort: number;
let metricsPort: number;

beforeAll(async () => {
  ups = {
    ant: await anthropic.start({ host: '127.0.0.1', port: 0, keys: [keys.anthropic] }),
    oai: await openai.start({ host: '127.0.0.1', port: 0, keys: [keys.openai] }),
    gem: await gemini.start({ host: '127.0.0.1', port: 0, keys: [keys.gemini] }),
    echo: await gemini.start({ host: '127.0.0.1', port: 0, keys: [keys.gemini], echoCredential: true }),
    far: await openai.start({ host: '127.0.0.1', port: 0 }),
  };
  pr = await startProxyRig(
    'bridge',
    {
      claude: { provider: 'anthropic', apiKey: keys.anthropic, baseUrl: ups.ant.url },
      gpt: { provider: 'openai', apiKey: keys.openai, baseUrl: `${ups.oai.url}/v1` },
      gem: { provider: 'google', apiKey: keys.gemini, baseUrl: `${ups.gem.url}/v1beta` },
      'gem-echo': { provider: 'google', apiKey: keys.gemini, baseUrl: `${ups.echo.url}/v1beta` },
    },
    { extraListen: ['127.0.0.1:0'] },
  );
  ({ rig, proxy, port, metricsPort, client: bridgeClient } = pr);
  loopPort = pr.ports.get('127.0.0.1')!;
  outsideClient = new NsClient(rig.outsideNs);
  rootClient = new NsClient(null);
  await Promise.all([outsideClient.ready(), rootClient.ready()]);
});
afterAll(async () => {
  for (const c of [outsideClient, rootClient]) c?.close();
  await pr?.close();
  for (const u of Object.values(ups ?? {})) await u.close();
});

const clientCredentials = [
  'authorization',
  'Bearer client-supplied-fake',
  'Authorization',
  'Bearer second-copy-fake',
  'x-api-key',
  'client-fake',
  'x-goog-api-key',
  'client-fake',
  'api-key',
  'client-fake',
  'proxy-authorization',
  'Basic ZmFrZTpmYWtl',
];

function get(path: string, headers: string[] = [], body?: string) {
  return bridgeClient.fetch({
    host: rig.bridgeAddr,
    port,
    path,
    method: body === undefined ? 'GET' : 'POST',
    headers: body === undefined ? headers : ['content-type', 'application/json', ...headers],
    body,
  });
}

describe('a bridge client', () => {
  it('gets a sized body upstream byte for byte, whether it came with the headers or after them', async () => {
    // Whole with the headers: sent upstream as one buffer. In pieces: streamed as it comes.
    // The raw client writes latin1: the body stays ASCII so its length is its byte length.
    for (const gapMs of [0, 150]) {
      const body = JSON.stringify({
        model: 'gpt-fake-1',
        messages: [{ role: 'user', content: `hi ${rand(8)}` }],
      });
      const head =
        `POST /proxy/gpt/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n`;
      const cut = Math.floor(body.length / 2);
      const pieces = gapMs === 0 ? [head + body] : [head, body.slice(0, cut), body.slice(cut)];
      const r = await bridgeClient.raw(rig.bridgeAddr, port, pieces, { gapMs, waitMs: 5000 });
      captured.push(r.data);
      expect(r.data.startsWith('HTTP/1.1 200'), r.data.split('\r\n')[0]).toBe(true);
      const rec = ups.oai.requests.at(-1)!;
      expect(rec.bodyBytes).toBe(Buffer.byteLength(body));
      expect(rec.json).toEqual(JSON.parse(body));
    }
  });

  it('reaches Anthropic with exactly the real key in x-api-key and no client-supplied credential', async () => {
    const res = await get(
      '/proxy/claude/v1/messages?key=client-query-fake',
      ['anthropic-version', '2023-06-01', 'anthropic-beta', 'tools-2024-04-04', ...clientCredentials],
      JSON.stringify({ model: 'claude-fake-1', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] }),
    );
    captured.push(JSON.stringify(res));
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toMatchObject({ type: 'message', role: 'assistant' });
    const rec = ups.ant.requests.at(-1)!;
    expect(rec.json).toEqual({
      model: 'claude-fake-1',
      max_tokens: 10,
      messages: [{ role: 'user', content: 'hi' }],
    });
    expect(rec.credentials).toEqual([{ where: 'x-api-key', value: keys.anthropic }]);
    expect(rec.search).toBe('');
    expect(rec.headers['anthropic-version']).toBe('2023-06-01');
    expect(rec.headers['anthropic-beta']).toBe('tools-2024-04-04');
    expect(rec.headers['host']).toBe(`127.0.0.1:${ups.ant.port}`);
  });

  it('reaches OpenAI with exactly the real key as Bearer, streaming SSE to [DONE]', async () => {
    const res = await bridgeClient.fetch({
      host: rig.bridgeAddr,
      port,
      path: '/proxy/gpt/chat/completions',
      method: 'POST',
      headers: ['content-type', 'application/json', 'host', 'evil.example', ...clientCredentials],
      body: JSON.stringify({ model: 'gpt-fake-1', stream: true, messages: [] }),
      stream: true,
    });
    captured.push(JSON.stringify(res));
    expect(res.status).toBe(200);
    expect(header(res.headers, 'content-type')).toMatch(/^text\/event-stream/);
    expect(res.body).toContain('chunk 2 ');
    expect(res.body.trimEnd().endsWith('data: [DONE]')).toBe(true);
    const rec = ups.oai.requests.at(-1)!;
    expect(rec.path).toBe('/v1/chat/completions');
    expect(rec.credentials).toEqual([{ where: 'authorization', value: `Bearer ${keys.openai}` }]);
    expect(rec.headers['host']).toBe(`127.0.0.1:${ups.oai.port}`);
  });

  it('reaches Gemini with the real key in x-goog-api-key and the client ?key= removed', async () => {
    const res = await bridgeClient.fetch({
      host: rig.bridgeAddr,
      port,
      path: '/proxy/gem/models/gemini-fake:streamGenerateContent?key=client-query-fake&alt=sse',
      method: 'POST',
      headers: ['content-type', 'application/json', ...clientCredentials],
      body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'hi' }] }] }),
      stream: true,
    });
    captured.push(JSON.stringify(res));
    expect(res.status).toBe(200);
    expect(res.body).toContain('"finishReason":"STOP"');
    const rec = ups.gem.requests.at(-1)!;
    expect(rec.path).toBe('/v1beta/models/gemini-fake:streamGenerateContent');
    expect(rec.search).toBe('alt=sse');
    expect(rec.credentials).toEqual([{ where: 'x-goog-api-key', value: keys.gemini }]);
  });

  it('never relays a credential an upstream reflects in its response headers', async () => {
    const res = await get(
      '/proxy/gem-echo/models/gemini-fake:generateContent',
      [],
      JSON.stringify({ contents: [] }),
    );
    captured.push(JSON.stringify(res));
    expect(res.status).toBe(200);
    expect(ups.echo.requests.at(-1)!.credentials).toEqual([{ where: 'x-goog-api-key', value: keys.gemini }]);
    expect(header(res.headers, 'x-goog-api-key')).toBeUndefined();
    expect(res.headers.join('\n')).not.toContain(keys.gemini);
  });

  it('passes a redirect to the client instead of following it', async () => {
    const before = ups.far.requests.length;
    const redirectTo = `${ups.far.url}/v1/models`;
    const up = await openai.start({
      keys: [keys.openai],
      override: (rec, _req, res) => {
        rec.status = 307;
        res.writeHead(307, { location: redirectTo, 'content-length': '0' });
        res.end();
        return true;
      },
    });
    try {
      const file = pr.keyFile;
      writeKeyFile(file, {
        claude: { provider: 'anthropic', apiKey: keys.anthropic, baseUrl: ups.ant.url },
        gpt: { provider: 'openai', apiKey: keys.openai, baseUrl: `${ups.oai.url}/v1` },
        gem: { provider: 'google', apiKey: keys.gemini, baseUrl: `${ups.gem.url}/v1beta` },
        'gem-echo': { provider: 'google', apiKey: keys.gemini, baseUrl: `${ups.echo.url}/v1beta` },
        redir: { provider: 'openai', apiKey: keys.openai, baseUrl: `${up.url}/v1` },
      });
      proxy.child.kill('SIGHUP');
      let res = await get('/proxy/redir/models');
      for (let i = 0; i < 100 && res.status === 404; i++) res = await get('/proxy/redir/models');
      captured.push(JSON.stringify(res));
      expect(res.status).toBe(307);
      expect(header(res.headers, 'location')).toBe(redirectTo);
      expect(up.requests.length).toBeGreaterThanOrEqual(1);
      expect(ups.far.requests.length).toBe(before);
    } finally {
      await up.close();
    }
  });

  it('gets 404 for an unknown id, without any list of ids', async () => {
    const res = await get('/proxy/nope/v1/messages', [], '{}');
    captured.push(JSON.stringify(res));
    expect(res.status).toBe(404);
    expect(res.body).not.toMatch(/claude|gpt|gem/);
    expect(JSON.parse(res.body)).toEqual({ error: { type: 'not_found', message: 'unknown route' } });
  });

  it('gets 200 from /healthz, with no secrets', async () => {
    const res = await get('/healthz');
    captured.push(JSON.stringify(res));
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toEqual({ status: 'ok' });
  });
});

describe('clients outside the bridge', () => {
  it('rejects a client outside 172.16.0.0/12 (a 10.x namespace reaching the bridge address)', async () => {
    const res = await outsideClient.fetch({ host: rig.bridgeAddr, port, path: '/healthz' });
    captured.push(JSON.stringify(res));
    expect(res.status).toBe(0);
    expect(res.error).toMatch(/ECONNRESET|socket hang up|EPIPE|incomplete/);
    const m = await scrape(metricsPort);
    expect(m).toMatch(/cannes_proxy_refusals_total\{reason="source_not_allowed"\} [1-9]/);
  });

  it('rejects 127.0.0.1 even on a listener bound to loopback', async () => {
    const res = await rootClient.fetch({
      host: '127.0.0.1',
      port: loopPort,
      path: '/proxy/claude/v1/models',
    });
    captured.push(JSON.stringify(res));
    expect(res.status).toBe(0);
    expect(res.error).toMatch(/ECONNRESET|socket hang up|EPIPE|incomplete/);
    expect(ups.ant.requests.every((r) => r.path !== '/v1/models')).toBe(true);
  });

  it('is not reachable on any non-bridge address', async () => {
    const viaLoop = await rootClient.fetch({ host: '127.0.0.1', port, path: '/healthz' });
    const viaOutsideLink = await outsideClient.fetch({ host: rig.outsideHostAddr, port, path: '/healthz' });
    expect(viaLoop.error).toBe('ECONNREFUSED');
    expect(viaOutsideLink.error).toBe('ECONNREFUSED');
  });
});

describe('secrecy', () => {
  it('never shows a key in logs, metrics, error bodies or response headers', async () => {
    captured.push(proxy.stdout, proxy.stderr, await scrape(metricsPort));
    captured.push(bridgeClient.received, outsideClient.received, rootClient.received);
    const all = captured.join('\n');
    expect(all.length).toBeGreaterThan(1000);
    expect(all).toContain('"msg":"request"');
    for (const k of Object.values(keys)) expect(all).not.toContain(k);
    expect(all).not.toContain('client-query-fake');
  });
});
