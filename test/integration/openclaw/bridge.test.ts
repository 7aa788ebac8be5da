import { type ChildProcess, execFile, execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { Secret } from '../../../common/secret.ts';
import { DEFAULT_GATEWAY_IMAGE, DEFAULT_GATEWAY_PORT } from '../../../operator/api/schema.ts';
import {
  COMPOSE_SERVICE,
  CONTAINER_CONFIG_DIR,
  CONTAINER_HOME,
  CONTAINER_STATE_DIR,
  composeFile,
  GATEWAY_GID,
  GATEWAY_UID,
  gatewayConfig,
  gatewayEnvFile,
  HOST,
  keyFile,
  nftablesRules,
  PROXY_NODE_FLAGS,
  proxyUnit,
} from '../../../operator/host/index.ts';
import { openclawDir } from '../../lib/openclaw.ts';
import { waitFor } from '../../lib/wait.ts';
import { chatFixture, type RunningGateway, readIfPresent, startGateway, walk } from './run.ts';

/**
 * The production addressing, unchanged: a network namespace with a `docker0` at 172.17.0.1,
 * the REAL proxy started with the exact ExecStart of proxyUnit() (bridge address, default
 * 172.16.0.0/12 allowlist), the REAL gateway with gatewayConfig() untouched (providers at
 * `http://host.docker.internal:3101/proxy/<name>`, Google at `http://172.17.0.1:3101/…`) and
 * `/etc/hosts` mapping host.docker.internal to the bridge, as compose's `extra_hosts` does,
 * running as uid 1000 with the config mounted read-only, in its own network namespace at
 * 172.17.0.2 on the host's docker0, behind the host firewall of nftablesRules(). Fake
 * upstreams run on the host's loopback: the gateway can reach them only through the proxy.
 */

const id = randomBytes(3).toString('hex');
/** The VPS host (docker0, proxy, firewall, upstreams) and the gateway container on its bridge. */
const NS = `cx-gw-${id}`;
const NS_C = `cx-gc-${id}`;
const { CHAT_TIMEOUT_MS, REAL, TOKEN, MODEL_KEYS } = chatFixture();
// The host reaches the container directly (what the published port forwards to).
const GW = `http://172.17.0.2:${DEFAULT_GATEWAY_PORT}`;

interface Received {
  upstream: string;
  path: string;
  credentials: { where: string; value: string }[];
}

let dir: string;
const nsCreated: string[] = [];
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
fetch(u, { ...i, signal: AbortSignal.timeout(${CHAT_TIMEOUT_MS}) }).then(async (r) => console.log(JSON.stringify({ status: r.status, body: await r.text() })), (e) => console.log(JSON.stringify({ status: 0, body: String(e) })));`;
  const { stdout } = await promisify(execFile)(
    'ip',
    ['netns', 'exec', NS, process.execPath, '-e', script, url, JSON.stringify(init)],
    { timeout: CHAT_TIMEOUT_MS + 20_000 },
  );
  const r: unknown = JSON.parse(stdout);
  const o = r as { status: number; body: string };
  return { status: o.status, body: o.body };
}

/** Polls once a second; stops early, with the gateway's output, when the gateway has exited. */
function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  return waitFor(what, fn, timeoutMs, {
    intervalMs: 1_000,
    giveUp: () =>
      gw !== undefined && gw.child.exitCode !== null ? `gateway exited:\n${gw.output()}` : undefined,
    onTimeout: () => gw?.output() ?? '',
  });
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cannes-bridge-'));
  for (const ns of [NS, NS_C]) {
    execFileSync('ip', ['netns', 'add', ns]);
    nsCreated.push(ns);
  }
  for (const [ns, ...args] of [
    [NS, 'link', 'set', 'lo', 'up'],
    [NS, 'link', 'add', 'docker0', 'type', 'bridge'],
    [NS, 'addr', 'add', '172.17.0.1/16', 'dev', 'docker0'],
    [NS, 'link', 'set', 'docker0', 'up'],
    [NS, 'link', 'add', 'veth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NS_C],
    [NS, 'link', 'set', 'veth0', 'master', 'docker0'],
    [NS, 'link', 'set', 'veth0', 'up'],
    [NS_C, 'link', 'set', 'lo', 'up'],
    [NS_C, 'addr', 'add', '172.17.0.2/16', 'dev', 'eth0'],
    [NS_C, 'link', 'set', 'eth0', 'up'],
    [NS_C, 'route', 'add', 'default', 'via', '172.17.0.1'],
  ] as const) {
    execFileSync('ip', ['-n', ns, ...args]);
  }
  // The host firewall, loaded before anything runs: the gateway's path must survive it.
  writeFileSync(join(dir, 'cannes.nft'), nftablesRules());
  execFileSync('ip', ['netns', 'exec', NS, 'nft', '-f', join(dir, 'cannes.nft')]);

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
  // node, its V8 flags, then the bundle: run here as the unit says, the source for the bundle.
  expect(execStart.slice(0, 2 + PROXY_NODE_FLAGS.length)).toEqual([
    'node',
    ...PROXY_NODE_FLAGS,
    HOST.proxyBundle.path,
  ]);
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

  // The gateway as the container runs it: uid 1000, the config directory mounted read-only,
  // the state directory (700, uid 1000) mounted read-write, its own /tmp and /etc/hosts.
  config = gatewayConfig({ port: DEFAULT_GATEWAY_PORT, modelKeys: MODEL_KEYS });
  const configDir = join(dir, 'config');
  const stateDir = join(dir, 'state');
  mkdirSync(configDir, { mode: 0o755 });
  mkdirSync(stateDir, { mode: 0o700 });
  chownSync(stateDir, GATEWAY_UID, GATEWAY_GID);
  writeFileSync(join(configDir, 'openclaw.json'), JSON.stringify(config), { mode: 0o644 });
  const hosts = join(dir, 'hosts');
  // What compose's extra_hosts host.docker.internal:host-gateway puts in the container.
  writeFileSync(hosts, '127.0.0.1\tlocalhost\n::1\tlocalhost\n172.17.0.1\thost.docker.internal\n', {
    mode: 0o644,
  });
  const svc = parse(
    composeFile({
      image: DEFAULT_GATEWAY_IMAGE,
      port: DEFAULT_GATEWAY_PORT,
      providers: MODEL_KEYS.map((k) => k.provider),
    }),
  ).services[COMPOSE_SERVICE];
  expect(svc.user).toBe(`${GATEWAY_UID}:${GATEWAY_GID}`);
  expect(svc.volumes).toEqual([
    `${HOST.gatewayConfigDir.path}:${CONTAINER_CONFIG_DIR}:ro`,
    `${HOST.gatewayStateDir.path}:${CONTAINER_STATE_DIR}`,
  ]);
  // /etc/openclaw cannot be created on this machine, so the config directory is mounted
  // under the container's home instead; everything else is the compose file's.
  const containerConfigDir = `${CONTAINER_HOME}/cannes-config`;
  const env: Record<string, string> = {
    ...svc.environment,
    OPENCLAW_CONFIG_PATH: `${containerConfigDir}/openclaw.json`,
  };
  const [name, value] = gatewayEnvFile(new Secret(TOKEN)).reveal().trim().split('=', 2);
  // The node and OpenClaw installs live under /root (mode 700): bind them where uid 1000 can go.
  const container = [
    'set -e',
    'mount -t tmpfs -o mode=755 tmpfs /home',
    `mkdir -p ${CONTAINER_STATE_DIR} ${containerConfigDir} /home/app /home/node-bin`,
    `chown ${GATEWAY_UID}:${GATEWAY_GID} ${CONTAINER_HOME}`,
    `mount --bind "$STATE" ${CONTAINER_STATE_DIR}`,
    `mount --bind "$CONFIG" ${containerConfigDir} && mount -o remount,bind,ro ${containerConfigDir}`,
    'mount --bind "$APP" /home/app && mount -o remount,bind,ro /home/app',
    'mount --bind "$NODE_DIR" /home/node-bin && mount -o remount,bind,ro /home/node-bin',
    'mount --bind "$HOSTS" /etc/hosts',
    // Last: the sources above live under the host's /tmp.
    'mount -t tmpfs -o mode=1777 tmpfs /tmp',
    'cd /home/app/node_modules/openclaw',
    `exec setpriv --reuid ${GATEWAY_UID} --regid ${GATEWAY_GID} --clear-groups /home/node-bin/bin/node openclaw.mjs "$@"`,
  ].join('\n');
  gw = startGateway(
    (svc.command as string[]).slice(2),
    {
      PATH: '/usr/local/bin:/usr/bin:/bin',
      NO_COLOR: '1',
      ...env,
      [name!]: value!,
      HOSTS: hosts,
      STATE: stateDir,
      CONFIG: configDir,
      APP: openclawDir(),
      NODE_DIR: dirname(dirname(process.execPath)),
    },
    ['ip', 'netns', 'exec', NS_C, 'unshare', '-m', 'sh', '-c', container, 'container'],
  );
  await until(
    'gateway /readyz',
    async () => ((await nsFetch(`${GW}/readyz`)).status === 200 ? true : undefined),
    480_000,
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
  for (const ns of nsCreated) spawnSync('ip', ['netns', 'del', ns]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('the real gateway as a container on docker0, behind the host firewall, through the proxy', () => {
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
    it(
      `answers through the bridge-bound proxy for ${name}, whose upstream alone gets the real key`,
      async () => {
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
      },
      CHAT_TIMEOUT_MS + 60_000,
    );
  }

  it('runs as uid 1000 and writes only its state directory, which holds no key or token', () => {
    const files = walk(join(dir, 'state'));
    expect(files.length).toBeGreaterThan(3);
    for (const f of files) {
      const uid = readIfPresent(f)?.uid;
      if (uid !== undefined) expect(uid, f).toBe(GATEWAY_UID);
    }
    expect(readdirSync(join(dir, 'config'))).toEqual(['openclaw.json']);
    const hits: string[] = [];
    for (const f of files) {
      const text = readIfPresent(f)?.text ?? '';
      for (const [what, secret] of Object.entries({ ...REAL, token: TOKEN }))
        if (text.includes(secret)) hits.push(`${what} in ${f}`);
    }
    expect(hits).toEqual([]);
  });
});
