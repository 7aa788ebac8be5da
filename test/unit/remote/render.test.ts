import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { DEFAULT_GATEWAY_IMAGE } from '../../../operator/api/schema.ts';
import { Secret } from '../../../operator/lib/secret.ts';
import { HOST, type HostModelKey, renderHost } from '../../../operator/remote/index.ts';
import { parseKeyFile } from '../../../proxy/keys.ts';

const canary = (what: string) => `${what}-canary-${randomBytes(18).toString('base64url')}`;

describe('renderHost', () => {
  const keys: HostModelKey[] = [
    { name: 'claude', provider: 'anthropic', apiKey: new Secret(canary('a')), default: true },
    {
      name: 'mine',
      provider: 'custom',
      baseUrl: 'https://llm.example.com/v1',
      models: [{ id: 'm1' }],
      apiKey: new Secret(canary('c')),
    },
  ];
  const token = canary('tok');
  const out = renderHost({
    gateway: { image: DEFAULT_GATEWAY_IMAGE, port: 18789 },
    modelKeys: keys,
    gatewayToken: new Secret(token),
  });
  const byPath = new Map(out.map((f) => [f.path, f]));

  it('renders every host path of the layout except the proxy bundle, directories first', () => {
    expect(new Set(byPath.keys())).toEqual(
      new Set(
        Object.values(HOST)
          .filter((p) => p !== HOST.proxyBundle)
          .map((p) => p.path),
      ),
    );
    const firstFile = out.findIndex((f) => f.kind === 'file');
    expect(out.slice(firstFile).every((f) => f.kind === 'file')).toBe(true);
  });

  it('gives every secret file as a Secret and no secret anywhere else', () => {
    const secrets = [...keys.map((k) => k.apiKey.reveal()), token];
    for (const f of out) {
      if (f.secret) {
        expect(f.content).toBeInstanceOf(Secret);
      } else {
        expect(f.content === null || typeof f.content === 'string').toBe(true);
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
