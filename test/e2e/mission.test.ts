/**
 * The mission as a user lives it, with every real part this machine holds: a Vps and three
 * ModelKeys applied to the rig's API server; the operator provisions a simulated server
 * (rescue keygen over real sshd, real proxy, the real OpenClaw gateway in the docker shim);
 * a chat through the gateway reaches each fake upstream with the real key injected by the
 * proxy; then every place a secret could leak is scanned for every canary.
 */
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ACTIVATE } from '../../operator/adapters/bundle.ts';
import { DEFAULT_MODELS, providerId } from '../../operator/host/gateway-config.ts';
import {
  BRIDGE_ADDRESS,
  DEPLOY_LOCK,
  NODE_RUNTIME_VERSION,
  PROXY_PORT,
  PROXY_UNIT_NAME,
  runtimeNode,
} from '../../operator/host/index.ts';
import { scriptCommand } from '../../operator/ssh/shell.ts';
import { loadKeyringFile, PostgresStore } from '../../operator/store/index.ts';
import { SERVER_ROOT_PATH } from '../hosts/real-host-provider.ts';
import { tarballPath } from '../lib/node-mirror.ts';
import { endStdin } from '../lib/stdin.ts';
import {
  exampleManifests,
  metricSum,
  type OperatorProcess,
  type System,
  startSystem,
  waitFor,
} from '../lib/system.ts';
import { pgDump } from '../rig/postgres.ts';

const run = promisify(execFile);
const PROVIDERS = ['anthropic', 'openai', 'google'] as const;

let s: System;
let op: OperatorProcess;
let netns: string;
let diskDir: string;
let gatewayToken: string;
let serverId: number;
/** What a person would look at when a chat fails: the proxy's and the gateway's last lines. */
async function serverLogs(): Promise<string> {
  const proxy = await s.hosts
    .exec(serverId, ['sh', '-c', 'tail -n 30 /run/cannes-systemd/*.log'])
    .then((r) => r.stdout)
    .catch((e: unknown) => String(e));
  let gateway = '';
  try {
    gateway = readFileSync(join(diskDir, 'var/lib/docker-shim/projects/cannes-gateway/gateway.log'), 'utf8')
      .split('\n')
      .slice(-30)
      .join('\n');
  } catch {}
  return `proxy:\n${proxy}\ngateway:\n${gateway}`;
}
const diag = () => `operator log tail:\n${op.logs.join('').split('\n').slice(-40).join('\n')}`;

beforeAll(async () => {
  s = await startSystem();
  op = await s.startOperator();
  // purgeSecretAfterDelivery on every key: afterwards no Kubernetes object holds a model key.
  await s.kubectl(['apply', '-f', '-'], exampleManifests(s, { keys: [...PROVIDERS], purgeSecrets: true }));
  const vps = await waitFor(
    'Vps agent Ready',
    async () => {
      const v = (await s.getJson('vps', 'agent')) as {
        status?: { ready?: boolean };
        metadata: { annotations?: Record<string, string> };
      };
      return v.status?.ready === true ? v : undefined;
    },
    1_200_000,
    diag,
  );
  const info = s.hosts.info(Number(vps.metadata.annotations?.['cannes.dev/server-id']));
  if (!info) throw new Error('no simulated host');
  netns = info.netns;
  serverId = info.serverId;
  diskDir = info.diskDir;
  const secret = JSON.parse(await s.kubectl(['get', 'secret', 'agent-gateway', '-o', 'json'])) as {
    data: { token: string };
  };
  gatewayToken = Buffer.from(secret.data.token, 'base64').toString('utf8');
}, 1_500_000);

afterAll(async () => {
  await s?.stop();
}, 180_000);

