import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  firewallUnit,
  INTAKE_PORT,
  intakeUnit,
  nftablesRules,
  proxyUnit,
  sshdHardening,
} from '../../../operator/host/index.ts';

/**
 * The host hardening templates against the real tools: nftables in network namespaces that
 * model a VPS (docker0 172.17.0.1/16 with a "container" at 172.17.0.2, a "public" link in
 * 198.18.0.0/15 to an "outside" namespace), `sshd -t/-T`, `systemd-analyze verify`.
 */

const id = randomBytes(3).toString('hex');
const NS = { host: `cx-h-${id}`, container: `cx-c-${id}`, outside: `cx-o-${id}` };
const octet = 1 + (randomBytes(1)[0]! % 250);
const PUBLIC = `198.18.${octet}.1`;
const OUTSIDE = `198.18.${octet}.2`;
const created: string[] = [];
const servers: ChildProcess[] = [];
let dir: string;

const SERVER = `
import { createServer } from 'node:net';
const binds = process.argv.slice(2).map((a) => { const i = a.lastIndexOf(':'); return [a.slice(0, i), Number(a.slice(i + 1))]; });
let n = 0;
for (const [host, port] of binds) createServer((s) => { s.on('error', () => {}); s.end('hi'); }).listen(port, host, () => { if (++n === binds.length) console.log('listening'); });
`;
const PROBE = `
import { connect } from 'node:net';
const s = connect({ host: process.argv[2], port: Number(process.argv[3]), ...(process.argv[4] ? { localAddress: process.argv[4] } : {}) });
const done = (r) => { console.log(r); s.destroy(); process.exit(0); };
s.setTimeout(1500, () => done('closed'));
s.on('connect', () => done('open'));
s.on('error', () => done('closed'));
`;

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: 'pipe' });
}
function inNs(ns: string, cmd: string, ...args: string[]): string {
  return execFileSync('ip', ['netns', 'exec', ns, cmd, ...args], { encoding: 'utf8', stdio: 'pipe' });
}
function probe(from: string, host: string, port: number, localAddress?: string): string {
  const args = [join(dir, 'probe.mjs'), host, String(port), ...(localAddress ? [localAddress] : [])];
  return inNs(from, process.execPath, ...args).trim();
}
/** An outsider's address inside 172.16.0.0/12 (a spoofed or a provider-internal source). */
const SPOOFED = '172.31.254.1';
const METADATA = '169.254.169.254';
async function serve(ns: string, ...binds: string[]): Promise<void> {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, join(dir, 'server.mjs'), ...binds], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  servers.push(child);
  await new Promise<void>((resolve, reject) => {
    child.stdout?.on('data', (b: Buffer) => {
      if (b.toString().includes('listening')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`server in ${ns} exited ${code}`)));
  });
}
function loadRules(): void {
  inNs(NS.host, 'nft', '-f', join(dir, 'cannes.nft'));
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cannes-hardening-'));
  writeFileSync(join(dir, 'server.mjs'), SERVER);
  writeFileSync(join(dir, 'probe.mjs'), PROBE);
  writeFileSync(join(dir, 'cannes.nft'), nftablesRules());
  for (const ns of Object.values(NS)) {
    ip('netns', 'add', ns);
    created.push(ns);
    ip('-n', ns, 'link', 'set', 'lo', 'up');
  }
  // The VPS: docker0 with the container on it.
  ip('-n', NS.host, 'link', 'add', 'docker0', 'type', 'bridge');
  ip('-n', NS.host, 'addr', 'add', '172.17.0.1/16', 'dev', 'docker0');
  ip('-n', NS.host, 'link', 'set', 'docker0', 'up');
  ip('-n', NS.host, 'link', 'add', 'veth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NS.container);
  ip('-n', NS.host, 'link', 'set', 'veth0', 'master', 'docker0');
  ip('-n', NS.host, 'link', 'set', 'veth0', 'up');
  ip('-n', NS.container, 'addr', 'add', '172.17.0.2/16', 'dev', 'eth0');
  ip('-n', NS.container, 'link', 'set', 'eth0', 'up');
  ip('-n', NS.container, 'route', 'add', 'default', 'via', '172.17.0.1');
  // Its public side, and someone on the internet.
  ip('-n', NS.host, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NS.outside);
  ip('-n', NS.host, 'addr', 'add', `${PUBLIC}/30`, 'dev', 'eth0');
  ip('-n', NS.host, 'link', 'set', 'eth0', 'up');
  ip('-n', NS.outside, 'addr', 'add', `${OUTSIDE}/30`, 'dev', 'eth0');
  ip('-n', NS.outside, 'link', 'set', 'eth0', 'up');
  ip('-n', NS.outside, 'route', 'add', 'default', 'via', PUBLIC);
  // The outsider also holds a 172.16/12 address and the metadata address; the host forwards
  // container traffic out of its public side (as Docker's NAT would, minus the NAT).
  ip('-n', NS.outside, 'addr', 'add', `${SPOOFED}/32`, 'dev', 'eth0');
  ip('-n', NS.outside, 'addr', 'add', `${METADATA}/32`, 'dev', 'eth0');
  ip('-n', NS.outside, 'route', 'add', '172.17.0.0/16', 'via', PUBLIC);
  ip('-n', NS.host, 'route', 'add', `${SPOOFED}/32`, 'dev', 'eth0');
  ip('-n', NS.host, 'route', 'add', `${METADATA}/32`, 'via', OUTSIDE);
  inNs(NS.host, 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
  // The proxy on the bridge address; sshd and a metrics port on every address; the gateway in its container.
  // The key intake listens on loopback only; here it listens everywhere, so that the firewall
  // alone has to keep it from containers and the internet.
  await serve(NS.host, '172.17.0.1:3101', '0.0.0.0:22', '0.0.0.0:9464', `0.0.0.0:${INTAKE_PORT}`);
  await serve(NS.container, '172.17.0.2:18789');
  await serve(NS.outside, `${METADATA}:80`, `${OUTSIDE}:80`);
});

afterAll(() => {
  for (const s of servers) if (s.exitCode === null) s.kill('SIGKILL');
  for (const ns of created) spawnSync('ip', ['netns', 'del', ns]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('nftablesRules on a modelled VPS', () => {
  it('changes what containers and the internet reach, exactly as intended', () => {
    // Without the rules everything is open: the assertions below are the rules' doing.
    expect(probe(NS.container, '172.17.0.1', 22)).toBe('open');
    expect(probe(NS.outside, '172.17.0.1', 3101)).toBe('open');
    expect(probe(NS.container, '172.17.0.1', INTAKE_PORT)).toBe('open');
    expect(probe(NS.outside, PUBLIC, INTAKE_PORT)).toBe('open');

    loadRules();

    // A container reaches the proxy, and nothing else of the host.
    expect(probe(NS.container, '172.17.0.1', 3101)).toBe('open');
    expect(probe(NS.container, '172.17.0.1', 22)).toBe('closed');
    expect(probe(NS.container, PUBLIC, 22)).toBe('closed');
    expect(probe(NS.container, '172.17.0.1', 9464)).toBe('closed');
    // The internet reaches sshd but never the proxy port.
    expect(probe(NS.outside, PUBLIC, 22)).toBe('open');
    expect(probe(NS.outside, '172.17.0.1', 3101)).toBe('closed');
    // The key intake: neither the Docker bridge nor the public link, whatever address it binds.
    expect(probe(NS.container, '172.17.0.1', INTAKE_PORT)).toBe('closed');
    expect(probe(NS.outside, PUBLIC, INTAKE_PORT)).toBe('closed');
    expect(probe(NS.host, '127.0.0.1', INTAKE_PORT)).toBe('open');
    // The host still reaches the gateway container (published port, SSH tunnel): replies pass.
    expect(probe(NS.host, '172.17.0.2', 18789)).toBe('open');
  });

  it('admits containers by their bridge, never by a 172.16/12 source on the public link', () => {
    loadRules();
    expect(probe(NS.outside, '172.17.0.1', 3101, SPOOFED)).toBe('closed');
    expect(probe(NS.container, '172.17.0.1', 3101)).toBe('open');
  });

  it("drops container traffic to the cloud's metadata address, and only that", () => {
    inNs(NS.host, 'nft', 'delete', 'table', 'inet', 'cannes');
    expect(probe(NS.container, METADATA, 80)).toBe('open');
    loadRules();
    expect(probe(NS.container, METADATA, 80)).toBe('closed');
    expect(probe(NS.container, OUTSIDE, 80)).toBe('open');
  });

  it('reloads idempotently and touches no other table', () => {
    inNs(NS.host, 'nft', 'add', 'table', 'inet', 'someone-else');
    loadRules();
    loadRules();
    const tables = inNs(NS.host, 'nft', 'list', 'tables').trim().split('\n').sort();
    expect(tables).toEqual(['table inet cannes', 'table inet someone-else']);
    const input = inNs(NS.host, 'nft', 'list', 'chain', 'inet', 'cannes', 'input');
    expect(input.match(/jump from_containers/g)?.length).toBe(2);
  });
});

describe('sshdHardening with the real sshd', () => {
  it('wins over a later snippet that enables passwords (first value wins)', () => {
    const d = join(dir, 'sshd');
    mkdirSync(join(d, 'sshd_config.d'), { recursive: true });
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(d, 'host_key')]);
    writeFileSync(join(d, 'sshd_config.d', '00-cannes-hardening.conf'), sshdHardening());
    writeFileSync(
      join(d, 'sshd_config.d', '50-cloud-init.conf'),
      'PasswordAuthentication yes\nKbdInteractiveAuthentication yes\nPermitRootLogin yes\n',
    );
    // Like Debian's sshd_config: the Include comes first, then the defaults.
    writeFileSync(
      join(d, 'sshd_config'),
      `Include ${d}/sshd_config.d/*.conf\nHostKey ${d}/host_key\nPasswordAuthentication yes\n`,
    );
    // sshd wants /run/sshd: give it one in a private mount namespace.
    const r = spawnSync(
      'unshare',
      [
        '-m',
        'sh',
        '-c',
        `mount -t tmpfs tmpfs /run && mkdir /run/sshd && sshd -t -f "$1" && sshd -T -f "$1"`,
        'sh',
        join(d, 'sshd_config'),
      ],
      { encoding: 'utf8', env: { ...process.env, PATH: `/usr/sbin:/usr/bin:${process.env['PATH']}` } },
    );
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const effective = r.stdout.split('\n');
    expect(effective).toContain('passwordauthentication no');
    expect(effective).toContain('kbdinteractiveauthentication no');
    expect(effective).toContain('permitrootlogin without-password');
    expect(effective).toContain('authenticationmethods publickey');
  });
});

describe('systemd units', () => {
  it('pass systemd-analyze verify without a warning', () => {
    const d = join(dir, 'units');
    mkdirSync(d, { recursive: true });
    // verify needs an existing executable; production resolves `node` by systemd's search path.
    writeFileSync(join(d, 'cannes-proxy.service'), proxyUnit({ node: process.execPath }));
    writeFileSync(join(d, 'cannes-firewall.service'), firewallUnit());
    writeFileSync(join(d, 'cannes-key-intake.service'), intakeUnit({ node: process.execPath }));
    const r = spawnSync(
      'systemd-analyze',
      [
        'verify',
        join(d, 'cannes-proxy.service'),
        join(d, 'cannes-firewall.service'),
        join(d, 'cannes-key-intake.service'),
      ],
      { encoding: 'utf8' },
    );
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });
});
