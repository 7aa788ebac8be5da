import { beforeEach, describe, expect, it } from 'vitest';
import { CannesError, reasonOf } from '../../../common/errors.ts';
import { Secret } from '../../../common/secret.ts';
import {
  ANNOTATION_ARCHITECTURE,
  ANNOTATION_DIRECT_KEYS,
  ANNOTATION_IPV4,
  ANNOTATION_KEY_SET,
  ANNOTATION_RECREATE_SERVER,
  ANNOTATION_SERVER_GONE,
  ANNOTATION_SERVER_ID,
  FINALIZER,
} from '../../../operator/api/schema.ts';
import {
  DELIVERED_ANNOTATION,
  type DeliveredKey,
  KEY_FILE_PATH,
} from '../../../operator/controllers/keys.ts';
import { reconcileModelKey } from '../../../operator/controllers/modelkey.ts';
import type { DeployBundle, VpsObject } from '../../../operator/controllers/ports.ts';
import { DEPLOYED_ANNOTATION, reconcileVps, type VpsDeps } from '../../../operator/controllers/vps.ts';
import { FakeHcloud, FakeKube, FakeRemote, FakeStore, Faults, fakeVpsDeps, vpsSpec } from './fakes.ts';

const HOUR = 3_600_000;
let now = new Date('2026-11-25T10:00:00Z');
const clock = () => now;
const canary = (what: string) => `${what}${crypto.randomUUID().replace(/-/g, '')}`;

/** The architecture each deploy was rendered for, in order. */
let bundledFor: string[] = [];

function bundle(
  _vps: VpsObject,
  keys: readonly DeliveredKey[],
  gatewayToken: Secret,
  host: { architecture: 'x86' | 'arm' },
): DeployBundle {
  bundledFor.push(host.architecture);
  const file = {
    version: 1,
    keys: Object.fromEntries(keys.map((k) => [k.name, { provider: k.provider, apiKey: k.apiKey?.reveal() }])),
  };
  return {
    files: [
      { path: KEY_FILE_PATH, content: Secret.of(JSON.stringify(file)), mode: 0o600, owner: 'root' },
      { path: '/opt/cannes/gateway/token', content: gatewayToken, mode: 0o600, owner: '1000' },
    ],
    activate: 'true',
    verify: 'true',
  };
}

/** A ModelKey with the Anthropic key of the `llm` Secret, for the Vps `vps`. */
function addAnthropicKey(name: string, vps: string) {
  kube.addModelKey(name, {
    vpsRef: { name: vps },
    provider: 'anthropic',
    secretRef: { name: 'llm', key: 'anthropic' },
    purgeSecretAfterDelivery: false,
  });
}

let kube: FakeKube;
let hcloud: FakeHcloud;
let store: FakeStore;
let remote: FakeRemote;
let faults: Faults;
let deps: VpsDeps;
let token: string;

/** A fresh world: fakes, Secrets, Vps `agent` (no tailnet) and its two ModelKeys. */
function freshWorld() {
  now = new Date('2026-11-25T10:00:00Z');
  bundledFor = [];
  faults = new Faults();
  kube = new FakeKube();
  hcloud = new FakeHcloud(faults);
  store = new FakeStore(faults, clock);
  remote = new FakeRemote(faults, store);
  token = canary('tok').slice(0, 64);
  kube.putSecret('hcloud', { token }, 'cloud-token');
  kube.putSecret('llm', { anthropic: canary('sk-ant-fake-'), openai: canary('sk-fake-') }, 'llm-key');
  kube.addVps('agent');
  addAnthropicKey('claude', 'agent');
  kube.addModelKey('gpt', {
    vpsRef: { name: 'agent' },
    provider: 'openai',
    secretRef: { name: 'llm', key: 'openai' },
    purgeSecretAfterDelivery: true,
  });
  deps = fakeVpsDeps({ kube, hcloud, remote, store }, bundle, clock);
}
beforeEach(freshWorld);

/** Reconciles until done or the same error repeats, like the queue would (crash = fresh process). */
async function converge(name = 'agent', max = 10) {
  let last: unknown;
  for (let i = 0; i < max; i++) {
    try {
      return await reconcileVps(kube.vps(name), deps);
    } catch (err) {
      last = err;
    }
  }
  throw last;
}

