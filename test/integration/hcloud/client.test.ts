import { Registry } from 'prom-client';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Secret } from '../../../common/secret.ts';
import { HcloudPort } from '../../../operator/adapters/hcloud.ts';
import { HcloudClient, type HcloudClientOptions } from '../../../operator/hcloud/client.ts';
import { HCLOUD_ERROR_CODES, HcloudError, isHcloudError } from '../../../operator/hcloud/errors.ts';
import { randomToken, type Simulator, startSimulator } from '../../hcloud-sim/simulator.ts';
import { StateOnlyProvider } from '../../hcloud-sim/state-only-provider.ts';
import { waitFor } from '../../lib/wait.ts';

const FAST: HcloudClientOptions = {
  retry: { baseMs: 5, capMs: 40 },
  poll: { initialMs: 10, maxMs: 50, timeoutMs: 20_000, batchMs: 5 },
};

let sim: Simulator;
let provider: StateOnlyProvider;
let registry: Registry;
let client: HcloudClient;
let token: Secret<string>;
const suffix = Math.random().toString(36).slice(2, 8);
const name = (n: string) => `${n}-${suffix}`;

async function caught(p: Promise<unknown>): Promise<HcloudError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof HcloudError) return e;
    throw e;
  }
  throw new Error('expected an HcloudError');
}

function inRange198(ip: string): boolean {
  const [a, b] = ip.split('.').map(Number);
  return a === 198 && (b === 18 || b === 19);
}

beforeAll(async () => {
  provider = new StateOnlyProvider();
  sim = await startSimulator({ provider, actionDurationMs: 40 });
  token = sim.token;
});
afterAll(async () => {
  await sim.close();
});
beforeEach(() => {
  sim.admin.clearFaults();
  registry = new Registry();
  client = new HcloudClient({ ...FAST, endpoint: sim.endpoint, registry });
});

