/**
 * Direct keys (issue 21) on the whole system and the rig's real tailnet: a ModelKey with
 * `delivery: Direct` is deployed without a key; from a "laptop" namespace whose tag is an owner,
 * `cannes-operator key set` hands the key to the server's intake through the real `tailscale
 * serve`; the proxy injects it upstream and a chat works. A tailnet peer that is not an owner is
 * refused, the intake is no kernel port of the server, bad input changes nothing, and the key
 * appears nowhere in the cluster, the operator, Postgres or the Hetzner requests.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { ANNOTATION_GATEWAY_URL, ANNOTATION_KEY_SET } from '../../operator/api/schema.ts';
import { DEFAULT_MODELS, providerId } from '../../operator/host/gateway-config.ts';
import { INTAKE_PORT } from '../../operator/host/index.ts';
import { modelKeyManifest } from '../lib/manifests.ts';
import { exampleManifests, type OperatorProcess, type System, startSystem, waitFor } from '../lib/system.ts';
import { type Laptop, startLaptop } from '../tailnet/node.ts';

const MK = 'agent-direct';
const OWNER_TAG = 'tag:cannes-owner';
let s: System;
let op: OperatorProcess;
let owner: Laptop;
let stranger: Laptop;
let url = '';
let host = '';
let tailnetIp = '';
let publicIp = '';
let diskDir = '';
let serverId = 0;
let gatewayToken = '';
const directKeys: string[] = [];
const newKey = () => {
  const k = `sk-ant-direct-${randomBytes(16).toString('hex')}`;
  directKeys.push(k);
  // The fake Anthropic accepts it (it refuses any key it was not told about).
  s.upstreamKeys.anthropic.push(k);
  return k;
};
const diag = () => `operator log tail:\n${op.logs.join('').split('\n').slice(-60).join('\n')}`;
const REPO = new URL('../..', import.meta.url).pathname;
const directFile = () => join(diskDir, 'root/.model-keys.direct.json');

type Json = {
  metadata: { annotations?: Record<string, string> };
  status?: { ready?: boolean; tailnetJoined?: boolean; hasKey?: boolean; delivered?: boolean };
};

beforeAll(async () => {
  s = await startSystem({ tailnet: true });
  op = await s.startOperator();
  const tailnet = s.tailnet;
  if (!tailnet) throw new Error('no tailnet');
  const authKey = await s.mintTailnetKey(['tag:cannes-vps']);
  await s.kubectl(
    ['apply', '-f', '-'],
    `${exampleManifests(s, { keys: [], tailnet: { authKey, tags: ['tag:cannes-vps'], owners: [OWNER_TAG] } })}---\n${stringify(
      modelKeyManifest(s.namespace, MK, {
        vpsRef: { name: 'agent' },
        provider: 'anthropic',
        delivery: 'Direct',
        secretRef: undefined,
        default: true,
      }),
    )}`,
  );
  const vps = await waitFor(
    'Vps agent Ready on the tailnet with the Direct route deployed',
    async () => {
      const v = (await s.getJson('vps', 'agent')) as Json;
      return v.status?.ready === true &&
        v.status.tailnetJoined === true &&
        v.metadata.annotations?.[ANNOTATION_GATEWAY_URL]
        ? v
        : undefined;
    },
    1_200_000,
    diag,
  );
  const a = vps.metadata.annotations ?? {};
  url = a[ANNOTATION_GATEWAY_URL] ?? '';
  host = new URL(url).hostname;
  publicIp = a['cannes.dev/ipv4'] ?? '';
  serverId = Number(a['cannes.dev/server-id']);
  const info = s.hosts.info(serverId);
  if (!info) throw new Error('no simulated host');
  diskDir = info.diskDir;
  const node = (await tailnet.nodes()).find((n) => n.hostname === 'agent');
  tailnetIp =
    node?.addresses.map((x) => x.replace(/\/\d+$/, '')).find((x) => /^\d+\.\d+\.\d+\.\d+$/.test(x)) ?? '';
  const secret = JSON.parse(await s.kubectl(['get', 'secret', 'agent-gateway', '-o', 'json'])) as {
    data: { token: string };
  };
  gatewayToken = Buffer.from(secret.data.token, 'base64').toString('utf8');
  await waitFor(
    'the redeploy with the tailnet origin to settle (deployed annotation stable, Ready)',
    async () => {
      const before = ((await s.getJson('vps', 'agent')) as Json).metadata.annotations ?? {};
      await new Promise((r) => setTimeout(r, 3000));
      const b = (await s.getJson('vps', 'agent')) as Json;
      return b.status?.ready === true &&
        b.metadata.annotations?.['cannes.dev/deployed'] === before['cannes.dev/deployed']
        ? true
        : undefined;
    },
    600_000,
    diag,
  );
  owner = await startLaptop(tailnet, { prefix: 'direct-owner', hostname: 'owner', tags: [OWNER_TAG] });
  stranger = await startLaptop(tailnet, {
    prefix: 'direct-other',
    hostname: 'stranger',
    tags: ['tag:stranger'],
  });
  for (const l of [owner, stranger]) await l.knowHost(host, tailnetIp);
}, 1_500_000);

afterAll(async () => {
  await owner?.stop();
  await stranger?.stop();
  await s?.stop();
}, 180_000);

/** Runs `cmd` in the laptop until `ok`, while the tailnet path comes up; the last result. */
async function retry(l: Laptop, cmd: string[], ok: (code: number, out: string) => boolean, stdin?: string) {
  let last = { code: -1, stdout: '', stderr: '' };
  for (let i = 0; i < 40; i++) {
    last = await l.ns.exec(cmd, { timeoutMs: 80_000, ...(stdin === undefined ? {} : { stdin }) });
    if (ok(last.code, last.stdout)) return last;
    await new Promise((r) => setTimeout(r, 1000));
  }
  return last;
}

