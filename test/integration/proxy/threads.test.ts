import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { anthropic, openai, type RunningUpstream, type UpstreamRecord } from '../../upstreams/index.ts';
import {
  canaryKey,
  type NetRig,
  NsClient,
  type ProxyProcess,
  type ProxyRig,
  scrape,
  startProxyRig,
  until,
  writeKeyFile,
} from './harness.ts';

/**
 * `--threads 3`: three threads of one process serve the same bridge address and port. Every
 * promise of the single-threaded proxy holds on each of them: the key file's routes (and
 * their reload), the source check, metrics (summed on the one metrics listener), drain.
 * Each request goes on a new connection, so the kernel spreads them over the threads; the
 * request log line names the thread that served it.
 */
const THREADS = 3;
const N = 30;
const keys = { anthropic: canaryKey('ant'), openai: canaryKey('oai'), openai2: canaryKey('oai2') };
const captured: string[] = [];
let gate: ((index: number, rec: UpstreamRecord) => Promise<void>) | null = null;

let pr: ProxyRig;
let rig: NetRig;
let keyFile: string;
let proxy: ProxyProcess;
let ant: RunningUpstream;
let oai: RunningUpstream;
let bridgeClient: NsClient;
let outsideClient: NsClient;
let port: number;
let metricsPort: number;

beforeAll(async () => {
  ant = await anthropic.start({ keys: [keys.anthropic], chunks: 4, beforeEvent: (i, r) => gate?.(i, r) });
  oai = await openai.start({ keys: [keys.openai, keys.openai2] });
  pr = await startProxyRig(
    'threads',
    {
      claude: { provider: 'anthropic', apiKey: keys.anthropic, baseUrl: ant.url },
      gpt: { provider: 'openai', apiKey: keys.openai, baseUrl: `${oai.url}/v1` },
    },
    { args: ['--threads', String(THREADS)] },
  );
  ({ rig, keyFile, proxy, port, metricsPort, client: bridgeClient } = pr);
  outsideClient = new NsClient(rig.outsideNs);
  await outsideClient.ready();
});
afterAll(async () => {
  outsideClient?.close();
  await pr?.close();
  await ant?.close();
  await oai?.close();
});

const chat = () =>
  bridgeClient.fetch({
    host: rig.bridgeAddr,
    port,
    path: '/proxy/gpt/chat/completions',
    method: 'POST',
    headers: ['content-type', 'application/json', 'authorization', 'Bearer client-fake'],
    body: JSON.stringify({ model: 'gpt-fake-1', messages: [{ role: 'user', content: 'hi' }] }),
  });

/** Request log lines from `from` on, by thread. */
function threadsSince(from: number): Map<number, number> {
  const by = new Map<number, number>();
  for (const l of proxy.lines.slice(from)) {
    if (l.msg !== 'request') continue;
    const t = Number(l['thread']);
    by.set(t, (by.get(t) ?? 0) + 1);
  }
  return by;
}

async function requestsTotal(): Promise<number> {
  const m = /cannes_proxy_requests_total\{provider="openai",status_class="2xx"\} (\d+)/.exec(
    await scrape(metricsPort),
  );
  return Number(m?.[1] ?? 0);
}

