import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROVIDER_NAMES } from '../../../common/providers.ts';
import {
  type GatewayModelKey,
  GOOGLE_TRUSTED_ORIGINS_ENV,
  gatewayConfig,
} from '../../../operator/host/index.ts';
import { openclawPackageDir } from '../../lib/openclaw.ts';
import { type OpenClawEnv, validateConfig } from './run.ts';

/** The generated config against the real package's own validator (`openclaw config validate`). */

let dir: string;
let env: OpenClawEnv;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'cannes-openclaw-config-'));
  env = { home: join(dir, 'home'), stateDir: join(dir, 'state'), configPath: join(dir, 'openclaw.json') };
  mkdirSync(env.home);
  mkdirSync(env.stateDir);
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('openclaw config validate', () => {
  it('accepts the config generated for every provider, with and without listed models', async () => {
    const keys: GatewayModelKey[] = PROVIDER_NAMES.map((p, i) => ({
      name: `k-${p}`,
      provider: p,
      // Several ModelKeys: exactly one names the default model.
      default: i === 0,
      ...(p === 'custom' || p === 'anthropic'
        ? {
            models: [
              { id: 'm-1', name: 'Model 1', reasoning: true, contextWindow: 200_000, maxTokens: 8192 },
            ],
          }
        : {}),
    }));
    writeFileSync(env.configPath, JSON.stringify(gatewayConfig({ port: 18789, modelKeys: keys })));
    expect(await validateConfig(env)).toEqual({ valid: true, issues: [] });
  });

  it('accepts the config rendered before the first ModelKey (no provider)', async () => {
    writeFileSync(env.configPath, JSON.stringify(gatewayConfig({ port: 18789, modelKeys: [] })));
    expect(await validateConfig(env)).toEqual({ valid: true, issues: [] });
  });

  it('accepts the config behind tailscale serve (Control UI origin, trusted proxies)', async () => {
    const config = gatewayConfig({
      port: 18789,
      modelKeys: [{ name: 'claude', provider: 'anthropic' }],
      tailnetOrigin: 'https://agent.tail1234.ts.net/',
    });
    writeFileSync(env.configPath, JSON.stringify(config));
    expect(await validateConfig(env)).toEqual({ valid: true, issues: [] });
    // The check can fail on these fields: a misspelt key is refused.
    const gw = config['gateway'] as Record<string, unknown>;
    writeFileSync(
      env.configPath,
      JSON.stringify({ ...config, gateway: { ...gw, controlUi: { allowedOrigin: ['x'] } } }),
    );
    expect((await validateConfig(env)).valid).toBe(false);
  });

  it('rejects a config that breaks its schema (the check can fail)', async () => {
    const config = gatewayConfig({ port: 18789, modelKeys: [{ name: 'x', provider: 'openai' }] });
    const broken = { ...config, models: { ...(config['models'] as object), mode: 'overlay' } };
    writeFileSync(env.configPath, JSON.stringify(broken));
    const r = await validateConfig(env);
    expect(r.valid).toBe(false);
    expect(r.issues.map((i) => i.path)).toContain('models.mode');
  });
});

describe('facts of the pinned OpenClaw release that docs/gateway.md relies on', () => {
  it(`has no ${GOOGLE_TRUSTED_ORIGINS_ENV} (Gemini media paths stay on Google's origin): re-check on upgrade`, () => {
    const dist = join(openclawPackageDir(), 'dist');
    const hits = readdirSync(dist, { recursive: true, encoding: 'utf8' })
      .filter((f) => f.endsWith('.js') || f.endsWith('.mjs'))
      .filter((f) => readFileSync(join(dist, f), 'utf8').includes(GOOGLE_TRUSTED_ORIGINS_ENV));
    expect(hits).toEqual([]);
  });
});
