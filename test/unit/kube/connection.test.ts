import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { KubeClient } from '../../../operator/kube/client.ts';
import { fromKubeConfig } from '../../../operator/kube/client-node.ts';
import { defaultConnectionSpec, kubeconfigSpec, loadConnection } from '../../../operator/kube/connection.ts';

let dir = '';
let server: Server | undefined;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'cannes-kubeconfig-'));
});
afterEach(async () => {
  rmSync(dir, { recursive: true, force: true });
  server?.closeAllConnections();
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  server = undefined;
});

/** A kubeconfig file with one context; `user` and `cluster` are its two entries' bodies. */
function kubeconfig(cluster: Record<string, unknown>, user: Record<string, unknown>): string {
  const file = join(dir, 'config');
  writeFileSync(
    file,
    stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'c', cluster }],
      users: [{ name: 'u', user }],
      contexts: [{ name: 'x', context: { cluster: 'c', user: 'u' } }],
      'current-context': 'x',
    }),
  );
  return file;
}

/** A loopback API server that answers with the Authorization header it saw. */
async function echoAuth(): Promise<string> {
  server = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ auth: req.headers.authorization ?? null }));
  });
  await new Promise<void>((r) => server?.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

describe('kubeconfig without client-node', () => {
  it('reads inline data and files relative to the kubeconfig, as kubectl does', () => {
    writeFileSync(join(dir, 'ca.crt'), 'CA');
    const spec = kubeconfigSpec(
      kubeconfig(
        { server: 'https://api.example:6443', 'certificate-authority': 'ca.crt', 'tls-server-name': 'api' },
        { 'client-certificate-data': Buffer.from('CERT').toString('base64'), 'client-key': '/abs/key.pem' },
      ),
    );
    expect(spec).toEqual({
      server: 'https://api.example:6443',
      ca: { file: join(dir, 'ca.crt') },
      tlsServerName: 'api',
      cert: { data: Buffer.from('CERT') },
      key: { file: '/abs/key.pem' },
    });
  });

  it('sends a token file as a bearer token and re-reads it (a projected token rotates)', async () => {
    const canary = `FAKE-token-${randomBytes(6).toString('hex')}`;
    writeFileSync(join(dir, 'token'), `${canary}\n`);
    const spec = kubeconfigSpec(kubeconfig({ server: await echoAuth() }, { tokenFile: 'token' }));
    expect(spec?.token).toEqual({ file: join(dir, 'token') });
    const env = { KUBECONFIG: join(dir, 'config') };
    const api = new KubeClient(await loadConnection(env));
    expect(await api.request('GET', '/api')).toEqual({ auth: `Bearer ${canary}` });
  });

  it('leaves a kubeconfig with an exec plugin, an auth provider, a proxy or several files to client-node', () => {
    expect(kubeconfigSpec(kubeconfig({ server: 'https://a' }, { exec: { command: 'x' } }))).toBeUndefined();
    expect(
      kubeconfigSpec(kubeconfig({ server: 'https://a' }, { 'auth-provider': { name: 'oidc' } })),
    ).toBeUndefined();
    expect(kubeconfigSpec(kubeconfig({ server: 'https://a', 'proxy-url': 'http://p' }, {}))).toBeUndefined();
    expect(defaultConnectionSpec({ KUBECONFIG: `${join(dir, 'a')}:${join(dir, 'b')}` })).toBeUndefined();
  });

  it('names what is wrong with a bad kubeconfig, never a credential in it', () => {
    const canary = `FAKE-token-${randomBytes(6).toString('hex')}`;
    const bad = (cluster: Record<string, unknown>, user: Record<string, unknown>) => {
      try {
        kubeconfigSpec(kubeconfig(cluster, user));
      } catch (e) {
        return (e as Error).message;
      }
      return 'no error';
    };
    expect(bad({}, { token: canary })).toMatch(/has no cluster server/);
    expect(bad({ server: 'https://a' }, { token: 42 })).toMatch(/token is not a string/);
    writeFileSync(
      join(dir, 'config'),
      `current-context: x\ncontexts: []\nusers: [{name: u, user: {token: ${canary}}}]`,
    );
    expect(() => kubeconfigSpec(join(dir, 'config'))).toThrow(/has no context "x"/);
    for (const m of [bad({}, { token: canary })]) expect(m).not.toContain(canary);
    writeFileSync(join(dir, 'config'), `: : ${canary} [`);
    const e = (() => {
      try {
        kubeconfigSpec(join(dir, 'config'));
      } catch (err) {
        return (err as Error).message;
      }
      return '';
    })();
    expect(e).toMatch(/cannot read the kubeconfig/);
    expect(e).not.toContain(canary);
  });

  it('uses the pod’s ServiceAccount when there is no kubeconfig', () => {
    const home = join(dir, 'home');
    const env = { HOME: home, KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443' };
    // No token file on this machine: in-cluster does not apply, and the error says what to do.
    expect(() => defaultConnectionSpec(env)).toThrow(/no kubeconfig: set KUBECONFIG/);
  });
});

describe('kubeconfig through client-node (the fallback)', () => {
  it('carries a request with the credentials client-node applies', async () => {
    const canary = `FAKE-token-${randomBytes(6).toString('hex')}`;
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'c', server: await echoAuth(), skipTLSVerify: true }],
      users: [{ name: 'u', token: canary }],
      contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
      currentContext: 'x',
    });
    const api = new KubeClient(fromKubeConfig(kc));
    expect(await api.request('GET', '/api')).toEqual({ auth: `Bearer ${canary}` });
    expect(await api.request('GET', '/api')).toEqual({ auth: `Bearer ${canary}` });
  });
});
