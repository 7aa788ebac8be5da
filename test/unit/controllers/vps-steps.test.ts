/**
 * Each step of the Vps reconcile's table alone: from the facts the steps before it recorded,
 * it assesses `run`; its run records the fact that makes it assess `done`; and once done it
 * costs no call to Hetzner or the server. The table's shape (names, fault points) is checked
 * too, since the crash test and the metrics derive from it.
 */
import { beforeEach, describe, expect, it } from 'vitest';
import { FINALIZER } from '../../../operator/api/schema.ts';
import type { DeployBundle } from '../../../operator/controllers/ports.ts';
import {
  type Facts,
  type StepContext,
  VPS_STEPS,
  type VpsDeps,
  type VpsStep,
} from '../../../operator/controllers/vps-steps.ts';
import { FakeHcloud, FakeKube, FakeRemote, FakeStore, Faults, fakeVpsDeps } from './fakes.ts';

const now = new Date('2026-11-25T10:00:00Z');
const canary = (what: string) => `${what}${crypto.randomUUID().replace(/-/g, '')}`;
const bundle = (): DeployBundle => ({ files: [], activate: 'true', verify: 'true' });

let kube: FakeKube;
let hcloud: FakeHcloud;
let store: FakeStore;
let remote: FakeRemote;
let deps: VpsDeps;
let facts: Facts;
const faultsHit: string[] = [];

beforeEach(() => {
  const faults = new Faults();
  kube = new FakeKube();
  hcloud = new FakeHcloud(faults);
  store = new FakeStore(faults, () => now);
  remote = new FakeRemote(faults, store);
  kube.putSecret('hcloud', { token: canary('tok').slice(0, 64) }, 'cloud-token');
  kube.putSecret('llm', { anthropic: canary('sk-ant-fake-') }, 'llm-key');
  kube.addVps('agent');
  kube.addModelKey('claude', {
    vpsRef: { name: 'agent' },
    provider: 'anthropic',
    secretRef: { name: 'llm', key: 'anthropic' },
    purgeSecretAfterDelivery: false,
  });
  deps = fakeVpsDeps({ kube, hcloud, remote, store }, bundle, () => now);
  facts = { record: null, activeKey: null };
  faultsHit.length = 0;
});

const step = (name: string): VpsStep => {
  const s = VPS_STEPS.find((x) => x.name === name);
  if (!s) throw new Error(`no step ${name}`);
  return s;
};

function ctx(s: VpsStep): StepContext {
  return {
    vps: kube.vps('agent'),
    d: deps,
    facts,
    signal: new AbortController().signal,
    fault: (label) => {
      const point = `${s.name}:${label}`;
      expect(s.faultPoints).toContain(point);
      faultsHit.push(point);
    },
  };
}

/** Runs a step as the runner does: assess, run, assess again; returns the final assessment. */
async function runStep(name: string) {
  const s = step(name);
  expect((await s.assess(ctx(s))).state).toBe('run');
  const note = await s.run(ctx(s));
  expect(note).not.toBe('');
  const after = await s.assess(ctx(s));
  // Every declared point inside run was reached, in order.
  expect(faultsHit.filter((p) => p.startsWith(`${name}:`))).toEqual([...s.faultPoints]);
  return after;
}

/** The steps before `name`, run to done (each one's own test is below). */
async function upTo(name: string) {
  for (const s of VPS_STEPS) {
    if (s.name === name) return;
    const a = await s.assess(ctx(s));
    if (a.state === 'run') await s.run(ctx(s));
  }
}

