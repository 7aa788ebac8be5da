/**
 * The owner's way in over the tailnet (Vps.spec.tailnet), on the whole system and the rig's real
 * tailnet (test/tailnet): the operator installs tailscale on the server (the rig's apt-get shim),
 * joins with a one-off key from the control server, serves the gateway with `tailscale serve`, and
 * records the URL. From a "laptop" namespace on the tailnet that URL serves the Control UI and a
 * chat with the gateway token reaches the fake upstream, and so does a chat through the owner's
 * SSH tunnel to the same Vps (Serve has a network of its own); a namespace off the tailnet cannot reach
 * the gateway, and the laptop reaches no kernel port of the server (3101, sshd). The auth key is
 * gone from its Secret and from the server once joined, and an idle Ready Vps costs nothing.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ANNOTATION_GATEWAY_URL, ANNOTATION_SSH_HOST_KEY } from '../../operator/api/schema.ts';
import { DEFAULT_MODELS, providerId } from '../../operator/host/gateway-config.ts';
import { PROXY_PORT } from '../../operator/host/index.ts';
import { OWNER_USER } from '../../operator/host/owner-access.ts';
import { operatorRequests } from '../integration/operator/robust.ts';
import {
  exampleManifests,
  metricSum,
  type OperatorProcess,
  type System,
  startSystem,
  waitFor,
} from '../lib/system.ts';
import { freePort } from '../rig/controlplane.ts';
import { createRigNamespace, type Laptop, type RigNamespace, startLaptop } from '../tailnet/node.ts';

const run = promisify(execFile);

let s: System;
let op: OperatorProcess;
let laptop: Laptop;
let off: RigNamespace | undefined;
let url: string;
let host: string;
let tailnetIp: string;
let diskDir: string;
let serverId: number;
let gatewayToken: string;
let authKey: string;
let ownerKey: string;
let knownHosts: string;
let ipv4: string;
const tunnels: ChildProcess[] = [];
const diag = () => `operator log tail:\n${op.logs.join('').split('\n').slice(-60).join('\n')}`;

type VpsJson = {
  metadata: { annotations?: Record<string, string> };
  status?: {
    ready?: boolean;
    tailnetJoined?: boolean;
    gatewayReachable?: boolean;
    conditions?: { type: string; status: string; reason: string; message: string }[];
  };
};
/** What the owner saw on the way: each bad input's condition (reason and message). */
const badInputs: Record<string, { reason: string; message: string }> = {};

/** Waits for the Ready condition to say `reason` (a failed step's reason), and keeps what it said. */
async function conditionSays(reason: string): Promise<void> {
  badInputs[reason] = await waitFor(
    `Ready: ${reason}`,
    async () => {
      const v = (await s.getJson('vps', 'agent')) as VpsJson;
      const c = v.status?.conditions?.find((x) => x.type === 'Ready');
      return c?.status === 'False' && c.reason === reason ? c : undefined;
    },
    1_200_000,
    diag,
  );
}

