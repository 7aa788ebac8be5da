import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MARKER, markerOf } from '../../../proxy/scrub.ts';
import {
  canaryKey,
  header,
  type NetRig,
  type NsClient,
  type ProxyProcess,
  type ProxyRig,
  scrape,
  sleep,
  startProxyRig,
  until,
} from './harness.ts';

// A hostile upstream (issue 19 items 9-11): it reflects the key it was given in every place
// it can (headers, Location, 401 bodies, SSE streams with the key cut at every offset, a
// gzip body), and records what reached it. The proxy runs as shipped, in the namespace rig.
const keys = {
  openai: canaryKey('hostile-oai'),
  anthropic: canaryKey('hostile-ant'),
  google: canaryKey('hgem'),
};
const captured: string[] = [];
let pr: ProxyRig;
let rig: NetRig;
let proxy: ProxyProcess;
let client: NsClient;
let port: number;
let metricsPort: number;

interface Seen {
  method: string;
  path: string;
  search: string;
  headers: IncomingMessage['headers'];
}
const seen: Seen[] = [];
/** Resolvers the SSE modes wait on: the test opens a gate when the client has seen enough. */
const gates = new Map<string, () => void>();
const gate = (name: string) => new Promise<void>((r) => gates.set(name, r));
const open = (name: string) => {
  const g = gates.get(name);
  if (g) {
    gates.delete(name);
    g();
  }
};

function credentialOf(req: IncomingMessage): string {
  const auth = req.headers['authorization'];
  if (typeof auth === 'string' && auth.startsWith('Bearer ')) return auth.slice(7);
  return String(req.headers['x-api-key'] ?? req.headers['x-goog-api-key'] ?? '');
}

/** What each `x-hostile` mode answers; `key` is the credential the proxy injected. */
async function hostile(mode: string, key: string, res: ServerResponse): Promise<void> {
  switch (mode) {
    case 'headers': {
      const body = `moved: ${key}`;
      // A flat list: name, value, name, value…
      res.writeHead(302, [
        'location',
        `https://evil.example/cb?key=${key}&next=1`,
        'x-request-id',
        `req-${key}`,
        'retry-after',
        key,
        `x-ratelimit-${key.toLowerCase()}`,
        '1',
        'x-ratelimit-remaining',
        '7',
        'content-type',
        `text/plain; echo=${key}`,
        'www-authenticate',
        `Bearer ${key}`,
        'set-cookie',
        `k=${key}`,
        'content-length',
        String(Buffer.byteLength(body)),
      ]);
      res.end(body);
      return;
    }
    case '401': {
      const body = JSON.stringify({
        error: { message: `Incorrect API key provided: ${key}.`, type: 'invalid_request_error' },
      });
      res.writeHead(401, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
      return;
    }
    case '500-chunked': {
      // No content-length: the body comes in pieces, the key cut in the middle.
      res.writeHead(500, { 'content-type': 'application/json' });
      res.flushHeaders();
      const text = `{"error":"upstream saw ${key} and failed"}`;
      const cut = text.indexOf(key) + 9;
      res.write(text.slice(0, cut));
      await sleep(20);
      res.end(text.slice(cut));
      return;
    }
    case 'sse-split': {
      // The key cut at every offset: one write ends with its first k bytes, the next one
      // starts with the rest, with a pause between so the proxy reads them apart.
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      res.flushHeaders();
      for (let k = 0; k <= key.length; k++) {
        res.write(`data: {"i":${k},"t":"${key.slice(0, k)}`);
        await sleep(3);
        res.write(`${key.slice(k)}"}\n\n`);
        await sleep(1);
      }
      res.end('data: [DONE]\n\n');
      return;
    }
    case 'sse-live': {
      // Each event waits until the client has the one before it: a proxy that held back a
      // whole event would never see the next one written.
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.flushHeaders();
      res.write('data: {"n":1}\n\n');
      await gate('live-1');
      // Ends with the key's first bytes: only those may be held back.
      res.write(`data: {"n":2,"t":"abc ${key.slice(0, 12)}`);
      await gate('live-2');
      res.write(`${key.slice(12)} xyz"}\n\ndata: {"n":3,"t":"${key.slice(0, 5)}`);
      await gate('live-3');
      res.end('!"}\n\n');
      return;
    }
    case 'gzip': {
      const body = gzipSync(Buffer.from(`{"leak":"${key}"}`));
      res.writeHead(200, {
        'content-type': 'application/json',
        'content-encoding': 'gzip',
        'content-length': body.length,
      });
      res.end(body);
      return;
    }
    default: {
      const body = JSON.stringify({ ok: true, path: 'plain' });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    }
  }
}

let upstream: Server;
const sockets = new Set<Socket>();

beforeAll(async () => {
  upstream = createServer((req, res) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    seen.push({
      method: req.method ?? '',
      path: q === -1 ? url : url.slice(0, q),
      search: q === -1 ? '' : url.slice(q + 1),
      headers: req.headers,
    });
    req.resume();
    req.on('end', () => {
      void hostile(String(req.headers['x-hostile'] ?? ''), credentialOf(req), res).catch(() => res.destroy());
    });
  });
  upstream.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
  const url = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  pr = await startProxyRig('hostile', {
    evil: { provider: 'openai', apiKey: keys.openai, baseUrl: `${url}/v1` },
    'evil-ant': { provider: 'anthropic', apiKey: keys.anthropic, baseUrl: url },
    'evil-gem': { provider: 'google', apiKey: keys.google, baseUrl: `${url}/v1beta` },
  });
  ({ rig, proxy, port, metricsPort, client } = pr);
});