/** A chat through the gateway, sent from inside the server (the gateway listens on its loopback). */
async function chat(provider: (typeof PROVIDERS)[number]): Promise<{ status: number; content: string }> {
  const model = `${providerId(`agent-${provider}`)}/${DEFAULT_MODELS[provider]?.id}`;
  const script = `
const token = require('fs').readFileSync(0, 'utf8');
fetch('http://127.0.0.1:18789/v1/chat/completions', {
  method: 'POST',
  headers: { authorization: 'Bearer ' + token, 'content-type': 'application/json', 'x-openclaw-model': ${JSON.stringify(model)} },
  body: JSON.stringify({ model: 'openclaw', messages: [{ role: 'user', content: 'Say hello.' }] }),
  signal: AbortSignal.timeout(240000),
}).then(async (r) => { process.stdout.write(JSON.stringify({ status: r.status, body: await r.text() })); });
`;
  const child = execFile('ip', ['netns', 'exec', netns, process.execPath, '-e', script], {
    timeout: 260_000,
  });
  endStdin(child.stdin, gatewayToken);
  const out = await new Promise<string>((resolve, reject) => {
    let buf = '';
    child.stdout?.on('data', (b: Buffer) => {
      buf += b.toString();
    });
    child.once('exit', (code) =>
      code === 0 ? resolve(buf) : reject(new Error(`chat client exited ${code}`)),
    );
  });
  const r = JSON.parse(out) as { status: number; body: string };
  const body = JSON.parse(r.body) as { choices?: { message?: { content?: string } }[] };
  return { status: r.status, content: body.choices?.[0]?.message?.content ?? r.body };
}

const upstreamOf = (p: (typeof PROVIDERS)[number]) => (p === 'google' ? s.upstreams.gemini : s.upstreams[p]);

describe('a chat through the real gateway', () => {
  for (const provider of PROVIDERS) {
    it(`reaches the ${provider} upstream with the real key injected by the proxy`, async () => {
      const upstream = upstreamOf(provider);
      const before = upstream.requests.length;
      const r = await chat(provider);
      expect(r.status, r.status === 200 ? '' : `${r.content}\n${await serverLogs()}`).toBe(200);
      expect(r.content).toContain('chunk 0');
      const seen = upstream.requests.slice(before);
      expect(seen.length).toBeGreaterThan(0);
      for (const req of seen) {
        // Exactly the real key, in the provider's header; never the gateway's placeholder.
        const key = s.canaries.modelKeys[provider];
        const expected =
          provider === 'anthropic'
            ? { where: 'x-api-key', value: key }
            : provider === 'google'
              ? { where: 'x-goog-api-key', value: key }
              : { where: 'authorization', value: `Bearer ${key}` };
        expect(req.credentials).toEqual([expected]);
      }
    }, 300_000);
  }
});

describe('the proxy restarted under traffic', () => {
  it('loses no request: chats sent around a restart are all answered', async () => {
    const restart = (async () => {
      await new Promise((r) => setTimeout(r, 300));
      await s.hosts.exec(serverId, ['systemctl', 'restart', 'cannes-proxy.service']);
    })();
    const results = await Promise.all([
      chat('anthropic'),
      chat('openai'),
      restart.then(() => chat('google')),
    ]);
    for (const r of results) {
      expect(r.status, r.status === 200 ? '' : `${r.content}\n${await serverLogs()}`).toBe(200);
      expect(r.content).toContain('chunk 0');
    }
    const active = await s.hosts.exec(serverId, ['systemctl', 'is-active', 'cannes-proxy.service']);
    expect(active.stdout.trim()).toBe('active');
  }, 600_000);
});

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p));
    else if (e.isFile() && statSync(p).size < 64 * 1024 * 1024) out.push(p);
  }
  return out;
}