describe('servers', () => {
  it('creates a server that comes up running with a public IPv4 from 198.18.0.0/15', async () => {
    const r = await client.createServer(token, {
      name: name('web'),
      server_type: 'cx23',
      image: 'ubuntu-24.04',
      location: 'nbg1',
      labels: { 'cannes.dev/vps-uid': 'u-1', role: 'web' },
    });
    expect(r.server.status).toBe('initializing');
    expect(r.action.command).toBe('create_server');
    expect(r.nextActions.map((a) => a.command)).toEqual(['start_server']);
    expect(r.rootPassword?.reveal()).toMatch(/^[A-Za-z0-9]{20}$/);
    await client.waitForActions(token, [r.action, ...r.nextActions]);
    const s = await client.getServer(token, r.server.id);
    expect(s.status).toBe('running');
    expect(s.locked).toBe(false);
    expect(s.location.name).toBe('nbg1');
    expect(s.server_type.name).toBe('cx23');
    expect(s.image?.name).toBe('ubuntu-24.04');
    expect(s.labels).toEqual({ 'cannes.dev/vps-uid': 'u-1', role: 'web' });
    expect(inRange198(s.public_net.ipv4?.ip ?? '')).toBe(true);
    expect(provider.state(s.id)).toBe('os');
  });

  it('returns no root password when the server is created with an SSH key', async () => {
    const key = await client.createSshKey(token, {
      name: name('key'),
      public_key:
        'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl fake@test',
      labels: { owner: 'cannes' },
    });
    expect(key.fingerprint).toMatch(/^([0-9a-f]{2}:){15}[0-9a-f]{2}$/);
    expect((await client.listSshKeys(token, { labelSelector: 'owner=cannes' })).map((k) => k.id)).toEqual([
      key.id,
    ]);
    const r = await client.createServer(token, {
      name: name('keyed'),
      server_type: 'cx23',
      image: 'ubuntu-24.04',
      ssh_keys: [key.name],
      start_after_create: false,
    });
    expect(r.rootPassword).toBeNull();
    await client.waitForActions(token, [r.action]);
    expect(provider.spec(r.server.id)?.sshKeys).toEqual([key.public_key]);
    await client.deleteSshKey(token, key.id);
    expect(await client.listSshKeys(token, { name: key.name })).toEqual([]);
  });

  it('boots straight into rescue: created off, rescue enabled, powered on', async () => {
    const r = await client.createServer(token, {
      name: name('rescue'),
      server_type: 'cx23',
      image: 'docker-ce',
      start_after_create: false,
    });
    expect(r.nextActions).toEqual([]);
    await client.waitForActions(token, [r.action]);
    expect((await client.getServer(token, r.server.id)).status).toBe('off');
    expect(provider.state(r.server.id)).toBe('off');

    const rescue = await client.enableRescue(token, r.server.id);
    expect(rescue.action.command).toBe('enable_rescue');
    expect(String(rescue.rootPassword)).toBe('[redacted]');
    await client.waitForActions(token, [rescue.action]);
    expect((await client.getServer(token, r.server.id)).rescue_enabled).toBe(true);

    await client.waitForActions(token, [await client.powerOn(token, r.server.id)]);
    const boots = provider.calls.filter((c) => c.serverId === r.server.id && c.op === 'boot');
    expect(boots.map((c) => c.mode)).toEqual(['rescue']);
    const s = await client.getServer(token, r.server.id);
    expect(s.status).toBe('running');
    // Rescue is for one boot only.
    expect(s.rescue_enabled).toBe(false);

    await client.waitForActions(token, [await client.reset(token, r.server.id)]);
    expect(provider.state(r.server.id)).toBe('os');
  });

  it('resets and reboots into rescue when it is enabled, into the OS otherwise', async () => {
    const r = await client.createServer(token, {
      name: name('rr'),
      server_type: 'cpx22',
      image: 'debian-12',
    });
    await client.waitForActions(token, [r.action, ...r.nextActions]);
    const id = r.server.id;
    await client.waitForActions(token, [(await client.enableRescue(token, id)).action]);
    await client.waitForActions(token, [await client.reboot(token, id)]);
    expect(provider.state(id)).toBe('rescue');
    await client.waitForActions(token, [await client.reboot(token, id)]);
    expect(provider.state(id)).toBe('os');
    await client.waitForActions(token, [(await client.enableRescue(token, id)).action]);
    await client.waitForActions(token, [await client.disableRescue(token, id)]);
    await client.waitForActions(token, [await client.reset(token, id)]);
    expect(provider.state(id)).toBe('os');
  });

  it('powers off, shuts down and powers on again', async () => {
    const r = await client.createServer(token, {
      name: name('pw'),
      server_type: 'cx23',
      image: 'ubuntu-24.04',
    });
    await client.waitForActions(token, [r.action, ...r.nextActions]);
    const id = r.server.id;
    const off = await client.powerOff(token, id);
    expect(off.command).toBe('stop_server');
    await client.waitForActions(token, [off]);
    expect((await client.getServer(token, id)).status).toBe('off');
    expect(provider.state(id)).toBe('off');
    await client.waitForActions(token, [await client.powerOn(token, id)]);
    expect((await client.getServer(token, id)).status).toBe('running');
    await client.waitForActions(token, [await client.shutdown(token, id)]);
    expect((await client.getServer(token, id)).status).toBe('off');
    // Powering off a server that is off succeeds and changes nothing.
    const again = await client.waitForActions(token, [await client.powerOff(token, id)]);
    expect(again[0]?.status).toBe('success');
    expect((await client.getServer(token, id)).status).toBe('off');
  });

  it('reports a server as locked while an action runs and retries a locked refusal', async () => {
    sim.admin.setActionDuration({ create_server: 600, default: 40 });
    const r = await client.createServer(token, {
      name: name('lock'),
      server_type: 'cx23',
      image: 'ubuntu-24.04',
      start_after_create: false,
    });
    const raw = await fetch(`${sim.endpoint}/servers/${r.server.id}/actions/poweron`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token.reveal()}` },
    });
    expect(raw.status).toBe(423);
    expect(await raw.json()).toMatchObject({ error: { code: 'locked' } });
    expect((await client.getServer(token, r.server.id)).locked).toBe(true);
    sim.admin.setActionDuration(40);
    // The client waits the lock out with backoff.
    const slowRegistry = new Registry();
    const slow = new HcloudClient({
      endpoint: sim.endpoint,
      registry: slowRegistry,
      retry: { baseMs: 20, capMs: 400, maxRetries: 12 },
    });
    const on = await slow.powerOn(token, r.server.id);
    expect(on.command).toBe('start_server');
    expect(await slowRegistry.getSingleMetricAsString('cannes_hcloud_retries_total')).toContain(
      'reason="HcloudLocked"',
    );
  });

  it('renames a server and replaces its labels', async () => {
    const r = await client.createServer(token, {
      name: name('upd'),
      server_type: 'cx23',
      image: 'ubuntu-24.04',
      labels: { a: '1' },
      start_after_create: false,
    });
    const s = await client.updateServer(token, r.server.id, { name: name('upd2'), labels: { b: '2' } });
    expect(s.name).toBe(name('upd2'));
    expect(s.labels).toEqual({ b: '2' });
    expect((await client.listAllServers(token, { labelSelector: 'b=2' })).map((x) => x.id)).toContain(s.id);
  });

  it('deletes a server: it is gone from the API and from the host provider', async () => {
    const r = await client.createServer(token, {
      name: name('del'),
      server_type: 'cx23',
      image: 'ubuntu-24.04',
    });
    await client.waitForActions(token, [r.action, ...r.nextActions]);
    const a = await client.deleteServer(token, r.server.id);
    expect(a?.command).toBe('delete_server');
    const e = await caught(client.getServer(token, r.server.id));
    expect(e.reason).toBe('HcloudNotFound');
    await client.waitForActions(token, [a!]);
    expect(provider.state(r.server.id)).toBe('destroyed');
  });

  it('refuses a duplicate name with uniqueness_error and does not resend the create', async () => {
    const n = name('dup');
    await client.createServer(token, { name: n, server_type: 'cx23', image: 'ubuntu-24.04' });
    const before = sim.requests.length;
    const e = await caught(
      client.createServer(token, { name: n, server_type: 'cx23', image: 'ubuntu-24.04' }),
    );
    expect(e.code).toBe('uniqueness_error');
    expect(e.reason).toBe('HcloudUniquenessError');
    expect(e.status).toBe(409);
    expect(e.correlationId).toMatch(/^[0-9a-f]{16}$/);
    expect(sim.requests.length - before).toBe(1);
  });

  it('rejects an unknown server type as terminal invalid input', async () => {
    const e = await caught(
      client.createServer(token, { name: name('bad'), server_type: 'cx9000', image: 'ubuntu-24.04' }),
    );
    expect(e.code).toBe('invalid_input');
    expect(e.terminal).toBe(true);
  });

  it('refuses a server type not sold in the location, as Hetzner does (invalid_input)', async () => {
    const e = await caught(
      client.createServer(token, {
        name: name('arm'),
        server_type: 'cax11',
        image: 'ubuntu-24.04',
        location: 'ash',
      }),
    );
    expect(e.code).toBe('invalid_input');
    expect(e.message).toContain('unsupported location for server type');
  });

  it('refuses a deprecated server type (cx22) for a new server and no longer lists it', async () => {
    const e = await caught(
      client.createServer(token, {
        name: name('old'),
        server_type: 'cx22',
        image: 'ubuntu-24.04',
        location: 'fsn1',
      }),
    );
    expect(e.code).toBe('invalid_input');
    expect(e.message).toContain('unsupported location for server type');
    expect(e.terminal).toBe(true);
    const types = await client.listServerTypes(token);
    expect(types.some((x) => x.name === 'cx22')).toBe(false);
    expect(types.find((x) => x.name === 'cax11')?.architecture).toBe('arm');
    expect(types.find((x) => x.name === 'cx23')?.architecture).toBe('x86');
  });

  it('rejects a bad token with 401 as terminal, without retrying', async () => {
    const before = sim.requests.length;
    const e = await caught(client.listServers(new Secret(randomToken()), {}));
    expect(e.reason).toBe('HcloudUnauthorized');
    expect(e.status).toBe(401);
    expect(e.terminal).toBe(true);
    expect(sim.requests.length - before).toBe(1);
  });
});

describe('listing', () => {
  const group = `g${suffix}`;
  beforeAll(async () => {
    const c = new HcloudClient({ ...FAST, endpoint: sim.endpoint });
    for (let i = 0; i < 60; i++) {
      await c.createServer(sim.token, {
        name: `list-${group}-${String(i).padStart(2, '0')}`,
        server_type: 'cx23',
        image: 'ubuntu-24.04',
        start_after_create: false,
        labels: {
          group,
          tier: i % 3 === 0 ? 'a' : i % 3 === 1 ? 'b' : 'c',
          ...(i % 2 === 0 ? { even: 'yes' } : {}),
        },
      });
    }
  });

  it('paginates over 3 pages with the documented meta', async () => {
    const p1 = await client.listServers(token, { labelSelector: `group=${group}`, perPage: 25 });
    expect(p1.items).toHaveLength(25);
    expect(p1.pagination).toEqual({
      page: 1,
      per_page: 25,
      previous_page: null,
      next_page: 2,
      last_page: 3,
      total_entries: 60,
    });
    const p3 = await client.listServers(token, { labelSelector: `group=${group}`, perPage: 25, page: 3 });
    expect(p3.items).toHaveLength(10);
    expect(p3.pagination.next_page).toBeNull();
    expect(p3.pagination.previous_page).toBe(2);
    const all = await client.listAllServers(token, { labelSelector: `group=${group}`, perPage: 25 });
    expect(new Set(all.map((s) => s.id)).size).toBe(60);
    const defaults = await client.listServers(token, { labelSelector: `group=${group}` });
    expect(defaults.pagination.per_page).toBe(25);
    const capped = await client.listServers(token, { labelSelector: `group=${group}`, perPage: 500 });
    expect(capped.pagination.per_page).toBe(50);
  });

  it.each([
    ['tier=a', 20],
    ['tier==b', 20],
    ['tier!=a', 40],
    ['even', 30],
    ['!even', 30],
    ['tier in (a,b)', 40],
    ['tier notin (a,b)', 20],
    ['tier=a,even', 10],
    ['tier in (a, c),!even', 20],
  ])('filters by the label selector %s', async (sel, n) => {
    const all = await client.listAllServers(token, { labelSelector: `group=${group},${sel}` });
    expect(all).toHaveLength(n);
  });

  it('rejects a malformed label selector as invalid input', async () => {
    const e = await caught(client.listServers(token, { labelSelector: 'tier in (a' }));
    expect(e.code).toBe('invalid_input');
  });

  it('filters by status', async () => {
    const off = await client.listAllServers(token, { labelSelector: `group=${group}`, status: ['off'] });
    expect(off).toHaveLength(60);
    const running = await client.listAllServers(token, {
      labelSelector: `group=${group}`,
      status: ['running'],
    });
    expect(running).toEqual([]);
  });

  it('filters by exact name and sorts by name descending', async () => {
    const one = await client.listAllServers(token, { name: `list-${group}-07` });
    expect(one.map((s) => s.name)).toEqual([`list-${group}-07`]);
    const desc = await client.listServers(token, {
      labelSelector: `group=${group}`,
      sort: 'name:desc',
      perPage: 2,
    });
    expect(desc.items.map((s) => s.name)).toEqual([`list-${group}-59`, `list-${group}-58`]);
  });
});

describe('actions and lookups', () => {
  it('gets actions one by one and in a batch', async () => {
    const r = await client.createServer(token, {
      name: name('act'),
      server_type: 'cx23',
      image: 'ubuntu-24.04',
    });
    const one = await client.getAction(token, r.action.id);
    expect(one.resources).toEqual([{ id: r.server.id, type: 'server' }]);
    const done = await client.waitForActions(token, [r.action.id, r.nextActions[0]!.id]);
    expect(done.map((a) => a.status)).toEqual(['success', 'success']);
    const batch = await client.getActions(token, [r.action.id, r.nextActions[0]!.id]);
    expect(batch.map((a) => a.command).sort()).toEqual(['create_server', 'start_server']);
    expect(batch.every((a) => a.progress === 100 && a.finished !== null)).toBe(true);
  });

  it('polls the actions of every concurrent waiter (one token) in one GET /actions', async () => {
    const created = await Promise.all(
      [1, 2, 3, 4, 5].map((i) =>
        client.createServer(token, { name: name(`batch${i}`), server_type: 'cx23', image: 'ubuntu-24.04' }),
      ),
    );
    // The window is far longer than the actions: every waiter is served by the first poll.
    const batching = new HcloudClient({
      ...FAST,
      poll: { ...FAST.poll, batchMs: 500 },
      endpoint: sim.endpoint,
    });
    const before = sim.requests.length;
    const done = await Promise.all(
      created.map((r) => batching.waitForActions(token, [r.action, ...r.nextActions])),
    );
    expect(done.flat().every((a) => a.status === 'success')).toBe(true);
    const polls = sim.requests.slice(before).filter((r) => r.method === 'GET' && r.route === '/actions');
    expect(polls).toHaveLength(1);
  });

  it('polls a long action a few times once, then about once per action (the count does not grow with its duration)', async () => {
    const slow = await startSimulator({
      provider: new StateOnlyProvider(),
      actionDurationMs: { create_server: 1000, default: 20 },
    });
    try {
      // The old backoff at these settings (10 ms growing ×1.5 up to 50 ms) polled a 1 s create ~22 times.
      const c = new HcloudClient({
        ...FAST,
        poll: { ...FAST.poll, initialMs: 10, priorMs: { create_server: 1000 } },
        endpoint: slow.endpoint,
      });
      const polls = () => slow.requests.filter((r) => r.method === 'GET' && r.route === '/actions').length;
      const create = async (n: string) => {
        const r = await c.createServer(slow.token, {
          name: name(n),
          server_type: 'cx23',
          image: 'ubuntu-24.04',
        });
        const before = polls();
        await c.waitForActions(slow.token, [r.action]);
        return polls() - before;
      };
      // Nothing learned: 10 ms, 40, 160, 640, then the prior (1 s) and a quarter of it after that.
      expect(await create('poll1')).toBeLessThanOrEqual(7);
      // Learned: the first poll comes at about what the first create took.
      const later = [await create('poll2'), await create('poll3'), await create('poll4')];
      expect(later.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(6);
    } finally {
      await slow.close();
    }
  });

  it('powers an off server on without polling (sshd answering is its end), and waits for a reset', async () => {
    const r = await client.createServer(token, {
      name: name('power'),
      server_type: 'cx23',
      image: 'ubuntu-24.04',
      start_after_create: false,
    });
    await client.waitForActions(token, [r.action]);
    const port = new HcloudPort(client);
    const since = sim.requests.length;
    await port.powerOnOrReset(token, r.server.id, 'off');
    expect(sim.requests.slice(since).map((q) => `${q.method} ${q.route}`)).toEqual([
      'POST /servers/{id}/actions/poweron',
    ]);
    // A running server is reset and the reset waited for: its old system must be gone first.
    await waitFor(
      'the server running',
      async () => ((await client.getServer(token, r.server.id)).status === 'running' ? true : undefined),
      10_000,
    );
    const before = sim.requests.length;
    await port.powerOnOrReset(token, r.server.id, 'running');
    const after = sim.requests.slice(before).map((q) => `${q.method} ${q.route}`);
    expect(after[0]).toBe('POST /servers/{id}/actions/reset');
    expect(after.length).toBeGreaterThan(1);
    expect(after.slice(1).every((x) => x === 'GET /actions')).toBe(true);
    // Done when it returns: the server holds no running action.
    expect((await client.getServer(token, r.server.id)).locked).toBe(false);
  });

  it('with bootToSshMs, a power-on ends at power-on (running) and the system comes up after it', async () => {
    const hosts = new StateOnlyProvider();
    const slow = await startSimulator({
      provider: hosts,
      actionDurationMs: 20,
      bootToSshMs: { rescue: 400, os: 400 },
    });
    try {
      const c = new HcloudClient({ ...FAST, endpoint: slow.endpoint });
      const r = await c.createServer(slow.token, {
        name: name('boot'),
        server_type: 'cx23',
        image: 'ubuntu-24.04',
        start_after_create: false,
      });
      await c.waitForActions(slow.token, [r.action]);
      await c.waitForActions(slow.token, [await c.powerOn(slow.token, r.server.id)]);
      expect((await c.getServer(slow.token, r.server.id)).status).toBe('running');
      const booted = () => hosts.calls.filter((x) => x.op === 'boot').length;
      expect(booted()).toBe(0);
      // An action sent meanwhile waits for the boot, as on a real server.
      await c.waitForActions(slow.token, [await c.reset(slow.token, r.server.id)]);
      expect(booted()).toBe(1);
      // A reset cuts the running system at once: powered off before the next boot.
      expect(hosts.calls.filter((x) => x.op !== 'create').map((x) => x.op)).toEqual(['boot', 'powerOff']);
    } finally {
      await slow.close();
    }
  });

  it('surfaces the error code of an action that fails', async () => {
    sim.admin.setFaults({
      failActions: [{ command: 'start_server', code: 'action_failed', message: 'host on fire', count: 1 }],
    });
    const r = await client.createServer(token, {
      name: name('fail'),
      server_type: 'cx23',
      image: 'ubuntu-24.04',
    });
    const e = await caught(client.waitForActions(token, [r.action, ...r.nextActions]));
    expect(e.reason).toBe('HcloudActionFailed');
    expect(e.actionId).toBe(r.nextActions[0]!.id);
    expect(e.actionError).toEqual({ code: 'action_failed', message: 'host on fire' });
    const metrics = await registry.getSingleMetricAsString('cannes_hcloud_action_wait_seconds');
    expect(metrics).toContain('command="start_server",status="error"');
  });

  it('gives up on a server stuck in starting with HcloudActionTimeout', async () => {
    const n = name('stuck');
    sim.admin.setFaults({ stuckStartingNames: [n] });
    const r = await client.createServer(token, { name: n, server_type: 'cx23', image: 'ubuntu-24.04' });
    const e = await caught(client.waitForActions(token, [r.action, ...r.nextActions], { timeoutMs: 400 }));
    expect(e.reason).toBe('HcloudActionTimeout');
    const s = await client.getServer(token, r.server.id);
    expect(s.status).toBe('starting');
    expect(s.locked).toBe(true);
  });

  it('reports an action id the API does not know as not found instead of waiting forever', async () => {
    const e = await caught(client.waitForActions(token, [1]));
    expect(e.reason).toBe('HcloudNotFound');
    expect(e.actionId).toBe(1);
  });

  it('fails the action when the host behind the server fails to boot', async () => {
    class BrokenBoot extends StateOnlyProvider {
      override async boot(): Promise<void> {
        throw new Error('kernel panic');
      }
    }
    const broken = await startSimulator({ provider: new BrokenBoot(), actionDurationMs: 10 });
    try {
      const c = new HcloudClient({ ...FAST, endpoint: broken.endpoint });
      const r = await c.createServer(broken.token, {
        name: 'broken',
        server_type: 'cx23',
        image: 'ubuntu-24.04',
      });
      const e = await caught(c.waitForActions(broken.token, [r.action, ...r.nextActions]));
      expect(e.actionError?.code).toBe('action_failed');
      // The host's own error text stays inside the simulator.
      expect(e.message).not.toContain('kernel panic');
    } finally {
      await broken.close();
    }
  });

  it('looks up server types, locations and images by name', async () => {
    const types = await client.listServerTypes(token, { name: 'cax11' });
    expect(types.map((x) => [x.name, x.architecture])).toEqual([['cax11', 'arm']]);
    expect((await client.listLocations(token, { name: 'hel1' })).map((x) => x.network_zone)).toEqual([
      'eu-central',
    ]);
    const arm = await client.listImages(token, { name: 'ubuntu-24.04', architecture: 'arm' });
    expect(arm.map((x) => x.architecture)).toEqual(['arm']);
    expect(await client.listImages(token, { name: 'no-such-image', architecture: 'x86' })).toEqual([]);
    expect((await client.listLocations(token)).length).toBeGreaterThanOrEqual(6);
    expect((await client.listServerTypes(token)).some((x) => x.name === 'cx23')).toBe(true);
  });
});

describe('errors, retries and what leaves the client', () => {
  const statusOf: Record<string, number> = {};

  it.each(Object.entries(HCLOUD_ERROR_CODES))('maps %s to %o', async (code, info) => {
    sim.admin.setFaults({ errors: [{ route: '/servers', method: 'GET', code, count: 1 }] });
    const once = new HcloudClient({ endpoint: sim.endpoint, retry: { maxRetries: 0 } });
    const e = await caught(once.listServers(token));
    expect(e.code).toBe(code);
    expect(e.reason).toBe(info.reason);
    expect(e.terminal).toBe(info.terminal);
    expect(e.retryable(true)).toBe(info.retry !== 'never');
    expect(e.retryable(false)).toBe(info.retry === 'always');
    expect(e.status).toBeGreaterThanOrEqual(400);
    statusOf[code] = e.status;
  });

  it('retries 5xx on reads and survives, but not on a create', async () => {
    sim.admin.setFaults({ errors: [{ route: '/servers', method: 'GET', code: 'server_error', count: 2 }] });
    await expect(client.listServers(token)).resolves.toBeDefined();
    sim.admin.setFaults({ errors: [{ route: '/servers', method: 'POST', code: 'unavailable', count: 1 }] });
    const before = sim.requests.length;
    const e = await caught(
      client.createServer(token, { name: name('x5'), server_type: 'cx23', image: 'ubuntu-24.04' }),
    );
    expect(e.reason).toBe('HcloudUnavailable');
    expect(sim.requests.length - before).toBe(1);
  });

  it('survives a 429 storm within its retry budget', async () => {
    sim.admin.setFaults({ rateLimitStorm: 4 });
    const before = sim.admin.stats();
    const page = await client.listServers(token);
    expect(page.items.length).toBeGreaterThan(0);
    const after = sim.admin.stats();
    expect(after.refusedByStorm - before.refusedByStorm).toBe(4);
    expect(after.refusedByBucket).toBe(before.refusedByBucket);
    expect(await registry.getSingleMetricAsString('cannes_hcloud_retries_total')).toContain(
      'reason="HcloudRateLimited"',
    );
  });

  it('gives up after the configured retries when the storm outlasts them', async () => {
    sim.admin.setFaults({ rateLimitStorm: 10 });
    const e = await caught(
      new HcloudClient({
        ...FAST,
        endpoint: sim.endpoint,
        retry: { baseMs: 1, capMs: 5, maxRetries: 2 },
      }).listServers(token),
    );
    expect(e.reason).toBe('HcloudRateLimited');
    sim.admin.clearFaults();
  });

  it('labels metrics with route templates only and never with the token', async () => {
    const r = await client.createServer(token, {
      name: name('m'),
      server_type: 'cx23',
      image: 'ubuntu-24.04',
      start_after_create: false,
    });
    await client.waitForActions(token, [r.action]);
    await client.enableRescue(token, r.server.id);
    const text = await registry.metrics();
    expect(text).toContain('endpoint="/servers/{id}/actions/enable_rescue"');
    expect(text).toContain('endpoint="/servers",method="POST",code="201"');
    expect(text).not.toContain(String(r.server.id));
    expect(text).not.toContain(token.reveal());
    expect(text).toMatch(/cannes_hcloud_rate_limit_remaining\{budget="[0-9a-f]{16}"\} \d+/);
  });

  it('sends the token only in the Authorization header', async () => {
    sim.admin.clearRequests();
    await client.listServers(token, { labelSelector: 'x=y' });
    await client.createServer(token, { name: name('tok'), server_type: 'cx23', image: 'ubuntu-24.04' });
    expect(sim.requests.length).toBeGreaterThanOrEqual(2);
    for (const req of sim.requests) {
      expect(req.url).not.toContain(token.reveal());
      expect(req.body).not.toContain(token.reveal());
      expect(req.headers['authorization']).toBe(`Bearer ${token.reveal()}`);
      const others = Object.entries(req.headers).filter(([k]) => k !== 'authorization');
      expect(JSON.stringify(others)).not.toContain(token.reveal());
    }
  });

  it('never puts the token in an error message', async () => {
    const bad = new Secret(randomToken());
    const e = await caught(client.getServer(bad, 1));
    expect(`${e.message} ${JSON.stringify(e)}`).not.toContain(bad.reveal());
    expect(isHcloudError(e, 'unauthorized')).toBe(true);
  });
});
