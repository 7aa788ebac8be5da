/**
 * Break-glass recovery (`cannes-operator recover`, docs/operations.md "If the database is lost")
 * on real parts: the rig's API server, Postgres, the Hetzner simulator and its servers (sshd,
 * namespaces, the real gateway and proxy). A Vps is provisioned to Ready, its store row is
 * wiped (its SSH keys with it), and the real command, spawned as a user runs it, with a fresh
 * token of the same project, brings it back: one new key, the old one refused by the server,
 * still one server. Each refusal is the real entry point's exit code and one line.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { controllerStore } from '../../../operator/adapters/store.ts';
import type { ActiveKey } from '../../../operator/controllers/ports.ts';
import { parsePublicKey } from '../../../operator/ssh/keys.ts';
import { sshRotationRemote } from '../../../operator/ssh/rotation.ts';
import { loadKeyringFile, PostgresStore } from '../../../operator/store/index.ts';
import { cloudTokenSecret, vpsManifest } from '../../lib/manifests.ts';
import {
  exampleManifests,
  type OperatorProcess,
  REPO,
  type System,
  startSystem,
  waitFor,
} from '../../lib/system.ts';

/** A fresh token of the simulated project (letters and digits, 64, like Hetzner's): a canary. */
const NEW_TOKEN = randomBytes(48)
  .toString('base64')
  .replace(/[^A-Za-z0-9]/g, '')
  .slice(0, 64);

let s: System;
let op: OperatorProcess;
let ghostNs: string;
const cliOutput: string[] = [];
const diag = () => `operator log tail:\n${op.logs.join('').split('\n').slice(-40).join('\n')}`;

type Obj = {
  metadata: { uid: string; annotations?: Record<string, string> };
  status?: { ready?: boolean; conditions?: { type: string; status: string; reason: string }[] };
};
const vps = async () => (await s.getJson('vps', 'agent')) as unknown as Obj;

/**
 * Runs a command to its end (async: the simulator answers from this process meanwhile). Its
 * stdin is a file, as a terminal or a redirect is for a user: a socket cannot be opened as
 * /dev/stdin, and bash reads its rc files when stdin is one.
 */