describe('Vps reconcile', () => {
  it('goes to Ready through every step, with booleans-only status and one server', async () => {
    const result = await converge();
    const vps = kube.vps('agent');
    expect(vps.status).toMatchObject({
      serverCreated: true,
      hasSshKey: true,
      gatewayDeployed: true,
      proxyReady: true,
      cloudTokenPurged: true,
      ready: true,
    });
    for (const [k, v] of Object.entries(vps.status)) {
      if (k !== 'conditions' && k !== 'observedGeneration') expect(typeof v, k).toBe('boolean');
    }
    expect(hcloud.servers.size).toBe(1);
    const server = [...hcloud.servers.values()][0]!;
    expect(vps.metadata.annotations[ANNOTATION_SERVER_ID]).toBe(String(server.id));
    expect(vps.metadata.annotations[ANNOTATION_IPV4]).toBe(server.ipv4);
    expect(vps.metadata.finalizers).toContain(FINALIZER);
    // Post-provisioning rotation replaced the rescue-born key.
    const keys = store.keys.get(vps.metadata.uid) ?? [];
    expect(keys.filter((k) => k.state === 'active')).toHaveLength(1);
    expect(keys.find((k) => k.state === 'active')?.bornInRescue).toBe(false);
    // The key file on the host holds both real keys.
    const file = JSON.parse(remote.files.get(KEY_FILE_PATH) ?? '{}');
    expect(Object.keys(file.keys).sort()).toEqual(['claude', 'gpt']);
    // Requeue exactly when the next rotation is due.
    expect(result).toEqual({ type: 'requeueAfter', ms: 720 * HOUR });
  });

  it('costs zero Hetzner calls and zero SSH connections when nothing changed', async () => {
    await converge();
    const h = hcloud.calls.length;
    const r = remote.calls.length;
    for (let i = 0; i < 3; i++) await reconcileVps(kube.vps('agent'), deps);
    expect(hcloud.calls.length).toBe(h);
    expect(remote.calls.length).toBe(r);
  });

  it('records the server type architecture at create and deploys for it (arm → the arm build)', async () => {
    kube.addVps('arm', vpsSpec({ serverType: 'cax11' }));
    addAnthropicKey('arm-claude', 'arm');
    await converge('arm');
    expect(kube.vps('arm').metadata.annotations[ANNOTATION_ARCHITECTURE]).toBe('arm');
    expect(bundledFor).toEqual(['arm']);
    await converge();
    expect(kube.vps('agent').metadata.annotations[ANNOTATION_ARCHITECTURE]).toBe('x86');
    expect(bundledFor).toEqual(['arm', 'x86']);
  });

  it('redeploys each server exactly once for an operator whose host files changed, never for one whose did not', async () => {
    await converge();
    const deploys = () => remote.calls.filter((c) => c === 'deploy').length;
    const before = deploys();
    // The same operator restarted (same bundleVersion): no SSH at all.
    for (let i = 0; i < 3; i++) await reconcileVps(kube.vps('agent'), deps);
    expect(deploys()).toBe(before);
    // A release whose templates changed (bundleVersion hashes the rendered files): one deploy.
    deps = { ...deps, bundleVersion: 'v2' };
    for (let i = 0; i < 3; i++) await reconcileVps(kube.vps('agent'), deps);
    expect(deploys()).toBe(before + 1);
  });

  it('reads the architecture once for a server recorded without it, then costs nothing idle', async () => {
    await converge();
    // A Vps from before the annotation existed: deploy again (new bundle version), token back.
    kube.putSecret('hcloud', { token }, 'cloud-token');
    await kube.setAnnotations('Vps', kube.vps('agent').metadata, { [ANNOTATION_ARCHITECTURE]: null });
    deps = { ...deps, bundleVersion: 'v2' };
    const gets = () => hcloud.calls.filter((c) => c === 'get').length;
    const before = gets();
    await converge();
    // Once for the architecture, once before the deploy (the address check, the token being back).
    expect(gets()).toBe(before + 2);
    expect(kube.vps('agent').metadata.annotations[ANNOTATION_ARCHITECTURE]).toBe('x86');
    expect(bundledFor.at(-1)).toBe('x86');
    const h = hcloud.calls.length;
    const r = remote.calls.length;
    for (let i = 0; i < 3; i++) await reconcileVps(kube.vps('agent'), deps);
    expect(hcloud.calls.length).toBe(h);
    expect(remote.calls.length).toBe(r);
  });

  it('does not deploy to an address Hetzner no longer reports for the server: a Warning, no SSH', async () => {
    await converge();
    kube.putSecret('hcloud', { token }, 'cloud-token');
    const server = [...hcloud.servers.values()][0]!;
    hcloud.servers.set(server.id, { ...server, ipv4: '198.18.77.7' });
    deps = { ...deps, bundleVersion: 'v2' };
    const r = remote.calls.length;
    const err = await reconcileVps(kube.vps('agent'), deps).catch((e: unknown) => e);
    expect(reasonOf(err)).toBe('AddressMismatch');
    expect(remote.calls.length).toBe(r);
    const warning = kube.events.find((e) => e.type === 'Warning' && e.reason === 'AddressMismatch');
    expect(warning?.note).toContain('198.18.77.7');
    const ready = kube.vps('agent').status.conditions?.find((c) => c.type === 'Ready');
    expect([ready?.status, ready?.reason]).toEqual(['False', 'AddressMismatch']);
  });

  it('says ServerGone for a server Hetzner lost, waits, and recreates only for the id the owner names', async () => {
    await converge();
    const uid = kube.vps('agent').metadata.uid;
    const old = [...hcloud.servers.values()][0]!;
    const oldKey = store.keys.get(uid)?.find((k) => k.state === 'active')?.id;
    hcloud.servers.delete(old.id);
    // Noticed when the operator next connects (here a redeploy), the token being back to ask.
    kube.putSecret('hcloud', { token }, 'cloud-token');
    deps = { ...deps, bundleVersion: 'v2' };
    const err = await reconcileVps(kube.vps('agent'), deps).catch((e: unknown) => e);
    expect(reasonOf(err)).toBe('ServerGone');
    expect((err as CannesError).message).toContain(`${ANNOTATION_RECREATE_SERVER}=${old.id}`);
    expect(kube.vps('agent').metadata.annotations[ANNOTATION_SERVER_GONE]).toBe(String(old.id));
    // It waits: no create, no SSH, however often it is reconciled, and a stale id changes nothing.
    await kube.setAnnotations('Vps', kube.vps('agent').metadata, { [ANNOTATION_RECREATE_SERVER]: '1' });
    const h = hcloud.calls.length;
    const r = remote.calls.length;
    for (let i = 0; i < 3; i++) await reconcileVps(kube.vps('agent'), deps);
    expect(hcloud.calls.length).toBe(h);
    expect(remote.calls.length).toBe(r);
    const cond = (type: string) => kube.vps('agent').status.conditions?.find((c) => c.type === type);
    expect([cond('ServerCreated')?.status, cond('ServerCreated')?.reason]).toEqual(['False', 'ServerGone']);
    expect([cond('Ready')?.status, cond('Ready')?.reason]).toEqual(['False', 'ServerGone']);
    // The owner consents for that server: a new one, a new rescue-born key, the old key forgotten.
    await kube.setAnnotations('Vps', kube.vps('agent').metadata, {
      [ANNOTATION_RECREATE_SERVER]: String(old.id),
    });
    await converge();
    await converge();
    const vps = kube.vps('agent');
    expect(vps.status.ready).toBe(true);
    expect(hcloud.servers.size).toBe(1);
    const fresh = [...hcloud.servers.values()][0]!;
    expect(fresh.id).not.toBe(old.id);
    expect(vps.metadata.annotations[ANNOTATION_SERVER_ID]).toBe(String(fresh.id));
    expect(vps.metadata.annotations[ANNOTATION_SERVER_GONE]).toBeUndefined();
    expect(vps.metadata.annotations[ANNOTATION_RECREATE_SERVER]).toBeUndefined();
    expect(remote.calls.filter((c) => c === 'rescueKeygen')).toHaveLength(2);
    expect(store.keys.get(uid)?.some((k) => k.id === oldKey)).toBe(false);
  });

  it('asks Hetzner whether an unreachable server is gone (with the token), never recreating it', async () => {
    await converge();
    const old = [...hcloud.servers.values()][0]!;
    hcloud.servers.delete(old.id);
    now = new Date(now.getTime() + 721 * HOUR); // a rotation is due: SSH, no address check first
    const unreachable = () => new CannesError('SshUnreachable', 'cannot reach 198.18.0.10:22: EHOSTUNREACH');
    faults.arm('remote.rotate', unreachable());
    // Token purged: the error says how to let the operator check.
    let err = await reconcileVps(kube.vps('agent'), deps).catch((e: unknown) => e);
    expect(reasonOf(err)).toBe('SshUnreachable');
    expect((err as CannesError).message).toContain('put the Hetzner token back');
    kube.putSecret('hcloud', { token }, 'cloud-token');
    faults.arm('remote.rotate', unreachable());
    err = await reconcileVps(kube.vps('agent'), deps).catch((e: unknown) => e);
    expect(reasonOf(err)).toBe('ServerGone');
    expect(kube.vps('agent').metadata.annotations[ANNOTATION_SERVER_GONE]).toBe(String(old.id));
    await reconcileVps(kube.vps('agent'), deps);
    const cond = kube.vps('agent').status.conditions?.find((c) => c.type === 'ServerCreated');
    expect(cond?.reason).toBe('ServerGone');
    expect(hcloud.calls.filter((c) => c === 'create')).toHaveLength(1);
  });

  it('never creates a second server after a crash between create and recording the id', async () => {
    faults.arm('store.setServer');
    await expect(reconcileVps(kube.vps('agent'), deps)).rejects.toThrow(/fault injected/);
    expect(hcloud.servers.size).toBe(1);
    await converge();
    expect(hcloud.servers.size).toBe(1);
    expect(hcloud.calls.filter((c) => c === 'create')).toHaveLength(1);
  });

  it('asks Hetzner for no server by label on a first provisioning, but does after a crash mid-create', async () => {
    await converge();
    expect(hcloud.calls.filter((c) => c === 'find')).toHaveLength(0);
    expect(hcloud.calls.filter((c) => c === 'create')).toHaveLength(1);
    kube.putSecret('hcloud', { token }, 'cloud-token');
    kube.addVps('second');
    faults.arm('store.setServer');
    await expect(reconcileVps(kube.vps('second'), deps)).rejects.toThrow(/fault injected/);
    await converge('second');
    expect(hcloud.calls.filter((c) => c === 'find')).toHaveLength(1);
    expect(hcloud.calls.filter((c) => c === 'create')).toHaveLength(2);
  });

  for (const point of ['remote.afterKeygen', 'hcloud.reboot', 'store.saveRescueResult']) {
    it(`recovers from a crash in the rescue step (${point}) with exactly one active key`, async () => {
      faults.arm(point);
      await expect(reconcileVps(kube.vps('agent'), deps)).rejects.toThrow(/fault injected/);
      expect(kube.vps('agent').status.ready).toBe(false);
      await converge();
      const keys = store.keys.get(kube.vps('agent').metadata.uid) ?? [];
      expect(keys.filter((k) => k.state === 'active')).toHaveLength(1);
      expect(kube.vps('agent').status.ready).toBe(true);
      expect(hcloud.servers.size).toBe(1);
    });
  }

  it('redeploys after a crash mid-deploy and records delivery only after success', async () => {
    faults.arm('remote.deploy');
    await expect(reconcileVps(kube.vps('agent'), deps)).rejects.toThrow(/fault injected/);
    expect(kube.vps('agent').metadata.annotations[DEPLOYED_ANNOTATION]).toBeUndefined();
    await converge();
    expect(kube.vps('agent').metadata.annotations[DEPLOYED_ANNOTATION]).toBeDefined();
  });

  it('stops with CloudTokenRequired, naming the Secret and never the token, when the token is missing', async () => {
    kube.putSecret('hcloud', {}, 'cloud-token');
    await expect(reconcileVps(kube.vps('agent'), deps)).rejects.toMatchObject({
      reason: 'CloudTokenRequired',
      terminal: true,
    });
    const ready = kube.vps('agent').status.conditions?.find((c) => c.type === 'Ready');
    expect(ready).toMatchObject({ status: 'False', reason: 'CloudTokenRequired' });
    expect(ready?.message).toContain('hcloud');
    expect(kube.events.at(-1)).toMatchObject({ type: 'Warning', reason: 'CloudTokenRequired' });
  });

  it('never puts a secret into status, conditions, annotations or events', async () => {
    await converge();
    const secrets = [token, ...[...kube.secrets.values()].flatMap((s) => [...s.data.values()])];
    const rescuePw = 'rescue-pw-';
    const visible = JSON.stringify([...kube.vpses.values(), ...kube.modelKeys.values(), kube.events]);
    for (const s of secrets) expect(visible).not.toContain(s);
    expect(visible).not.toContain(rescuePw);
    expect(visible).not.toContain('PRIVATE KEY');
  });

  it('rotates when the interval has passed, and requeues exactly until then otherwise', async () => {
    await converge();
    now = new Date(now.getTime() + 700 * HOUR);
    const before = remote.calls.filter((c) => c === 'rotate').length;
    expect(await reconcileVps(kube.vps('agent'), deps)).toEqual({ type: 'requeueAfter', ms: 20 * HOUR });
    expect(remote.calls.filter((c) => c === 'rotate').length).toBe(before);
    now = new Date(now.getTime() + 20 * HOUR);
    expect(await reconcileVps(kube.vps('agent'), deps)).toEqual({ type: 'requeueAfter', ms: 720 * HOUR });
    expect(remote.calls.filter((c) => c === 'rotate').length).toBe(before + 1);
  });

  it('waits for a ModelKey before deploying, and deploys when one appears', async () => {
    kube.modelKeys.clear();
    expect(await converge()).toEqual({ type: 'done' });
    const c = kube.vps('agent').status.conditions?.find((x) => x.type === 'GatewayDeployed');
    expect(c).toMatchObject({ status: 'False', reason: 'WaitingForModelKeys' });
    expect(remote.calls).not.toContain('deploy');
    addAnthropicKey('claude', 'agent');
    await converge();
    expect(kube.vps('agent').status.ready).toBe(true);
  });

  it('hardens the host while it waits for a ModelKey: once, then no SSH; the deploy takes over', async () => {
    kube.modelKeys.clear();
    const hardening: DeployBundle = {
      files: [
        { path: '/etc/cannes/nftables.conf', content: 'table inet cannes {}', mode: 0o600, owner: '0:0' },
      ],
      activate: 'nft -f /etc/cannes/nftables.conf; usermod -p "*" root',
      verify: 'true',
    };
    deps = { ...deps, hardening: () => hardening };
    expect(await converge()).toEqual({ type: 'done' });
    expect(remote.deployed).toEqual([hardening]);
    expect(kube.events.some((e) => e.reason === 'HostHardened')).toBe(true);
    const c = kube.vps('agent').status.conditions?.find((x) => x.type === 'GatewayDeployed');
    expect(c).toMatchObject({ status: 'False', reason: 'WaitingForModelKeys' });
    const r = remote.calls.length;
    for (let i = 0; i < 3; i++) await reconcileVps(kube.vps('agent'), deps);
    expect(remote.calls.length).toBe(r);
    // A changed hardening template reaches a server still waiting, once.
    const changed = { ...hardening, activate: `${hardening.activate}; true` };
    deps = { ...deps, hardening: () => changed };
    await reconcileVps(kube.vps('agent'), deps);
    await reconcileVps(kube.vps('agent'), deps);
    expect(remote.deployed).toEqual([hardening, changed]);
    addAnthropicKey('claude', 'agent');
    await converge();
    expect(kube.vps('agent').status.ready).toBe(true);
    expect(remote.deployed).toHaveLength(3);
    expect(remote.deployed.at(-1)).not.toBe(changed);
  });

  it('hardens a new server before its first deploy, then leaves it to the deploys', async () => {
    const hardening: DeployBundle = { files: [], activate: 'usermod -p "*" root', verify: 'true' };
    deps = { ...deps, hardening: () => hardening };
    await converge();
    expect(kube.vps('agent').status.ready).toBe(true);
    expect(remote.deployed[0]).toBe(hardening);
    expect(remote.deployed).toHaveLength(2);
    deps = { ...deps, hardening: () => ({ ...hardening, activate: 'changed' }), bundleVersion: 'v2' };
    await converge();
    expect(remote.deployed).toHaveLength(3);
    expect(remote.deployed.at(-1)?.activate).not.toBe('changed');
  });

  it('takes every key off the server when the last ModelKey goes, and releases its finalizer', async () => {
    await converge();
    for (const name of ['claude', 'gpt']) {
      await reconcileModelKey(kube.mk(name), { kube, now: clock });
      kube.markDeleting('ModelKey', name);
    }
    await converge();
    expect(JSON.parse(remote.files.get(KEY_FILE_PATH) ?? '{}').keys).toEqual({});
    expect(kube.vps('agent').status.ready).toBe(false);
    for (const name of ['claude', 'gpt']) await reconcileModelKey(kube.mk(name), { kube, now: clock });
    expect(kube.modelKeys.size).toBe(0);
  });

  it('keeps the cloud token while another Vps using it has not finished setup', async () => {
    kube.addVps('other');
    addAnthropicKey('other-key', 'other');
    await converge('agent');
    expect(kube.vps('agent').status.cloudTokenPurged).toBe(false);
    expect(kube.vps('agent').status.conditions?.find((c) => c.type === 'CloudTokenPurged')?.reason).toBe(
      'WaitingForOtherVps',
    );
    await converge('other');
    await converge('agent');
    expect(kube.vps('agent').status.cloudTokenPurged).toBe(true);
    expect(kube.secrets.get('ns/hcloud')?.data.has('token')).toBe(false);
  });

  it('purges once: a token put back after setup (for a new Vps applied with it) is left alone', async () => {
    await converge();
    expect(kube.secrets.get('ns/hcloud')?.data.has('token')).toBe(false);
    // The Secret comes back before the new Vps reaches the cache: the Ready Vps reconciles first.
    kube.putSecret('hcloud', { token }, 'cloud-token');
    await converge();
    expect(kube.secrets.get('ns/hcloud')?.data.get('token')).toBe(token);
    expect(kube.vps('agent').status.cloudTokenPurged).toBe(false);
    expect(kube.vps('agent').status.conditions?.find((c) => c.type === 'CloudTokenPurged')?.reason).toBe(
      'TokenResupplied',
    );
    // And stays left alone on every later reconcile (the condition it wrote is its memory).
    await reconcileVps(kube.vps('agent'), deps);
    await reconcileVps(kube.vps('agent'), deps);
    expect(kube.secrets.get('ns/hcloud')?.data.get('token')).toBe(token);
    // The new Vps uses it and purges it after its own setup.
    kube.addVps('second');
    addAnthropicKey('second-key', 'second');
    await converge('second');
    expect(kube.vps('second').status.ready).toBe(true);
    expect(kube.secrets.get('ns/hcloud')?.data.has('token')).toBe(false);
  });

  it('does not purge a token put back when its cached copy does not show its own purge yet', async () => {
    await converge();
    expect(kube.secrets.get('ns/hcloud')?.data.has('token')).toBe(false);
    // The informer has not delivered the status write of the purging reconcile yet.
    const now = kube.vps('agent');
    const stale = {
      ...now,
      status: {
        ...now.status,
        cloudTokenPurged: false,
        conditions: (now.status.conditions ?? []).filter((c) => c.type !== 'CloudTokenPurged'),
      },
    };
    kube.putSecret('hcloud', { token }, 'cloud-token');
    await reconcileVps(stale, deps);
    expect(kube.secrets.get('ns/hcloud')?.data.get('token')).toBe(token);
    expect(kube.vps('agent').status.conditions?.find((c) => c.type === 'CloudTokenPurged')?.reason).toBe(
      'TokenResupplied',
    );
  });

  it('keeps the token when purgeCloudTokenAfterSetup is false', async () => {
    kube.vpses.clear();
    kube.addVps('agent', vpsSpec({ purgeCloudTokenAfterSetup: false }));
    await converge();
    expect(kube.secrets.get('ns/hcloud')?.data.get('token')).toBe(token);
    expect(kube.vps('agent').status.cloudTokenPurged).toBe(false);
  });

  it('deletes the server and the row on delete (policy Delete), then drops the finalizer', async () => {
    kube.vpses.clear();
    kube.addVps('agent', vpsSpec({ purgeCloudTokenAfterSetup: false }));
    await converge();
    const uid = kube.vps('agent').metadata.uid;
    kube.markDeleting('Vps', 'agent');
    await converge();
    expect(hcloud.servers.size).toBe(0);
    expect(store.rows.has(uid)).toBe(false);
    expect(kube.vpses.has('ns/agent')).toBe(false);
  });

  it('waits with CloudTokenRequired when the token was purged, and deletes once a token is supplied', async () => {
    await converge();
    kube.markDeleting('Vps', 'agent');
    await reconcileVps(kube.vps('agent'), deps);
    expect(hcloud.servers.size).toBe(1);
    const c = kube.vps('agent').status.conditions?.find((x) => x.type === 'Deleting');
    expect(c).toMatchObject({ status: 'False', reason: 'CloudTokenRequired' });
    expect(c?.message).toContain('Retain');
    kube.putSecret('hcloud', { token }, 'cloud-token');
    await converge();
    expect(hcloud.servers.size).toBe(0);
  });

  it("never deletes another Vps's server named in a copied server-id annotation", async () => {
    kube.vpses.clear();
    kube.addVps('agent', vpsSpec({ purgeCloudTokenAfterSetup: false }));
    await converge();
    const victim = kube.vps('agent').metadata.annotations[ANNOTATION_SERVER_ID];
    // A copy of agent's YAML, its annotations included, whose own provisioning fails at once.
    const copy = kube.addVps('copy', vpsSpec({ purgeCloudTokenAfterSetup: false, location: 'nowhere' }));
    kube.vpses.set('ns/copy', {
      ...copy,
      metadata: {
        ...copy.metadata,
        annotations: { [ANNOTATION_SERVER_ID]: victim ?? '' },
        finalizers: [FINALIZER],
      },
    });
    kube.markDeleting('Vps', 'copy');
    await converge('copy');
    expect(hcloud.servers.has(Number(victim))).toBe(true);
    expect(hcloud.calls.filter((c) => c === 'delete')).toHaveLength(0);
    expect(kube.vpses.has('ns/copy')).toBe(false);
  });

  it('retains the server with deletionPolicy Retain', async () => {
    kube.vpses.clear();
    kube.addVps('agent', vpsSpec({ deletionPolicy: 'Retain' }));
    await converge();
    kube.markDeleting('Vps', 'agent');
    await converge();
    expect(hcloud.servers.size).toBe(1);
    expect(kube.vpses.has('ns/agent')).toBe(false);
  });

  it('writes its conditions as it goes on a first provisioning, and nothing when idle', async () => {
    const seen: string[][] = [];
    const patch = kube.patchVpsStatus.bind(kube);
    kube.patchVpsStatus = async (m, status) => {
      seen.push((status.conditions ?? []).filter((c) => c.status === 'True').map((c) => c.type));
      await patch(m, status);
    };
    await converge();
    // ServerCreated is visible before HasSshKey, and both before Ready.
    const at = (type: string) => seen.findIndex((types) => types.includes(type));
    expect(at('ServerCreated')).toBeGreaterThan(-1);
    expect(at('ServerCreated')).toBeLessThan(at('HasSshKey'));
    expect(at('HasSshKey')).toBeLessThan(at('Ready'));
    const writes = seen.length;
    await reconcileVps(kube.vps('agent'), deps);
    expect(seen.length).toBe(writes);
  });

  it('sets lastTransitionTime only when a condition flips', async () => {
    await converge();
    const t0 = kube.vps('agent').status.conditions?.find((c) => c.type === 'Ready')?.lastTransitionTime;
    now = new Date(now.getTime() + HOUR);
    await reconcileVps(kube.vps('agent'), deps);
    expect(kube.vps('agent').status.conditions?.find((c) => c.type === 'Ready')?.lastTransitionTime).toBe(t0);
  });
});