/** `cannes-operator key set` from a laptop (the rig's API server is on the host's loopback only). */
const keySet = (l: Laptop, key: string, name = MK) =>
  retry(
    l,
    [
      process.execPath,
      join(REPO, 'dist/operator/main.js'),
      'key',
      'set',
      `${s.namespace}/${name}`,
      '--from-stdin',
      '--gateway-url',
      url,
    ],
    (c, o) => c === 0 || o.includes('refused'),
    `${key}\n`,
  );

/** A raw request to the intake from a laptop: status and body. */
async function intake(l: Laptop, args: string[], stdin?: string) {
  const r = await retry(
    l,
    ['curl', '-sS', '--max-time', '30', '-w', '\n%{http_code}', ...args],
    (c) => c === 0,
    stdin,
  );
  const lines = r.stdout.trimEnd().split('\n');
  return { status: Number(lines.at(-1)), body: lines.slice(0, -1).join('\n'), stderr: r.stderr };
}

/** What the CLI does after the server took the key, when it reaches the API server. */
async function annotateKeySet() {
  await s.kubectl([
    'annotate',
    '--overwrite',
    'modelkey',
    MK,
    `${ANNOTATION_KEY_SET}=${new Date().toISOString()}`,
  ]);
}

async function chat(): Promise<{ code: number; stdout: string; stderr: string }> {
  const model = `${providerId(MK)}/${DEFAULT_MODELS.anthropic?.id}`;
  return owner.ns.exec(
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
    { stdin: `authorization: Bearer ${gatewayToken}\n`, timeoutMs: 260_000 },
  );
}