async function runCommand(cmd: string, args: string[], env: Record<string, string>, stdin = '') {
  const input = join(s.dir, `stdin-${randomBytes(4).toString('hex')}`);
  writeFileSync(input, stdin, { mode: 0o600 });
  const fd = openSync(input, 'r');
  try {
    const child = spawn(cmd, args, { cwd: REPO, env, stdio: [fd, 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (b: Buffer) => {
      stdout += b.toString();
    });
    child.stderr?.on('data', (b: Buffer) => {
      stderr += b.toString();
    });
    return await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
      child.once('close', (code) => resolve({ code, stdout, stderr })),
    );
  } finally {
    closeSync(fd);
    rmSync(input, { force: true });
  }
}

/** The real entry point, as a user runs it next to the operator (same database, keys, API). */
async function recover(target: string, env: Record<string, string | undefined> = {}) {
  const base: Record<string, string | undefined> = {
    PATH: process.env['PATH'] ?? '/usr/bin:/bin',
    KUBECONFIG: s.rig.kubeconfigPath,
    DATABASE_URL: s.db.url,
    CANNES_MASTER_KEYS_FILE: s.masterKeysFile,
    HCLOUD_ENDPOINT: s.sim.endpoint,
  };
  const merged = Object.fromEntries(
    Object.entries({ ...base, ...env }).filter((e): e is [string, string] => e[1] !== undefined),
  );
  const r = await runCommand(
    process.execPath,
    [join(REPO, 'operator', 'main.ts'), 'recover', target],
    merged,
  );
  cliOutput.push(r.stdout, r.stderr);
  return r;
}

/** docs/operations.md's command that puts the fresh token into the Secret, run as written there. */
async function putTokenAsDocumented(token: string): Promise<void> {
  const doc = readFileSync(join(REPO, 'docs', 'operations.md'), 'utf8');
  const block = /```sh\n\s*(kubectl -n team-a create secret generic hcloud-token[^`]*)```/.exec(doc)?.[1];
  expect(block, 'the token command in docs/operations.md').toBeDefined();
  const script = (block ?? '').replaceAll('team-a', s.namespace);
  const r = await runCommand(
    'bash',
    ['-euo', 'pipefail', '-c', script],
    {
      PATH: `${dirname(s.rig.binaries.kubectl)}:${process.env['PATH'] ?? '/usr/bin:/bin'}`,
      KUBECONFIG: s.rig.kubeconfigPath,
      // kubectl's discovery cache goes under $HOME/.kube: the system's folder, not the checkout.
      HOME: s.dir,
    },
    token,
  );
  expect(r.code, r.stderr).toBe(0);
}

/** Exit 2 and exactly one stderr line naming the refusal; nothing on stdout, no stack, no token. */
async function expectRefusal(target: string, message: RegExp, env: Record<string, string | undefined> = {}) {
  const r = await recover(target, env);
  expect(r.code, r.stderr).toBe(2);
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^cannes-operator recover: /);
  expect(lines[0]).toMatch(message);
  expect(r.stderr).not.toMatch(/\n\s+at /);
  expect(r.stdout).toBe('');
}

async function withStore<T>(f: (store: PostgresStore) => Promise<T>): Promise<T> {
  const keyring = await loadKeyringFile(s.masterKeysFile);
  const { store } = await PostgresStore.open({ connectionString: s.db.url, keyring });
  try {
    return await f(store);
  } finally {
    await store.close();
  }
}

async function sql<T extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: s.db.url });
  await client.connect();
  try {
    return (await client.query<T>(text, values)).rows;
  } finally {
    await client.end();
  }
}

/** Servers of the simulated project carrying `uid` as their Vps label (asked with the new token). */
async function serversLabelled(uid: string): Promise<number[]> {
  const res = await fetch(
    `${s.sim.endpoint}/servers?label_selector=${encodeURIComponent(`cannes.dev/vps-uid==${uid}`)}`,
    {
      headers: { authorization: `Bearer ${NEW_TOKEN}` },
    },
  );
  const body = (await res.json()) as { servers: { id: number }[] };
  return body.servers.map((x) => x.id);
}

const condition = (v: Obj, type: string) => v.status?.conditions?.find((c) => c.type === type);
const rescueRequests = (serverId: number) =>
  s.sim.requests.filter((r) => r.method === 'POST' && r.url.includes(`/servers/${serverId}/actions/`));

let uid = '';
let serverId = 0;
let ipv4 = '';
let hostKey = '';
let oldKey: ActiveKey;

beforeAll(async () => {
  s = await startSystem({ extraTokens: [NEW_TOKEN] });
  op = await s.startOperator();
  await s.kubectl(['apply', '-f', '-'], exampleManifests(s));
  ghostNs = `${s.namespace}-ghost`;
}, 300_000);

afterAll(async () => {
  await s?.rig.kubectl(['delete', 'namespace', ghostNs, '--wait=false'], { check: false });
  await s?.stop();
}, 120_000);

describe('recover after the store lost a Vps', () => {
  it('provisions the Vps to Ready with its token purged', async () => {
    const ready = await waitFor(
      'Vps agent Ready, token purged',
      async () => {
        const v = await vps();
        return v.status?.ready === true && condition(v, 'CloudTokenPurged')?.status === 'True'
          ? v
          : undefined;
      },
      900_000,
      diag,
    );
    uid = ready.metadata.uid;
    serverId = Number(ready.metadata.annotations?.['cannes.dev/server-id']);
    const state = await withStore((st) => controllerStore(st).getVps(uid));
    expect(state?.activeKey).toBeTruthy();
    oldKey = state?.activeKey as ActiveKey;
    ipv4 = state?.record.ipv4 ?? '';
    hostKey = state?.record.hostKey ?? '';
  }, 960_000);

  it('refuses while the store has a usable key: nothing to recover', async () => {
    await expectRefusal(`${s.namespace}/agent`, /has a healthy store row \(server \d+, an active SSH key\)/);
  }, 60_000);

  it('refuses without the master keys, before touching anything', async () => {
    await expectRefusal(`${s.namespace}/agent`, /CANNES_MASTER_KEYS_FILE is not set/, {
      CANNES_MASTER_KEYS_FILE: undefined,
    });
  }, 60_000);

  it('wiping the store row leaves the Vps without a key, asking for a token', async () => {
    await sql('DELETE FROM cannes_vps WHERE uid = $1', [uid]);
    expect(await sql('SELECT id FROM cannes_ssh_key WHERE vps_uid = $1', [uid])).toHaveLength(0);
    await waitFor(
      'Ready=False CloudTokenRequired',
      async () => {
        const c = condition(await vps(), 'Ready');
        return c?.status === 'False' && c.reason === 'CloudTokenRequired' ? true : undefined;
      },
      180_000,
      diag,
    );
  }, 200_000);

  it('refuses when the token Secret is missing, then when it is not labelled', async () => {
    await s.kubectl(['delete', 'secret', 'hcloud-token']);
    await expectRefusal(
      `${s.namespace}/agent`,
      /Secret \S+\/hcloud-token does not exist: create it, labelled/,
    );
    const unlabelled = cloudTokenSecret(s.namespace, 'hcloud-token', NEW_TOKEN) as {
      metadata: { labels?: unknown };
    };
    delete unlabelled.metadata.labels;
    await s.kubectl(['apply', '--server-side', '-f', '-'], JSON.stringify(unlabelled));
    await expectRefusal(
      `${s.namespace}/agent`,
      /Secret hcloud-token is not labelled cannes\.dev\/usage=cloud-token/,
    );
  }, 60_000);

  it('with a labelled fresh token the reconcile finds the server by its label, but does not reset it without recover', async () => {
    const before = rescueRequests(serverId).length;
    // As docs/operations.md says: the labelled Secret, applied server-side from stdin.
    await putTokenAsDocumented(NEW_TOKEN);
    const sec = (await s.getJson('secret', 'hcloud-token')) as {
      metadata: { labels?: Record<string, string> };
    };
    expect(sec.metadata.labels?.['cannes.dev/usage']).toBe('cloud-token');
    const v = await waitFor(
      'HasSshKey=False RecoveryRequired',
      async () => {
        const o = await vps();
        const c = condition(o, 'HasSshKey');
        return c?.status === 'False' && c.reason === 'RecoveryRequired' ? o : undefined;
      },
      180_000,
      diag,
    );
    expect(v.status?.ready).toBe(false);
    // The row has the same server again (found by label), and nothing was asked of it.
    const rows = await sql<{ server_id: string }>('SELECT server_id FROM cannes_vps WHERE uid = $1', [uid]);
    expect(rows.map((r) => Number(r.server_id))).toEqual([serverId]);
    expect(rescueRequests(serverId)).toHaveLength(before);
  }, 200_000);

  it('refuses when no server, or two servers, carry the Vps uid label', async () => {
    // A Vps the operator does not watch (another namespace), never provisioned.
    await s.rig.kubectl(['create', 'namespace', ghostNs]);
    const ghost = vpsManifest(ghostNs, 'ghost', {
      cloudTokenSecretRef: { name: 'hcloud-token', key: 'token' },
    });
    await s.rig.kubectl(['apply', '--server-side', '-f', '-'], {
      stdin: [
        JSON.stringify(cloudTokenSecret(ghostNs, 'hcloud-token', NEW_TOKEN)),
        JSON.stringify(ghost),
      ].join('\n---\n'),
    });
    const ghostUid = (
      JSON.parse((await s.rig.kubectl(['-n', ghostNs, 'get', 'vps', 'ghost', '-o', 'json'])).stdout) as Obj
    ).metadata.uid;
    await expectRefusal(
      `${ghostNs}/ghost`,
      /no Hetzner server carries the label cannes\.dev\/vps-uid=\S+: nothing to recover/,
    );
    const created: number[] = [];
    for (const n of [1, 2]) {
      const res = await fetch(`${s.sim.endpoint}/servers`, {
        method: 'POST',
        headers: { authorization: `Bearer ${NEW_TOKEN}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          name: `ghost-${n}-${ghostUid.slice(0, 8)}`,
          server_type: 'cx23',
          location: 'fsn1',
          image: 'docker-ce',
          labels: { 'cannes.dev/vps-uid': ghostUid },
          start_after_create: false,
        }),
      });
      expect(res.status, await res.clone().text()).toBe(201);
      created.push(((await res.json()) as { server: { id: number } }).server.id);
    }
    try {
      await expectRefusal(
        `${ghostNs}/ghost`,
        /2 Hetzner servers carry the label .*\(ids \d+, \d+\): recover picks none/,
      );
    } finally {
      for (const id of created)
        await fetch(`${s.sim.endpoint}/servers/${id}`, {
          method: 'DELETE',
          headers: { authorization: `Bearer ${NEW_TOKEN}` },
        });
    }
    // Refusals record nothing.
    const ghostNow = JSON.parse(
      (await s.rig.kubectl(['-n', ghostNs, 'get', 'vps', 'ghost', '-o', 'json'])).stdout,
    ) as Obj;
    expect(ghostNow.metadata.annotations?.['cannes.dev/recover']).toBeUndefined();
    expect((await vps()).metadata.annotations?.['cannes.dev/recover']).toBeUndefined();
  }, 120_000);

  it('recovers: Ready again with exactly one new key, the old key refused, still one server', async () => {
    const rescues = () =>
      rescueRequests(serverId).filter((q) => q.url.endsWith('/actions/enable_rescue')).length;
    const rescuesBefore = rescues();
    const r = await recover(`${s.namespace}/agent`);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(
      new RegExp(`recovery of Vps \\S+/agent requested: .*server ${serverId} into rescue`),
    );
    await waitFor(
      'Vps agent Ready again, recovery finished',
      async () => {
        const v = await vps();
        return v.status?.ready === true && v.metadata.annotations?.['cannes.dev/recover'] === undefined
          ? true
          : undefined;
      },
      600_000,
      diag,
    );
    // It went through rescue once more: one enable_rescue on this server after the command.
    expect(rescues()).toBe(rescuesBefore + 1);
    const active = await sql<{ id: string; origin: string; public_key: string }>(
      "SELECT id, origin, public_key FROM cannes_ssh_key WHERE vps_uid = $1 AND state = 'active'",
      [uid],
    );
    expect(active).toHaveLength(1);
    expect(active[0]?.id).not.toBe(oldKey.id);
    expect(active[0]?.public_key).not.toBe(oldKey.publicKey);
    // The rescue-born key was rotated once, as after a first provisioning.
    expect(active[0]?.origin).toBe('rotation');
    // root's authorized_keys on the server holds the new key only.
    const host = s.hosts.info(serverId);
    expect(host).toBeDefined();
    const lines = readFileSync(join(host?.diskDir ?? '', 'root/.ssh/authorized_keys'), 'utf8')
      .split('\n')
      .filter((l) => l.trim() !== '' && !l.startsWith('#'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain((active[0]?.public_key ?? '').split(' ')[1]);
    // The old key, decrypted from before the wipe, no longer logs in.
    const remote = sshRotationRemote({ host: ipv4 }, parsePublicKey(hostKey), { retryForMs: 20_000 });
    expect(await remote.login(oldKey.privateKey)).toBe('refused');
    // Still the one server, found by its label, none created.
    expect(await serversLabelled(uid)).toEqual([serverId]);
    const creates = s.sim.requests.filter(
      (q) => q.method === 'POST' && q.route === '/servers' && q.body.includes(uid),
    );
    expect(creates).toHaveLength(1);
  }, 660_000);

  it('purges the fresh token again and never shows it in logs, Events, status, annotations or output', async () => {
    await waitFor(
      'token purged from its Secret',
      async () => {
        const sec = (await s.getJson('secret', 'hcloud-token')) as { data?: Record<string, string> };
        return sec.data?.['token'] === undefined ? true : undefined;
      },
      120_000,
      diag,
    );
    const v = await vps();
    expect(condition(v, 'CloudTokenPurged')?.status).toBe('True');
    const events = await s.kubectl(['get', 'events.events.k8s.io', '-o', 'json']);
    expect(events).toMatch(/RecoveryRequested/);
    for (const [what, text] of [
      ['operator logs', op.logs.join('')],
      ['Events', events],
      ['Vps', JSON.stringify(v)],
      ['recover output', cliOutput.join('')],
      ['Secret', await s.kubectl(['get', 'secret', 'hcloud-token', '-o', 'json'])],
    ] as const) {
      expect(text.includes(NEW_TOKEN), `${what} carry the new token`).toBe(false);
      expect(text.includes(s.canaries.hcloudToken), `${what} carry the old token`).toBe(false);
    }
  }, 180_000);
});
