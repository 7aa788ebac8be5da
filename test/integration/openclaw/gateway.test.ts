import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { Secret } from '../../../common/secret.ts';
import { DEFAULT_GATEWAY_IMAGE } from '../../../operator/api/schema.ts';
import {
  COMPOSE_SERVICE,
  composeFile,
  gatewayConfig,
  gatewayEnvFile,
  keyFile,
} from '../../../operator/host/index.ts';
import { waitUntil } from '../../lib/wait.ts';
import { anthropic, gemini, openai, type RunningUpstream } from '../../upstreams/index.ts';
import {
  baseEnv,
  chatFixture,
  freePort,
  type OpenClawEnv,
  type RunningGateway,
  readIfPresent,
  startGateway,
  startTap,
  type Tap,
  validateConfig,
  waitReady,
  walk,
} from './run.ts';

/**
 * The REAL OpenClaw gateway (npm package, pinned to the default image's release) run with the
 * config and the compose command/environment our templates generate, talking to the REAL
 * proxy (from source, on loopback with --allow 127.0.0.0/8 instead of the bridge) which
 * talks to fake upstreams. Only the container is missing: the compose shim's e2e adds it.
 *
 *   test ──chat──▶ gateway ──proxy-managed──▶ tap ──▶ proxy ──real key──▶ fake upstream
 */

const { CHAT_TIMEOUT_MS, REAL, TOKEN, MODEL_KEYS } = chatFixture();

let dir: string;
let ups: { claude: RunningUpstream; gpt: RunningUpstream; gemini: RunningUpstream };
let proxy: ChildProcess | undefined;
let proxyOutput = '';
let tap: Tap;
let gw: RunningGateway | undefined;
let gwUrl: string;
let env: OpenClawEnv;
let configHash: string;
let startupMs: number;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cannes-openclaw-'));
  ups = {
    claude: await anthropic.start({ keys: [REAL.claude] }),
    gpt: await openai.start({ keys: [REAL.gpt] }),
    gemini: await gemini.start({ keys: [REAL.gemini] }),
  };

  // The key file exactly as the operator writes it (only the upstream origins are local).
  const keys = keyFile([
    { id: 'claude', provider: 'anthropic', apiKey: new Secret(REAL.claude), baseUrl: ups.claude.url },
    { id: 'gpt', provider: 'openai', apiKey: new Secret(REAL.gpt), baseUrl: `${ups.gpt.url}/v1` },
    {
      id: 'gemini',
      provider: 'google',
      apiKey: new Secret(REAL.gemini),
      baseUrl: `${ups.gemini.url}/v1beta`,
    },
  ]);
  const keyPath = join(dir, 'model-keys.json');
  writeFileSync(keyPath, keys.reveal(), { mode: 0o600 });
  chmodSync(keyPath, 0o600);

  const proxyPort = await freePort();
  proxy = spawn(
    process.execPath,
    [
      'proxy/main.ts',
      '--keys',
      keyPath,
      '--listen',
      `127.0.0.1:${proxyPort}`,
      '--allow',
      '127.0.0.0/8',
      '--metrics',
      'off',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  proxy.stdout?.on('data', (b: Buffer) => {
    proxyOutput += b.toString();
  });
  proxy.stderr?.on('data', (b: Buffer) => {
    proxyOutput += b.toString();
  });
  await waitUntil(
    'the proxy /healthz',
    async () => (await fetch(`http://127.0.0.1:${proxyPort}/healthz`)).ok,
    30_000,
    { intervalMs: 200, onTimeout: () => proxyOutput },
  );
  tap = await startTap(`http://127.0.0.1:${proxyPort}`);

  // The gateway: config from gatewayConfig(), command and environment from composeFile().
  const port = await freePort();
  gwUrl = `http://127.0.0.1:${port}`;
  const config = gatewayConfig({
    port,
    modelKeys: MODEL_KEYS,
    proxy: { hostOrigin: tap.url, bridgeOrigin: tap.url },
  });
  env = {
    home: join(dir, 'home'),
    stateDir: join(dir, 'state'),
    configPath: join(dir, 'config', 'openclaw.json'),
  };
  for (const d of [env.home, env.stateDir, join(dir, 'config')]) mkdirSync(d, { recursive: true });
  // Only addition for a run outside a container: the log file inside our temp dir, not /tmp/openclaw.
  const text = JSON.stringify({ ...config, logging: { file: join(dir, 'openclaw.log') } }, null, 2);
  writeFileSync(env.configPath, text);
  configHash = createHash('sha256').update(text).digest('hex');

  const svc = parse(
    composeFile({ image: DEFAULT_GATEWAY_IMAGE, port, providers: MODEL_KEYS.map((k) => k.provider) }),
  ).services[COMPOSE_SERVICE];
  const command: string[] = svc.command;
  expect(command.slice(0, 2)).toEqual(['node', 'openclaw.mjs']);
  const composeEnv: Record<string, string> = { ...svc.environment };
  // Container paths → this run's temp dir; the token as compose reads it from env_file.
  composeEnv['HOME'] = env.home;
  composeEnv['OPENCLAW_STATE_DIR'] = env.stateDir;
  composeEnv['OPENCLAW_CONFIG_PATH'] = env.configPath;
  const [name, value] = gatewayEnvFile(new Secret(TOKEN)).reveal().trim().split('=', 2);
  gw = startGateway(command.slice(2), baseEnv(env, { ...composeEnv, [name!]: value! }));
  startupMs = await waitReady(`${gwUrl}/readyz`, gw, 480_000);
  console.log(`openclaw gateway ready after ${startupMs} ms`);
});

