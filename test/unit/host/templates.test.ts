import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { isTerminal, reasonOf } from '../../../common/errors.ts';
import { PROVIDER_NAMES, PROVIDERS } from '../../../common/providers.ts';
import { Secret } from '../../../common/secret.ts';
import { DEFAULT_GATEWAY_IMAGE } from '../../../operator/api/schema.ts';
import {
  COMPOSE_SERVICE,
  composeFile,
  firewallUnit,
  type GatewayModelKey,
  GOOGLE_TRUSTED_ORIGINS_ENV,
  gatewayConfig,
  gatewayEnvFile,
  HOST,
  imageVersion,
  keyFile,
  nftablesRules,
  proxyUnit,
  sshdHardening,
} from '../../../operator/host/index.ts';
import { parseKeyFile } from '../../../proxy/keys.ts';

const canary = (what: string) => `${what}-canary-${randomBytes(18).toString('base64url')}`;

const KEYS: GatewayModelKey[] = [
  { name: 'gpt', provider: 'openai' },
  {
    name: 'claude',
    provider: 'anthropic',
    models: [{ id: 'claude-sonnet-4-5', name: 'Sonnet' }],
    default: true,
  },
  { name: 'gemini', provider: 'google' },
];

function object(v: unknown): Record<string, unknown> {
  expect(typeof v === 'object' && v !== null && !Array.isArray(v)).toBe(true);
  return v as Record<string, unknown>;
}
function at(v: unknown, ...path: string[]): unknown {
  let cur = v;
  for (const p of path) cur = object(cur)[p];
  return cur;
}
function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a throw');
}

