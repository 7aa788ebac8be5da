import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { modelKeyManifest, vpsManifest } from '../../lib/manifests.ts';
import type { Rig } from '../../rig/rig.ts';
import { crdNamespace, statusMessage } from './fixtures.ts';

// Every case goes straight to the API server (no kubectl client-side checks in between), so a
// rejection here is the CRD's OpenAPI schema or CEL rule at work.
describe('the API server rejects invalid cannes.dev objects with the reason', () => {
  let rig: Rig;
  let ns: string;
  let drop: () => Promise<void> = async () => {};
  const base = (plural: string): string => `/apis/cannes.dev/v1alpha1/namespaces/${ns}/${plural}`;

  beforeAll(async () => {
    ({ rig, ns, drop } = await crdNamespace('validation'));
  });
  afterAll(async () => {
    await drop();
  });

  const create = async (
    plural: string,
    obj: Record<string, unknown>,
    strict = false,
  ): Promise<{ status: number; message: string }> => {
    const res = await rig.adminRequest(
      'POST',
      `${base(plural)}${strict ? '?fieldValidation=Strict' : ''}`,
      obj,
    );
    return { status: res.status, message: statusMessage(res.body) };
  };

  it('accepts the minimal valid Vps and ModelKeys (the control for every case below)', async () => {
    expect((await create('vpses', vpsManifest(ns, 'ok'), true)).status).toBe(201);
    expect((await create('modelkeys', modelKeyManifest(ns, 'ok'), true)).status).toBe(201);
    const onTailnet = vpsManifest(ns, 'ok-tailnet', {
      tailnet: {
        authKeySecretRef: { name: 'ts', key: 'k' },
        tags: ['tag:cannes-vps'],
        hostname: 'agent-1',
        owners: ['alice@example.com', 'tag:laptops'],
      },
    });
    expect((await create('vpses', onTailnet, true)).status).toBe(201);
    const direct = modelKeyManifest(ns, 'ok-direct', { delivery: 'Direct', secretRef: undefined });
    expect((await create('modelkeys', direct, true)).status).toBe(201);
    const custom = modelKeyManifest(ns, 'ok-custom', {
      provider: 'custom',
      baseUrl: 'https://llm.example.test/v1',
    });
    expect((await create('modelkeys', custom, true)).status).toBe(201);
  });

  const cases: {
    name: string;
    plural: string;
    obj: () => Record<string, unknown>;
    reason: RegExp;
    strict?: boolean;
  }[] = [
    {
      name: 'a Vps without spec.serverType',
      plural: 'vpses',
      obj: () => vpsManifest(ns, 'no-type', { serverType: undefined }),
      reason: /spec\.serverType: Required value/,
    },
    {
      name: 'a Vps without spec.cloudTokenSecretRef',
      plural: 'vpses',
      obj: () => vpsManifest(ns, 'no-token', { cloudTokenSecretRef: undefined }),
      reason: /spec\.cloudTokenSecretRef: Required value/,
    },
    {
      name: 'a Vps whose tailnet loginServer is not https',
      plural: 'vpses',
      obj: () =>
        vpsManifest(ns, 'ts-http', {
          tailnet: {
            authKeySecretRef: { name: 'ts', key: 'k' },
            loginServer: 'http://headscale.example.test',
          },
        }),
      reason: /spec\.tailnet\.loginServer: Invalid value/,
    },
    {
      name: 'a Vps whose tailnet tag is not tag:<name>',
      plural: 'vpses',
      obj: () =>
        vpsManifest(ns, 'ts-tag', {
          tailnet: { authKeySecretRef: { name: 'ts', key: 'k' }, tags: ['server'] },
        }),
      reason: /spec\.tailnet\.tags\[0\]: Invalid value/,
    },
    {
      name: 'a Vps whose cloudTokenSecretRef has no key',
      plural: 'vpses',
      obj: () => vpsManifest(ns, 'no-key', { cloudTokenSecretRef: { name: 'hcloud' } }),
      reason: /spec\.cloudTokenSecretRef\.key: Required value/,
    },
    {
      name: 'a Vps whose sshKeyRotation.interval is not a Go duration',
      plural: 'vpses',
      obj: () => vpsManifest(ns, 'bad-interval', { sshKeyRotation: { interval: '30 days' } }),
      reason:
        /spec\.sshKeyRotation\.interval: Invalid value: "30 days": spec\.sshKeyRotation\.interval in body should match/,
    },
    {
      name: 'a Vps whose sshKeyRotation.interval is shorter than 1h',
      plural: 'vpses',
      obj: () => vpsManifest(ns, 'short-interval', { sshKeyRotation: { interval: '30m' } }),
      reason: /spec\.sshKeyRotation: Invalid value: .*at least 1h/,
    },
    {
      name: 'a Vps whose serverType is not a Hetzner server type name',
      plural: 'vpses',
      obj: () => vpsManifest(ns, 'bad-type', { serverType: 'CX22; rm -rf /' }),
      reason: /spec\.serverType: Invalid value: "CX22; rm -rf \/": spec\.serverType in body should match/,
    },
    {
      name: 'a Vps whose gateway takes the proxy port 3101',
      plural: 'vpses',
      obj: () => vpsManifest(ns, 'proxy-port', { gateway: { port: 3101 } }),
      reason: /spec\.gateway: Invalid value: .*3101 is reserved/,
    },
    {
      name: 'a Vps whose gateway port is privileged',
      plural: 'vpses',
      obj: () => vpsManifest(ns, 'low-port', { gateway: { port: 80 } }),
      reason:
        /spec\.gateway\.port: Invalid value: 80: spec\.gateway\.port in body should be greater than or equal to 1024/,
    },
    {
      name: 'a Vps with an unknown deletionPolicy',
      plural: 'vpses',
      obj: () => vpsManifest(ns, 'bad-policy', { deletionPolicy: 'Destroy' }),
      reason: /spec\.deletionPolicy: Unsupported value: "Destroy": supported values: "Delete", "Retain"/,
    },
    {
      name: 'a Vps with an unknown spec field under strict field validation',
      plural: 'vpses',
      obj: () => vpsManifest(ns, 'unknown-field', { rootPassword: 'not-a-real-password' }),
      reason: /unknown field "spec\.rootPassword"/,
      strict: true,
    },
    {
      name: 'a ModelKey with a provider outside the enum',
      plural: 'modelkeys',
      obj: () => modelKeyManifest(ns, 'bad-provider', { provider: 'azure' }),
      reason: /spec\.provider: Unsupported value: "azure": supported values: "anthropic", "openai"/,
    },
    {
      name: 'a custom ModelKey without baseUrl',
      plural: 'modelkeys',
      obj: () => modelKeyManifest(ns, 'custom-no-url', { provider: 'custom' }),
      reason: /spec: Invalid value: .*baseUrl/,
    },
    {
      name: 'a non-custom ModelKey with a baseUrl',
      plural: 'modelkeys',
      obj: () =>
        modelKeyManifest(ns, 'openai-with-url', { provider: 'openai', baseUrl: 'https://api.example.test' }),
      reason: /spec: Invalid value: .*baseUrl/,
    },
    {
      name: 'a ModelKey without secretRef',
      plural: 'modelkeys',
      obj: () => modelKeyManifest(ns, 'no-secret', { secretRef: undefined }),
      reason: /secretRef is required with delivery Secret/,
    },
    {
      name: 'a Direct ModelKey with a secretRef (the key must never be in the cluster)',
      plural: 'modelkeys',
      obj: () => modelKeyManifest(ns, 'direct-with-secret', { delivery: 'Direct' }),
      reason: /secretRef is required with delivery Secret, and not allowed with delivery Direct/,
    },
    {
      name: 'a ModelKey with an unknown delivery',
      plural: 'modelkeys',
      obj: () => modelKeyManifest(ns, 'odd-delivery', { delivery: 'Email' }),
      reason: /spec\.delivery: Unsupported value/,
    },
    {
      name: 'a tailnet owner that is neither a login name nor a tag',
      plural: 'vpses',
      obj: () =>
        vpsManifest(ns, 'bad-owner', {
          tailnet: { authKeySecretRef: { name: 'ts', key: 'k' }, owners: ['alice; rm -rf /'] },
        }),
      reason: /spec\.tailnet\.owners\[0\]: Invalid value/,
    },
  ];

  for (const c of cases) {
    it(`rejects ${c.name}`, async () => {
      const res = await create(c.plural, c.obj(), c.strict ?? false);
      expect(res.status, res.message).toBeGreaterThanOrEqual(400);
      expect(res.status).toBeLessThan(500);
      expect(res.message).toMatch(c.reason);
    });
  }

  it('rejects changing the location of an existing Vps (immutable)', async () => {
    expect((await create('vpses', vpsManifest(ns, 'immutable'))).status).toBe(201);
    const res = await rig.adminRequest(
      'PATCH',
      `${base('vpses')}/immutable`,
      { spec: { location: 'nbg1' } },
      'application/merge-patch+json',
    );
    expect(res.status).toBe(422);
    expect(statusMessage(res.body)).toMatch(/spec\.location: Invalid value: .*location is immutable/);
  });

  describe('status holds only booleans, observedGeneration and conditions', () => {
    const patchStatus = async (name: string, status: Record<string, unknown>, strict: boolean) => {
      const res = await rig.adminRequest(
        'PATCH',
        `${base('vpses')}/${name}/status${strict ? '?fieldValidation=Strict' : ''}`,
        { status },
        'application/merge-patch+json',
      );
      return { status: res.status, message: statusMessage(res.body), body: res.body };
    };

    beforeAll(async () => {
      expect((await create('vpses', vpsManifest(ns, 'status-target'))).status).toBe(201);
    });

    it('accepts booleans written through /status (the control)', async () => {
      expect((await patchStatus('status-target', { serverCreated: true, ready: false }, true)).status).toBe(
        200,
      );
    });

    it('rejects a string written into a boolean status field', async () => {
      const res = await patchStatus('status-target', { ready: 'yes' }, false);
      expect(res.status).toBe(422);
      expect(res.message).toMatch(/status\.ready: Invalid value: "string": .*must be of type boolean/);
    });

    it('rejects a non-boolean identity field (an IPv4) in status under strict field validation', async () => {
      const res = await patchStatus('status-target', { ipv4: '198.18.0.9' }, true);
      expect([400, 422]).toContain(res.status);
      expect(res.message).toMatch(/unknown field "status\.ipv4"/);
    });

    it('rejects a condition with a status other than True/False/Unknown', async () => {
      const res = await patchStatus(
        'status-target',
        {
          conditions: [
            {
              type: 'Ready',
              status: 'Maybe',
              reason: 'Testing',
              message: 'x',
              lastTransitionTime: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
            },
          ],
        },
        false,
      );
      expect(res.status).toBe(422);
      expect(res.message).toMatch(/status\.conditions\[0\]\.status: Unsupported value: "Maybe"/);
    });
  });
});
