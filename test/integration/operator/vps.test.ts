/**
 * The operator against real parts only: the rig's API server, Postgres, the Hetzner simulator
 * whose servers are real hosts (sshd, namespaces, docker/systemctl shims running the real
 * OpenClaw gateway and the real proxy bundle), and fake LLM upstreams.
 */
import { readFileSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cloudTokenSecret, modelKeyManifest } from '../../lib/manifests.ts';
import {
  exampleManifests,
  metricSum,
  type OperatorProcess,
  type System,
  startSystem,
  waitFor,
} from '../../lib/system.ts';
import { operatorRequests, TEST_HEADER } from './robust.ts';

let s: System;
let op: OperatorProcess;
const diag = () => `operator log tail:\n${op.logs.join('').split('\n').slice(-40).join('\n')}`;

beforeAll(async () => {
  s = await startSystem();
  op = await s.startOperator();
  await s.kubectl(['apply', '-f', '-'], exampleManifests(s));
}, 300_000);

afterAll(async () => {
  await s?.stop();
}, 120_000);

type Obj = { metadata: { annotations?: Record<string, string> }; status?: Record<string, unknown> };

async function vps(): Promise<Obj> {
  return (await s.getJson('vps', 'agent')) as Obj;
}

function serverOf(v: Obj) {
  const id = Number(v.metadata.annotations?.['cannes.dev/server-id']);
  const info = s.hosts.info(id);
  if (!info) throw new Error(`no simulated host for server ${id}`);
  return info;
}