beforeAll(async () => {
  s = await startSystem({ tailnet: true });
  op = await s.startOperator();
  authKey = await s.mintTailnetKey(['tag:cannes-vps']);
  // The owner's own SSH key too: both ways in on one Vps.
  ownerKey = join(s.dir, 'owner_ed25519');
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'owner@laptop', '-f', ownerKey]);
  const ownerPub = readFileSync(`${ownerKey}.pub`, 'utf8').trim();
  // Bad input first, as an owner might get it wrong: no Secret yet, then a key the control
  // server does not know (a random canary, scanned for like the real key), then the real key.
  const unknownKey = `tskey-auth-kFAKE-${randomBytes(16).toString('hex')}`;
  s.tailnetKeys.push(unknownKey);
  const docs = exampleManifests(s, {
    keys: ['anthropic'],
    tailnet: { authKey: unknownKey, tags: ['tag:cannes-vps'] },
    ownerKeys: [ownerPub],
  }).split('---\n');
  const isAuthSecret = (d: string) => d.includes('name: tailnet-auth\n') && d.includes('kind: Secret');
  await s.kubectl(['apply', '-f', '-'], docs.filter((d) => !isAuthSecret(d)).join('---\n'));
  await conditionSays('TailnetAuthKeySecretMissing');
  await s.kubectl(['apply', '-f', '-'], docs.filter(isAuthSecret).join('---\n'));
  await conditionSays('TailnetAuthKeyRejected');
  await s.kubectl(['apply', '-f', '-'], docs.filter(isAuthSecret).join('---\n').replace(unknownKey, authKey));
  const vps = await waitFor(
    'Vps agent Ready on the tailnet, its gateway redeployed with the tailnet origin',
    async () => {
      const v = (await s.getJson('vps', 'agent')) as VpsJson;
      const a = v.metadata.annotations ?? {};
      return v.status?.ready === true && v.status.tailnetJoined === true && a[ANNOTATION_GATEWAY_URL]
        ? v
        : undefined;
    },
    1_200_000,
    diag,
  );
  url = vps.metadata.annotations?.[ANNOTATION_GATEWAY_URL] ?? '';
  ipv4 = vps.metadata.annotations?.['cannes.dev/ipv4'] ?? '';
  knownHosts = join(s.dir, 'known_hosts');
  const hostKey = vps.metadata.annotations?.[ANNOTATION_SSH_HOST_KEY] ?? '';
  writeFileSync(knownHosts, `${ipv4} ${hostKey.split(' ').slice(0, 2).join(' ')}\n`);
  host = new URL(url).hostname;
  serverId = Number(vps.metadata.annotations?.['cannes.dev/server-id']);
  const info = s.hosts.info(serverId);
  if (!info || !s.tailnet) throw new Error('no simulated host or no tailnet');
  diskDir = info.diskDir;
  const node = (await s.tailnet.nodes()).find((n) => n.hostname === 'agent');
  tailnetIp =
    node?.addresses.map((a) => a.replace(/\/\d+$/, '')).find((a) => /^\d+\.\d+\.\d+\.\d+$/.test(a)) ?? '';
  expect(node?.tags).toEqual(['tag:cannes-vps']);
  const secret = JSON.parse(await s.kubectl(['get', 'secret', 'agent-gateway', '-o', 'json'])) as {
    data: { token: string };
  };
  gatewayToken = Buffer.from(secret.data.token, 'base64').toString('utf8');
  // The reconcile after the join redeploys once, with the URL as the Control UI's origin.
  await waitFor(
    'the gateway config to name the tailnet origin',
    async () => {
      const config = readFileSync(join(diskDir, 'opt/cannes/gateway/config/openclaw.json'), 'utf8');
      return config.includes(`"http://${host}"`) ? true : undefined;
    },
    600_000,
    diag,
  );
  await waitFor(
    'the redeploy to finish (deployed annotation settled, Ready)',
    async () => {
      const a = ((await s.getJson('vps', 'agent')) as VpsJson).metadata.annotations ?? {};
      await new Promise((r) => setTimeout(r, 3000));
      const b = (await s.getJson('vps', 'agent')) as VpsJson;
      return b.status?.ready === true &&
        b.metadata.annotations?.['cannes.dev/deployed'] === a['cannes.dev/deployed']
        ? true
        : undefined;
    },
    600_000,
    diag,
  );
  // The deploy writes the config before it restarts the gateway, and the Vps stays Ready from the
  // first deploy meanwhile: wait for the gateway started after that config to be ready.
  const configPath = join(diskDir, 'opt/cannes/gateway/config/openclaw.json');
  const statePath = join(diskDir, 'var/lib/docker-shim/projects/cannes-gateway/gateway.json');
  await waitFor(
    'the gateway restarted with the tailnet origin to be ready',
    async () => {
      const state = JSON.parse(readFileSync(statePath, 'utf8')) as { startedAt: string };
      if (Date.parse(state.startedAt) < statSync(configPath).mtimeMs) return undefined;
      const r = await s.hosts
        .exec(serverId, ['curl', '-fsS', '-m', '5', '-o', '/dev/null', 'http://127.0.0.1:18789/readyz'])
        .then(
          () => true,
          () => false,
        );
      return r ? true : undefined;
    },
    600_000,
    () => `${diag()}\n${gatewayDiag()}`,
  );
  laptop = await startLaptop(s.tailnet, { prefix: 'tailop-laptop' });
  // MagicDNS's job on a real laptop: the rig's tailnet has no resolver.
  await laptop.knowHost(host, tailnetIp);
}, 1_500_000);

