import { describe, expect, it } from 'vitest';
import { Secret } from '../../../common/secret.ts';
import { bundleVersion, makeBundle } from '../../../operator/adapters/bundle.ts';
import { parseRunConfig } from '../../../operator/config.ts';
import type { VpsObject } from '../../../operator/controllers/ports.ts';
import {
  HOST,
  NODE_RUNTIME_VERSION,
  NODE_SHA256,
  nodeRuntime,
  runtimeInstallScript,
  runtimeNode,
  runtimeUrl,
} from '../../../operator/host/index.ts';

const HEX = (c: string) => c.repeat(64);

const vps = {
  apiVersion: 'cannes.dev/v1alpha1',
  kind: 'Vps',
  metadata: { name: 'a', namespace: 'ns', uid: 'u', annotations: {}, labels: {}, finalizers: [] },
  spec: {
    serverType: 'cax11',
    location: 'fsn1',
    image: 'docker-ce',
    cloudTokenSecretRef: { name: 'h', key: 'token' },
    gateway: { image: 'ghcr.io/openclaw/openclaw:2026.9.6', port: 18789 },
    sshKeyRotation: { interval: '720h' },
    purgeCloudTokenAfterSetup: true,
    deletionPolicy: 'Delete',
    access: { sshAuthorizedKeys: [] },
  },
  status: {},
} as unknown as VpsObject;

const keys = [
  {
    name: 'claude',
    provider: 'anthropic' as const,
    apiKey: Secret.of('sk-ant-fake'),
    models: [],
    default: true,
  },
];

describe('the Node runtime the deploy installs', () => {
  it('maps Hetzner architectures to Node builds with the pinned official checksums', () => {
    expect(nodeRuntime('x86')).toEqual({
      version: NODE_RUNTIME_VERSION,
      arch: 'x64',
      sha256: NODE_SHA256.x64,
      baseUrl: 'https://nodejs.org/dist',
    });
    expect(nodeRuntime('arm').arch).toBe('arm64');
    expect(nodeRuntime('arm').sha256).toBe(NODE_SHA256.arm64);
    expect(NODE_SHA256.x64).not.toBe(NODE_SHA256.arm64);
    expect(runtimeUrl(nodeRuntime('arm'))).toBe(
      `https://nodejs.org/dist/v${NODE_RUNTIME_VERSION}/node-v${NODE_RUNTIME_VERSION}-linux-arm64.tar.xz`,
    );
    expect(runtimeNode(nodeRuntime('arm'))).toBe(
      `/opt/cannes/node-v${NODE_RUNTIME_VERSION}-linux-arm64/bin/node`,
    );
    // An override replaces the table entry of its architecture only.
    const r = nodeRuntime('arm', { baseUrl: 'http://198.19.255.251:8/', sha256: { arm64: HEX('a') } });
    expect(r.sha256).toBe(HEX('a'));
    expect(runtimeUrl(r)).toBe(
      `http://198.19.255.251:8/v${NODE_RUNTIME_VERSION}/node-v${NODE_RUNTIME_VERSION}-linux-arm64.tar.xz`,
    );
    expect(nodeRuntime('x86', { sha256: { arm64: HEX('a') } }).sha256).toBe(NODE_SHA256.x64);
  });

  it('renders a script that verifies the SHA-256 before unpacking and renames into place last', () => {
    const s = runtimeInstallScript(nodeRuntime('arm'));
    const verify = s.indexOf('sha256sum');
    const unpack = s.indexOf('tar -xJf');
    const rename = s.indexOf('mv -- "$tmp/x/');
    expect(verify).toBeGreaterThan(0);
    expect(unpack).toBeGreaterThan(verify);
    expect(s.indexOf('[ "$got" = "$want" ] || fail')).toBeLessThan(unpack);
    expect(rename).toBeGreaterThan(unpack);
    // Skipped, downloading nothing, when the folder holds this checksum's marker.
    expect(s.indexOf('exit 0')).toBeLessThan(s.indexOf('curl'));
    expect(s).toContain(`want='${NODE_SHA256.arm64}'`);
    expect(s).not.toContain(NODE_SHA256.x64);
    expect(s).toContain('linux-arm64.tar.xz');
    expect(s).not.toContain('linux-x64');
    // The ELF machine of arm64 (0xb7), never x86-64's (0x3e).
    expect(s).toContain("= 'b700' ]");
    expect(runtimeInstallScript(nodeRuntime('x86'))).toContain("= '3e00' ]");
  });

  it('refuses values that would break out of the script', () => {
    expect(() => runtimeInstallScript(nodeRuntime('x86', { baseUrl: "http://x/'; rm -rf /; '" }))).toThrow(
      /plain http/,
    );
    expect(() => runtimeInstallScript(nodeRuntime('x86', { sha256: { x64: 'abc' } }))).toThrow(/SHA-256/);
    expect(() => runtimeInstallScript(nodeRuntime('x86', { baseUrl: 'file:///etc' }))).toThrow(/plain http/);
  });
});

describe('the deploy bundle', () => {
  const o = { proxyBundle: '// proxy', providerOrigins: {} };

  it('installs the runtime for the server architecture first and runs the proxy unit with it', () => {
    const b = makeBundle(o)(vps, keys, Secret.of('gw-token-fake-0123456789'), { architecture: 'arm' });
    expect(b.prepare).toContain('flock');
    expect(b.prepare).toContain('linux-arm64.tar.xz');
    const unit = b.files.find((f) => f.path === HOST.proxyUnit.path)?.content;
    expect(unit).toMatch(
      new RegExp(
        `^ExecStart=/opt/cannes/node-v${NODE_RUNTIME_VERSION.replaceAll('.', '\\.')}-linux-arm64/bin/node `,
        'm',
      ),
    );
    const x86 = makeBundle(o)(vps, keys, Secret.of('gw-token-fake-0123456789'), { architecture: 'x86' });
    expect(x86.files.find((f) => f.path === HOST.proxyUnit.path)?.content).toContain('-linux-x64/bin/node ');
    expect(x86.prepare).not.toContain('arm64');
  });

  it('changes its version when the Node pin or its source changes (every Vps redeploys)', () => {
    const v = bundleVersion(o);
    expect(bundleVersion({ ...o })).toBe(v);
    expect(bundleVersion({ ...o, nodeSha256: { x64: HEX('b') } })).not.toBe(v);
    expect(bundleVersion({ ...o, nodeDistUrl: 'http://198.19.255.251:1' })).not.toBe(v);
  });
});

describe('operator flags for the runtime', () => {
  const env = { DATABASE_URL: 'postgres://u@h/db', CANNES_MASTER_KEYS_FILE: '/k' };
  it('parses --node-dist-url and --node-sha256', () => {
    const c = parseRunConfig(
      ['--node-dist-url', 'http://198.19.255.253:9/', '--node-sha256', `arm64=${HEX('C')}`],
      env,
    );
    expect(c.nodeDistUrl).toBe('http://198.19.255.253:9');
    expect(c.nodeSha256).toEqual({ arm64: HEX('c') });
    expect(parseRunConfig([], env).nodeDistUrl).toBeUndefined();
  });
  it('refuses bad values with the flag named', () => {
    expect(() => parseRunConfig(['--node-sha256', 'x86=abc'], env)).toThrow(/--node-sha256/);
    expect(() => parseRunConfig(['--node-dist-url', 'ftp://x'], env)).toThrow(/--node-dist-url/);
  });
});
