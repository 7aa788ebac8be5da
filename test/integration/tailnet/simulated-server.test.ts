import { randomBytes, randomInt } from 'node:crypto';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomTestIpv4 } from '../../hosts/leftovers.ts';
import { RealHostProvider } from '../../hosts/real-host-provider.ts';
import { startControl, type TailnetControl, tailnetBinDir } from '../../tailnet/control.ts';
import { type Laptop, startLaptop } from '../../tailnet/node.ts';

// A preview of the operator's tailnet step on a real simulated server (test/hosts): tailscaled from
// the rig's cache (bound read-only at /run/cannes/cache in every server) as a systemd unit run by the
// systemctl shim, the rig CA in the server's CA bundle, `tailscale up` with a key in a root-only
// file removed right after, Serve in front of a loopback-only service on the gateway's port. Then a
// reboot: the node comes back joined and served from its disk, with no key.

const cache = process.env['CANNES_CACHE'] ?? join(homedir(), '.cache', 'cannes');
const canary = `sim-tailnet-${randomBytes(6).toString('hex')}`;
const provider = new RealHostProvider({ cacheDir: cache });
const serverId = randomInt(100_000, 900_000);
const name = `tsvps-${randomBytes(2).toString('hex')}`;
let control: TailnetControl;
let laptop: Laptop;
let serverBin: string;

const sh = async (script: string) => (await provider.exec(serverId, ['bash', '-c', script])).stdout;

beforeAll(async () => {
  const bin = tailnetBinDir();
  const rel = relative(cache, bin);
  if (rel.startsWith('..')) throw new Error(`${bin} is not under the cache ${cache}`);
  serverBin = `/run/cannes/cache/${rel}`;
  control = await startControl({ binDir: bin });
  await provider.create({ serverId, name, ipv4: randomTestIpv4(), image: 'docker-ce' });
  const disk = provider.info(serverId)?.diskDir ?? '';
  // What the operator would write over SSH; written to the disk here before the first boot.
  // The server trusts the rig CA as a real server trusts public CAs (its CA bundle), so the unit
  // is the package's own, with nothing rig-specific.
  provider.trustCa(readFileSync(control.caFile, 'utf8'));
  writeFileSync(
    join(disk, 'etc/systemd/system/tailscaled.service'),
    [
      '[Unit]',
      'Description=Tailscale node agent',
      '[Service]',
      `ExecStart=${serverBin}/tailscaled --state=/var/lib/tailscale/tailscaled.state --socket=/run/tailscale/tailscaled.sock --port=41641 --no-logs-no-support`,
      'Restart=on-failure',
      '[Install]',
      'WantedBy=multi-user.target',
      '',
    ].join('\n'),
  );
  writeFileSync(
    join(disk, 'opt/gw.mjs'),
    `import { createServer } from 'node:http';
createServer((req, res) => res.end(JSON.stringify({ canary: ${JSON.stringify(canary)}, login: req.headers['tailscale-user-login'] ?? null }))).listen(18789, '127.0.0.1');
`,
  );
  writeFileSync(
    join(disk, 'etc/systemd/system/gw.service'),
    // A stand-in service run by the rig's own Node (read-only at /run/cannes/node: the simulated
    // OS has no node on any PATH, as the real image has none).
    '[Service]\nExecStart=/run/cannes/node/bin/node /opt/gw.mjs\nRestart=always\n[Install]\nWantedBy=multi-user.target\n',
  );
  await provider.boot(serverId, { kind: 'os' });
  laptop = await startLaptop(control, { prefix: 'tailnet-slap', binDir: bin });
});

afterAll(async () => {
  await laptop?.stop();
  await provider.close();
  await control?.stop();
});

const ts = (args: string) => `${serverBin}/tailscale --socket=/run/tailscale/tailscaled.sock ${args}`;

async function reachFromLaptop(host: string): Promise<{ canary: string; login: string | null }> {
  for (let i = 0; ; i++) {
    const r = await laptop.curl(`http://${host}/`, 5);
    if (r.code === 0 && r.stdout.startsWith('{')) return JSON.parse(r.stdout);
    if (i > 40) throw new Error(`laptop cannot reach ${host}: ${r.stderr}${r.stdout}`);
    await new Promise((res) => setTimeout(res, 500));
  }
}

describe('a simulated server on the rig tailnet', () => {
  let host = '';

  it('joins as a systemd unit from the cache, with the key in a root-only file gone after `up`', async () => {
    await sh('systemctl daemon-reload && systemctl enable --now tailscaled && systemctl enable --now gw');
    await sh(
      `for i in $(seq 100); do ${ts('status --json')} 2>/dev/null | grep -q BackendState && exit 0; sleep 0.1; done; exit 1`,
    );
    const key = await control.mintKey({ tags: ['tag:cannes-vps'] });
    const keyPath = join(provider.info(serverId)?.diskDir ?? '', 'root/tailscale-authkey');
    writeFileSync(keyPath, `${key.key}\n`, { mode: 0o600 });
    chmodSync(keyPath, 0o600);
    await sh(
      `umask 077; ${ts(`up --login-server=${control.url} --auth-key=file:/root/tailscale-authkey --hostname=${name} --advertise-tags=tag:cannes-vps --accept-dns=false --timeout=60s`)}; rc=$?; rm -f /root/tailscale-authkey; exit $rc`,
    );
    expect(await sh('ls -A /root')).not.toContain('tailscale-authkey');
    const status = JSON.parse(await sh(ts('status --json')));
    expect(status.BackendState).toBe('Running');
    expect(status.Self.Tags).toEqual(['tag:cannes-vps']);
    expect(await sh('ip -o link show tailscale0 | wc -l')).toBe('1\n');
    expect(await sh(`grep -rl ${key.key} /var/lib/tailscale /run/tailscale 2>/dev/null | wc -l`)).toBe('0\n');
    host = String(status.Self.DNSName).replace(/\.$/, '');
    await laptop.knowHost(host, status.TailscaleIPs[0]);
  });

  it('serves the loopback gateway port to the laptop over the tailnet', async () => {
    await sh(ts('serve --bg --yes --http=80 http://127.0.0.1:18789'));
    const body = await reachFromLaptop(host);
    expect(body.canary).toBe(canary);
    expect(body.login).toMatch(/@/);
  });

  it('comes back joined and served after a reboot, from its disk, with no key', async () => {
    await provider.boot(serverId, { kind: 'os' });
    const body = await reachFromLaptop(host);
    expect(body.canary).toBe(canary);
    expect(JSON.parse(await sh(ts('status --json'))).BackendState).toBe('Running');
    expect((await control.nodes()).filter((n) => n.hostname === name)).toHaveLength(1);
  });
});
