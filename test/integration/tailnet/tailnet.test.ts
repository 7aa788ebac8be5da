import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startControl, sweepStaleDirs, type TailnetControl, tailnetBinDir } from '../../tailnet/control.ts';
import { createRigNamespace, type RigNamespace, TailscaleNode } from '../../tailnet/node.ts';

// The rig's real tailnet: Tailscale's own test control server with the rig's DERP relay and STUN
// server on 198.19.255.252, and real tailscaled (TUN) in namespaces shaped like simulated servers.
// docs/rig.md ("The tailnet").

const HERE = dirname(fileURLToPath(import.meta.url));
const SERVE_PORT = 18789; // the OpenClaw gateway's loopback port on a real server
const APP_PORT = 8080;
const canary = `tailnet-canary-${randomBytes(8).toString('hex')}`;

let bin: string;
let control: TailnetControl;
let serverNs: RigNamespace;
let laptopNs: RigNamespace;
let strangerNs: RigNamespace;
let outsiderNs: RigNamespace;
let server: TailscaleNode;
let laptop: TailscaleNode;
let stranger: TailscaleNode;
let scratch: string;
const services: ChildProcess[] = [];
const secrets: string[] = [];
let serverIp = '';
let laptopIp = '';
let serverKey = '';
/** The server's MagicDNS-style name, e.g. vps-demo.rig-tailnet.internal. */
let serverName = '';