describe('a Vps with two ModelKeys', () => {
  it('goes to Ready, with one server and booleans-only status, showing its conditions as it goes', async () => {
    // What a person watching `kubectl get vps` sees before Ready (polled every 500 ms).
    const trueBeforeReady = new Set<string>();
    const ready = await waitFor(
      'Vps agent Ready',
      async () => {
        const v = await vps();
        if (v.status?.['ready'] !== true) {
          const conditions = (v.status?.['conditions'] ?? []) as { type: string; status: string }[];
          for (const c of conditions) if (c.status === 'True') trueBeforeReady.add(c.type);
        }
        return v.status?.['ready'] === true ? v : undefined;
      },
      900_000,
      diag,
    );
    // A first provisioning writes its conditions after each step, not only at the end.
    expect([...trueBeforeReady]).toEqual(expect.arrayContaining(['ServerCreated', 'HasSshKey']));
    for (const [k, v] of Object.entries(ready.status ?? {})) {
      if (k === 'conditions' || k === 'observedGeneration') continue;
      expect(typeof v, `status.${k}`).toBe('boolean');
    }
    expect(ready.status).toMatchObject({
      serverCreated: true,
      hasSshKey: true,
      gatewayDeployed: true,
      proxyReady: true,
    });
    expect(ready.metadata.annotations?.['cannes.dev/ipv4']).toMatch(/^198\.1[89]\./);
    const creates = s.sim.requests.filter((r) => r.method === 'POST' && r.route === '/servers');
    expect(creates).toHaveLength(1);
  }, 960_000);

  it('points the gateway config only at the proxy, with no key in it', async () => {
    const host = serverOf(await vps());
    const config = JSON.parse(
      readFileSync(join(host.diskDir, 'opt/cannes/gateway/config/openclaw.json'), 'utf8'),
    );
    const providers = Object.values(config.models.providers) as { baseUrl: string; apiKey: string }[];
    expect(providers).toHaveLength(2);
    for (const p of providers) {
      expect(p.apiKey).toBe('proxy-managed');
      expect(p.baseUrl).toMatch(/^http:\/\/(host\.docker\.internal|172\.17\.0\.1):3101\/proxy\/agent-/);
    }
    const text = readFileSync(join(host.diskDir, 'opt/cannes/gateway/config/openclaw.json'), 'utf8');
    for (const key of Object.values(s.canaries.modelKeys)) expect(text).not.toContain(key);
  });

  it('holds the real keys only in /root/.model-keys.json, mode 600, owner root', async () => {
    const host = serverOf(await vps());
    const path = join(host.diskDir, 'root/.model-keys.json');
    const st = statSync(path);
    expect(st.mode & 0o777).toBe(0o600);
    expect(st.uid).toBe(0);
    const file = JSON.parse(readFileSync(path, 'utf8'));
    expect(file.version).toBe(1);
    expect(file.keys['agent-anthropic'].apiKey).toBe(s.canaries.modelKeys.anthropic);
    expect(file.keys['agent-openai'].apiKey).toBe(s.canaries.modelKeys.openai);
  });

  it('reports both ModelKeys delivered and purges the cloud token after setup', async () => {
    for (const name of ['agent-anthropic', 'agent-openai']) {
      await waitFor(
        `${name} delivered`,
        async () => {
          const mk = (await s.getJson('modelkey', name)) as Obj;
          return mk.status?.['delivered'] === true && mk.status?.['hasKey'] === true ? true : undefined;
        },
        120_000,
        diag,
      );
    }
    const secret = (await s.getJson('secret', 'hcloud-token')) as { data?: Record<string, string> };
    expect(secret.data?.['token']).toBeUndefined();
    // Nor a copy in kubectl's last-applied-configuration annotation (the manifests were applied client-side).
    expect(JSON.stringify(secret)).not.toContain(s.canaries.hcloudToken);
    expect((await vps()).status?.['cloudTokenPurged']).toBe(true);
  }, 300_000);

  it('rotated the rescue-born SSH key: exactly one active key, stored encrypted', async () => {
    const client = new pg.Client({ connectionString: s.db.url });
    await client.connect();
    try {
      const rows = await client.query('SELECT state, origin, private_key_enc FROM cannes_ssh_key');
      const active = rows.rows.filter((r) => r.state === 'active');
      expect(active).toHaveLength(1);
      expect(active[0].origin).toBe('rotation');
      expect(String(active[0].private_key_enc)).not.toContain('PRIVATE KEY');
    } finally {
      await client.end();
    }
  });

  it('costs nothing while idle: no Hetzner call, no SSH connection, no reconcile loop', async () => {
    const reconciles = () => metricSum(op, 'controller_runtime_reconcile_total', 'controller="vps"');
    const before = {
      calls: operatorRequests(s).length,
      ssh: await metricSum(op, 'cannes_ssh_connections_total'),
      reconciles: await reconciles(),
    };
    expect(before.ssh).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 10_000));
    expect(operatorRequests(s).length - before.calls).toBe(0);
    expect((await metricSum(op, 'cannes_ssh_connections_total')) - before.ssh).toBe(0);
    // The next rotation is 30 days away (a timer beyond Node's 24.8-day limit once fired after
    // 1 ms and spun the reconcile); a resync (every 30 s here) may fall inside the window.
    expect((await reconciles()) - before.reconciles).toBeLessThanOrEqual(4);
  }, 60_000);

  type Cond = { type: string; status: string; reason: string; message?: string };
  const condition = async (type: string): Promise<Cond | undefined> =>
    (((await vps()).status?.['conditions'] ?? []) as Cond[]).find((c) => c.type === type);
  const warnings = async (reason: string): Promise<string[]> => {
    const out = await s.kubectl([
      'get',
      'events',
      '--field-selector',
      `involvedObject.name=agent,type=Warning,reason=${reason}`,
      '-o',
      'jsonpath={.items[*].message}',
    ]);
    return out.trim() === '' ? [] : [out.trim()];
  };

  it('refuses a row whose address was changed in Postgres alone: no SSH connection to the new address', async () => {
    // Where a database-only attacker would send the next deploy: a loopback address whose port 22
    // counts every connection (the root namespace reaches it; nothing else listens there).
    const trap = '127.77.0.1';
    let connections = 0;
    const listener: Server = createServer((sock) => {
      connections++;
      sock.destroy();
    });
    await new Promise<void>((r) => listener.listen(22, trap, r));
    const client = new pg.Client({ connectionString: s.db.url });
    await client.connect();
    try {
      const before = (await client.query('SELECT uid, ipv4 FROM cannes_vps')).rows[0];
      await client.query('UPDATE cannes_vps SET ipv4 = $1 WHERE uid = $2', [trap, before.uid]);
      // A third ModelKey: the next deploy is due, and would go to the recorded address.
      await s.kubectl(
        ['apply', '-f', '-'],
        JSON.stringify(
          modelKeyManifest(s.namespace, 'agent-google', {
            vpsRef: { name: 'agent' },
            provider: 'google',
            secretRef: { name: 'llm-keys', key: 'google' },
            purgeSecretAfterDelivery: false,
          }),
        ),
      );
      const refused = await waitFor(
        'Ready=False RoutingFieldsUnauthenticated',
        async () => {
          const c = await condition('Ready');
          return c?.reason === 'RoutingFieldsUnauthenticated' ? c : undefined;
        },
        120_000,
        diag,
      );
      expect(refused.status).toBe('False');
      expect(refused.message).not.toContain(trap);
      expect((await warnings('RoutingFieldsUnauthenticated')).length).toBeGreaterThan(0);
      expect(connections).toBe(0);
      // Put the address back (what the operator wrote, still under its MAC): the deploy goes on.
      await client.query('UPDATE cannes_vps SET ipv4 = $1 WHERE uid = $2', [before.ipv4, before.uid]);
      await waitFor(
        'Vps agent Ready again with three keys',
        async () => {
          const v = await vps();
          const file = JSON.parse(readFileSync(join(serverOf(v).diskDir, 'root/.model-keys.json'), 'utf8'));
          return v.status?.['ready'] === true && file.keys['agent-google'] ? true : undefined;
        },
        300_000,
        diag,
      );
      expect(connections).toBe(0);
    } finally {
      await client.end();
      await new Promise((r) => listener.close(r));
    }
  }, 480_000);

  it("notices a server deleted outside Cannes (ServerGone), waits, and recreates it only on the owner's word", async () => {
    const old = serverOf(await vps());
    const createsBefore = operatorRequests(s).filter((r) => r.method === 'POST' && r.route === '/servers');
    // Someone deletes the server in the Hetzner Console.
    const del = await fetch(`${s.sim.endpoint}/servers/${old.serverId}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${s.canaries.hcloudToken}`, [TEST_HEADER]: '1' },
    });
    expect(del.status).toBeLessThan(300);
    await waitFor(
      'the simulated host gone',
      async () => (s.hosts.info(old.serverId) ? undefined : true),
      60_000,
    );
    // The token back (the operator can ask Hetzner), and a change that needs a deploy.
    await s.kubectl(
      ['apply', '-f', '-'],
      JSON.stringify(cloudTokenSecret(s.namespace, 'hcloud-token', s.canaries.hcloudToken)),
    );
    await s.kubectl(['delete', 'modelkey', 'agent-google', '--wait=false']);
    const gone = await waitFor(
      'ServerCreated=False ServerGone',
      async () => {
        const c = await condition('ServerCreated');
        return c?.reason === 'ServerGone' ? c : undefined;
      },
      180_000,
      diag,
    );
    expect(gone.status).toBe('False');
    expect(gone.message).toContain(`cannes.dev/recreate-server=${old.serverId}`);
    expect((await condition('Ready'))?.reason).toBe('ServerGone');
    expect((await vps()).metadata.annotations?.['cannes.dev/server-gone']).toBe(String(old.serverId));
    // It waits: no new server until the owner names the gone one.
    const creates = () => operatorRequests(s).filter((r) => r.method === 'POST' && r.route === '/servers');
    await new Promise((r) => setTimeout(r, 5_000));
    expect(creates()).toHaveLength(createsBefore.length);
    await s.kubectl(['annotate', 'vps', 'agent', `cannes.dev/recreate-server=${old.serverId}`]);
    const ready = await waitFor(
      'Vps agent Ready on a new server',
      async () => {
        const v = await vps();
        return v.status?.['ready'] === true &&
          v.metadata.annotations?.['cannes.dev/server-id'] !== String(old.serverId)
          ? v
          : undefined;
      },
      900_000,
      diag,
    );
    expect(creates()).toHaveLength(createsBefore.length + 1);
    const fresh = serverOf(ready);
    const file = JSON.parse(readFileSync(join(fresh.diskDir, 'root/.model-keys.json'), 'utf8'));
    expect(Object.keys(file.keys).sort()).toEqual(['agent-anthropic', 'agent-openai']);
    expect(ready.metadata.annotations?.['cannes.dev/server-gone']).toBeUndefined();
    // The token was put back for this: take it away again (the next test starts without it).
    await s.kubectl([
      'patch',
      'secret',
      'hcloud-token',
      '--type=json',
      '-p',
      '[{"op":"remove","path":"/data/token"}]',
    ]);
  }, 1_200_000);

  it('waits for a token to delete the server, then deletes it and the row', async () => {
    const host = serverOf(await vps());
    await s.kubectl(['delete', 'vps', 'agent', '--wait=false']);
    await waitFor(
      'Deleting=False CloudTokenRequired',
      async () => {
        const conds = ((await vps()).status?.['conditions'] ?? []) as { type: string; reason: string }[];
        return conds.some((c) => c.type === 'Deleting' && c.reason === 'CloudTokenRequired')
          ? true
          : undefined;
      },
      120_000,
      diag,
    );
    expect(s.hosts.info(host.serverId)).toBeDefined();
    await s.kubectl(
      ['apply', '-f', '-'],
      JSON.stringify(cloudTokenSecret(s.namespace, 'hcloud-token', s.canaries.hcloudToken)),
    );
    await waitFor(
      'Vps gone',
      async () => {
        const out = await s.rig.kubectl(['-n', s.namespace, 'get', 'vps', '-o', 'name']);
        return out.stdout.trim() === '' ? true : undefined;
      },
      180_000,
      diag,
    );
    // The simulator tears the host down when its delete action completes.
    await waitFor(
      'the simulated host gone',
      async () => (s.hosts.info(host.serverId) ? undefined : true),
      60_000,
    );
    const client = new pg.Client({ connectionString: s.db.url });
    await client.connect();
    try {
      expect((await client.query('SELECT count(*)::int AS n FROM cannes_vps')).rows[0].n).toBe(0);
      expect((await client.query('SELECT count(*)::int AS n FROM cannes_ssh_key')).rows[0].n).toBe(0);
    } finally {
      await client.end();
    }
  }, 400_000);
});