afterAll(async () => {
  for (const t of tunnels) t.kill('SIGKILL');
  await off?.destroy();
  await laptop?.stop();
  await s?.stop();
}, 180_000);

/** The gateway container's own log and state on the server: what a failure message needs. */
async function serverDiag(): Promise<string> {
  const script = [
    'ip -br addr',
    'ip route',
    'ss -ltn',
    'curl -sS -m 5 -o /dev/null -w "serve-net %{http_code}\\n" http://172.31.255.250:18789/healthz',
    'curl -sS -m 5 -o /dev/null -w "published %{http_code}\\n" http://127.0.0.1:18789/healthz',
    'tailscale serve status',
    'for n in $(ip netns list | cut -d" " -f1); do echo "== $n"; ip -n $n -br addr; ip -n $n route; done',
  ].join('; echo ---; ');
  const r = await s.hosts
    .exec(serverId, ['bash', '-c', script])
    .catch((e: unknown) => ({ stdout: String(e), stderr: '' }));
  return `${r.stdout}\n${r.stderr}\n${gatewayDiag()}`;
}

function gatewayDiag(): string {
  const dir = join(diskDir, 'var/lib/docker-shim/projects/cannes-gateway');
  const read = (f: string) => {
    try {
      return readFileSync(join(dir, f), 'utf8');
    } catch (e) {
      return String(e);
    }
  };
  return `gateway state: ${read('gateway.json')}\ngateway log tail:\n${read('gateway.log').slice(-3000)}`;
}

/** curl from the laptop, retried while the DERP path comes up; the result of the last try. */
async function fromLaptop(args: string[], ok: (code: number, out: string) => boolean, stdin?: string) {
  let last = { code: -1, stdout: '', stderr: '' };
  for (let i = 0; i < 40; i++) {
    last = await laptop.ns.exec(['curl', '-sS', '--max-time', '60', ...args], {
      timeoutMs: 80_000,
      ...(stdin === undefined ? {} : { stdin }),
    });
    if (ok(last.code, last.stdout)) return last;
    await new Promise((r) => setTimeout(r, 1000));
  }
  return last;
}

