import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { Secret } from '../../../common/secret.ts';
import { makeBundle } from '../../../operator/adapters/bundle.ts';
import { DEFAULT_GATEWAY_IMAGE } from '../../../operator/api/schema.ts';
import type { DeliveredKey } from '../../../operator/controllers/keys.ts';
import { HOST } from '../../../operator/host/index.ts';
import { OWNER_AUTHORIZED_KEYS } from '../../../operator/host/owner-access.ts';
import { parseKeyFile } from '../../../proxy/keys.ts';
import { vpsSpec } from '../controllers/fakes.ts';

const canary = (what: string) => `${what}-canary-${randomBytes(18).toString('base64url')}`;

// The one renderer of the host files: the deploy bundle (operator/adapters/bundle.ts).
describe('the deploy bundle', () => {
  const keys: DeliveredKey[] = [
    { name: 'claude', provider: 'anthropic', apiKey: new Secret(canary('a')), models: [], default: true },
    {
      name: 'mine',
      provider: 'custom',
      baseUrl: 'https://llm.example.com/v1',
      models: [{ id: 'm1' }],
      apiKey: new Secret(canary('c')),
      default: false,
    },
  ];
  const token = canary('tok');
  const vps = {
    apiVersion: 'cannes.dev/v1alpha1',
    kind: 'Vps',
    metadata: {
      name: 'agent',
      namespace: 'ns',
      uid: 'u',
      resourceVersion: '1',
      generation: 1,
      finalizers: [],
      labels: {},
      annotations: {},
      ownerReferences: [],
    },
    spec: vpsSpec(),
    status: {},
  };
  const bundle = makeBundle({ proxyBundle: '// proxy\n', providerOrigins: {} })(
    vps,
    keys,
    new Secret(token),
    {
      architecture: 'x86',
    },
  );
  const out = bundle.files;
  const byPath = new Map(out.map((f) => [f.path, f]));

  it('writes every file of the host layout but the Direct keys (the written by the intake alone), and the owner keys', () => {
    const layoutFiles = Object.values(HOST)
      .filter((p) => p.kind === 'file' && p.path !== HOST.directKeyFile.path)
      .map((p) => p.path);
    expect(new Set(byPath.keys())).toEqual(new Set([...layoutFiles, OWNER_AUTHORIZED_KEYS]));
  });

  it('gives every secret file as a Secret and no secret anywhere else', () => {
    const secrets = [...keys.map((k) => k.apiKey?.reveal() ?? token), token];
    for (const f of out) {
      if (f.content instanceof Secret) {
        expect([HOST.keyFile.path, HOST.gatewayEnv.path]).toContain(f.path);
      } else {
        expect(typeof f.content).toBe('string');
        for (const s of secrets) expect(String(f.content)).not.toContain(s);
      }
    }
    expect(JSON.stringify(out)).not.toMatch(/canary/);
  });

  it('keeps the key file and the gateway config about the same ModelKeys', () => {
    const keyFile = byPath.get(HOST.keyFile.path)?.content;
    expect(keyFile).toBeInstanceOf(Secret);
    const routes = parseKeyFile((keyFile as Secret).reveal());
    const config = JSON.parse(String(byPath.get(HOST.gatewayConfig.path)?.content));
    expect(Object.keys(config.models.providers).sort()).toEqual(
      [...routes.keys()].map((id) => `cannes-${id}`).sort(),
    );
    expect(routes.get('mine')?.origin).toBe('https://llm.example.com');
  });

  it('writes a compose file for the same image and port', () => {
    const compose = parse(String(byPath.get(HOST.composeFile.path)?.content));
    expect(compose.services.gateway.image).toBe(DEFAULT_GATEWAY_IMAGE);
    expect(compose.services.gateway.ports).toEqual(['127.0.0.1:18789:18789']);
  });
});