describe('canary secrets', () => {
  it('appear nowhere but the key file on the host and the upstreams’ record', async () => {
    const { store } = await PostgresStore.open({
      connectionString: s.db.url,
      keyring: await loadKeyringFile(s.masterKeysFile),
      env: {},
    });
    const vpsUid = (await s.kubectl(['get', 'vps', 'agent', '-o', 'jsonpath={.metadata.uid}'])).trim();
    const sshKeys = await Promise.all(
      (await store.listKeys(vpsUid)).map(async (k) => (await k.privateKey()).reveal()),
    );
    await store.close();
    expect(sshKeys.length).toBeGreaterThan(0);
    const canaries: Record<string, string> = {
      hcloudToken: s.canaries.hcloudToken,
      masterKey: s.canaries.masterKey,
      ...Object.fromEntries(PROVIDERS.map((p) => [`modelKey.${p}`, s.canaries.modelKeys[p]])),
      // The base64 body of each SSH private key (its line breaks differ between copies).
      ...Object.fromEntries(sshKeys.map((k, i) => [`sshKey${i}`, k.split('\n').slice(1, -2).join('')])),
    };

    const places: Record<string, string> = {};
    const resources = (await s.rig.kubectl(['api-resources', '--verbs=list', '-o', 'name'])).stdout
      .trim()
      .split('\n')
      .join(',');
    places['kubernetes objects'] = (await s.rig.kubectl(['get', resources, '-A', '-o', 'json'])).stdout;
    places['operator log'] = op.logs.join('');
    places['operator metrics'] = await (await fetch(op.metricsUrl)).text();
    places['proxy metrics'] = (
      await run('ip', ['netns', 'exec', netns, 'curl', '-sS', 'http://127.0.0.1:9464/metrics'])
    ).stdout;
    // Hetzner requests carry the token in Authorization by design; everything else must not.
    places['hetzner requests'] = JSON.stringify(
      s.sim.requests.map((r) => ({ ...r, headers: { ...r.headers, authorization: undefined } })),
    );
    places['pg_dump'] = await pgDump(s.db.url);
    for (const f of filesUnder(join(diskDir, 'opt/cannes/gateway/config')))
      places[f] = readFileSync(f, 'latin1');
    // The gateway is running: a journal file it lists may be gone when read (nothing to scan then).
    for (const f of filesUnder(join(diskDir, 'opt/cannes/gateway/state'))) {
      const text = readIfThere(f);
      if (text !== undefined) places[f] = text;
    }
    for (const f of filesUnder(join(diskDir, 'var/lib/docker-shim'))) places[f] = readFileSync(f, 'latin1');

    const hits: string[] = [];
    for (const [place, text] of Object.entries(places)) {
      for (const [name, value] of Object.entries(canaries)) {
        if (value.length >= 16 && text.includes(value)) hits.push(`${name} in ${place}`);
      }
    }
    expect(hits).toEqual([]);
    // The control: the key file does hold them (the scan can find what it looks for).
    const keyFile = readFileSync(join(diskDir, 'root/.model-keys.json'), 'utf8');
    for (const p of PROVIDERS) expect(keyFile).toContain(s.canaries.modelKeys[p]);
    expect(statSync(join(diskDir, 'root/.model-keys.json')).mode & 0o777).toBe(0o600);
  }, 300_000);
});