afterAll(async () => {
  for (const g of [...gates.keys()]) open(g);
  await pr?.close();
  for (const s of sockets) s.destroy();
  await new Promise<void>((r) => (upstream ? upstream.close(() => r()) : r()));
});

function call(
  mode: string,
  opts: { path?: string; method?: string; headers?: string[]; stream?: boolean } = {},
) {
  return client.fetch({
    host: rig.bridgeAddr,
    port,
    path: opts.path ?? '/proxy/evil/chat/completions',
    method: opts.method ?? 'POST',
    headers: ['content-type', 'application/json', 'x-hostile', mode, ...(opts.headers ?? [])],
    // A body only with POST: a refused request's unread body would make the close a reset.
    body: (opts.method ?? 'POST') === 'POST' ? '{"model":"m","messages":[]}' : undefined,
    stream: opts.stream,
  });
}

const noKey = (text: string) => {
  for (const k of Object.values(keys)) expect(text).not.toContain(k);
};

describe('a hostile upstream that reflects the key', () => {
  it('gets it replaced in every relayed header (Location included); headers named after it are dropped', async () => {
    const res = await call('headers');
    captured.push(JSON.stringify(res));
    expect(res.status).toBe(302);
    expect(header(res.headers, 'location')).toBe(`https://evil.example/cb?key=${MARKER}&next=1`);
    expect(header(res.headers, 'x-request-id')).toBe(`req-${MARKER}`);
    expect(header(res.headers, 'retry-after')).toBe(MARKER);
    expect(header(res.headers, 'content-type')).toBe(`text/plain; echo=${MARKER}`);
    expect(header(res.headers, 'x-ratelimit-remaining')).toBe('7');
    expect(res.headers.filter((_, i) => i % 2 === 0).some((n) => n.toLowerCase().includes('canary'))).toBe(
      false,
    );
    expect(header(res.headers, 'set-cookie')).toBeUndefined();
    expect(header(res.headers, 'www-authenticate')).toBeUndefined();
    // The sized body: same length, the key replaced.
    expect(res.body).toBe(`moved: ${markerOf(keys.openai.length).toString()}`);
    noKey(JSON.stringify(res));
  });

  it('gets it replaced in a sized 401 body, with a true content-length', async () => {
    const res = await call('401');
    captured.push(JSON.stringify(res));
    expect(res.status).toBe(401);
    expect(res.error).toBeUndefined();
    expect(Number(header(res.headers, 'content-length'))).toBe(Buffer.byteLength(res.body));
    expect(JSON.parse(res.body).error.message).toBe(
      `Incorrect API key provided: ${markerOf(keys.openai.length).toString()}.`,
    );
    noKey(res.body);
  });

  it('gets it replaced in a chunked 500 body cut in the middle of the key', async () => {
    const res = await call('500-chunked');
    captured.push(JSON.stringify(res));
    expect(res.status).toBe(500);
    expect(res.body).toBe(`{"error":"upstream saw ${markerOf(keys.openai.length).toString()} and failed"}`);
  });

  it('gets it replaced in an SSE stream that cuts the key at every offset, for each provider', async () => {
    for (const [id, path, key] of [
      ['evil', '/chat/completions', keys.openai],
      ['evil-ant', '/v1/messages', keys.anthropic],
      ['evil-gem', '/models/g:streamGenerateContent', keys.google],
    ] as const) {
      const res = await call('sse-split', { path: `/proxy/${id}${path}?alt=sse`, stream: true });
      captured.push(JSON.stringify(res));
      expect(res.status, id).toBe(200);
      expect(res.error, id).toBeUndefined();
      const marker = markerOf(key.length).toString();
      let want = '';
      for (let k = 0; k <= key.length; k++) want += `data: {"i":${k},"t":"${marker}"}\n\n`;
      want += 'data: [DONE]\n\n';
      expect(res.body, id).toBe(want);
      noKey(res.body);
    }
  });

  it('does not delay SSE: only bytes that could begin the key wait for the next chunk', async () => {
    let body = '';
    const got = (s: string) =>
      until(() => body.includes(s), `the client to receive ${JSON.stringify(s)}`, 5000);
    const { done } = client.request(
      {
        host: rig.bridgeAddr,
        port,
        path: '/proxy/evil/chat/completions',
        method: 'POST',
        headers: ['content-type', 'application/json', 'x-hostile', 'sse-live'],
        body: '{}',
        stream: true,
      },
      (e) => {
        if (e.ev === 'chunk') body += e.data;
      },
    );
    // A whole event arrives while the upstream waits for it.
    await got('data: {"n":1}\n\n');
    open('live-1');
    // A chunk ending with the key's first 12 bytes: everything before them arrives...
    await got('data: {"n":2,"t":"abc ');
    await sleep(100);
    // ...and those 12 bytes (the key's first 12) have not been sent.
    expect(body.endsWith('"t":"abc ')).toBe(true);
    open('live-2');
    const marker = markerOf(keys.openai.length).toString();
    await got(`data: {"n":2,"t":"abc ${marker} xyz"}\n\ndata: {"n":3,"t":"`);
    open('live-3');
    const res = await done;
    captured.push(body);
    expect(res.error).toBeUndefined();
    // The held bytes were not the key after all: they arrive as they were.
    expect(body).toBe(
      `data: {"n":1}\n\ndata: {"n":2,"t":"abc ${marker} xyz"}\n\ndata: {"n":3,"t":"${keys.openai.slice(0, 5)}!"}\n\n`,
    );
  });

  it('is asked for an identity body, and a compressed one never reaches the client (502)', async () => {
    const before = seen.length;
    const res = await call('gzip', { headers: ['accept-encoding', 'gzip, br'] });
    captured.push(JSON.stringify(res));
    expect(seen.length).toBe(before + 1);
    expect(seen.at(-1)!.headers['accept-encoding']).toBe('identity');
    expect(res.status).toBe(502);
    expect(JSON.parse(res.body).error.type).toBe('upstream_error');
    expect(header(res.headers, 'content-encoding')).toBeUndefined();
    // And the proxy still serves the next request.
    expect((await call('plain')).status).toBe(200);
  });
});

