import { execFile } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { footprint, leftovers, randomTestIpv4 } from '../../hosts/leftovers.ts';
import { RealHostProvider } from '../../hosts/real-host-provider.ts';

// What the "container" reports about itself, written to its only writable volume.
const PROBE = `
const fs = require('node:fs');
const net = require('node:net');
const out = { uid: process.getuid(), gid: process.getgid() };
for (const p of ['/root/.model-keys.json', '/root', '/etc/ssh', '/run/cannes/disk']) {
  try { fs.readdirSync(p); out[p] = 'readable'; } catch (e) {
    try { fs.readFileSync(p); out[p] = 'readable'; } catch (e2) { out[p] = e2.code; }
  }
}
out.hosts = fs.readFileSync('/etc/hosts', 'utf8');
out.config = fs.readFileSync('/config/app.json', 'utf8');
try { fs.writeFileSync('/config/x', 'x'); out.configWritable = true; } catch (e) { out.configWritable = e.code; }
const s = net.createConnection({ host: '172.17.0.1', port: 3101 });
s.setEncoding('utf8');
s.on('data', (d) => { out.bridge = d.trim(); fs.writeFileSync('/data/result.json', JSON.stringify(out)); s.destroy(); });
s.on('error', (e) => { out.bridge = e.code; fs.writeFileSync('/data/result.json', JSON.stringify(out)); });
setInterval(() => {}, 1000);
`;

// A host-side service (like the LLM proxy) on the bridge address, started by the systemctl shim.
const HOST_SERVICE = `
require('node:net').createServer((c) => c.end('hello-from-host\\n')).listen(3101, '172.17.0.1');
`;