describe('a Direct ModelKey', () => {
  it('is deployed as a route without a key, and waits for the owner', async () => {
    const keyFile = JSON.parse(readFileSync(join(diskDir, 'root/.model-keys.json'), 'utf8'));
    // The route (the rig's upstream as baseUrl, --provider-origin) and no key.
    expect(keyFile.keys[MK]).toMatchObject({ provider: 'anthropic', delivery: 'direct' });
    expect(keyFile.keys[MK]).not.toHaveProperty('apiKey');
    const mk = (await s.getJson('modelkey', MK)) as Json;
    expect(mk.status).toMatchObject({ hasKey: false, delivered: false });
  });

  it('takes a key from the owner with the CLI over the tailnet; the proxy injects it and a chat works', async () => {
    const key = newKey();
    const r = await keySet(owner, key);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain(`the server holds a key for ${s.namespace}/${MK}`);
    expect(r.stdout + r.stderr).not.toContain(key);
    expect(statSync(directFile()).mode & 0o777).toBe(0o600);
    await annotateKeySet();
    await waitFor(
      'ModelKey hasKey and delivered (the server said so, over one SSH session)',
      async () => {
        const mk = (await s.getJson('modelkey', MK)) as Json;
        return mk.status?.hasKey === true && mk.status.delivered === true ? true : undefined;
      },
      // The Vps reconcile that asks the server may queue behind others on a loaded machine.
      480_000,
      diag,
    );
    const before = s.upstreams.anthropic.requests.length;
    const c = await chat();
    expect(c.code, c.stderr).toBe(0);
    expect(c.stdout).toContain('chunk 0');
    const seen = s.upstreams.anthropic.requests.slice(before);
    expect(seen.length).toBeGreaterThan(0);
    for (const req of seen) expect(req.headers['x-api-key']).toBe(key);
  }, 800_000);

  it('replaces the key: the next chat carries the new one', async () => {
    const key = newKey();
    expect((await keySet(owner, key)).code).toBe(0);
    const before = s.upstreams.anthropic.requests.length;
    await waitFor(
      'the proxy to inject the new key',
      async () => {
        const c = await chat();
        const seen = s.upstreams.anthropic.requests.slice(before);
        return c.code === 0 && seen.at(-1)?.headers['x-api-key'] === key ? true : undefined;
      },
      300_000,
      diag,
    );
  }, 400_000);

  it('takes a key pasted into the intake page in headless Chromium on the laptop; a chat carries it', async () => {
    const key = newKey();
    const r = await retry(
      owner,
      [process.execPath, join(REPO, 'test/e2e/browser/intake-page.ts'), `${url}cannes-keys/`, MK],
      (c) => c === 0,
      key,
    );
    expect(r.code, r.stderr).toBe(0);
    const page = JSON.parse(r.stdout) as {
      before: string[][];
      ok: boolean;
      result: string;
      after: string[][];
      fieldEmpty: boolean;
    };
    expect(page.before).toEqual([[MK, 'true']]);
    expect(page).toMatchObject({ ok: true, after: [[MK, 'true']], fieldEmpty: true });
    expect(page.result).toContain(`the server has a key for ${MK}`);
    expect(r.stdout + r.stderr).not.toContain(key);
    const before = s.upstreams.anthropic.requests.length;
    await waitFor(
      'the proxy to inject the key from the page',
      async () => {
        const c = await chat();
        return c.code === 0 &&
          s.upstreams.anthropic.requests.slice(before).at(-1)?.headers['x-api-key'] === key
          ? true
          : undefined;
      },
      300_000,
      diag,
    );
    // The same page on a laptop that is not an owner: refused, nothing listed.
    const other = await retry(
      stranger,
      [process.execPath, join(REPO, 'test/e2e/browser/intake-page.ts'), `${url}cannes-keys/`, MK],
      (c) => c === 0,
      newKey(),
    );
    expect(other.code, other.stderr).toBe(0);
    expect(JSON.parse(other.stdout)).toMatchObject({ before: [], ok: false });
    expect(JSON.parse(other.stdout).result).toContain('is not in spec.tailnet.owners');
  }, 600_000);

  it('refuses a tailnet peer that is not an owner, and leaves the key file as it was', async () => {
    const before = readFileSync(directFile());
    const key = newKey();
    const r = await keySet(stranger, key);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('403 NotAnOwner');
    expect(r.stdout).toContain('tag:stranger');
    expect(r.stdout + r.stderr).not.toContain(key);
    expect(readFileSync(directFile()).equals(before)).toBe(true);
  });

  it('refuses bad input with a clear error, never the key, and never damages the valid file', async () => {
    const before = readFileSync(directFile());
    const bad = newKey();
    const put = (path: string, type: string, extra: string[] = []) => [
      '-X',
      'PUT',
      '-H',
      `content-type: ${type}`,
      '-H',
      'cannes-intake: 1',
      '--data-binary',
      '@-',
      ...extra,
      `${url}cannes-keys/keys/${path}`,
    ];
    const cases: [string[], string | undefined, number, string][] = [
      [put('nope', 'text/plain'), bad, 404, 'UnknownRoute'],
      [put(MK, 'text/plain'), `${bad} two words`, 400, 'KeyMalformed'],
      [put(MK, 'text/plain'), 'A'.repeat(9000), 413, 'BodyTooLarge'],
      [put(MK, 'application/json'), bad, 415, 'WrongContentType'],
    ];
    for (const [args, body, status, error] of cases) {
      const r = await intake(owner, args, body);
      expect([r.status, JSON.parse(r.body).error], r.body).toEqual([status, error]);
      expect(r.body).not.toContain(bad);
    }
    // Missing identity: on the server itself, straight to the intake (no Serve, no peer).
    const local = await s.hosts.exec(serverId, [
      '/usr/bin/curl',
      '-sS',
      '-X',
      'PUT',
      '-H',
      'content-type: text/plain',
      '-H',
      'cannes-intake: 1',
      '--data-binary',
      bad,
      `http://127.0.0.1:${INTAKE_PORT}/cannes-keys/keys/${MK}`,
    ]);
    expect(JSON.parse(local.stdout).error, local.stdout + local.stderr).toBe('NoTailnetIdentity');
    expect(local.stdout).not.toContain(bad);
    expect(readFileSync(directFile()).equals(before)).toBe(true);
  });

  it('is no kernel port: neither the tailnet nor the public address reach 3102', async () => {
    const tcp = (ip: string, port: number) => [
      'timeout',
      '5',
      'bash',
      '-c',
      `exec 3<>/dev/tcp/${ip}/${port}`,
    ];
    expect((await owner.ns.exec(tcp(tailnetIp, INTAKE_PORT), { timeoutMs: 20_000 })).code).not.toBe(0);
    // The public address, from the machine's own network (where the rig routes servers' addresses).
    const [cmd, ...args] = tcp(publicIp, INTAKE_PORT);
    const pub = spawnSync(cmd ?? '', args, { timeout: 20_000 });
    expect(pub.status).not.toBe(0);
    // The control: the same way reaches the server's sshd on its public address.
    const [c2, ...a2] = tcp(publicIp, 22);
    expect(spawnSync(c2 ?? '', a2, { timeout: 20_000 }).status).toBe(0);
  });

  it('appears in no object, log, metric, Hetzner request, pg_dump or gateway-readable file', async () => {
    const resources = (await s.rig.kubectl(['api-resources', '--verbs=list', '-o', 'name'])).stdout
      .trim()
      .split('\n')
      .join(',');
    const places: Record<string, string> = {
      'kubernetes objects': (await s.rig.kubectl(['get', resources, '-A', '-o', 'json'])).stdout,
      'operator log': op.logs.join(''),
      'operator metrics': await (await fetch(op.metricsUrl)).text(),
      'hetzner requests': JSON.stringify(s.sim.requests),
      pg_dump: await import('../rig/postgres.ts').then((m) => m.pgDump(s.db.url)),
    };
    for (const f of filesUnder(join(diskDir, 'opt/cannes/gateway'))) places[f] = readFileSync(f, 'latin1');
    // etcd (every key, its value as stored) and the API server's audit log (every request and
    // response body). The control: a Secret made now with a fresh canary shows in both.
    const control = `control-canary-${randomBytes(12).toString('hex')}`;
    await s.kubectl(['create', 'secret', 'generic', 'scan-control', `--from-literal=v=${control}`]);
    places['etcd (every key)'] = await etcdDump();
    places['API server audit log'] = readFileSync(s.rig.auditLogPath ?? '', 'latin1');
    expect(places['etcd (every key)']).toContain(control);
    expect(places['API server audit log']).toContain(Buffer.from(control).toString('base64'));
    expect(Object.keys(places).length).toBeGreaterThan(8);
    for (const key of directKeys)
      for (const form of [key, Buffer.from(key).toString('base64')])
        for (const [place, text] of Object.entries(places)) expect(text.includes(form), place).toBe(false);
    // The control: the key the proxy uses is on the server, in the owner's file.
    const onServer = readFileSync(directFile(), 'utf8');
    expect(directKeys.some((k) => onServer.includes(k))).toBe(true);
  }, 120_000);

  it('takes its route and its key off the server when the ModelKey is deleted', async () => {
    await s.kubectl(['delete', 'modelkey', MK, '--wait=false']);
    await waitFor(
      'the route and the key gone from the server',
      async () => {
        const keys = JSON.parse(readFileSync(join(diskDir, 'root/.model-keys.json'), 'utf8')).keys;
        const direct = existsSync(directFile()) ? readFileSync(directFile(), 'utf8') : '';
        return !(MK in keys) && !directKeys.some((k) => direct.includes(k)) ? true : undefined;
      },
      300_000,
      diag,
    );
  }, 320_000);
});

/** Every key of the rig's etcd with its value (etcd's JSON gateway, `/v3/kv/range` over all keys). */
async function etcdDump(): Promise<string> {
  const all = Buffer.from([0]).toString('base64');
  const res = await fetch(`${s.rig.etcdUrl}/v3/kv/range`, {
    method: 'POST',
    body: JSON.stringify({ key: all, range_end: all }),
  });
  const body = (await res.json()) as { kvs?: { key: string; value?: string }[] };
  expect((body.kvs ?? []).length).toBeGreaterThan(10);
  return (body.kvs ?? [])
    .map(
      (kv) =>
        `${Buffer.from(kv.key, 'base64').toString('latin1')}\n${Buffer.from(kv.value ?? '', 'base64').toString('latin1')}`,
    )
    .join('\n');
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
    else if (e.isFile() && statSync(p).size < 16 * 1024 * 1024) out.push(p);
  }
  return out;
}
