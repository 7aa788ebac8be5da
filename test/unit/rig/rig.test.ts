import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { freePort } from '../../rig/controlplane.ts';
import { writeKubeconfig } from '../../rig/rig.ts';
import { parseRigInfo } from '../../rig/shared.ts';

const dir = mkdtempSync(join(tmpdir(), 'cannes-rig-unit-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const info = {
  dir: '/tmp/x',
  server: 'https://127.0.0.1:6443',
  kubeconfigPath: '/tmp/x/kubeconfig',
  caCert: '/tmp/x/pki/ca.crt',
  adminCert: '/tmp/x/pki/admin.crt',
  adminKey: '/tmp/x/pki/admin.key',
  binaries: { kubeApiserver: '/b/kube-apiserver', etcd: '/b/etcd', kubectl: '/b/kubectl', helm: '/b/helm' },
  startMs: 4200,
};

describe('parseRigInfo', () => {
  it('round-trips what the supervisor writes', () => {
    expect(parseRigInfo(JSON.stringify(info))).toEqual(info);
  });

  it('rejects a ready.json with a missing or mistyped field', () => {
    const { server: _server, ...noServer } = info;
    expect(() => parseRigInfo(JSON.stringify(noServer))).toThrow(/server is not a string/);
    expect(() => parseRigInfo(JSON.stringify({ ...info, startMs: '4200' }))).toThrow(/startMs/);
    expect(() => parseRigInfo(JSON.stringify({ ...info, binaries: { ...info.binaries, helm: 7 } }))).toThrow(
      /helm/,
    );
    expect(() => parseRigInfo('[]')).toThrow(/not an object/);
  });
});

describe('writeKubeconfig', () => {
  it('writes a mode-600 kubeconfig pointing at the server with the CA embedded', async () => {
    const ca = join(dir, 'ca.crt');
    writeFileSync(ca, 'not-a-real-certificate\n');
    const path = join(dir, 'sa.kubeconfig');
    const token = `canary-${crypto.randomUUID()}`;
    await writeKubeconfig(path, { server: info.server, caCert: ca }, { token }, 'sa-x');
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const cfg: unknown = parse(readFileSync(path, 'utf8'));
    expect(cfg).toMatchObject({
      'current-context': 'sa-x',
      clusters: [
        {
          name: 'sa-x',
          cluster: {
            server: info.server,
            'certificate-authority-data': Buffer.from('not-a-real-certificate\n').toString('base64'),
          },
        },
      ],
      users: [{ name: 'sa-x', user: { token } }],
    });
  });
});

describe('freePort', () => {
  it('returns a loopback port that can be bound right away', async () => {
    const port = await freePort();
    expect(port).toBeGreaterThan(0);
    await new Promise<void>((resolve, reject) => {
      const srv = createServer();
      srv.on('error', reject);
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve()));
    });
  });
});