async function waitForJson(path: string): Promise<Record<string, unknown> | undefined> {
  for (let i = 0; i < 600; i++) {
    try {
      return JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return undefined;
}

// An npm package the image "is built from", installed like `make openclaw` does
// (<cache>/<name>-<version>/node_modules/<name>, its dependency hoisted beside it).
const NPM_MAIN = `
import { createServer } from 'node:http';
import { greeting } from 'fake-dep';
createServer((req, res) => {
  res.end(JSON.stringify({ greeting, token: process.env.GW_TOKEN === process.env.EXPECTED ? 'ok' : 'wrong', cwd: process.cwd(), uid: process.getuid() }));
}).listen(18789, '0.0.0.0');
`;

// Answers with the source address the "container" sees (what OpenClaw's trustedProxies judge).
const ECHO_MAIN = `
import { createServer } from 'node:http';
createServer((req, res) => res.end(JSON.stringify({ remote: req.socket.remoteAddress }))).listen(18789, '0.0.0.0');
`;

describe('the docker and systemctl shims run real, confined processes', () => {
  const cacheDir = mkdtempSync(join(tmpdir(), 'cannes-hosts-test-cache-'));
  const provider = new RealHostProvider({ cacheDir });
  const serverId = randomInt(100_000, 900_000);
  const ipv4 = randomTestIpv4();
  const canary = `canary-${randomBytes(8).toString('hex')}`;
  let disk = '';

  const sh = async (script: string) => (await provider.exec(serverId, ['bash', '-c', script])).stdout;

  beforeAll(async () => {
    const prefix = join(cacheDir, 'fakegw-1.2.3', 'node_modules');
    mkdirSync(join(prefix, 'fakegw'), { recursive: true });
    mkdirSync(join(prefix, 'fake-dep'), { recursive: true });
    writeFileSync(join(prefix, 'fakegw', 'package.json'), '{"name":"fakegw","type":"module"}');
    writeFileSync(join(prefix, 'fakegw', 'main.mjs'), NPM_MAIN);
    writeFileSync(
      join(prefix, 'fake-dep', 'package.json'),
      '{"name":"fake-dep","type":"module","main":"index.js"}',
    );
    writeFileSync(join(prefix, 'fake-dep', 'index.js'), "export const greeting = 'hello-from-dep';");
    const echo = join(cacheDir, 'fakeecho-1.2.3', 'node_modules', 'fakeecho');
    mkdirSync(echo, { recursive: true });
    writeFileSync(join(echo, 'package.json'), '{"name":"fakeecho","type":"module"}');
    writeFileSync(join(echo, 'main.mjs'), ECHO_MAIN);
    // As `npm install` leaves it under umask 022: world-readable (the test process may run with 077).
    await promisify(execFile)('chmod', ['-R', 'a+rX', cacheDir]);
    await provider.create({
      serverId,
      name: `ctr-${randomBytes(3).toString('hex')}`,
      ipv4,
      image: 'docker-ce',
    });
    await provider.boot(serverId, { kind: 'os' });
    disk = provider.info(serverId)?.diskDir ?? '';
    await sh(
      `umask 077; printf '%s' '{"version":1,"keys":{"k":{"provider":"openai","apiKey":"${canary}"}}}' >/root/.model-keys.json`,
    );
  });

  afterAll(async () => {
    await provider.close();
    rmSync(cacheDir, { recursive: true, force: true });
  });

  it('starts an enabled systemd unit on the bridge address and reports it active', async () => {
    await sh(`mkdir -p /opt/hostsvc && cat >/opt/hostsvc/main.js <<'EOF'\n${HOST_SERVICE}\nEOF
cat >/etc/systemd/system/hostsvc.service <<'EOF'
[Unit]
Description=test host service
[Service]
ExecStart=/run/cannes/node/bin/node /opt/hostsvc/main.js
Restart=always
Environment="A=b c"
[Install]
WantedBy=multi-user.target
EOF
systemctl daemon-reload && systemctl enable --now hostsvc`);
    expect(
      (
        await sh(
          'for i in $(seq 300); do systemctl is-active hostsvc >/dev/null && break; sleep 0.1; done; systemctl is-active hostsvc',
        )
      ).trim(),
    ).toBe('active');
  });

  it('runs a compose service as uid 1000 that cannot read /root/.model-keys.json or anything under /root', async () => {
    await sh(`mkdir -p /opt/gw/config && echo '{"ok":true}' >/opt/gw/config/app.json && cat >/opt/gw/probe.js <<'EOF'\n${PROBE}\nEOF
mkdir -p /opt/gw/data && chown 1000:1000 /opt/gw/data
cat >/opt/gw/compose.yaml <<'EOF'
services:
  gateway:
    image: ghcr.io/openclaw/openclaw:2026.1.1
    command: ["node", "/app/probe.js"]
    volumes:
      - ./data:/data
      - ./config:/config:ro
      - ./probe.js:/app/probe.js:ro
    extra_hosts:
      - host.docker.internal:host-gateway
    environment:
      NODE_ENV: production
EOF
docker compose -f /opt/gw/compose.yaml up -d`);
    const result = await waitForJson(join(disk, 'opt/gw/data/result.json'));
    if (!result)
      throw new Error(`no probe result; logs: ${await sh('cat /var/lib/docker-shim/projects/*/*.log')}`);
    expect(result['uid']).toBe(1000);
    expect(result['gid']).toBe(1000);
    expect(result['/root/.model-keys.json']).toBe('ENOENT');
    expect(result['/root']).toBe('ENOENT');
    expect(result['/etc/ssh']).toBe('ENOENT');
    expect(result['/run/cannes/disk']).toBe('ENOENT');
    expect(result['hosts']).toMatch(/^172\.17\.0\.1 host\.docker\.internal$/m);
    expect(result['config']).toContain('"ok":true');
    expect(result['configWritable']).toBe('EROFS');
    expect(result['bridge']).toBe('hello-from-host');
    expect(JSON.stringify(result)).not.toContain(canary);
    const ps = await sh('docker compose -f /opt/gw/compose.yaml ps --format json');
    expect(JSON.parse(ps.trim().split('\n')[0] ?? '{}')).toMatchObject({
      Service: 'gateway',
      State: 'running',
      IP: '172.17.0.2',
    });
  });

  it('even as root in the container namespace, the server’s /root is simply not there', async () => {
    // uid 1000 is the promise; this shows the mount namespace, not file modes, does the hiding.
    await sh(`mkdir -p /opt/gw/rootdata && cat >/opt/gw/compose-root.yaml <<'EOF'
name: rootprobe
services:
  probe:
    image: busybox
    user: "0:0"
    command: ["sh", "-c", "ls -A /root >/data/ls.txt 2>&1; echo done >>/data/ls.txt; sleep 1000"]
    volumes:
      - ./rootdata:/data
EOF
docker compose -f /opt/gw/compose-root.yaml up -d`);
    const p = join(disk, 'opt/gw/rootdata/ls.txt');
    for (let i = 0; i < 600 && !(await readFile(p, 'utf8').catch(() => '')).includes('done'); i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    const out = await readFile(p, 'utf8').catch(async () => {
      throw new Error(`no probe output; logs: ${await sh('cat /var/lib/docker-shim/projects/*/*.log')}`);
    });
    expect(out).toContain('No such file or directory');
    expect(out).not.toContain('.model-keys.json');
    await sh('docker compose -f /opt/gw/compose-root.yaml down');
  });

  it('down stops the container and removes its network namespace', async () => {
    await sh('docker compose -f /opt/gw/compose.yaml down');
    const ps = await sh('docker compose -f /opt/gw/compose.yaml ps --format json');
    expect(ps.trim()).toBe('');
    expect((await sh('ip netns list')).trim()).toBe('');
    expect(await sh("pgrep -f 'app/probe[.]js' || true")).toBe('');
  });

  it('restarts enabled units at boot and leaves nothing behind when destroyed', async () => {
    await provider.boot(serverId, { kind: 'os' });
    expect(
      (
        await sh(
          'for i in $(seq 300); do systemctl is-active hostsvc >/dev/null && break; sleep 0.1; done; systemctl is-active hostsvc',
        )
      ).trim(),
    ).toBe('active');
    await sh('docker compose -f /opt/gw/compose.yaml up -d');
    const f = await footprint(provider, serverId);
    await provider.destroy(serverId);
    expect(await leftovers(f)).toEqual([]);
  });

  const server2 = serverId + 1;
  const sh2 = async (script: string) => (await provider.exec(server2, ['bash', '-c', script])).stdout;
  const poll = async () => {
    for (let i = 0; i < 300; i++) {
      const out = await sh2('curl -fsS http://127.0.0.1:18789/ 2>/dev/null || true');
      if (out !== '') return JSON.parse(out) as Record<string, unknown>;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`gateway never answered: ${await sh2('cat /var/lib/docker-shim/projects/*/*.log')}`);
  };

  it('runs an x-cannes npm package with env_file, published port, health, and brings it back at boot', async () => {
    await provider.create({ serverId: server2, name: 'gw-host', ipv4: randomTestIpv4(), image: 'docker-ce' });
    await provider.boot(server2, { kind: 'os' });
    const token = randomBytes(12).toString('hex');
    await sh2(`mkdir -p /opt/cannes/gateway && umask 077 && printf 'GW_TOKEN=%s\\n' ${token} >/opt/cannes/gateway/gateway.env
cat >/opt/cannes/gateway/compose.yaml <<'EOF'
name: "cannes-gateway"
services:
  gateway:
    image: "ghcr.io/openclaw/openclaw:1.2.3"
    user: "1000:1000"
    command: ["node", "main.mjs"]
    network_mode: "bridge"
    environment:
      EXPECTED: "${token}"
    env_file: ["/opt/cannes/gateway/gateway.env"]
    extra_hosts: ["host.docker.internal:host-gateway"]
    ports: ["127.0.0.1:18789:18789"]
    cap_drop: ["ALL"]
    restart: "unless-stopped"
    healthcheck: { test: ["CMD", "true"], start_period: "120s" }
    x-cannes: { npmPackage: "fakegw", npmVersion: "1.2.3", health: "http://127.0.0.1:18789/" }
EOF
docker compose -f /opt/cannes/gateway/compose.yaml up -d`);
    expect(await poll()).toEqual({
      greeting: 'hello-from-dep',
      token: 'ok',
      cwd: '/opt/npm/node_modules/fakegw',
      uid: 1000,
    });
    const ps = JSON.parse(
      (await sh2('docker compose -f /opt/cannes/gateway/compose.yaml ps --format json')).trim(),
    );
    expect(ps).toMatchObject({ Service: 'gateway', State: 'running', Health: 'healthy' });
    await provider.boot(server2, { kind: 'os' });
    expect((await poll())['token']).toBe('ok');
  });

  it('takes changes one at a time: three `up --force-recreate` or `systemctl restart` at once leave one copy', async () => {
    // As dockerd would: an operator that died mid-deploy leaves its `up` running beside the
    // next one's. Each change waits for the one before it; none starts a second copy.
    const up = 'docker compose -f /opt/cannes/gateway/compose.yaml up -d --force-recreate 2>&1';
    await Promise.all([sh2(up), sh2(up), sh2(up)]);
    const namespaces = (await sh2('ip netns list')).split('\n').filter((l) => l.startsWith('cn-'));
    expect(namespaces).toHaveLength(1);
    expect((await poll())['token']).toBe('ok');
    expect((await sh2("pgrep -c -f 'node main[.]mjs' || true")).trim()).toBe('1');
    expect((await sh2("pgrep -c -f ' __forwar[d] ' || true")).trim()).toBe('1');
    // And as systemd would, for a unit restarted by three sessions at once.
    await sh2(`printf '[Service]\\nExecStart=/bin/sleep 100000\\n' >/etc/systemd/system/t.service`);
    await sh2('systemctl start t');
    const restart = 'systemctl restart t 2>&1';
    await Promise.all([sh2(restart), sh2(restart), sh2(restart)]);
    // Each supervisor is running when `systemctl` returns; it starts its ExecStart soon after.
    const count = async (pattern: string) => Number((await sh2(`pgrep -c -f '${pattern}' || true`)).trim());
    const supervisors = await count('__supervis[e] t[.]service');
    for (let i = 0; i < 100 && (await count('^/bin/slee[p] 100000')) < supervisors; i++)
      await new Promise((r) => setTimeout(r, 100));
    expect(supervisors).toBe(1);
    expect(await count('^/bin/slee[p] 100000')).toBe(1);
  });
  const server3 = serverId + 2;
  const sh3 = async (script: string) => (await provider.exec(server3, ['bash', '-c', script])).stdout;
  const seen = async (url: string) => {
    for (let i = 0; i < 300; i++) {
      const out = await sh3(`curl -fsS --max-time 2 ${url} 2>/dev/null || true`);
      if (out !== '') return (JSON.parse(out) as { remote: string }).remote;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`nothing answered at ${url}: ${await sh3('cat /var/lib/docker-shim/projects/*/*.log')}`);
  };

  it("tells Serve's path from the published port by source address, as Docker does (a network of Serve's own)", async () => {
    await provider.create({
      serverId: server3,
      name: 'two-ways',
      ipv4: randomTestIpv4(),
      image: 'docker-ce',
    });
    await provider.boot(server3, { kind: 'os' });
    await sh3(`mkdir -p /opt/two && cat >/opt/two/compose.yaml <<'EOF'
name: "two"
services:
  gateway:
    image: "ghcr.io/openclaw/openclaw:1.2.3"
    command: ["node", "main.mjs"]
    networks:
      default: {}
      serve: { ipv4_address: "172.31.255.250" }
    ports: ["127.0.0.1:18789:18789"]
    x-cannes: { npmPackage: "fakeecho", npmVersion: "1.2.3" }
networks:
  default: {}
  serve:
    internal: true
    ipam: { config: [{ subnet: "172.31.255.248/29", gateway: "172.31.255.249" }] }
EOF
docker compose -f /opt/two/compose.yaml up -d`);
    // The published port (the owner's SSH tunnel, any host client): from compose's own network.
    expect(await seen('http://127.0.0.1:18789/')).toBe('172.18.0.1');
    // Serve's target: the container on the internal network, reached from the host's address there.
    expect(await seen('http://172.31.255.250:18789/')).toBe('172.31.255.249');
    // The default route is on the non-internal network; the internal one has none.
    const netns =
      (await sh3('ip netns list'))
        .split('\n')
        .find((l) => l.startsWith('cn-'))
        ?.split(' ')[0] ?? '';
    expect((await sh3(`ip -n ${netns} route show default`)).trim()).toMatch(
      /^default via 172\.18\.0\.1 dev eth0/,
    );
    await sh3('docker compose -f /opt/two/compose.yaml down');
    expect((await sh3('ip -o link show type bridge')).match(/br-[0-9a-f]+/g) ?? []).toEqual([]);
    const f = await footprint(provider, server3);
    await provider.destroy(server3);
    expect(await leftovers(f)).toEqual([]);
  });
});