describe('Vps on a tailnet (spec.tailnet)', () => {
  const tailnet = {
    authKeySecretRef: { name: 'ts', key: 'authkey' },
    hostname: 'agent',
    tags: ['tag:cannes-vps'],
    loginServer: 'https://controlplane.tailscale.com',
    purgeAuthKeyAfterJoin: true,
    owners: [] as string[],
  };
  let authKey: string;
  beforeEach(() => {
    authKey = canary('tskey-auth-kFAKE-');
    kube.putSecret('ts', { authkey: authKey }, 'tailnet-auth-key');
    kube.vpses.delete('ns/agent');
    kube.addVps('agent', vpsSpec({ tailnet }));
  });
  const settle = async () => {
    for (let i = 0; i < 4; i++) await converge();
  };

  it('joins, records the URL, purges the key, redeploys once with the URL, then costs nothing', async () => {
    await settle();
    const vps = kube.vps('agent');
    expect(vps.metadata.annotations['cannes.dev/gateway-url']).toBe('https://agent.tail-fake.ts.net/');
    expect(vps.status).toMatchObject({ tailnetJoined: true, gatewayReachable: true, ready: true });
    expect(remote.tailnet?.joinedWith).toBe(authKey);
    expect(kube.secrets.get('ns/ts')?.data.has('authkey')).toBe(false);
    expect(remote.calls.filter((c) => c === 'joinTailnet')).toHaveLength(1);
    // The URL reached the gateway's config through a second deploy.
    expect(remote.calls.filter((c) => c === 'deploy')).toHaveLength(2);
    const h = hcloud.calls.length;
    const r = remote.calls.length;
    for (let i = 0; i < 3; i++) await reconcileVps(kube.vps('agent'), deps);
    expect(hcloud.calls.length).toBe(h);
    expect(remote.calls.length).toBe(r);
    expect(JSON.stringify([vps.status, vps.metadata.annotations, kube.events])).not.toContain(authKey);
  });

  it('makes exactly the Hetzner calls of a Vps without a tailnet: the join and its redeploy make none', async () => {
    await settle();
    expect(kube.vps('agent').status).toMatchObject({ tailnetJoined: true, ready: true });
    const withTailnet = [...hcloud.calls];
    freshWorld();
    await settle();
    expect(kube.vps('agent').status.ready).toBe(true);
    expect(withTailnet.length).toBeGreaterThan(0);
    expect(withTailnet).toEqual(hcloud.calls);
  });

  it('changes the hostname of a joined node with the key purged and the Secret gone (no key needed)', async () => {
    await settle();
    kube.secrets.delete('ns/ts');
    const v = kube.vps('agent');
    kube.vpses.set('ns/agent', { ...v, spec: { ...v.spec, tailnet: { ...tailnet, hostname: 'renamed' } } });
    await settle();
    expect(kube.vps('agent').metadata.annotations['cannes.dev/gateway-url']).toBe(
      'https://renamed.tail-fake.ts.net/',
    );
    expect(remote.tailnet?.hostname).toBe('renamed');
  });

  it('says what is wrong, never the key, for a refused key, a missing or an unlabelled Secret', async () => {
    kube.putSecret('ts', { authkey: 'not-a-tskey-but-long-enough' }, 'tailnet-auth-key');
    await expect(converge()).rejects.toThrow(/refused the auth key/);
    expect(kube.vps('agent').status.conditions?.find((c) => c.type === 'Ready')?.reason).toBe(
      'TailnetAuthKeyRejected',
    );
    kube.secrets.delete('ns/ts');
    await expect(converge()).rejects.toThrow(/Secret ts does not exist/);
    kube.putSecret('ts', { authkey: authKey }, 'cloud-token');
    await expect(converge()).rejects.toThrow(/not labelled .*tailnet-auth-key/);
    expect(JSON.stringify([kube.vps('agent').status, kube.events])).not.toContain(authKey);
  });

  it('keeps the key when purgeAuthKeyAfterJoin is false', async () => {
    kube.vpses.delete('ns/agent');
    kube.addVps('agent', vpsSpec({ tailnet: { ...tailnet, purgeAuthKeyAfterJoin: false } }));
    await settle();
    expect(kube.vps('agent').status.tailnetJoined).toBe(true);
    expect(kube.secrets.get('ns/ts')?.data.get('authkey')).toBe(authKey);
  });

  it('leaves no tailnet condition on a Vps without spec.tailnet', async () => {
    kube.vpses.delete('ns/agent');
    kube.addVps('agent');
    await converge();
    const vps = kube.vps('agent');
    expect(vps.status.tailnetJoined).toBeUndefined();
    expect(vps.status.conditions?.map((c) => c.type)).not.toContain('TailnetJoined');
    expect(remote.calls).not.toContain('joinTailnet');
  });
});

