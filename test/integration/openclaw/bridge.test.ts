import { type ChildProcess, execFile, execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { DEFAULT_GATEWAY_IMAGE, DEFAULT_GATEWAY_PORT } from '../../../operator/api/schema.ts';
import { Secret } from '../../../operator/lib/secret.ts';
import {
  COMPOSE_SERVICE,
  composeFile,
  type GatewayModelKey,
  gatewayConfig,
  gatewayEnvFile,
  HOST,
  keyFile,
  proxyUnit,
} from '../../../operator/remote/index.ts';
import { baseEnv, type RunningGateway, startGateway } from './run.ts';

/**
 * The production addressing, unchanged: a network namespace with a `docker0` at 172.17.0.1,
 * the REAL proxy started with the exact ExecStart of proxyUnit() (bridge address, default
 * 172.16.0.0/12 allowlist), the REAL gateway with gatewayConfig() untouched (providers at
 * `http://host.docker.internal:3101/proxy/<name>`, Google at `http://172.17.0.1:3101/…`) and
 * `/etc/hosts` mapping host.docker.internal to the bridge, as compose's `extra_hosts` does.
 * Fake upstreams run in the same namespace. What is missing is only the container boundary.
 */

const id = randomBytes(3).toString('hex');
const NS = `cx-gw-${id}`;
const canary = (what: string) => `sk-${what}-canary-${randomBytes(18).toString('base64url')}`;
const REAL = { claude: canary('ant'), gpt: canary('oai'), gemini: canary('goog') };
const TOKEN = canary('gwtoken');
const MODEL_KEYS: GatewayModelKey[] = [
  { name: 'claude', provider: 'anthropic', models: [{ id: 'claude-fake-1', name: 'Claude Fake' }] },
  { name: 'gpt', provider: 'openai', models: [{ id: 'gpt-fake-1', name: 'GPT Fake' }] },
  { name: 'gemini', provider: 'google', models: [{ id: 'gemini-fake-1', name: 'Gemini Fake' }] },
];
const GW = `http://127.0.0.1:${DEFAULT_GATEWAY_PORT}`;

interface Received {
  upstream: string;
  path: string;
  credentials: { where: string; value: string }[];
}

let dir: string;
let nsCreated = false;
const children: ChildProcess[] = [];
const received: Received[] = [];
let gw: RunningGateway | undefined;
let config: Record<string, unknown>;

function inNs(cmd: string[], opts: { stdout?: (line: string) => void } = {}): ChildProcess {
  const child = spawn('ip', ['netns', 'exec', NS, ...cmd], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let buf = '';
  child.stdout?.on('data', (b: Buffer) => {
    buf += b.toString();
    for (let i = buf.indexOf('\n'); i !== -1; i = buf.indexOf('\n')) {
      opts.stdout?.(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  });
  child.stderr?.resume();
  return child;
}

/** fetch() from inside the namespace (the test process itself lives outside it). */
async function nsFetch(
  url: string,
  init: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<{ status: number; body: string }> {
  const script = `const [u, i] = [process.argv[1], JSON.parse(process.argv[2])];
fetch(u, { ...i, signal: AbortSignal.timeout(150000) }).then(async (r) => console.log(JSON.stringify({ status: r.status, body: await r.text() })), (e) => console.log(JSON.stringify({ status: 0, body: String(e) })));`;
  const { stdout } = await promisify(execFile)(
    'ip',
    ['netns', 'exec', NS, process.execPath, '-e', script, url, JSON.stringify(init)],
    { timeout: 170_000 },
  );
  const r: unknown = JSON.parse(stdout);
  const o = r as { status: number; body: string };
  return { status: o.status, body: o.body };
}

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const start = Date.now();
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() - start > timeoutMs)
      throw new Error(`${what}: not within ${timeoutMs} ms\n${gw?.output() ?? ''}`);
    await new Promise((r) => setTimeout(r, 1_000));
  }
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cannes-bridge-'));
  execFileSync('ip', ['netns', 'add', NS]);
  nsCreated = true;
  for (const args of [
    ['link', 'set', 'lo', 'up'],
    ['link', 'add', 'docker0', 'type', 'bridge'],
    ['addr', 'add', '172.17.0.1/16', 'dev', 'docker0'],
    ['link', 'set', 'docker0', 'up'],
  ]) {
    execFileSync('ip', ['-n', NS, ...args]);
  }

  // Fake upstreams, inside the namespace.
  const urls = await new Promise<Record<string, string>>((resolveUrls, reject) => {
    const c = inNs(
      [process.execPath, 'test/integration/openclaw/netns-upstreams.ts', REAL.claude, REAL.gpt, REAL.gemini],
      {
        stdout: (line) => {
          const msg = JSON.parse(line);
          if (msg.urls) resolveUrls(msg.urls);
          else received.push(msg);
        },
      },
    );
    c.once('exit', (code) => reject(new Error(`upstreams exited ${code}`)));
  });

  // The key file, and the proxy exactly as its systemd unit starts it (paths swapped).
  const keyPath = join(dir, 'model-keys.json');
  writeFileSync(
    keyPath,
    keyFile([
      { id: 'claude', provider: 'anthropic', apiKey: new Secret(REAL.claude), baseUrl: urls['claude'] },
      { id: 'gpt', provider: 'openai', apiKey: new Secret(REAL.gpt), baseUrl: `${urls['gpt']}/v1` },
      {
        id: 'gemini',
        provider: 'google',
        apiKey: new Secret(REAL.gemini),
        baseUrl: `${urls['gemini']}/v1beta`,
      },
    ]).reveal(),
    { mode: 0o600 },
  );
  const execStart = /^ExecStart=(.*)$/m.exec(proxyUnit())?.[1]?.split(' ') ?? [];
  expect(execStart.slice(0, 2)).toEqual(['node', HOST.proxyBundle.path]);
  const proxyArgv = execStart.map((a) =>
    a === 'node'
      ? process.execPath
      : a === HOST.proxyBundle.path
        ? resolve('proxy/main.ts')
        : a === HOST.keyFile.path
          ? keyPath
          : a,
  );
  inNs(proxyArgv);
  await until(
    'proxy',
    async () => ((await nsFetch('http://172.17.0.1:3101/healthz')).status === 200 ? true : undefined),
    30_000,
  );

  // The gateway: the production config untouched (plus a log file in our temp dir).
  config = gatewayConfig({ port: DEFAULT_GATEWAY_PORT, modelKeys: MODEL_KEYS });
  const home = join(dir, 'home');
  const stateDir = join(dir, 'state');
  const configPath = join(dir, 'config', 'openclaw.json');
  for (const d of [home, stateDir, join(dir, 'config')]) mkdirSync(d, { recursive: true });
  writeFileSync(configPath, JSON.stringify({ ...config, logging: { file: join(dir, 'openclaw.log') } }));
  const hosts = join(dir, 'hosts');
  // What compose's extra_hosts host.docker.internal:host-gateway puts in the container.
  writeFileSync(hosts, '127.0.0.1\tlocalhost\n::1\tlocalhost\n172.17.0.1\thost.docker.internal\n');
  const svc = parse(
    composeFile({
      image: DEFAULT_GATEWAY_IMAGE,
      port: DEFAULT_GATEWAY_PORT,
      providers: MODEL_KEYS.map((k) => k.provider),
    }),
  ).services[COMPOSE_SERVICE];
  const env: Record<string, string> = {
    ...svc.environment,
    HOME: home,
    OPENCLAW_STATE_DIR: stateDir,
    OPENCLAW_CONFIG_PATH: configPath,
  };
  const [name, value] = gatewayEnvFile(new Secret(TOKEN)).reveal().trim().split('=', 2);
  gw = startGateway(
    (svc.command as string[]).slice(2),
    baseEnv({ home, stateDir, configPath }, { ...env, [name!]: value! }),
    [
      'ip',
      'netns',
      'exec',
      NS,
      'unshare',
      '-m',
      'sh',
      '-c',
      'mount --bind "$0" /etc/hosts && exec "$@"',
      hosts,
    ],
  );
  await until(
    'gateway /readyz',
    async () => {
      if (gw?.child.exitCode !== null) throw new Error('gateway exited');
      return (await nsFetch(`${GW}/readyz`)).status === 200 ? true : undefined;
    },
    240_000,
  );
});

afterAll(async () => {
  await gw?.stop();
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) {
      const exited = new Promise<void>((r) => c.once('exit', () => r()));
      c.kill('SIGKILL');
      await exited;
    }
  }
  if (nsCreated) spawnSync('ip', ['netns', 'del', NS]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('the real gateway on the production addresses (docker0 172.17.0.1, host.docker.internal)', () => {
  it('uses the production proxy URLs unchanged', () => {
    const providers = config['models'] as { providers: Record<string, { baseUrl: string }> };
    expect(providers.providers['cannes-claude']?.baseUrl).toBe(
      'http://host.docker.internal:3101/proxy/claude',
    );
    expect(providers.providers['cannes-gemini']?.baseUrl).toBe('http://172.17.0.1:3101/proxy/gemini');
  });

  for (const [name, model, header, expected] of [
    ['claude', 'cannes-claude/claude-fake-1', 'x-api-key', (k: string) => k],
    ['gpt', 'cannes-gpt/gpt-fake-1', 'authorization', (k: string) => `Bearer ${k}`],
    ['gemini', 'cannes-gemini/gemini-fake-1', 'x-goog-api-key', (k: string) => k],
  ] as const) {
    it(`answers through the bridge-bound proxy for ${name}, whose upstream alone gets the real key`, async () => {
      const before = received.filter((r) => r.upstream === name).length;
      const r = await nsFetch(`${GW}/v1/chat/completions`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${TOKEN}`,
          'content-type': 'application/json',
          'x-openclaw-model': model,
        },
        body: JSON.stringify({ model: 'openclaw', messages: [{ role: 'user', content: 'Say hello.' }] }),
      });
      expect(r.status, `${r.body}\n${gw?.output().slice(-3000)}`).toBe(200);
      expect(r.body).toContain('chunk 0');
      const got = await until(
        `${name} upstream request`,
        async () => {
          const g = received.filter((x) => x.upstream === name).slice(before);
          return g.length > 0 ? g : undefined;
        },
        10_000,
      );
      for (const g of got) expect(g.credentials).toEqual([{ where: header, value: expected(REAL[name]) }]);
    });
  }
});
