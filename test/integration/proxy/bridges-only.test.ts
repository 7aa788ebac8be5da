/**
 * `--bridges-only` (the proxy's systemd unit passes it): a source inside 172.16.0.0/12 is not
 * enough, it must be inside the subnet of a Docker bridge present on the host (docker0, br-*).
 * Real namespaces, all made here: a "server" namespace where the proxy runs with a `br-*` link
 * to a container namespace, a plain link to a hostile namespace whose source is in
 * 172.16.0.0/12 too (Hetzner's gateway lies in that range), and a bridge added after the proxy
 * started (compose makes its `br-*` network later).
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildBundle, NsClient, ProxyProcess, rand, tempDir, until, writeKeyFile } from './harness.ts';

const s = rand();
const serverNs = `cb-${s}-s`;
const containerNs = `cb-${s}-c`;
const hostileNs = `cb-${s}-x`;
const lateNs = `cb-${s}-l`;
const nets = { container: '172.29.1', hostile: '172.29.2', late: '172.29.3' } as const;

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] });
const undo: (() => unknown)[] = [];
const clients: NsClient[] = [];
let bundleDir = '';
let bundle = '';
let keyFile = '';

/** A link from the server namespace (`name`, its .1) to `peerNs` (.2, default route back). */
function link(name: string, peerNs: string, net: string): void {
  ip(
    '-n',
    serverNs,
    'link',
    'add',
    name,
    'type',
    'veth',
    'peer',
    'name',
    `p${name.slice(-6)}`,
    'netns',
    peerNs,
  );
  ip('-n', serverNs, 'addr', 'add', `${net}.1/24`, 'dev', name);
  ip('-n', serverNs, 'link', 'set', name, 'up');
  ip('-n', peerNs, 'addr', 'add', `${net}.2/24`, 'dev', `p${name.slice(-6)}`);
  ip('-n', peerNs, 'link', 'set', `p${name.slice(-6)}`, 'up');
  ip('-n', peerNs, 'link', 'set', 'lo', 'up');
  ip('-n', peerNs, 'route', 'add', 'default', 'via', `${net}.1`);
}

async function client(ns: string): Promise<NsClient> {
  const c = new NsClient(ns);
  clients.push(c);
  await c.ready();
  return c;
}

async function startProxy(args: string[]): Promise<{ proxy: ProxyProcess; port: number }> {
  const proxy = new ProxyProcess(
    bundle,
    ['--keys', keyFile, '--listen', `${nets.container}.1:0`, '--metrics', 'off', ...args],
    { netns: serverNs },
  );
  undo.push(() => proxy.stop());
  const port = (await proxy.listening(1)).get(`${nets.container}.1`);
  if (port === undefined) throw new Error('the proxy did not listen on the bridge address');
  return { proxy, port };
}

beforeAll(() => {
  for (const ns of [serverNs, containerNs, hostileNs, lateNs]) {
    ip('netns', 'add', ns);
    undo.push(() => ip('netns', 'del', ns));
  }
  ip('-n', serverNs, 'link', 'set', 'lo', 'up');
  link(`br-${s}`, containerNs, nets.container);
  link(`eth${s}`, hostileNs, nets.hostile);
  const tmp = tempDir('bridges');
  undo.push(() => tmp.cleanup());
  keyFile = join(tmp.dir, 'model-keys.json');
  writeKeyFile(keyFile, { gpt: { provider: 'openai', apiKey: `sk-fake-${rand(16)}` } });
  ({ file: bundle, dir: bundleDir } = buildBundle());
  undo.push(() => execFileSync('rm', ['-rf', bundleDir]));
});

afterAll(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const u of undo.splice(0).reverse()) {
    try {
      await u();
    } catch {
      // already gone
    }
  }
});

describe('proxy --bridges-only', () => {
  it('refuses a 172.16/12 source that is not on a Docker bridge, which --allow alone admits', async () => {
    const container = await client(containerNs);
    const hostile = await client(hostileNs);
    // Without the flag (the proxy before issue 19): the hostile source is inside 172.16.0.0/12.
    const plain = await startProxy([]);
    const before = await hostile.fetch({ host: `${nets.container}.1`, port: plain.port, path: '/healthz' });
    expect(before.status).toBe(200);
    await plain.proxy.stop();

    const { port } = await startProxy(['--bridges-only']);
    const ok = await container.fetch({ host: `${nets.container}.1`, port, path: '/healthz' });
    expect(ok.status).toBe(200);
    const refused = await hostile.fetch({ host: `${nets.container}.1`, port, path: '/healthz' });
    expect(refused.status).toBe(0);
    expect(refused.error).toBeDefined();
  });

  it('admits a bridge that appears after the proxy started', async () => {
    const { port } = await startProxy(['--bridges-only']);
    link(`br-${s.slice(0, 3)}l${s.slice(3)}`, lateNs, nets.late);
    const late = await client(lateNs);
    // Admitted once the proxy re-read its interfaces (at most once a second, on a miss).
    const res = await until(async () => {
      const r = await late.fetch({ host: `${nets.container}.1`, port, path: '/healthz' });
      return r.status === 200 ? r : undefined;
    }, 'the late bridge admitted');
    expect(res.status).toBe(200);
    // The hostile link is still no bridge.
    const hostile = await client(hostileNs);
    const refused = await hostile.fetch({ host: `${nets.container}.1`, port, path: '/healthz' });
    expect(refused.status).toBe(0);
  });
});