describe('ModelKey reconcile', () => {
  const mkDeps = () => ({ kube, now: clock });

  it('reports hasKey and delivered once the Vps deployed it, and purges on request', async () => {
    await reconcileModelKey(kube.mk('gpt'), mkDeps());
    expect(kube.mk('gpt').status).toMatchObject({ hasKey: true, delivered: false });
    await converge();
    await reconcileModelKey(kube.mk('gpt'), mkDeps());
    expect(kube.mk('gpt').status).toMatchObject({ hasKey: true, delivered: true });
    // purgeSecretAfterDelivery: the key left the Secret.
    expect(kube.secrets.get('ns/llm')?.data.has('openai')).toBe(false);
    expect(kube.secrets.get('ns/llm')?.data.has('anthropic')).toBe(true);
    await reconcileModelKey(kube.mk('gpt'), mkDeps());
    expect(kube.mk('gpt').status.conditions?.find((c) => c.type === 'HasKey')?.reason).toBe('SecretPurged');
    expect(kube.mk('gpt').status.delivered).toBe(true);
  });

  it('is Ready (for kubectl wait) once delivered, with the reason it waits for before', async () => {
    await reconcileModelKey(kube.mk('claude'), mkDeps());
    const before = kube.mk('claude').status.conditions?.find((c) => c.type === 'Ready');
    expect(before).toMatchObject({ status: 'False', reason: 'WaitingForVps' });
    await converge();
    await reconcileModelKey(kube.mk('claude'), mkDeps());
    expect(kube.mk('claude').status.conditions?.find((c) => c.type === 'Ready')).toMatchObject({
      status: 'True',
      reason: 'Ready',
    });
  });

  it('keeps a purged key on the server when the Vps redeploys for another reason', async () => {
    await converge();
    const delivered = JSON.parse(remote.files.get(KEY_FILE_PATH) ?? '{}').keys.gpt.apiKey;
    await reconcileModelKey(kube.mk('gpt'), mkDeps());
    expect(kube.secrets.get('ns/llm')?.data.has('openai')).toBe(false);
    // A change of the other key forces a redeploy; the purged one is read back from the host.
    kube.putSecret('llm', { anthropic: canary('sk-ant-fake-') }, 'llm-key');
    await converge();
    expect(remote.calls).toContain('readFile');
    expect(JSON.parse(remote.files.get(KEY_FILE_PATH) ?? '{}').keys.gpt.apiKey).toBe(delivered);
  });

  it('says what to supply when the Secret has no key', async () => {
    kube.putSecret('llm', {}, 'llm-key');
    await reconcileModelKey(kube.mk('claude'), mkDeps());
    const c = kube.mk('claude').status.conditions?.find((x) => x.type === 'HasKey');
    expect(c).toMatchObject({ status: 'False', reason: 'SecretMissing' });
    expect(c?.message).toContain('llm');
  });

  it('holds its finalizer until the Vps has redeployed without it', async () => {
    await converge();
    await reconcileModelKey(kube.mk('claude'), mkDeps());
    kube.markDeleting('ModelKey', 'claude');
    await reconcileModelKey(kube.mk('claude'), mkDeps());
    expect(kube.modelKeys.has('ns/claude')).toBe(true);
    await converge();
    expect(
      JSON.parse(kube.vps('agent').metadata.annotations[DELIVERED_ANNOTATION] ?? '{}'),
    ).not.toHaveProperty('claude');
    expect(Object.keys(JSON.parse(remote.files.get(KEY_FILE_PATH) ?? '{}').keys)).toEqual(['gpt']);
    await reconcileModelKey(kube.mk('claude'), mkDeps());
    expect(kube.modelKeys.has('ns/claude')).toBe(false);
  });
});