/** A tiny HTTP service in a namespace, answering with the canary and the request headers it saw. */
function serveHttp(ns: string, host: string, port: number, label: string): Promise<void> {
  const file = join(scratch, `svc-${label}.mjs`);
  writeFileSync(
    file,
    `import { createServer } from 'node:http';
createServer((req, res) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ canary: ${JSON.stringify(canary)}, label: ${JSON.stringify(label)}, headers: req.headers }));
}).listen(${port}, ${JSON.stringify(host)}, () => process.stdout.write('listening\\n'));
`,
  );
  const p = spawn(
    'ip',
    ['netns', 'exec', ns, 'setpriv', '--pdeathsig', 'KILL', '--', process.execPath, file],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  services.push(p);
  return new Promise((resolve, reject) => {
    p.stdout?.once('data', () => resolve());
    p.once('exit', (code) => reject(new Error(`service ${label} exited ${code}`)));
  });
}

async function curl(
  ns: RigNamespace,
  url: string,
  maxTimeS = 10,
): Promise<{ code: number; body: string; err: string }> {
  const r = await ns.exec(['curl', '-sS', '--max-time', String(maxTimeS), url], { timeoutMs: 20_000 });
  return { code: r.code, body: r.stdout, err: r.stderr };
}

let loHadAddress = false;

beforeAll(async () => {
  bin = tailnetBinDir();
  loHadAddress = execFileSync('ip', ['-o', '-4', 'addr', 'show', 'dev', 'lo'], { encoding: 'utf8' }).includes(
    ' 198.19.255.252/32 ',
  );
  scratch = mkdtempSync(join(tmpdir(), 'cannes-tailnet-test-'));
  control = await startControl({ binDir: bin });
  serverNs = await createRigNamespace('tailnet-srv');
  laptopNs = await createRigNamespace('tailnet-lap');
  strangerNs = await createRigNamespace('tailnet-str');
  outsiderNs = await createRigNamespace('tailnet-out');
  [server, laptop, stranger] = await Promise.all([
    TailscaleNode.start({ netns: serverNs.name, binDir: bin, caFile: control.caFile }),
    TailscaleNode.start({ netns: laptopNs.name, binDir: bin, caFile: control.caFile }),
    TailscaleNode.start({ netns: strangerNs.name, binDir: bin, caFile: control.caFile }),
  ]);
});

afterAll(async () => {
  for (const s of services) s.kill('SIGKILL');
  for (const n of [server, laptop, stranger]) await n?.stop();
  for (const ns of [serverNs, laptopNs, strangerNs, outsiderNs]) await ns?.destroy();
  await control?.stop();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

describe('the rig tailnet', () => {
  it('runs tailscaled and tailscale of the pinned release', () => {
    const v = execFileSync(join(bin, 'tailscale'), ['version'], { encoding: 'utf8' });
    expect(v.split('\n')[0]).toBe('1.102.5');
  });

  it('joins a server (tagged one-off key, via a file) and a laptop (key via stdin)', async () => {
    const sk = await control.mintKey({ tags: ['tag:cannes-vps'] });
    const lk = await control.mintKey();
    serverKey = sk.key;
    secrets.push(sk.key, lk.key);
    const up = await server.up({
      loginServer: control.url,
      authKey: sk.key,
      hostname: 'vps-demo',
      advertiseTags: ['tag:cannes-vps'],
    });
    expect(up.code, up.stderr).toBe(0);
    const lup = await laptop.up({
      loginServer: control.url,
      authKey: lk.key,
      hostname: 'laptop',
      via: 'stdin',
    });
    expect(lup.code, lup.stderr).toBe(0);
    expect((await server.status()).BackendState).toBe('Running');
    expect((await laptop.status()).BackendState).toBe('Running');
    serverIp = await server.ipv4();
    laptopIp = await laptop.ipv4();
    expect(serverIp).toMatch(/^100\.64\.\d+\.\d+$/);
    expect(laptopIp).toMatch(/^100\.64\.\d+\.\d+$/);
    serverName = String((await server.status()).Self.DNSName).replace(/\.$/, '');
    expect(serverName).toBe('vps-demo.rig-tailnet.internal');
    // What MagicDNS would answer on a real laptop.
    await laptopNs.addHost(serverName, serverIp);
    const nodes = await control.nodes();
    const byHost = new Map(nodes.map((n) => [n.hostname, n]));
    expect(byHost.get('vps-demo')?.tags).toEqual(['tag:cannes-vps']);
    expect(byHost.get('vps-demo')?.addresses).toContain(serverIp);
    expect(byHost.get('laptop')?.tags ?? []).toEqual([]);
  });

  it("reaches an HTTP service on the server's tailnet IP, relayed by the rig's DERP (no direct path)", async () => {
    // Bound to the tailnet address only: reachable over the tailnet and nowhere else.
    await serveHttp(serverNs.name, serverIp, APP_PORT, 'app');
    const r = await curl(laptopNs, `http://${serverIp}:${APP_PORT}/`);
    expect(r.code, r.err).toBe(0);
    expect(JSON.parse(r.body).canary).toBe(canary);
    // The namespaces cannot reach each other directly (the root namespace does not forward), so
    // WireGuard runs over the rig's DERP relay: `tailscale ping` says so.
    const ping = await laptop.cli(['ping', '--c=2', '--timeout=5s', serverIp], { timeoutMs: 30_000 });
    expect(ping.stdout).toMatch(/via DERP\(rig\)/);
    const peer = Object.values((await laptop.status()).Peer ?? {}).find((p) =>
      (p as { TailscaleIPs?: string[] }).TailscaleIPs?.includes(serverIp),
    ) as { Relay?: string; CurAddr?: string } | undefined;
    expect(peer?.Relay).toBe('rig');
    expect(peer?.CurAddr ?? '').toBe('');
  });

  it('serves a loopback-only service on the tailnet with `tailscale serve` (plain HTTP: the rig has no certificates)', async () => {
    await serveHttp(serverNs.name, '127.0.0.1', SERVE_PORT, 'gateway');
    // HTTPS needs a certificate for the node's MagicDNS name, which the rig's control server cannot
    // give (no cert domains, no ACME): Serve takes the config, and the TLS handshake then fails.
    const https = await server.cli([
      'serve',
      '--bg',
      '--yes',
      '--https=443',
      `http://127.0.0.1:${SERVE_PORT}`,
    ]);
    expect(https.code, https.stderr).toBe(0);
    const tlsTry = await laptopNs.exec(['curl', '-sSk', '--max-time', '10', `https://${serverName}/`]);
    expect(tlsTry.code).not.toBe(0);
    expect(tlsTry.stderr).toMatch(/SSL|TLS|alert/i);
    expect((await server.cli(['serve', '--https=443', 'off'])).code).toBe(0);
    const url = await server.serve(`http://127.0.0.1:${SERVE_PORT}`);
    expect(url).toBe(`http://${serverName}/`);
    const r = await curl(laptopNs, url);
    expect(r.code, r.err).toBe(0);
    const body = JSON.parse(r.body) as { label: string; headers: Record<string, string> };
    expect(body.label).toBe('gateway');
    // Serve proxies from loopback and names the tailnet caller, as OpenClaw's allowTailscale expects.
    expect(body.headers['x-forwarded-for']).toBe(laptopIp);
    expect(body.headers['tailscale-user-login']).toMatch(/@/);
    // Serve routes by the Host name, as on Tailscale: the bare tailnet IP is not a served site.
    expect((await curl(laptopNs, `http://${serverIp}/`)).body).toMatch(/404 page not found/);
    // The served port is not on the server's own (public) address: from the root namespace, which
    // reaches that address directly (as the internet reaches a server), it is closed, while a
    // service bound to that address answers.
    await serveHttp(serverNs.name, serverNs.ipv4, 9099, 'public');
    expect(spawnCurl(`http://${serverNs.ipv4}:9099/`)).toBe(0);
    for (const port of [80, SERVE_PORT, APP_PORT]) {
      const rr = spawnCurl(`http://${serverNs.ipv4}:${port}/`);
      expect(rr, `port ${port}`).not.toBe(0);
    }
  });

  it("identifies the laptop's login with `tailscale whois` on the server, and the server's tags from the laptop", async () => {
    const w = await server.whois(laptopIp);
    expect(w.UserProfile.LoginName).toMatch(/^user-\d+@/);
    expect(w.Node.ComputedName ?? w.Node.Name).toMatch(/^laptop/);
    const ws = await laptop.whois(serverIp);
    expect(ws.Node.Tags).toEqual(['tag:cannes-vps']);
  });

  it('an nft drop of everything arriving on tailscale0 closes kernel sockets to the tailnet, and Serve still answers', async () => {
    // What the operator's host firewall can rely on: Serve is answered inside tailscaled (netstack),
    // before the kernel's input hook, so "drop all on tailscale0" leaves exactly Serve reachable.
    const before = await curl(laptopNs, `http://${serverIp}:${APP_PORT}/`);
    expect(before.code, before.err).toBe(0);
    const rules = [
      'table inet tailnet_test {',
      '  chain input {',
      '    type filter hook input priority 0; policy accept;',
      '    iifname "tailscale0" drop',
      '  }',
      '}',
    ].join('\n');
    const load = await serverNs.exec(['nft', '-f', '-'], { stdin: rules });
    expect(load.code, load.stderr).toBe(0);
    try {
      const app = await curl(laptopNs, `http://${serverIp}:${APP_PORT}/`, 3);
      expect(app.code).not.toBe(0);
      const served = await curl(laptopNs, `http://${serverName}/`);
      expect(served.code, served.err).toBe(0);
      expect(JSON.parse(served.body).label).toBe('gateway');
    } finally {
      await serverNs.exec(['nft', 'delete', 'table', 'inet', 'tailnet_test']);
    }
  });

  it('keeps a namespace off the tailnet out', async () => {
    // No route to the tailnet's addresses at all from outside.
    await outsiderNs.addHost(serverName, serverIp);
    const r = await curl(outsiderNs, `http://${serverName}/`);
    expect(r.code).not.toBe(0);
    // A tailscaled that has not joined has no tailnet either.
    expect((await stranger.status()).BackendState).toBe('NeedsLogin');
    await strangerNs.addHost(serverName, serverIp);
    const s = await curl(strangerNs, `http://${serverName}/`);
    expect(s.code).not.toBe(0);
  });

  it('answers a stray request to the control server with 404 and keeps serving', async () => {
    // Every namespace reaches the control server (that is how nodes join); testcontrol alone would
    // panic on a path it does not serve.
    const r = await outsiderNs.exec([
      'curl',
      '-sS',
      '--cacert',
      control.caFile,
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
      `${control.url}/`,
    ]);
    expect(r.stdout).toBe('404');
    expect((await control.nodes()).length).toBe(2);
  });

  it('refuses an unknown auth key with a clear error that does not echo the key', async () => {
    const fake = `tskey-auth-kFAKE-${randomBytes(16).toString('hex')}`;
    secrets.push(fake);
    const r = await stranger.up({
      loginServer: control.url,
      authKey: fake,
      hostname: 'stranger',
      timeoutSeconds: 20,
    });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('invalid authkey');
    expect(r.stdout + r.stderr).not.toContain(fake);
    expect((await stranger.status()).BackendState).not.toBe('Running');
  });

  it('refuses a one-off key the second time, and tags the key does not carry', async () => {
    const again = await stranger.up({
      loginServer: control.url,
      authKey: serverKey,
      hostname: 'stranger',
      advertiseTags: ['tag:cannes-vps'],
      timeoutSeconds: 20,
    });
    expect(again.code).not.toBe(0);
    expect(again.stderr).toContain('one-off key already used');
    const k = await control.mintKey({ tags: ['tag:cannes-vps'] });
    secrets.push(k.key);
    const wrongTag = await stranger.up({
      loginServer: control.url,
      authKey: k.key,
      hostname: 'stranger',
      advertiseTags: ['tag:admin'],
      timeoutSeconds: 20,
    });
    expect(wrongTag.code).not.toBe(0);
    expect(wrongTag.stderr).toContain('requested tags [tag:admin] are invalid or not permitted');
    expect((await control.nodes()).map((n) => n.hostname).sort()).toEqual(['laptop', 'vps-demo']);
  });

  it("never writes a key into the control log, a tailscaled log or tailscaled's state", async () => {
    const logs = [await control.log(), await server.log(), await laptop.log(), await stranger.log()];
    // tailscaled keeps no copy of the key it joined with (nothing to purge on the server but the
    // file or stdin it came from).
    for (const n of [server, laptop, stranger]) {
      const files = readdirSync(n.dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile());
      expect(files.length).toBeGreaterThan(0);
      for (const f of files) {
        const text = readFileSync(join(f.parentPath, f.name), 'latin1');
        for (const s of secrets) expect(text.includes(s), `${f.name}`).toBe(false);
      }
    }
    expect(secrets.length).toBeGreaterThanOrEqual(4);
    for (const l of logs) for (const s of secrets) expect(l.includes(s)).toBe(false);
    // The logs are real (not empty): the control server logged each admission by key id.
    expect(logs[0]).toMatch(/admitted with key k1/);
  });

  it('sweeps the namespace, tailscaled and folders of a run that was SIGKILLed', async () => {
    const script = join(scratch, 'killed-run.mjs');
    writeFileSync(
      script,
      `import { createRigNamespace, TailscaleNode } from ${JSON.stringify(join(HERE, '../../tailnet/node.ts'))};
const ns = await createRigNamespace('tailnet-kil');
const node = await TailscaleNode.start({ netns: ns.name, binDir: ${JSON.stringify(bin)} });
process.stdout.write(JSON.stringify({ ns: ns.name, pid: node.pid, dir: node.dir }) + '\\n');
setInterval(() => {}, 1000);
`,
    );
    const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const line = await new Promise<string>((resolve, reject) => {
      child.stdout?.once('data', (c: Buffer) => resolve(c.toString('utf8')));
      child.once('exit', (code) => reject(new Error(`killed-run exited ${code}`)));
    });
    const { ns, pid, dir } = JSON.parse(line) as { ns: string; pid: number; dir: string };
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).toContain(ns);
    // tailscaled died with its parent (pdeathsig); the namespace and folders stayed.
    await waitFor(() => !alive(pid));
    expect(existsSync(dir)).toBe(true);
    const next = await createRigNamespace('tailnet-nxt');
    await next.destroy();
    // TailscaleNode.start sweeps tailscaled folders the same way before it makes its own.
    await sweepStaleDirs('cannes-tailscaled-');
    expect(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })).not.toContain(ns);
    expect(existsSync(join('/etc/netns', ns))).toBe(false);
    expect(existsSync(dir)).toBe(false);
  });

  it('leaves nothing behind: namespaces, processes, the address on lo', async () => {
    for (const s of services) s.kill('SIGKILL');
    const pids = [server.pid, laptop.pid, stranger.pid];
    for (const n of [server, laptop, stranger]) await n.stop();
    const names = [serverNs, laptopNs, strangerNs, outsiderNs].map((n) => n.name);
    for (const ns of [serverNs, laptopNs, strangerNs, outsiderNs]) await ns.destroy();
    await control.stop();
    const list = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    for (const n of names) expect(list).not.toContain(n);
    for (const pid of pids) expect(pid !== undefined && alive(pid)).toBe(false);
    // The address goes when no other live process (a parallel run) claims it.
    const claims = readdirSafe(join(tmpdir(), 'cannes-tailnet-addr', control.ipv4)).filter((f) =>
      alive(Number(f.split('-')[0])),
    );
    const lo = execFileSync('ip', ['-o', '-4', 'addr', 'show', 'dev', 'lo'], { encoding: 'utf8' });
    // An address that was there before (someone else's) is never taken away.
    if (loHadAddress) expect(lo).toContain(` ${control.ipv4}/32 `);
    else if (claims.length === 0) expect(lo).not.toContain(` ${control.ipv4}/32 `);
  });
});

function spawnCurl(url: string): number {
  try {
    execFileSync('curl', ['-sS', '--max-time', '5', url], { stdio: 'pipe' });
    return 0;
  } catch (err) {
    return (err as { status?: number }).status ?? 1;
  }
}

async function waitFor(cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