describe('the gateway on the tailnet', () => {
  it('serves the Control UI at the URL of the annotation (http on the rig: no certificates)', async () => {
    expect(url).toBe('http://agent.rig-tailnet.internal/');
    const health = await fromLaptop([`${url}healthz`], (c) => c === 0);
    expect(health.code, health.stderr).toBe(0);
    const ui = await fromLaptop([url], (c, o) => c === 0 && /<html/i.test(o));
    if (!/<html/i.test(ui.stdout)) console.log(await serverDiag());
    expect(ui.stdout, ui.stderr).toMatch(/<html/i);
    expect((await s.getJson('vps', 'agent')) as VpsJson).toMatchObject({
      status: { tailnetJoined: true, gatewayReachable: true },
    });
  });

  it('answers a chat with the gateway token, through Serve, from the fake upstream with the real key', async () => {
    const before = s.upstreams.anthropic.requests.length;
    const model = `${providerId('agent-anthropic')}/${DEFAULT_MODELS.anthropic?.id}`;
    const r = await laptop.ns.exec(
      [
        'curl',
        '-sS',
        '--max-time',
        '240',
        '-H',
        '@-',
        '-H',
        'content-type: application/json',
        '-H',
        `x-openclaw-model: ${model}`,
        '--data',
        JSON.stringify({ model: 'openclaw', messages: [{ role: 'user', content: 'Say hello.' }] }),
        `${url}v1/chat/completions`,
      ],
      // The token travels on stdin (a header file), never on a command line.
      { stdin: `authorization: Bearer ${gatewayToken}\n`, timeoutMs: 260_000 },
    );
    expect(r.code, r.stderr).toBe(0);
    if (!r.stdout.startsWith('{')) console.log(`chat through Serve: ${r.stdout}\n${await serverDiag()}`);
    const body = JSON.parse(r.stdout) as { choices?: { message?: { content?: string } }[] };
    expect(body.choices?.[0]?.message?.content, r.stdout).toContain('chunk 0');
    const seen = s.upstreams.anthropic.requests.slice(before);
    expect(seen.length).toBeGreaterThan(0);
    for (const req of seen) expect(req.headers['x-api-key']).toBe(s.canaries.modelKeys.anthropic);
  }, 300_000);

  it("answers a chat through the owner's SSH tunnel too, on the same Vps (Serve has its own network)", async () => {
    const port = await freePort();
    let log = '';
    const ssh = spawn(
      'ssh',
      [
        ...['-o', 'StrictHostKeyChecking=yes', '-o', `UserKnownHostsFile=${knownHosts}`],
        ...['-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes', '-o', 'ExitOnForwardFailure=yes'],
        ...['-i', ownerKey, '-N', '-L', `127.0.0.1:${port}:127.0.0.1:18789`, `${OWNER_USER}@${ipv4}`],
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    ssh.stderr?.on('data', (b: Buffer) => {
      log += b.toString();
    });
    tunnels.push(ssh);
    await waitFor(
      'the tunnel to listen',
      async () => (ssh.exitCode !== null || (await listening(port)) ? true : undefined),
      30_000,
    );
    expect(ssh.exitCode, log).toBeNull();
    const before = s.upstreams.anthropic.requests.length;
    const r = await chatThrough(port).catch(async (e: unknown) => {
      console.log(`chat through the tunnel failed: ${String(e)}\n${await serverDiag()}`);
      throw e;
    });
    const text = await r.text();
    if (r.status !== 200) console.log(`chat through the tunnel: ${r.status} ${text}\n${await serverDiag()}`);
    // Before Serve had its own network: 403 proxy_attribution_required (docs/gateway.md).
    expect(r.status, text).toBe(200);
    const body = JSON.parse(text) as { choices?: { message?: { content?: string } }[] };
    expect(body.choices?.[0]?.message?.content, text).toContain('chunk 0');
    const seen = s.upstreams.anthropic.requests.slice(before);
    expect(seen.length).toBeGreaterThan(0);
    for (const req of seen) expect(req.headers['x-api-key']).toBe(s.canaries.modelKeys.anthropic);
    // The tunnel is a plain client: it cannot pose as Serve with a forged forwarded client.
    const forged = await fetch(`http://127.0.0.1:${port}/v1/models`, {
      headers: { authorization: `Bearer ${gatewayToken}`, 'x-forwarded-for': '100.64.0.9' },
      signal: AbortSignal.timeout(60_000),
    });
    const forgedText = await forged.text();
    expect(forged.status, forgedText).toBe(403);
    const plain = await fetch(`http://127.0.0.1:${port}/v1/models`, {
      headers: { authorization: `Bearer ${gatewayToken}` },
      signal: AbortSignal.timeout(60_000),
    });
    await plain.arrayBuffer();
    expect(plain.status).toBe(200);
    ssh.kill();
  }, 480_000);

  it('refuses a chat without the token (token auth stays on behind Serve)', async () => {
    const r = await fromLaptop(
      ['-o', '/dev/null', '-w', '%{http_code}', '-X', 'POST', `${url}v1/chat/completions`],
      (c) => c === 0,
    );
    expect(r.stdout).toBe('401');
  });

  it('cannot be reached from a namespace off the tailnet', async () => {
    off = await createRigNamespace('tailop-off');
    await off.addHost(host, tailnetIp);
    const r = await off.exec(['curl', '-sS', '--max-time', '5', url], { timeoutMs: 20_000 });
    expect(r.code).not.toBe(0);
  });

  it('leaves no kernel port of the server open to another tailnet node: not 3101, not sshd', async () => {
    // The control: Serve answers on the same address (by IP, Serve's 404 for an unknown name).
    const control = await fromLaptop(
      ['-o', '/dev/null', '-w', '%{http_code}', `http://${tailnetIp}/`],
      (c) => c === 0,
    );
    expect(control.stdout, control.stderr).toBe('404');
    for (const port of [PROXY_PORT, 22, 18789, 9464]) {
      const r = await laptop.ns.exec(
        ['timeout', '5', 'bash', '-c', `exec 3<>/dev/tcp/${tailnetIp}/${port}`],
        {
          timeoutMs: 20_000,
        },
      );
      expect(r.code, `port ${port} on the tailnet`).not.toBe(0);
    }
  });
});

describe('bad input', () => {
  it('gets a clear condition that never echoes the key: a missing Secret, a key the control server refuses', () => {
    expect(badInputs['TailnetAuthKeySecretMissing']?.message).toMatch(
      /Secret tailnet-auth does not exist: create it \(labelled cannes\.dev\/usage=tailnet-auth-key\)/,
    );
    expect(badInputs['TailnetAuthKeyRejected']?.message).toMatch(/control server refused the auth key/);
    for (const key of s.tailnetKeys)
      expect(JSON.stringify(badInputs).includes(key), 'a condition message').toBe(false);
  });
});

describe('the auth key', () => {
  it('is gone from its Secret (every copy) and from the server once joined', async () => {
    const secret = await s.kubectl(['get', 'secret', 'tailnet-auth', '-o', 'json']);
    expect(secret).not.toContain(authKey);
    expect(secret).not.toContain(Buffer.from(authKey).toString('base64'));
    const hits = filesUnder(diskDir).filter((f) => readFileSync(f, 'latin1').includes(authKey));
    expect(hits).toEqual([]);
    // The control: the server's disk does hold its tailnet state (the scan looks where it should).
    expect(filesUnder(join(diskDir, 'var/lib/tailscale')).length).toBeGreaterThan(0);
  });

  it('appears in no object, log, metric, Hetzner request or pg_dump', async () => {
    const resources = (await s.rig.kubectl(['api-resources', '--verbs=list', '-o', 'name'])).stdout
      .trim()
      .split('\n')
      .join(',');
    const places: Record<string, string> = {
      'kubernetes objects': (await s.rig.kubectl(['get', resources, '-A', '-o', 'json'])).stdout,
      'operator log': op.logs.join(''),
      'operator metrics': await (await fetch(op.metricsUrl)).text(),
      'hetzner requests': JSON.stringify(s.sim.requests),
      'control server log': (await s.tailnet?.log()) ?? '',
      pg_dump: await import('../rig/postgres.ts').then((m) => m.pgDump(s.db.url)),
    };
    for (const key of s.tailnetKeys)
      for (const [place, text] of Object.entries(places)) expect(text.includes(key), place).toBe(false);
  }, 120_000);
});

describe('an idle Ready Vps on the tailnet', () => {
  it('costs no Hetzner call and no SSH connection over 10 s', async () => {
    const before = {
      calls: operatorRequests(s).length,
      ssh: await metricSum(op, 'cannes_ssh_connections_total'),
    };
    await new Promise((r) => setTimeout(r, 10_000));
    expect(operatorRequests(s).length - before.calls).toBe(0);
    expect((await metricSum(op, 'cannes_ssh_connections_total')) - before.ssh).toBe(0);
  }, 60_000);
});

async function chatThrough(port: number): Promise<Response> {
  return fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${gatewayToken}`,
      'content-type': 'application/json',
      'x-openclaw-model': `${providerId('agent-anthropic')}/${DEFAULT_MODELS.anthropic?.id}`,
    },
    body: JSON.stringify({
      model: 'openclaw',
      messages: [{ role: 'user', content: 'Hello through SSH.' }],
    }),
    signal: AbortSignal.timeout(420_000),
  });
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = connect({ host: '127.0.0.1', port }, () => {
      c.destroy();
      resolve(true);
    });
    c.on('error', () => resolve(false));
  });
}

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  let entries: import('node:fs').Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p));
    else if (e.isFile() && statSync(p).size < 64 * 1024 * 1024) out.push(p);
  }
  return out;
}
