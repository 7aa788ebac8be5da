import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildBundle,
  createNetRig,
  type NetRig,
  NsClient,
  ProxyProcess,
  rand,
  tempDir,
  writeKeyFile,
} from './harness.ts';

// The shipped artefact: one file, plain `node`, no node_modules anywhere near it.
let bundle: { file: string; dir: string };
let empty: ReturnType<typeof tempDir>;
let copy: string;
let rig: NetRig;
let keyFile: string;
const hostNs = `cp-${rand()}-h`;
const bareNs = `cp-${rand()}-n`;
const procs: ProxyProcess[] = [];

const ip = (...a: string[]) => execFileSync('ip', a, { stdio: 'pipe' });

beforeAll(() => {
  bundle = buildBundle();
  empty = tempDir('empty');
  copy = join(empty.dir, 'cannes-proxy.mjs');
  copyFileSync(bundle.file, copy);
  keyFile = join(empty.dir, 'model-keys.json');
  writeKeyFile(keyFile, {
    a: { provider: 'openai', apiKey: 'sk-obvious-fake', baseUrl: 'http://127.0.0.1:9/v1' },
  });
  rig = createNetRig();
  // A host namespace shaped like a Docker host: docker0 and a user-defined br-* bridge.
  ip('netns', 'add', hostNs);
  ip('netns', 'add', bareNs);
  const bridges: [string, string][] = [
    ['docker0', '172.17.0.1/16'],
    ['br-0a1b2c3d4e5f', '172.18.0.1/16'],
  ];
  for (const [name, addr] of bridges) {
    ip('-n', hostNs, 'link', 'add', name, 'type', 'bridge');
    ip('-n', hostNs, 'addr', 'add', addr, 'dev', name);
    ip('-n', hostNs, 'link', 'set', name, 'up');
  }
  ip('-n', hostNs, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0p');
  ip('-n', hostNs, 'addr', 'add', '198.18.7.7/32', 'dev', 'eth0');
  ip('-n', hostNs, 'link', 'set', 'eth0', 'up');
  ip('-n', hostNs, 'link', 'set', 'lo', 'up');
});

afterAll(async () => {
  for (const p of procs) await p.stop();
  for (const ns of [hostNs, bareNs]) spawnSync('ip', ['netns', 'del', ns]);
  rig?.destroy();
  empty?.cleanup();
  if (bundle) rmSync(bundle.dir, { recursive: true, force: true });
});

describe('the bundle', () => {
  it('imports nothing but node builtins', () => {
    const text = readFileSync(bundle.file, 'utf8');
    const specifiers = [...text.matchAll(/(?:^|\n)\s*import\s[^'"]*?from\s*['"]([^'"]+)['"]/g)].map(
      (m) => m[1],
    );
    const required = [...text.matchAll(/\brequire\(\s*['"]([^'"]+)['"]\s*\)/g)].map((m) => m[1]);
    expect(specifiers.length).toBeGreaterThan(0);
    for (const s of [...specifiers, ...required]) expect(s, s).toMatch(/^(node:)?[a-z_]+(\/[a-z_]+)?$/);
    for (const s of [...specifiers, ...required]) expect(s).not.toMatch(/^(undici|prom-client|pino)/);
  });

  it('prints --help from an empty folder with plain node', () => {
    const r = spawnSync(process.execPath, ['cannes-proxy.mjs', '--help'], {
      cwd: empty.dir,
      encoding: 'utf8',
      env: { PATH: process.env['PATH'] ?? '/usr/bin' },
    });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/usage: node cannes-proxy\.mjs --keys FILE/);
  });

  it('starts from an empty folder and answers a bridge client', async () => {
    const p = new ProxyProcess(
      copy,
      ['--keys', keyFile, '--listen', `${rig.bridgeAddr}:0`, '--metrics', 'off'],
      {
        cwd: empty.dir,
      },
    );
    procs.push(p);
    const port = (await p.listening(1)).get(rig.bridgeAddr)!;
    const client = new NsClient(rig.bridgeNs);
    try {
      await client.ready();
      const res = await client.fetch({ host: rig.bridgeAddr, port, path: '/healthz' });
      expect(res.status).toBe(200);
    } finally {
      client.close();
    }
  });

  it('binds the Docker bridge addresses it finds (docker0, br-*) when no --listen is given', async () => {
    const p = new ProxyProcess(copy, ['--keys', keyFile, '--metrics', 'off'], {
      netns: hostNs,
      cwd: empty.dir,
    });
    procs.push(p);
    const bound = await p.listening(2);
    expect([...bound.entries()].sort()).toEqual([
      ['172.17.0.1', 3101],
      ['172.18.0.1', 3101],
    ]);
    await new Promise((r) => setTimeout(r, 200));
    expect(p.lines.filter((l) => l.msg === 'listening')).toHaveLength(2);
    const ss = execFileSync('ip', ['netns', 'exec', hostNs, 'ss', '-Hltn'], { encoding: 'utf8' });
    // Every listening socket in the host namespace: exactly the two bridge addresses.
    const local = ss
      .trim()
      .split('\n')
      .map((line) => line.trim().split(/\s+/)[3])
      .sort();
    expect(local).toEqual(['172.17.0.1:3101', '172.18.0.1:3101']);
  });

  it('refuses to start without a bridge, and never on 0.0.0.0', async () => {
    const p = new ProxyProcess(copy, ['--keys', keyFile, '--metrics', 'off'], {
      netns: bareNs,
      cwd: empty.dir,
    });
    procs.push(p);
    expect(await p.exited).toBe(2);
    expect(p.stderr).toMatch(/no Docker bridge address found/);
    // Nor on the IPv4-mapped wildcard, which Linux binds as 0.0.0.0, for either listener.
    for (const args of [
      ['--listen', '0.0.0.0:3101', '--metrics', 'off'],
      ['--listen', '[::ffff:0.0.0.0]:3101', '--metrics', 'off'],
      ['--listen', '[::ffff:0:0]:3101', '--metrics', 'off'],
      ['--listen', '127.0.0.1:0', '--metrics', '[::ffff:0.0.0.0]:9464'],
    ]) {
      const q = new ProxyProcess(copy, ['--keys', keyFile, ...args], { cwd: empty.dir });
      procs.push(q);
      // A proxy that did bind keeps running: fail in seconds, not at the test timeout.
      const code = await Promise.race([q.exited, new Promise((r) => setTimeout(() => r('running'), 10_000))]);
      expect(code, args.join(' ')).toBe(2);
      expect(q.stderr, args.join(' ')).toMatch(/every address is refused/);
    }
  });
});
