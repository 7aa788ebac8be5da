import { chownSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { anthropic, openai, type RunningUpstream } from '../../upstreams/index.ts';
import {
  buildBundle,
  canaryKey,
  createNetRig,
  type NetRig,
  NsClient,
  ProxyProcess,
  scrape,
  tempDir,
  until,
  writeKeyFile,
  writeRaw,
} from './harness.ts';

const keyA = canaryKey('first');
const keyB = canaryKey('second');
const captured: string[] = [];
let rig: NetRig;
let tmp: ReturnType<typeof tempDir>;
let bundle: { file: string; dir: string };
let ant: RunningUpstream;
let oai: RunningUpstream;
let client: NsClient;
let running: ProxyProcess[] = [];

beforeAll(async () => {
  rig = createNetRig();
  tmp = tempDir('keys');
  bundle = buildBundle();
  ant = await anthropic.start({ keys: [keyA, keyB] });
  oai = await openai.start({ keys: [keyA, keyB] });
  client = new NsClient(rig.bridgeNs);
  await client.ready();
});

afterEach(async () => {
  for (const p of running) {
    captured.push(p.stdout, p.stderr);
    await p.stop();
  }
  running = [];
});

afterAll(async () => {
  client?.close();
  await ant?.close();
  await oai?.close();
  rig?.destroy();
  tmp?.cleanup();
  if (bundle) rmSync(bundle.dir, { recursive: true, force: true });
});

function start(keyFile: string, extra: string[] = []): ProxyProcess {
  const p = new ProxyProcess(bundle.file, [
    '--keys',
    keyFile,
    '--listen',
    `${rig.bridgeAddr}:0`,
    '--metrics',
    '127.0.0.1:0',
    ...extra,
  ]);
  running.push(p);
  return p;
}

function messages(port: number, id: string) {
  return client.fetch({
    host: rig.bridgeAddr,
    port,
    path: `/proxy/${id}/v1/messages`,
    method: 'POST',
    headers: ['content-type', 'application/json', 'anthropic-version', '2023-06-01'],
    body: '{"model":"m","max_tokens":1,"messages":[]}',
  });
}

let n = 0;
const file = () => join(tmp.dir, `keys-${++n}.json`);

describe('key file at start', () => {
  it('refuses to start when the key file has mode 0644', async () => {
    const f = file();
    writeKeyFile(f, { a: { provider: 'anthropic', apiKey: keyA, baseUrl: ant.url } }, 0o644);
    const p = start(f);
    expect(await p.exited).toBe(2);
    expect(p.stderr).toMatch(/mode 644/);
    expect(p.stderr).not.toContain(keyA);
  });

  it("refuses to start when the key file is not owned by the proxy's user", async () => {
    const f = file();
    writeKeyFile(f, { a: { provider: 'anthropic', apiKey: keyA, baseUrl: ant.url } });
    chownSync(f, 65534, 65534);
    const p = start(f);
    expect(await p.exited).toBe(2);
    expect(p.stderr).toMatch(/owned by uid 65534/);
  });

  it('refuses to start on a broken key file without quoting it', async () => {
    const f = file();
    writeRaw(f, `{"version":1,"keys":{"a":{"provider":"anthropic","apiKey":"${keyA}",}}}`);
    const p = start(f);
    expect(await p.exited).toBe(2);
    expect(p.stderr).toMatch(/not valid JSON/);
    expect(p.stderr).not.toContain(keyA);
  });
});

describe('key file changes', () => {
  it('hot-reloads a key file replaced by atomic rename', async () => {
    const f = file();
    writeKeyFile(f, { a: { provider: 'anthropic', apiKey: keyA, baseUrl: ant.url } });
    const p = start(f);
    const port = (await p.listening(1)).get(rig.bridgeAddr)!;
    expect((await messages(port, 'a')).status).toBe(200);
    expect(ant.requests.at(-1)!.credentials).toEqual([{ where: 'x-api-key', value: keyA }]);

    writeKeyFile(f, { b: { provider: 'anthropic', apiKey: keyB, baseUrl: ant.url } });
    await p.waitForLine((l) => l.msg === 'key file loaded' && l['trigger'] !== 'start');
    const res = await messages(port, 'b');
    captured.push(JSON.stringify(res));
    expect(res.status).toBe(200);
    expect(ant.requests.at(-1)!.credentials).toEqual([{ where: 'x-api-key', value: keyB }]);
    expect((await messages(port, 'a')).status).toBe(404);
  });

  it('reloads on SIGHUP', async () => {
    const f = file();
    writeKeyFile(f, { a: { provider: 'anthropic', apiKey: keyA, baseUrl: ant.url } });
    const p = start(f, ['--watch-key-file', 'off']);
    const port = (await p.listening(1)).get(rig.bridgeAddr)!;
    writeKeyFile(f, {
      a: { provider: 'anthropic', apiKey: keyA, baseUrl: ant.url },
      c: { provider: 'openai', apiKey: keyB, baseUrl: `${oai.url}/v1` },
    });
    const models = () => client.fetch({ host: rig.bridgeAddr, port, path: '/proxy/c/models' });
    expect((await models()).status).toBe(404);
    p.child.kill('SIGHUP');
    await p.waitForLine((l) => l.msg === 'key file loaded' && l['trigger'] === 'signal');
    expect((await models()).status).toBe(200);
    expect(oai.requests.at(-1)!.credentials).toEqual([{ where: 'authorization', value: `Bearer ${keyB}` }]);
  });

  it('keeps the last good key file when the new one is broken, and says why without key material', async () => {
    const f = file();
    writeKeyFile(f, { a: { provider: 'anthropic', apiKey: keyA, baseUrl: ant.url } });
    const p = start(f);
    const port = (await p.listening(1)).get(rig.bridgeAddr)!;
    const metricsPort = await p.metricsPort();

    writeRaw(f, `{"version":1,"keys":{"a":{"provider":"anthropic","apiKey":"${keyB}"`);
    await p.waitForLine((l) => l.msg === 'key file reload failed; keeping the last good key file');
    let res = await messages(port, 'a');
    expect(res.status).toBe(200);
    expect(ant.requests.at(-1)!.credentials).toEqual([{ where: 'x-api-key', value: keyA }]);

    // Also a well-formed file that became world-readable.
    writeKeyFile(f, { a: { provider: 'anthropic', apiKey: keyB, baseUrl: ant.url } }, 0o644);
    await p.waitForLine((l) => typeof l['message'] === 'string' && /mode 644/.test(l['message']));
    res = await messages(port, 'a');
    expect(res.status).toBe(200);
    expect(ant.requests.at(-1)!.credentials).toEqual([{ where: 'x-api-key', value: keyA }]);

    const metrics = await scrape(metricsPort);
    captured.push(metrics);
    expect(metrics).toMatch(/cannes_proxy_key_file_reloads_total\{result="error"\} [1-9]/);
    expect(p.stdout).not.toContain(keyB);

    // Fixed again: picked up.
    writeKeyFile(f, { a: { provider: 'anthropic', apiKey: keyB, baseUrl: ant.url } });
    await until(async () => {
      await messages(port, 'a');
      return ant.requests.at(-1)!.credentials[0]?.value === keyB;
    }, 'the fixed key file to be used');
  });
});

describe('key file deleted', () => {
  it('stops injecting at once (503 on every thread, nothing upstream), says so once, resumes when it returns', async () => {
    const f = file();
    writeKeyFile(f, { a: { provider: 'anthropic', apiKey: keyA, baseUrl: ant.url } });
    const p = start(f, ['--threads', '2']);
    const port = (await p.listening(1)).get(rig.bridgeAddr)!;
    const metricsPort = await p.metricsPort();
    expect((await messages(port, 'a')).status).toBe(200);

    rmSync(f);
    await p.waitForLine(
      (l) => l.msg === 'key file is gone; refusing every proxied request (503) until it returns',
    );
    const before = ant.requests.length;
    // Connections spread over both threads (each request is a new connection).
    await until(
      async () => (await messages(port, 'a')).status === 503,
      'the workers to see the key file gone',
    );
    for (let i = 0; i < 8; i++) {
      const res = await messages(port, 'a');
      captured.push(JSON.stringify(res));
      expect(res.status).toBe(503);
      expect(JSON.parse(res.body).error.type).toBe('unavailable');
    }
    expect(ant.requests.length).toBe(before);
    // An unknown id gets the same answer: no route is trusted without the file.
    expect((await messages(port, 'nope')).status).toBe(503);
    // The 5 s poll and more requests: still the one line.
    await new Promise((r) => setTimeout(r, 5500));
    expect(p.lines.filter((l) => /key file is gone/.test(String(l.msg))).length).toBe(1);
    const m = await scrape(metricsPort);
    captured.push(m);
    expect(m).toMatch(/cannes_proxy_refusals_total\{reason="key_file_missing"\} [1-9]/);
    expect(m).toMatch(/cannes_proxy_routes 0/);

    // The same file again: picked up (its digest matches the old one, it is applied anyway).
    writeKeyFile(f, { a: { provider: 'anthropic', apiKey: keyA, baseUrl: ant.url } });
    await p.waitForLine((l) => l.msg === 'key file loaded' && l['trigger'] !== 'start');
    for (let i = 0; i < 6; i++) {
      const res = await until(async () => {
        const r = await messages(port, 'a');
        return r.status === 200 && r;
      }, 'the returned key file to be used on every thread');
      expect(res.status).toBe(200);
      expect(ant.requests.at(-1)!.credentials).toEqual([{ where: 'x-api-key', value: keyA }]);
    }
  }, 30_000);
});

describe('secrecy', () => {
  it('never shows a key in logs, metrics, error bodies or response headers', () => {
    captured.push(client.received);
    const all = captured.join('\n');
    expect(all).toContain('key file loaded');
    expect(all).not.toContain(keyA);
    expect(all).not.toContain(keyB);
  });
});