describe('Direct ModelKey (the key never in the cluster)', () => {
  const mkDeps = () => ({ kube, now: clock });
  beforeEach(() => {
    kube.addModelKey('mine', {
      vpsRef: { name: 'agent' },
      provider: 'anthropic',
      delivery: 'Direct',
      purgeSecretAfterDelivery: false,
    });
  });

  it('deploys the route with no key, reads no Secret and nothing back from the server for it', async () => {
    await converge();
    const file = JSON.parse(remote.files.get(KEY_FILE_PATH) ?? '{}');
    expect(file.keys.mine).toEqual({ provider: 'anthropic' });
    expect(JSON.parse(kube.vps('agent').metadata.annotations[DELIVERED_ANNOTATION] ?? '{}').mine).toBe(
      'mine:1:direct',
    );
    expect(remote.calls).not.toContain('readFile');
  });

  it('waits for the owner until the server reports a key (asked once per deploy or key set, never when idle)', async () => {
    await converge();
    expect(remote.calls.filter((c) => c === 'directKeyStatus')).toHaveLength(1);
    await reconcileModelKey(kube.mk('mine'), mkDeps());
    const mk = kube.mk('mine');
    expect(mk.status).toMatchObject({ hasKey: false, delivered: false });
    const hasKey = mk.status.conditions?.find((c) => c.type === 'HasKey');
    expect(hasKey).toMatchObject({ status: 'False', reason: 'AwaitingOwnerKey' });
    expect(hasKey?.message).toContain('key set ns/mine --from-stdin');
    expect(mk.status.conditions?.find((c) => c.type === 'Ready')?.reason).toBe('AwaitingOwnerKey');
    // The owner hands the key over; an idle resync does not ask the server.
    remote.directKeys = { mine: true };
    const before = remote.calls.length;
    await converge();
    expect(remote.calls.length).toBe(before);
    // `key set` annotates the ModelKey: one question, booleans back.
    await kube.setAnnotations('ModelKey', kube.mk('mine').metadata, {
      [ANNOTATION_KEY_SET]: '2026-11-25T10:01:00Z',
    });
    await converge();
    expect(remote.calls.slice(before)).toEqual(['directKeyStatus']);
    expect(JSON.parse(kube.vps('agent').metadata.annotations[ANNOTATION_DIRECT_KEYS] ?? '{}').keys).toEqual({
      mine: true,
    });
    await reconcileModelKey(kube.mk('mine'), mkDeps());
    expect(kube.mk('mine').status).toMatchObject({ hasKey: true, delivered: true });
    expect(kube.mk('mine').status.conditions?.find((c) => c.type === 'Ready')?.status).toBe('True');
    await converge();
    expect(remote.calls.slice(before)).toEqual(['directKeyStatus']);
  });
});

describe('Vps metrics report', () => {
  it('reports the state and the active key birth after each reconcile', async () => {
    const seen: { state: string; keyBornAt: Date | null }[] = [];
    deps = { ...deps, report: (_v, state, keyBornAt) => seen.push({ state, keyBornAt }) };
    await converge();
    expect(seen.at(-1)?.state).toBe('ready');
    expect(seen.at(-1)?.keyBornAt).toEqual(now);
    kube.putSecret('hcloud', {}, 'cloud-token');
    kube.addVps('other');
    addAnthropicKey('other-key', 'other');
    await expect(reconcileVps(kube.vps('other'), deps)).rejects.toThrow();
    expect(seen.at(-1)).toEqual({ state: 'error', keyBornAt: null });
  });
});
