import type { IncomingMessage, ServerResponse } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { anthropic, openai, type RunningUpstream, type UpstreamRecord } from '../../upstreams/index.ts';
import {
  type ClientEvent,
  canaryKey,
  type NetRig,
  type NsClient,
  type ProxyProcess,
  type ProxyRig,
  scrape,
  startProxyRig,
  until,
} from './harness.ts';

const MiB = 1024 * 1024;
const keys = { anthropic: canaryKey('ant'), openai: canaryKey('oai') };
const captured: string[] = [];
// Per-test behaviour of the shared upstreams.
let gate: ((index: number, rec: UpstreamRecord) => Promise<void>) | null = null;
let override: ((rec: UpstreamRecord, req: IncomingMessage, res: ServerResponse) => boolean) | null = null;

let pr: ProxyRig;
let rig: NetRig;
let proxy: ProxyProcess;
let ant: RunningUpstream;
let oai: RunningUpstream;
let client: NsClient;
let port: number;
let metricsPort: number;

beforeAll(async () => {
  ant = await anthropic.start({ keys: [keys.anthropic], chunks: 5, beforeEvent: (i, r) => gate?.(i, r) });
  oai = await openai.start({
    keys: [keys.openai],
    chunks: 5,
    beforeEvent: (i, r) => gate?.(i, r),
    override: (rec, req, res) => override?.(rec, req, res) ?? false,
  });
  pr = await startProxyRig(
    'stream',
    {
      claude: { provider: 'anthropic', apiKey: keys.anthropic, baseUrl: ant.url },
      gpt: { provider: 'openai', apiKey: keys.openai, baseUrl: `${oai.url}/v1` },
    },
    // Uploads go to /files, outside the inference allow list: widened for this rig.
    {
      args: ['--max-body-bytes', String(256 * MiB), '--drain-timeout', '60', '--allow-path-prefix', '/files'],
    },
  );
  ({ rig, proxy, port, metricsPort, client } = pr);
});

afterAll(async () => {
  await pr?.close();
  await ant?.close();
  await oai?.close();
});

const streamBody = JSON.stringify({ model: 'claude-fake-1', max_tokens: 10, stream: true, messages: [] });
const claudeStream = () => ({
  host: rig.bridgeAddr,
  port,
  path: '/proxy/claude/v1/messages',
  method: 'POST',
  headers: ['content-type', 'application/json', 'anthropic-version', '2023-06-01'],
  body: streamBody,
  stream: true,
});