describe('a deploy left running by an operator that died', () => {
  // sshd does not stop a command without a terminal when its client goes away: the dead
  // operator's start-up script runs on beside the next operator's deploy.
  const sh = async (script: string) =>
    (await s.hosts.exec(serverId, ['bash', '-c', `PATH=${SERVER_ROOT_PATH}\n${script}`])).stdout;
  const pid = `/run/cannes-systemd/${PROXY_UNIT_NAME}.pid`;

  it('runs to its end before the next deploy restarts anything, and nothing started keeps the lock', async () => {
    // The earlier script holds the lock for 5 s, noting the proxy's supervisor as it takes
    // the lock and as it lets go.
    const earlier = sh(
      `flock ${DEPLOY_LOCK} sh -c 'cat ${pid} >/run/t-taken; sleep 5; cat ${pid} >/run/t-released'`,
    );
    await waitFor(
      'the earlier deploy to hold the lock',
      async () =>
        (await sh(`flock -n ${DEPLOY_LOCK} true || echo held`)).trim() === 'held' ? true : undefined,
      30_000,
    );
    await sh(scriptCommand(ACTIVATE));
    await earlier;
    const [taken, released, now] = (await sh(`cat /run/t-taken /run/t-released ${pid}`)).trim().split('\n');
    expect(released, 'nothing restarted while the earlier script held the lock').toBe(taken);
    expect(now, 'the new deploy restarted the proxy once the lock was free').not.toBe(taken);
    expect((await sh(`flock -n ${DEPLOY_LOCK} true && echo free`)).trim()).toBe('free');
    expect((await sh('ip netns list')).split('\n').filter((l) => l.startsWith('cn-'))).toHaveLength(1);
    // One proxy (the key intake runs from the same bundle as `... cannes-proxy.mjs intake`).
    expect((await sh("pgrep -c -f '/opt/cannes/cannes-proxy[.]mjs --keys' || true")).trim()).toBe('1');
    await waitFor(
      'the proxy and the gateway to answer again',
      () =>
        sh(
          `curl -fsS --max-time 5 http://${BRIDGE_ADDRESS}:${PROXY_PORT}/healthz >/dev/null && curl -fsS --max-time 5 http://127.0.0.1:18789/healthz >/dev/null && echo ok`,
        ).then((o) => (o.trim() === 'ok' ? true : undefined)),
      300_000,
      diag,
    );
  }, 600_000);
});

describe("the proxy's runtime", () => {
  const sh = async (script: string) =>
    (await s.hosts.exec(serverId, ['bash', '-c', `PATH=${SERVER_ROOT_PATH}\n${script}`])).stdout;
  const node = runtimeNode({ version: NODE_RUNTIME_VERSION, arch: 'x64' });
  const served = (arch: 'x64' | 'arm64') =>
    s.nodeMirror.served.get(tarballPath(arch)) ?? { requests: 0, bytes: 0 };

  it('is the Node the deploy installed: root has no node, the proxy runs the pinned build', async () => {
    expect((await sh('command -v node || echo none')).trim()).toBe('none');
    const unit = readFileSync(join(diskDir, 'etc/systemd/system', PROXY_UNIT_NAME), 'utf8');
    expect(unit).toContain(`ExecStart=${node} `);
    expect((await sh(`pgrep -a -f '/opt/cannes/cannes-proxy[.]mjs --keys'`)).trim()).toContain(`${node} `);
    expect((await sh(`${node} --version`)).trim()).toBe(`v${NODE_RUNTIME_VERSION}`);
    // One download of the x64 build for this cx23 server, never the arm64 one.
    expect(served('x64').requests).toBe(1);
    expect(served('arm64').requests).toBe(0);
  });

  it('is not downloaded again by a redeploy', async () => {
    const before = { ...served('x64') };
    const deploys = () => metricSum(op, 'cannes_provisioning_step_duration_seconds_count', 'step="deploy"');
    const deploySeconds = () =>
      metricSum(op, 'cannes_provisioning_step_duration_seconds_sum', 'step="deploy"');
    const [n0, t0] = [await deploys(), await deploySeconds()];
    // Forget what was deployed: the next reconcile deploys everything again.
    await s.kubectl(['annotate', 'vps', 'agent', 'cannes.dev/deployed-']);
    await waitFor('a redeploy', async () => ((await deploys()) > n0 ? true : undefined), 600_000, diag);
    const again = (await deploySeconds()) - t0;
    expect(served('x64')).toEqual(before);
    // For docs/robustness.md: the deploy step's duration, first and again (runtime in place).
    console.log(
      `runtime: first deploy step ${(t0 / n0).toFixed(1)} s (mean of ${n0}), redeploy ${again.toFixed(1)} s; ` +
        `runtime bytes ${before.bytes} then +${served('x64').bytes - before.bytes}`,
    );
  }, 700_000);
});

function readIfThere(f: string): string | undefined {
  try {
    return readFileSync(f, 'latin1');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}