describe('what a client may send', () => {
  it('refuses methods no provider API uses with 405, before anything goes upstream', async () => {
    const before = seen.length;
    for (const method of ['TRACE', 'PROPFIND', 'OPTIONS', 'PUT', 'MKCOL']) {
      const res = await call('plain', { method });
      captured.push(JSON.stringify(res));
      expect(res.status, method).toBe(405);
      expect(header(res.headers, 'allow'), method).toBe('GET, HEAD, POST');
      expect(res.body, `${method} ${JSON.stringify(res)}`).toContain('"method_not_allowed"');
    }
    // TRACK is no method to Node's parser at all: a 400 and a close.
    const track = await client.raw(rig.bridgeAddr, port, [
      'TRACK /proxy/evil/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    ]);
    expect(track.data.startsWith('HTTP/1.1 400')).toBe(true);
    // CONNECT is not served either.
    const connect = await client.raw(rig.bridgeAddr, port, [
      'CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n',
    ]);
    expect(connect.data.startsWith('HTTP/1.1 200')).toBe(false);
    // A DELETE of a model (an account action) is refused although GET /models/<id> is allowed.
    const del = await call('plain', { method: 'DELETE', path: '/proxy/evil/models/ft:gpt-4o:org:x' });
    expect(del.status).toBe(405);
    expect(seen.length).toBe(before);
  });

  it('refuses paths outside the provider inference allow list with 403, before anything goes upstream', async () => {
    const before = seen.length;
    for (const [method, path] of [
      ['POST', '/proxy/evil/realtime/client_secrets'],
      ['POST', '/proxy/evil/realtime/sessions'],
      ['GET', '/proxy/evil/organization/api_keys'],
      ['POST', '/proxy/evil/organization/admin_api_keys'],
      ['GET', '/proxy/evil/files'],
      ['POST', '/proxy/evil-ant/v1/messages/batches'],
      ['GET', '/proxy/evil-ant/v1/organizations/api_keys'],
      ['GET', '/proxy/evil-gem/files'],
      ['POST', '/proxy/evil-gem/cachedContents'],
    ] as const) {
      const res = await call('plain', { method, path });
      captured.push(JSON.stringify(res));
      expect(res.status, path).toBe(403);
      expect(JSON.parse(res.body).error.type, path).toBe('forbidden');
    }
    expect(seen.length).toBe(before);
    expect(await scrape(metricsPort)).toMatch(
      /cannes_proxy_refusals_total\{reason="path_not_allowed"\} [1-9]/,
    );
    // The gateway's own calls pass.
    for (const path of [
      '/proxy/evil/chat/completions',
      '/proxy/evil/responses',
      '/proxy/evil-ant/v1/messages?beta=true',
      '/proxy/evil-gem/models/gemini-x:streamGenerateContent?alt=sse',
      '/proxy/evil-gem/models/gemini-x:generateContent',
    ]) {
      expect((await call('plain', { path })).status, path).toBe(200);
    }
  });

  it('never forwards cookies or credential-like query parameters', async () => {
    const res = await call('plain', {
      path: '/proxy/evil-gem/models/g:generateContent?alt=sse&key=k1&api_key=k2&apiKey=k3&access_token=k4&token=k5&pageToken=p',
      headers: ['cookie', 'session=container-cookie-fake', 'Cookie', 'second=fake', 'cookie2', 'x=1'],
    });
    expect(res.status).toBe(200);
    const rec = seen.at(-1)!;
    expect(rec.search).toBe('alt=sse&pageToken=p');
    expect(rec.headers['cookie']).toBeUndefined();
    expect(rec.headers['cookie2']).toBeUndefined();
    expect(rec.headers['x-goog-api-key']).toBe(keys.google);
  });

  it('never shows a key in anything it answered or logged', async () => {
    captured.push(proxy.stdout, proxy.stderr, client.received, await scrape(metricsPort));
    const all = captured.join('\n');
    expect(all).toContain('"msg":"request"');
    noKey(all);
  });
});