describe('a proxy with three threads', () => {
  it('serves from every thread, each with exactly the real key, and sums their metrics', async () => {
    const from = proxy.lines.length;
    const before = oai.requests.length;
    for (let i = 0; i < N; i++) {
      const res = await chat();
      captured.push(JSON.stringify(res));
      expect(res.status).toBe(200);
    }
    const recs = oai.requests.slice(before);
    expect(recs).toHaveLength(N);
    for (const r of recs)
      expect(r.credentials).toEqual([{ where: 'authorization', value: `Bearer ${keys.openai}` }]);
    await until(() => [...threadsSince(from).values()].reduce((a, b) => a + b, 0) === N, 'request lines');
    // 30 new connections over 3 listening sockets: all on one is a 3^-29 chance.
    expect(threadsSince(from).size).toBeGreaterThanOrEqual(2);
    for (const t of threadsSince(from).keys()) expect(t).toBeGreaterThanOrEqual(0);
    expect(await requestsTotal()).toBe(N);
  });

  it('hands a reloaded key file to every thread', async () => {
    writeKeyFile(keyFile, {
      claude: { provider: 'anthropic', apiKey: keys.anthropic, baseUrl: ant.url },
      gpt: { provider: 'openai', apiKey: keys.openai2, baseUrl: `${oai.url}/v1` },
    });
    proxy.child.kill('SIGHUP');
    await proxy.waitForLine((l) => l.msg === 'key file loaded' && l['trigger'] !== 'start');
    const from = proxy.lines.length;
    const before = oai.requests.length;
    for (let i = 0; i < N; i++) expect((await chat()).status).toBe(200);
    for (const r of oai.requests.slice(before)) {
      expect(r.credentials).toEqual([{ where: 'authorization', value: `Bearer ${keys.openai2}` }]);
    }
    await until(() => [...threadsSince(from).values()].reduce((a, b) => a + b, 0) === N, 'request lines');
    expect(threadsSince(from).size).toBeGreaterThanOrEqual(2);
  });

  it('refuses a client from outside the bridge range on every thread, and counts each refusal', async () => {
    const refusals = async () =>
      Number(
        /cannes_proxy_refusals_total\{reason="source_not_allowed"\} (\d+)/.exec(
          await scrape(metricsPort),
        )?.[1] ?? 0,
      );
    const before = await refusals();
    const before2 = oai.requests.length;
    for (let i = 0; i < N; i++) {
      // A 10.x namespace reaching the bridge address: routed, then refused by the source check.
      const res = await outsideClient.fetch({ host: rig.bridgeAddr, port, path: '/proxy/gpt/models' });
      captured.push(JSON.stringify(res));
      expect(res.status).toBe(0);
      expect(res.error).toMatch(/ECONNRESET|socket hang up|EPIPE|incomplete/);
    }
    expect(oai.requests.length).toBe(before2);
    await until(async () => (await refusals()) === before + N, 'every refusal counted');
  });

  it('on SIGTERM lets open streams on every thread finish, then exits 0', async () => {
    let release!: () => void;
    const released = new Promise<void>((r) => {
      release = r;
    });
    gate = async (i) => {
      if (i === 1) await released;
    };
    const from = proxy.lines.length;
    const streams = Array.from({ length: 9 }, () => {
      let first = false;
      const s = bridgeClient.request(
        {
          host: rig.bridgeAddr,
          port,
          path: '/proxy/claude/v1/messages',
          method: 'POST',
          headers: ['content-type', 'application/json', 'anthropic-version', '2023-06-01'],
          body: JSON.stringify({ model: 'claude-fake-1', max_tokens: 10, stream: true, messages: [] }),
          stream: true,
        },
        (e) => {
          if (e.ev === 'chunk' && e.data.includes('chunk 0 ')) first = true;
        },
      );
      return { s, seen: () => first };
    });
    await until(() => streams.every((x) => x.seen()), 'the first chunk of every stream');
    proxy.child.kill('SIGTERM');
    await proxy.waitForLine((l) => l.msg === 'stopping: no new connections, letting open streams finish');
    release();
    for (const { s } of streams) {
      const res = await s.done;
      captured.push(JSON.stringify(res));
      expect(res.error).toBeUndefined();
      expect(res.body).toContain('event: message_stop');
    }
    expect(await proxy.exited).toBe(0);
    // Every stream's request line was written before the process ended (worker threads
    // gather theirs for up to 100 ms), and they came from more than one thread.
    expect([...threadsSince(from).values()].reduce((a, b) => a + b, 0)).toBe(streams.length);
    expect(threadsSince(from).size).toBeGreaterThanOrEqual(2);
    gate = null;
  });

  it('never shows a key in logs, metrics, error bodies or response headers', () => {
    captured.push(proxy.stdout, proxy.stderr, bridgeClient.received, outsideClient.received);
    const all = captured.join('\n');
    expect(all).toContain('"msg":"request"');
    for (const k of Object.values(keys)) expect(all).not.toContain(k);
  });
});