describe('the Vps step table', () => {
  it('names each step once and prefixes every fault point with its step', () => {
    const names = VPS_STEPS.map((s) => s.name);
    expect(new Set(names).size).toBe(names.length);
    for (const s of VPS_STEPS) for (const p of s.faultPoints) expect(p.startsWith(`${s.name}:`)).toBe(true);
  });

  it('finalizer: adds the finalizer and the store row', async () => {
    expect(await runStep('finalizer')).toMatchObject({ state: 'done' });
    expect(kube.vps('agent').metadata.finalizers).toContain(FINALIZER);
    expect(store.rows.has(kube.vps('agent').metadata.uid)).toBe(true);
  });

  it('create_server: creates one labelled server and records its id and address', async () => {
    await upTo('create_server');
    expect(await runStep('create_server')).toMatchObject({ state: 'done', reason: 'ServerExists' });
    expect(hcloud.servers.size).toBe(1);
    expect(store.rows.get(kube.vps('agent').metadata.uid)?.serverId).not.toBeNull();
  });

  it('create_server: adopts a server found by its label instead of creating a second', async () => {
    await upTo('create_server');
    const s = step('create_server');
    await s.run(ctx(s));
    facts.record = { ...(facts.record ?? ({} as never)), serverId: null, ipv4: null };
    await s.run(ctx(s));
    expect(hcloud.calls.filter((c) => c === 'create')).toHaveLength(1);
  });

  it('rescue_keygen: stores a rescue-born key and the host key', async () => {
    await upTo('rescue_keygen');
    expect(await runStep('rescue_keygen')).toMatchObject({ state: 'done', reason: 'KeyStored' });
    expect(facts.activeKey?.bornInRescue).toBe(true);
    expect(facts.record?.hostKey).toBe(remote.hostKey);
  });

  /** Provisions to the end, then loses the store row (database lost): a fresh reconcile's facts. */
  async function provisionedThenStoreLost() {
    await upTo('purge_token');
    await runStep('purge_token');
    // The runner's assess after the key step published the pinned host key (upTo skips it).
    expect(await step('rescue_keygen').assess(ctx(step('rescue_keygen')))).toMatchObject({ state: 'done' });
    expect(kube.vps('agent').metadata.annotations['cannes.dev/ssh-host-key']).toBeDefined();
    // The runner recorded the purge in status (so a token put back later is left alone).
    const v = kube.vps('agent');
    await kube.patchVpsStatus(v.metadata, {
      ...v.status,
      conditions: [
        {
          type: 'CloudTokenPurged',
          status: 'True',
          reason: 'TokenPurged',
          message: '',
          lastTransitionTime: now.toISOString(),
        },
      ],
    });
    kube.putSecret('hcloud', { token: canary('tok').slice(0, 64) }, 'cloud-token');
    await store.deleteVps(kube.vps('agent').metadata.uid);
    facts = { record: null, activeKey: null };
    faultsHit.length = 0;
    await upTo('rescue_keygen');
  }

  it('rescue_keygen: a provisioned Vps whose store lost its key waits for recover, touching nothing', async () => {
    await provisionedThenStoreLost();
    const calls = [...hcloud.calls];
    const a = await step('rescue_keygen').assess(ctx(step('rescue_keygen')));
    expect(a).toMatchObject({ state: 'wait', reason: 'RecoveryRequired' });
    expect(a.state === 'wait' && a.message).toMatch(/cannes-operator recover ns\/agent/);
    expect(hcloud.calls).toEqual(calls);
    // An intent for another server does not unlock it.
    await kube.setAnnotations('Vps', kube.vps('agent').metadata, { 'cannes.dev/recover': '999999' });
    expect(await step('rescue_keygen').assess(ctx(step('rescue_keygen')))).toMatchObject({
      state: 'wait',
      reason: 'RecoveryRequired',
    });
  });

  it('recovery: with the intent for its server, a new rescue key, a redeploy, then the token purged and the intent removed', async () => {
    await provisionedThenStoreLost();
    const serverId = String(facts.record?.serverId);
    await kube.setAnnotations('Vps', kube.vps('agent').metadata, { 'cannes.dev/recover': serverId });
    expect(await runStep('rescue_keygen')).toMatchObject({ state: 'done', reason: 'KeyStored' });
    expect(hcloud.calls.filter((c) => c === 'enableRescue')).toHaveLength(2);
    // The deploy runs again (the recorded fingerprint was dropped).
    expect(kube.vps('agent').metadata.annotations['cannes.dev/deployed']).toBeUndefined();
    expect(await runStep('deploy')).toMatchObject({ state: 'done', reason: 'Deployed' });
    await runStep('tailnet').catch(() => {});
    await runStep('rotate');
    // This Vps purged its token before: only the recovery makes it purge the fresh one.
    expect(await runStep('purge_token')).toMatchObject({ state: 'done', reason: 'TokenPurged' });
    expect(kube.secrets.get('ns/hcloud')?.data.has('token')).toBe(false);
    expect(kube.vps('agent').metadata.annotations['cannes.dev/recover']).toBeUndefined();
  });

  it('deploy: waits for a ModelKey, then deploys once and records the fingerprint', async () => {
    kube.markDeleting('ModelKey', 'claude');
    await upTo('deploy');
    expect(await step('deploy').assess(ctx(step('deploy')))).toMatchObject({
      state: 'wait',
      reason: 'WaitingForModelKeys',
    });
  });

  it('deploy: deploys the keys and then assesses done without touching the server', async () => {
    await upTo('deploy');
    expect(await runStep('deploy')).toMatchObject({ state: 'done', reason: 'Deployed' });
    expect(remote.deployed).toHaveLength(1);
    // A fresh reconcile (new facts, the annotation now on the object) has nothing to do.
    facts = { record: facts.record, activeKey: facts.activeKey };
    const calls = remote.calls.length;
    expect(await step('deploy').assess(ctx(step('deploy')))).toMatchObject({ state: 'done' });
    expect(remote.calls.length).toBe(calls);
  });

  it('tailnet: without spec.tailnet, done at once with no condition and no call', async () => {
    await upTo('tailnet');
    const calls = remote.calls.length;
    expect(await step('tailnet').assess(ctx(step('tailnet')))).toMatchObject({ state: 'done', absent: true });
    expect(remote.calls.length).toBe(calls);
  });

  it('tailnet: joins, records the URL and the fingerprint, purges the key, then costs nothing', async () => {
    kube.putSecret('ts', { authkey: canary('tskey-auth-kFAKE-') }, 'tailnet-auth-key');
    kube.addVps('agent', {
      ...kube.vps('agent').spec,
      tailnet: {
        authKeySecretRef: { name: 'ts', key: 'authkey' },
        hostname: 'agent',
        tags: [],
        loginServer: 'https://controlplane.tailscale.com',
        purgeAuthKeyAfterJoin: true,
        owners: [],
      },
    });
    await upTo('tailnet');
    expect(await runStep('tailnet')).toMatchObject({ state: 'done', reason: 'Joined' });
    expect(kube.vps('agent').metadata.annotations['cannes.dev/gateway-url']).toBe(
      'https://agent.tail-fake.ts.net/',
    );
    expect(kube.secrets.get('ns/ts')?.data.has('authkey')).toBe(false);
    facts = { record: facts.record, activeKey: facts.activeKey };
    const calls = remote.calls.length;
    expect(await step('tailnet').assess(ctx(step('tailnet')))).toMatchObject({ state: 'done' });
    expect(remote.calls.length).toBe(calls);
  });

  it('rotate: replaces the rescue-born key, then is done until the interval passes', async () => {
    await upTo('rotate');
    expect(await runStep('rotate')).toMatchObject({ state: 'done', reason: 'KeyCurrent' });
    expect(facts.activeKey?.bornInRescue).toBe(false);
  });

  it('purge_token: removes the token once setup is done, and reports TokenPurged', async () => {
    await upTo('purge_token');
    expect(await runStep('purge_token')).toMatchObject({ state: 'done', reason: 'TokenPurged' });
    expect(kube.secrets.get('ns/hcloud')?.data.has('token')).toBe(false);
  });

  it('purge_token: with purging disabled, reports PurgeDisabled and keeps the token', async () => {
    kube.addVps('agent', { ...kube.vps('agent').spec, purgeCloudTokenAfterSetup: false });
    await upTo('purge_token');
    expect(await step('purge_token').assess(ctx(step('purge_token')))).toMatchObject({
      state: 'done',
      ok: false,
      reason: 'PurgeDisabled',
    });
    expect(kube.secrets.get('ns/hcloud')?.data.has('token')).toBe(true);
  });
});