describe('streaming', () => {
  it('delivers SSE chunks one by one as the upstream writes them', async () => {
    // The upstream writes delta N+1 only after the client has seen delta N. A proxy that
    // buffered (even one chunk) would deadlock here and fail the gate's wait.
    const order: string[] = [];
    let text = '';
    gate = async (i) => {
      if (i > 0) await until(() => text.includes(`chunk ${i - 1} `), `client to see chunk ${i - 1}`, 20_000);
      order.push(`upstream writes ${i}`);
    };
    try {
      const { done } = client.request(claudeStream(), (e: ClientEvent) => {
        if (e.ev !== 'chunk') return;
        const before = text;
        text += e.data;
        for (let n = 0; n < 5; n++) {
          if (!before.includes(`chunk ${n} `) && text.includes(`chunk ${n} `)) order.push(`client sees ${n}`);
        }
      });
      const res = await done;
      captured.push(JSON.stringify(res));
      expect(res.status).toBe(200);
      expect(res.error).toBeUndefined();
      expect(order).toEqual([0, 1, 2, 3, 4].flatMap((n) => [`upstream writes ${n}`, `client sees ${n}`]));
      expect(text).toContain('event: ping');
      expect(text).toContain('event: message_stop');
    } finally {
      gate = null;
    }
  });

  it('passes a 200 MiB request body with bounded proxy memory', async () => {
    await client.fetch({ host: rig.bridgeAddr, port, path: '/proxy/gpt/models' });
    const body = 200 * MiB;
    const upload = () =>
      client.fetch({
        host: rig.bridgeAddr,
        port,
        path: '/proxy/gpt/files',
        method: 'POST',
        headers: ['content-type', 'application/octet-stream', 'content-length', String(body)],
        bodySize: body,
      });
    const base = proxy.memory();
    const first = await upload();
    const mid = proxy.memory();
    const second = await upload();
    const end = proxy.memory();
    for (const res of [first, second]) {
      captured.push(JSON.stringify({ ...res, body: res.body.slice(0, 1000) }));
      expect(res.status).toBe(200);
      const file = JSON.parse(res.body);
      expect(file.bytes).toBe(body);
      expect(file.sha256).toBe(res.sentSha256);
    }
    // Streaming keeps the peak RSS independent of the body size: garbage read buffers linger
    // until V8's external-memory GC trigger (~64 MiB; 84 MiB of growth seen once on a loaded
    // machine), and a second body adds (almost) nothing. Buffering would add >= 200 MiB per
    // body, so the bound sits between the two with room on both sides.
    expect(mid.hwm - base.hwm).toBeLessThan(128 * MiB);
    expect(end.hwm - mid.hwm).toBeLessThan(32 * MiB);
    expect(end.hwm - base.hwm).toBeLessThan(144 * MiB);
  });

  it('passes a chunked 64 MiB request body, streamed with bounded memory', async () => {
    const before = proxy.memory();
    const res = await client.fetch({
      host: rig.bridgeAddr,
      port,
      path: '/proxy/gpt/files',
      method: 'POST',
      headers: ['content-type', 'application/octet-stream', 'transfer-encoding', 'chunked'],
      bodySize: 64 * MiB,
    });
    const after = proxy.memory();
    expect(res.status).toBe(200);
    const file = JSON.parse(res.body);
    expect(file.bytes).toBe(64 * MiB);
    expect(file.sha256).toBe(res.sentSha256);
    expect(after.hwm - before.hwm).toBeLessThan(32 * MiB);
  });

  it('closes the upstream request when the client aborts', async () => {
    let held: UpstreamRecord | undefined;
    gate = async (i, rec) => {
      if (i === 0) return;
      held = rec;
      await until(() => rec.closedEarly, 'the upstream connection to close', 20_000);
      throw new Error('client gone');
    };
    try {
      let sawFirst = false;
      const req = client.request(claudeStream(), (e, id) => {
        if (e.ev === 'chunk' && !sawFirst && e.data.includes('chunk 0 ')) {
          sawFirst = true;
          client.abort(id);
        }
      });
      await until(() => sawFirst, 'the first chunk');
      await until(() => held?.closedEarly, 'the upstream to see the abort', 20_000);
      expect(held!.completed).toBe(false);
      expect(held!.eventsWritten).toBe(1);
      await req.done;
      await until(
        async () => /cannes_proxy_active_streams 0\b/.test(await scrape(metricsPort)),
        'active streams 0',
      );
      expect(await scrape(metricsPort)).toMatch(
        /cannes_proxy_requests_total\{provider="anthropic",status_class="aborted"\} [1-9]/,
      );
    } finally {
      gate = null;
    }
  });

  it('closes the upstream request when the client leaves before the response headers', async () => {
    // A reasoning model still thinking: the upstream has the request but has not answered.
    let held: UpstreamRecord | undefined;
    override = (rec) => {
      if (rec.path !== '/v1/chat/completions') return false;
      held = rec;
      return true;
    };
    try {
      const req = client.request({
        host: rig.bridgeAddr,
        port,
        path: '/proxy/gpt/chat/completions',
        method: 'POST',
        headers: ['content-type', 'application/json'],
        body: '{"model":"o-thinking"}',
      });
      await until(() => held, 'the upstream to receive the request');
      expect(held!.closedEarly).toBe(false);
      client.abort(req.id);
      await until(() => held?.closedEarly, 'the upstream connection to close', 20_000);
      await req.done;
    } finally {
      override = null;
    }
  });

  it('breaks the client stream when the upstream fails after the headers', async () => {
    override = (rec, req, res) => {
      if (rec.path !== '/v1/chat/completions') return false;
      rec.status = 200;
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: {"partial":true}\n\n');
      setTimeout(() => req.socket.destroy(), 50);
      return true;
    };
    try {
      const res = await client.fetch({
        host: rig.bridgeAddr,
        port,
        path: '/proxy/gpt/chat/completions',
        method: 'POST',
        headers: ['content-type', 'application/json'],
        body: '{"stream":true}',
        stream: true,
      });
      captured.push(JSON.stringify(res));
      expect(res.status).toBe(200);
      expect(res.body).toContain('"partial":true');
      // Not a clean end: the client must not mistake a cut stream for a complete answer.
      expect(res.error).toBeDefined();
    } finally {
      override = null;
    }
  });

  it('answers 502 without details when the upstream fails before the headers', async () => {
    override = (rec, req) => {
      if (rec.path !== '/v1/chat/completions') return false;
      req.socket.destroy();
      return true;
    };
    try {
      const res = await client.fetch({
        host: rig.bridgeAddr,
        port,
        path: '/proxy/gpt/chat/completions',
        method: 'POST',
        headers: ['content-type', 'application/json'],
        body: '{}',
      });
      captured.push(JSON.stringify(res));
      expect(res.status).toBe(502);
      expect(JSON.parse(res.body)).toEqual({
        error: { type: 'upstream_error', message: 'the upstream request failed' },
      });
      expect(res.body).not.toContain('127.0.0.1');
    } finally {
      override = null;
    }
  });
});

describe('shutdown', () => {
  it('on SIGTERM stops accepting but lets an open stream finish', async () => {
    let release!: () => void;
    const released = new Promise<void>((r) => {
      release = r;
    });
    gate = async (i) => {
      if (i === 1) await released;
    };
    try {
      let sawFirst = false;
      const stream = client.request(claudeStream(), (e) => {
        if (e.ev === 'chunk' && e.data.includes('chunk 0 ')) sawFirst = true;
      });
      await until(() => sawFirst, 'the first chunk');
      proxy.child.kill('SIGTERM');
      await proxy.waitForLine((l) => l.msg === 'stopping: no new connections, letting open streams finish');
      const late = await client.fetch({ host: rig.bridgeAddr, port, path: '/healthz' });
      expect(late.error).toBe('ECONNREFUSED');
      release();
      const res = await stream.done;
      expect(res.error).toBeUndefined();
      expect(res.body).toContain('event: message_stop');
      expect(await proxy.exited).toBe(0);
    } finally {
      gate = null;
    }
  });

  it('never shows a key in logs, metrics, error bodies or response headers', () => {
    captured.push(proxy.stdout, proxy.stderr, client.received);
    const all = captured.join('\n');
    expect(all).toContain('"msg":"request"');
    for (const k of Object.values(keys)) expect(all).not.toContain(k);
  });
});