afterAll(async () => {
  await gw?.stop();
  if (proxy && proxy.exitCode === null) {
    const exited = new Promise<void>((r) => proxy!.once('exit', () => r()));
    proxy.kill('SIGKILL');
    await exited;
  }
  await tap?.close();
  await Promise.all(Object.values(ups ?? {}).map((u) => u.close()));
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function chat(model: string, token = TOKEN): Promise<{ status: number; content: string }> {
  const r = await fetch(`${gwUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${token}`,
      'content-type': 'application/json',
      'x-openclaw-model': model,
    },
    body: JSON.stringify({ model: 'openclaw', messages: [{ role: 'user', content: 'Say hello.' }] }),
    signal: AbortSignal.timeout(CHAT_TIMEOUT_MS),
  });
  const body: unknown = await r.json().catch(() => null);
  const content = (body as { choices?: { message?: { content?: unknown } }[] } | null)?.choices?.[0]?.message
    ?.content;
  return { status: r.status, content: typeof content === 'string' ? content : JSON.stringify(body) };
}

describe('the real OpenClaw gateway with the generated config', () => {
  it('passes the package validator as it is run', async () => {
    expect(await validateConfig(env)).toEqual({ valid: true, issues: [] });
  });

  it('refuses the chat endpoint without the gateway token', async () => {
    const r = await chat('cannes-claude/claude-fake-1', 'not-the-token-0000000000');
    expect(r.status).toBe(401);
  });

  for (const [name, model, header, expected] of [
    ['claude', 'cannes-claude/claude-fake-1', 'x-api-key', (k: string) => k],
    ['gpt', 'cannes-gpt/gpt-fake-1', 'authorization', (k: string) => `Bearer ${k}`],
    ['gemini', 'cannes-gemini/gemini-fake-1', 'x-goog-api-key', (k: string) => k],
  ] as const) {
    it(
      `answers a chat through the proxy with the ${name} upstream, which alone sees the real key`,
      async () => {
        const before = ups[name].requests.length;
        const r = await chat(model);
        expect(r.status, gw?.output().slice(-4000)).toBe(200);
        expect(r.content).toContain('chunk 0');
        expect(r.content).toContain('chunk 2');
        const got = ups[name].requests.slice(before);
        expect(got.length).toBeGreaterThan(0);
        for (const req of got) {
          // Exactly one credential: the real one, in the provider's header, injected by the proxy.
          expect(req.credentials).toEqual([{ where: header, value: expected(REAL[name]) }]);
        }
        // What the gateway itself sent: the placeholder, never a key.
        const sent = tap.seen.filter((s) => s.path.startsWith(`/proxy/${name}/`));
        expect(sent.length).toBeGreaterThan(0);
        for (const s of sent) expect(Object.values(s.credentials)).toEqual([expected('proxy-managed')]);
      },
      CHAT_TIMEOUT_MS + 60_000,
    );
  }

  it('leaves the operator-managed config untouched (OPENCLAW_CONFIG_READONLY)', () => {
    expect(createHash('sha256').update(readFileSync(env.configPath)).digest('hex')).toBe(configHash);
    expect(readdirSync(join(dir, 'config'))).toEqual(['openclaw.json']);
  });

  it('holds no real key or gateway token anywhere in its state, home, config or log', () => {
    const files = walk(dir).filter((f) => !f.endsWith('model-keys.json'));
    expect(files.length).toBeGreaterThan(3);
    const hits: string[] = [];
    for (const f of files) {
      const text = readIfPresent(f)?.text ?? '';
      for (const [what, secret] of Object.entries({ ...REAL, token: TOKEN })) {
        if (text.includes(secret)) hits.push(`${what} in ${f}`);
      }
    }
    expect(hits).toEqual([]);
    for (const secret of Object.values(REAL)) expect(gw?.output()).not.toContain(secret);
    expect(gw?.output()).not.toContain(TOKEN);
  });
});