describe('gatewayConfig', () => {
  const config = gatewayConfig({ port: 18789, modelKeys: KEYS });
  const providers = object(at(config, 'models', 'providers'));

  it('points every provider at the proxy route of its ModelKey with apiKey "proxy-managed"', () => {
    expect(Object.keys(providers).sort()).toEqual(['cannes-claude', 'cannes-gemini', 'cannes-gpt']);
    expect(at(providers, 'cannes-claude', 'baseUrl')).toBe('http://host.docker.internal:3101/proxy/claude');
    expect(at(providers, 'cannes-gpt', 'baseUrl')).toBe('http://host.docker.internal:3101/proxy/gpt');
    for (const p of Object.values(providers)) expect(at(p, 'apiKey')).toBe('proxy-managed');
  });

  it('uses the bridge IP literal for Google, whose Gemini paths distrust host names', () => {
    expect(at(providers, 'cannes-gemini', 'baseUrl')).toBe('http://172.17.0.1:3101/proxy/gemini');
  });

  it("sets OpenClaw's api type from the provider table", () => {
    expect(at(providers, 'cannes-claude', 'api')).toBe('anthropic-messages');
    expect(at(providers, 'cannes-gpt', 'api')).toBe('openai-completions');
    expect(at(providers, 'cannes-gemini', 'api')).toBe('google-generative-ai');
    for (const p of PROVIDER_NAMES) {
      const models = p === 'custom' ? [{ id: 'm1' }] : undefined;
      const c = gatewayConfig({ port: 18789, modelKeys: [{ name: 'k', provider: p, models }] });
      expect(at(c, 'models', 'providers', 'cannes-k', 'api')).toBe(PROVIDERS[p].api);
    }
  });

  it('replaces the built-in model catalog so no provider bypasses the proxy', () => {
    expect(at(config, 'models', 'mode')).toBe('replace');
  });

  it("makes the default ModelKey's first model the agent default, whatever the order", () => {
    expect(at(config, 'agents', 'defaults', 'model', 'primary')).toBe('cannes-claude/claude-sonnet-4-5');
  });

  it('never picks a default by order: several ModelKeys need exactly one marked default', () => {
    const unmarked = KEYS.map((k) => ({ ...k, default: false }));
    expect(reasonOf(thrown(() => gatewayConfig({ port: 18789, modelKeys: unmarked })))).toBe(
      'DefaultModelRequired',
    );
    const twice = KEYS.map((k) => ({ ...k, default: true }));
    expect(reasonOf(thrown(() => gatewayConfig({ port: 18789, modelKeys: twice })))).toBe(
      'DefaultModelAmbiguous',
    );
    const alone = gatewayConfig({ port: 18789, modelKeys: [{ name: 'gpt', provider: 'openai' }] });
    expect(String(at(alone, 'agents', 'defaults', 'model', 'primary'))).toMatch(/^cannes-gpt\//);
  });

  it('offers the listed models (name defaulted to id) or the provider default model', () => {
    expect(at(providers, 'cannes-claude', 'models')).toEqual([{ id: 'claude-sonnet-4-5', name: 'Sonnet' }]);
    const gpt = at(providers, 'cannes-gpt', 'models');
    expect(Array.isArray(gpt) && gpt.length === 1).toBe(true);
    const c = gatewayConfig({
      port: 18789,
      modelKeys: [
        {
          name: 'x',
          provider: 'openrouter',
          models: [{ id: 'a/b', reasoning: true, contextWindow: 1000, maxTokens: 10 }],
        },
      ],
    });
    expect(at(c, 'models', 'providers', 'cannes-x', 'models')).toEqual([
      { id: 'a/b', name: 'a/b', reasoning: true, contextWindow: 1000, maxTokens: 10 },
    ]);
  });

  it('demands models for a custom provider (its model names cannot be guessed)', () => {
    const err = thrown(() => gatewayConfig({ port: 18789, modelKeys: [{ name: 'c', provider: 'custom' }] }));
    expect(isTerminal(err)).toBe(true);
    expect(reasonOf(err)).toBe('ModelsRequired');
  });

  it('enables the HTTP chat endpoint, token auth, and binds the container interface', () => {
    expect(at(config, 'gateway', 'http', 'endpoints', 'chatCompletions', 'enabled')).toBe(true);
    expect(at(config, 'gateway', 'auth')).toEqual({ mode: 'token' });
    expect(at(config, 'gateway', 'bind')).toBe('lan');
    expect(at(config, 'gateway', 'mode')).toBe('local');
    expect(at(config, 'gateway', 'port')).toBe(18789);
  });

  it('renders a gateway with no provider and no default model before the first ModelKey', () => {
    const c = gatewayConfig({ port: 18789, modelKeys: [] });
    expect(at(c, 'models')).toEqual({ mode: 'replace', providers: {} });
    expect(c).not.toHaveProperty('agents');
  });

  it('refuses duplicate keys and names that are not DNS names', () => {
    expect(reasonOf(thrown(() => gatewayConfig({ port: 18789, modelKeys: [KEYS[1]!, KEYS[1]!] })))).toBe(
      'DuplicateModelKey',
    );
    expect(
      reasonOf(
        thrown(() => gatewayConfig({ port: 18789, modelKeys: [{ name: '../x', provider: 'openai' }] })),
      ),
    ).toBe('InvalidModelKeyName');
  });

  it('takes other proxy origins (tests run the gateway outside a container)', () => {
    const c = gatewayConfig({
      port: 18789,
      modelKeys: KEYS,
      proxy: { hostOrigin: 'http://127.0.0.1:9/', bridgeOrigin: 'http://127.0.0.2:9' },
    });
    expect(at(c, 'models', 'providers', 'cannes-gpt', 'baseUrl')).toBe('http://127.0.0.1:9/proxy/gpt');
    expect(at(c, 'models', 'providers', 'cannes-gemini', 'baseUrl')).toBe('http://127.0.0.2:9/proxy/gemini');
  });
});

describe('composeFile', () => {
  const text = composeFile({ image: DEFAULT_GATEWAY_IMAGE, port: 18789, providers: ['anthropic', 'google'] });
  const doc = parse(text);
  const svc = object(at(doc, 'services', COMPOSE_SERVICE));

  it('runs the pinned image as uid 1000 with the gateway command on the configured port', () => {
    expect(svc['image']).toBe(DEFAULT_GATEWAY_IMAGE);
    expect(svc['user']).toBe('1000:1000');
    expect(svc['command']).toEqual(['node', 'openclaw.mjs', 'gateway', '--bind', 'lan', '--port', '18789']);
    expect(svc['restart']).toBe('unless-stopped');
    expect(svc['network_mode']).toBe('bridge');
  });

  it('publishes the gateway on the host loopback only', () => {
    expect(svc['ports']).toEqual(['127.0.0.1:18789:18789']);
  });

  it('with a tailnet: compose network for the published port, Serve on an internal network of its own', () => {
    const served = parse(
      composeFile({
        image: DEFAULT_GATEWAY_IMAGE,
        port: 18789,
        providers: ['anthropic'],
        serveNetwork: true,
      }),
    );
    const s2 = object(at(served, 'services', COMPOSE_SERVICE));
    expect(s2['network_mode']).toBeUndefined();
    expect(s2['networks']).toEqual({ default: {}, serve: { ipv4_address: '172.31.255.250' } });
    expect(s2['ports']).toEqual(['127.0.0.1:18789:18789']);
    expect(s2['extra_hosts']).toEqual(['host.docker.internal:host-gateway']);
    expect(at(served, 'networks')).toEqual({
      default: {},
      serve: {
        internal: true,
        ipam: { config: [{ subnet: '172.31.255.248/29', gateway: '172.31.255.249' }] },
      },
    });
    expect(doc['networks']).toBeUndefined();
  });

  it('mounts the config directory read-only and the state directory, never /root, the key file or docker.sock', () => {
    const volumes = svc['volumes'];
    expect(volumes).toEqual([
      '/opt/cannes/gateway/config:/etc/openclaw:ro',
      '/opt/cannes/gateway/state:/home/node/.openclaw',
    ]);
    for (const v of volumes as string[]) {
      const source = v.split(':')[0]!;
      expect(source.startsWith('/root')).toBe(false);
      expect(HOST.keyFile.path.startsWith(`${source}/`)).toBe(false);
      expect(HOST.gatewayEnv.path.startsWith(`${source}/`)).toBe(false);
      expect(source).not.toContain('docker.sock');
    }
  });

  it('reaches the proxy by host.docker.internal and takes the token from a host-side env file', () => {
    expect(svc['extra_hosts']).toEqual(['host.docker.internal:host-gateway']);
    expect(svc['env_file']).toEqual([HOST.gatewayEnv.path]);
    const env = object(svc['environment']);
    expect(env['OPENCLAW_CONFIG_PATH']).toBe('/etc/openclaw/openclaw.json');
    expect(env['OPENCLAW_CONFIG_READONLY']).toBe('1');
    expect(env).not.toHaveProperty('OPENCLAW_GATEWAY_TOKEN');
  });

  it('lists the proxy bridge origin as trusted for Google only when a Google key exists', () => {
    expect(object(svc['environment'])[GOOGLE_TRUSTED_ORIGINS_ENV]).toBe('http://172.17.0.1:3101');
    const other = parse(composeFile({ image: DEFAULT_GATEWAY_IMAGE, port: 18789, providers: ['openai'] }));
    expect(object(at(other, 'services', COMPOSE_SERVICE, 'environment'))).not.toHaveProperty(
      GOOGLE_TRUSTED_ORIGINS_ENV,
    );
  });

  it('names the npm release of the image for the rig shim', () => {
    expect(at(svc, 'x-cannes', 'npmPackage')).toBe('openclaw');
    expect(at(svc, 'x-cannes', 'npmVersion')).toBe('2026.9.6');
    expect(imageVersion('ghcr.io/openclaw/openclaw@sha256:' + 'a'.repeat(64))).toBeNull();
  });

  it('refuses the proxy port, privileged ports and malformed images', () => {
    for (const port of [3101, 80, 70000, 1.5]) {
      expect(reasonOf(thrown(() => composeFile({ image: DEFAULT_GATEWAY_IMAGE, port, providers: [] })))).toBe(
        'InvalidGatewayPort',
      );
    }
    expect(reasonOf(thrown(() => composeFile({ image: 'x y', port: 18789, providers: [] })))).toBe(
      'InvalidGatewayImage',
    );
  });
});

describe('no LLM key or gateway token reaches the gateway config or compose file', () => {
  it('holds for random canaries passed to keyFile and gatewayEnvFile', () => {
    const keys = KEYS.map((k) => ({ ...k, secret: canary(k.name) }));
    const token = canary('gwtoken');
    const kf = keyFile(keys.map((k) => ({ id: k.name, provider: k.provider, apiKey: new Secret(k.secret) })));
    const env = gatewayEnvFile(new Secret(token));
    const config = JSON.stringify(gatewayConfig({ port: 18789, modelKeys: KEYS }));
    const compose = composeFile({
      image: DEFAULT_GATEWAY_IMAGE,
      port: 18789,
      providers: KEYS.map((k) => k.provider),
    });
    // The canaries do exist where they belong (so the scan can find them)...
    for (const k of keys) expect(kf.reveal()).toContain(k.secret);
    expect(env.reveal()).toContain(token);
    // ...and nowhere else.
    for (const text of [config, compose, String(kf), JSON.stringify({ kf, env }), inspect({ kf, env })]) {
      for (const k of keys) expect(text).not.toContain(k.secret);
      expect(text).not.toContain(token);
    }
  });
});

describe('keyFile', () => {
  it('writes the docs/design.md §6 format that the proxy parses back, wrapped in a Secret', () => {
    const a = canary('a');
    const c = canary('c');
    const kf = keyFile([
      { id: 'claude', provider: 'anthropic', apiKey: new Secret(a) },
      { id: 'mine', provider: 'custom', apiKey: new Secret(c), baseUrl: 'https://llm.example.com/v1' },
    ]);
    expect(kf).toBeInstanceOf(Secret);
    expect(JSON.parse(kf.reveal())).toEqual({
      version: 1,
      keys: {
        claude: { provider: 'anthropic', apiKey: a },
        mine: { provider: 'custom', apiKey: c, baseUrl: 'https://llm.example.com/v1' },
      },
    });
    const routes = parseKeyFile(kf.reveal());
    expect(routes.get('claude')?.origin).toBe('https://api.anthropic.com');
    expect(routes.get('mine')?.basePath).toBe('/v1');
  });

  it('refuses a key the proxy would refuse, without quoting it', () => {
    const bad = `${canary('bad')}\nx-injected: 1`;
    const err = thrown(() => keyFile([{ id: 'k', provider: 'openai', apiKey: new Secret(bad) }]));
    expect(reasonOf(err)).toBe('InvalidKey');
    expect(String((err as Error).message)).not.toContain(bad.slice(0, 20));
  });

  it('refuses duplicate ids, bad ids, and a custom provider without baseUrl', () => {
    const k = new Secret(canary('k'));
    expect(
      reasonOf(
        thrown(() =>
          keyFile([
            { id: 'a', provider: 'openai', apiKey: k },
            { id: 'a', provider: 'openai', apiKey: k },
          ]),
        ),
      ),
    ).toBe('DuplicateModelKey');
    expect(reasonOf(thrown(() => keyFile([{ id: 'A/..', provider: 'openai', apiKey: k }])))).toBe(
      'InvalidModelKeyName',
    );
    expect(reasonOf(thrown(() => keyFile([{ id: 'c', provider: 'custom', apiKey: k }])))).toBe(
      'BaseUrlRequired',
    );
    expect(
      reasonOf(
        thrown(() =>
          keyFile([{ id: 'c', provider: 'custom', apiKey: k, baseUrl: 'https://u:p@h.example/' }]),
        ),
      ),
    ).toBe('InvalidBaseUrl');
  });

  it('is meant for /root/.model-keys.json, mode 600, owner root, outside every container mount', () => {
    expect(HOST.keyFile).toMatchObject({
      path: '/root/.model-keys.json',
      mode: 0o600,
      uid: 0,
      gid: 0,
      secret: true,
    });
  });
});

describe('gatewayEnvFile', () => {
  it('holds only OPENCLAW_GATEWAY_TOKEN, as a Secret for a root-only file', () => {
    const t = canary('tok');
    expect(gatewayEnvFile(new Secret(t)).reveal()).toBe(`OPENCLAW_GATEWAY_TOKEN=${t}\n`);
    expect(HOST.gatewayEnv).toMatchObject({ mode: 0o600, uid: 0, secret: true });
    expect(reasonOf(thrown(() => gatewayEnvFile(new Secret('short'))))).toBe('InvalidGatewayToken');
    expect(reasonOf(thrown(() => gatewayEnvFile(new Secret(`${t}\nX=1`))))).toBe('InvalidGatewayToken');
  });
});

describe('layout', () => {
  it('keeps every secret file root-only and out of the container mounts', () => {
    const mounted = [HOST.gatewayConfigDir.path, HOST.gatewayStateDir.path];
    for (const f of Object.values(HOST)) {
      if (!f.secret) continue;
      expect(f.mode & 0o077).toBe(0);
      expect(f.uid).toBe(0);
      for (const m of mounted) expect(f.path.startsWith(`${m}/`)).toBe(false);
    }
  });

  it('pins the OpenClaw npm release to the default gateway image (mk/openclaw.mk)', () => {
    const mk = readFileSync(new URL('../../../mk/openclaw.mk', import.meta.url), 'utf8');
    expect(/^OPENCLAW_VERSION \?= (\S+)$/m.exec(mk)?.[1]).toBe(imageVersion(DEFAULT_GATEWAY_IMAGE));
  });
});

describe('proxyUnit', () => {
  const unit = proxyUnit();

  it('runs the proxy bundle on the bridge address with the root-only key files', () => {
    expect(unit).toContain(
      '\nExecStart=node --no-concurrent-recompilation /opt/cannes/cannes-proxy.mjs --keys /root/.model-keys.json --direct-keys /root/.model-keys.direct.json --listen 172.17.0.1:3101 --metrics 127.0.0.1:9464 --threads 2 --bridges-only\n',
    );
    expect(unit).toContain('\nUser=root\n');
    // Memory held down: young generation capped (RSS after a burst ~120-150 MB, not ~290 MB),
    // one malloc arena.
    expect(unit).toContain(
      '\nEnvironment=NODE_OPTIONS=--max-semi-space-size=8\nEnvironment=MALLOC_ARENA_MAX=1\nExecStart=',
    );
  });

  it('sandboxes it: no capabilities, read-only system, no privilege gain', () => {
    for (const line of [
      'CapabilityBoundingSet=',
      'NoNewPrivileges=yes',
      'ProtectSystem=strict',
      'ProtectHome=read-only',
      'PrivateTmp=yes',
      'PrivateDevices=yes',
      'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK',
      'SystemCallFilter=@system-service',
      'Restart=always',
    ]) {
      expect(unit.split('\n')).toContain(line);
    }
  });

  it('refuses values that a unit file would interpret', () => {
    expect(() => proxyUnit({ listen: '172.17.0.1:3101 --allow 0.0.0.0/0' })).toThrow();
    expect(() => proxyUnit({ node: '%h/node' })).toThrow();
    expect(() => proxyUnit({ node: '$NODE' })).toThrow();
  });
});

describe('nftablesRules', () => {
  const rules = nftablesRules();

  it('lets bridge clients reach only the proxy on the host, and drops the rest', () => {
    expect(rules).toContain('ip daddr 172.17.0.1 tcp dport 3101 ct state new accept');
    expect(rules).toContain('iifname "docker0" ip saddr 172.16.0.0/12 jump from_containers');
    expect(rules).toContain('iifname "br-*" ip saddr 172.16.0.0/12 jump from_containers');
    // Never by source address alone (a 172.16/12 source can arrive on the public link).
    expect(rules).not.toMatch(/^\s*ip saddr 172\.16\.0\.0\/12 jump/m);
    expect(rules).toContain('iifname "docker0" ip daddr 169.254.169.254 counter drop');
    const chain = rules.slice(rules.indexOf('chain from_containers'));
    expect(chain.trimEnd().split('\n').at(-3)?.trim()).toBe('counter drop');
    // Nobody outside the bridges reaches the proxy port.
    expect(rules).toContain('tcp dport 3101 counter drop');
  });

  it('replaces only its own table, atomically', () => {
    expect(rules).toMatch(/^table inet cannes\ndelete table inet cannes\n\ntable inet cannes \{/m);
    expect(rules).not.toMatch(/flush ruleset/);
    expect(firewallUnit()).toContain('ExecStart=/usr/sbin/nft -f /etc/cannes/nftables.nft');
  });

  it('refuses inputs that are not addresses', () => {
    expect(() => nftablesRules({ proxyAddress: 'host.docker.internal' })).toThrow();
    expect(() => nftablesRules({ bridgeCidr: '172.16.0.0/40' })).toThrow();
    expect(() => nftablesRules({ proxyPort: 0 })).toThrow();
  });
});

describe('sshdHardening', () => {
  it('turns password and keyboard-interactive logins off and root to keys only', () => {
    const lines = sshdHardening().split('\n');
    expect(lines).toContain('PasswordAuthentication no');
    expect(lines).toContain('KbdInteractiveAuthentication no');
    expect(lines).toContain('PermitRootLogin prohibit-password');
    expect(HOST.sshdHardening.path).toBe('/etc/ssh/sshd_config.d/00-cannes-hardening.conf');
  });
});
