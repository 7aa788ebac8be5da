import { spawn } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { footprint, leftovers, randomTestIpv4 } from '../../hosts/leftovers.ts';
import { GATEWAY_IPV4, RealHostProvider } from '../../hosts/real-host-provider.ts';

function sshPortOpen(ipv4: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: ipv4, port: 22 });
    s.setTimeout(3000, () => {
      s.destroy();
      resolve(false);
    });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

describe('a simulated server is a real Linux host', () => {
  const provider = new RealHostProvider();
  const serverId = randomInt(100_000, 900_000);
  const ipv4 = randomTestIpv4();
  const name = `life-${randomBytes(3).toString('hex')}`;

  afterAll(async () => {
    await provider.close();
  });

  it('boots into rescue with hostname rescue and the OS disk only behind `mount /dev/sda1 /mnt`', async () => {
    await provider.create({ serverId, name, ipv4, image: 'docker-ce' });
    expect(await sshPortOpen(ipv4)).toBe(false);
    await provider.boot(serverId, {
      kind: 'rescue',
      rootPassword: randomBytes(12).toString('hex'),
      sshKeys: [],
    });
    expect(await sshPortOpen(ipv4)).toBe(true);
    const { stdout } = await provider.exec(serverId, [
      'bash',
      '-c',
      'hostname; test -e /mnt/etc/ssh/sshd_config && echo mounted-before; mount /dev/sda1 /mnt; test -e /mnt/etc/ssh/sshd_config && echo mounted-after; for t in ssh-keygen shred mount; do command -v $t; done',
    ]);
    const lines = stdout.trim().split('\n');
    expect(lines[0]).toBe('rescue');
    expect(lines).not.toContain('mounted-before');
    expect(lines).toContain('mounted-after');
    expect(lines.some((l) => l.endsWith('/shred'))).toBe(true);
  });

  it('boots the OS with its own /root, /etc/ssh, /opt and hostname, not this machine’s', async () => {
    await provider.boot(serverId, { kind: 'os' });
    const canary = `canary-${randomBytes(6).toString('hex')}`;
    const { stdout } = await provider.exec(serverId, [
      'sh',
      '-c',
      `hostname; for d in /root /etc/ssh /etc/systemd/system /opt /mnt /var/lib/docker-shim; do touch "$d/${canary}"; done; ip -4 -br addr show dev eth0; ip -4 -br addr show dev docker0`,
    ]);
    expect(stdout).toContain(name);
    expect(stdout).toContain(`${ipv4}/32`);
    expect(stdout).toContain('172.17.0.1/16');
    for (const d of ['/root', '/etc/ssh', '/etc/systemd/system', '/opt', '/mnt', '/var/lib/docker-shim']) {
      expect(existsSync(join(d, canary))).toBe(false);
      expect(existsSync(join(provider.info(serverId)?.diskDir ?? '/nonexistent', d, canary))).toBe(true);
    }
  });

  it('reaches nothing beyond this machine: only the rig block 198.19.255.0/24 is routed, via the gateway', async () => {
    // `ip route get` asks the routing table; it sends nothing.
    const probe = await provider.exec(serverId, [
      'bash',
      '-c',
      'ip route get 198.19.255.254 >/dev/null && ip route get 198.19.255.253 | grep -q "via 198.19.255.254" && echo gateway-ok; ip route get 192.0.2.1 2>&1 || true; wc -c </etc/resolv.conf',
    ]);
    const lines = probe.stdout.trim().split('\n');
    expect(lines[0]).toBe('gateway-ok');
    expect(lines[1]).toMatch(/unreachable|No route to host/i);
    expect(lines[2]?.trim()).toBe('0');
  });

  it('reaches a service that the rig runs on the gateway address', async () => {
    const { createServer } = await import('node:net');
    const srv = createServer((c) => c.end('hello-from-rig\n'));
    await new Promise<void>((r) => srv.listen(0, GATEWAY_IPV4, () => r()));
    try {
      const port = (srv.address() as { port: number }).port;
      const { stdout } = await provider.exec(serverId, [
        'bash',
        '-c',
        `exec 3<>/dev/tcp/${GATEWAY_IPV4}/${port}; timeout 10 cat <&3`,
      ]);
      expect(stdout.trim()).toBe('hello-from-rig');
    } finally {
      srv.close();
    }
  });

  it('keeps the disk across a reboot and loses what ran (processes, /tmp)', async () => {
    await provider.exec(serverId, ['sh', '-c', 'echo kept >/root/note; echo gone >/tmp/note']);
    await provider.boot(serverId, { kind: 'os' });
    const { stdout } = await provider.exec(serverId, [
      'sh',
      '-c',
      'cat /root/note; cat /tmp/note 2>/dev/null || echo none',
    ]);
    expect(stdout.trim().split('\n')).toEqual(['kept', 'none']);
  });

  it('reports a boot whose sshd cannot start, with sshd’s own words, and boots again once fixed', async () => {
    const config = join(provider.info(serverId)?.diskDir ?? '/nonexistent', 'etc/ssh/sshd_config');
    const good = await readFile(config, 'utf8');
    await writeFile(config, `${good}NoSuchSshdOption yes\n`);
    await expect(provider.boot(serverId, { kind: 'os' })).rejects.toThrow(
      /did not boot \(os\).*NoSuchSshdOption/s,
    );
    expect(provider.info(serverId)?.state).toBe('off');
    await writeFile(config, good);
    await provider.boot(serverId, { kind: 'os' });
    expect(provider.info(serverId)?.state).toBe('os');
  });

  it('is unreachable when powered off', async () => {
    await provider.powerOff(serverId);
    expect(provider.info(serverId)?.state).toBe('off');
    expect(await sshPortOpen(ipv4)).toBe(false);
  });

  it('leaves no namespace, route, mount, process or folder behind when destroyed', async () => {
    await provider.boot(serverId, { kind: 'os' });
    const f = await footprint(provider, serverId);
    expect(f.pidNsInode).toBeDefined();
    expect(await leftovers(f)).not.toEqual([]);
    await provider.destroy(serverId);
    expect(await leftovers(f)).toEqual([]);
    expect(provider.info(serverId)).toBeUndefined();
  });

  it('close() removes every server and its base folder', async () => {
    const id2 = serverId + 1;
    await provider.create({
      serverId: id2,
      name: `${name}-2`,
      ipv4: randomTestIpv4(),
      image: 'ubuntu-24.04',
    });
    await provider.boot(id2, { kind: 'rescue', rootPassword: randomBytes(12).toString('hex'), sshKeys: [] });
    const f = await footprint(provider, id2);
    const base = provider.baseDir;
    await provider.close();
    expect(await leftovers(f)).toEqual([]);
    expect(existsSync(base)).toBe(false);
    expect(await readFile('/proc/self/mounts', 'utf8')).not.toContain(base);
  });

  it('sweeps what a killed provider process left behind (namespaces, processes, folders)', async () => {
    const providerUrl = new URL('../../hosts/real-host-provider.ts', import.meta.url).href;
    const child = join(tmpdir(), `cannes-hosts-child-${randomBytes(4).toString('hex')}.ts`);
    const ip = randomTestIpv4();
    await writeFile(
      child,
      `import { RealHostProvider } from ${JSON.stringify(providerUrl)};
const p = new RealHostProvider();
await p.create({ serverId: 7, name: 'orphan', ipv4: ${JSON.stringify(ip)}, image: 'docker-ce' });
await p.boot(7, { kind: 'os' });
const i = p.info(7);
process.stdout.write('ready ' + i.netns + ' ' + p.baseDir + '\\n');
setInterval(() => {}, 1000);
`,
    );
    const proc = spawn(process.execPath, [child], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    proc.stdout.setEncoding('utf8');
    for await (const c of proc.stdout) {
      out += String(c);
      if (out.includes('\n')) break;
    }
    const [, netns, base] = out.trim().split(' ');
    expect(netns).toMatch(/^cs-7-/);
    proc.kill('SIGKILL');
    await new Promise((r) => proc.once('exit', r));
    await rm(child, { force: true });
    // The orphaned server still runs: its sshd answers.
    expect(await sshPortOpen(ip)).toBe(true);
    const sweeper = new RealHostProvider();
    try {
      await sweeper.create({ serverId: 8, name: 'sweeper', ipv4: randomTestIpv4(), image: 'docker-ce' });
      expect(existsSync(base ?? '/nonexistent-never')).toBe(false);
      // (No probe of `ip` here: its route is gone; only the namespace checks below are safe.)
      const { execFile } = await import('node:child_process');
      const { promisify } = await import('node:util');
      const { stdout } = await promisify(execFile)('ip', ['netns', 'list']);
      expect(stdout).not.toContain(netns);
      const stray: string[] = [];
      for (const pid of await readdir('/proc')) {
        if (!/^\d+$/.test(pid)) continue;
        const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
        if (base && cmd.includes(base)) stray.push(pid);
      }
      expect(stray).toEqual([]);
    } finally {
      await sweeper.close();
    }
  });
});
