/**
 * Long steps off the workers (operator/controllers/inflight.ts): a reconcile that starts the
 * rescue keygen (Hetzner actions, boots) returns at once; the step's end re-enqueues the Vps.
 */
import { beforeEach, describe, expect, it } from 'vitest';
import type { Secret } from '../../../common/secret.ts';
import { InFlight } from '../../../operator/controllers/inflight.ts';
import type { DeployBundle, RescueResult } from '../../../operator/controllers/ports.ts';
import { reconcileVps, type VpsDeps } from '../../../operator/controllers/vps.ts';
import { onCancel } from '../../../operator/lib/cancel.ts';
import { FakeHcloud, FakeKube, FakeRemote, FakeStore, Faults, fakeVpsDeps } from './fakes.ts';

const bundle = (): DeployBundle => ({ files: [], activate: 'true', verify: 'true' });

/** A remote whose rescue keygen waits for the test to let it go (a server still booting). */
class GatedRemote extends FakeRemote {
  #release: () => void = () => {};
  gate = new Promise<void>((r) => {
    this.#release = r;
  });
  entered = 0;
  release(): void {
    this.#release();
  }
  override async rescueKeygen(ip: string, pw: Secret): Promise<RescueResult> {
    this.entered++;
    const c = onCancel();
    try {
      await Promise.race([this.gate, c.promise]);
    } finally {
      c.dispose();
    }
    return super.rescueKeygen(ip, pw);
  }
}

let kube: FakeKube;
let hcloud: FakeHcloud;
let store: FakeStore;
let remote: GatedRemote;
let faults: Faults;
let inflight: InFlight;
let deps: VpsDeps;
let settled: string[];
let onSettle: () => void;

beforeEach(() => {
  faults = new Faults();
  kube = new FakeKube();
  hcloud = new FakeHcloud(faults);
  const now = () => new Date('2026-11-25T10:00:00Z');
  store = new FakeStore(faults, now);
  remote = new GatedRemote(faults, store);
  kube.putSecret('hcloud', { token: 'fakeTOKENfakeTOKENfakeTOKEN0123' }, 'cloud-token');
  kube.putSecret('llm', { anthropic: 'sk-ant-fake-0123456789' }, 'llm-key');
  kube.addVps('agent');
  kube.addModelKey('claude', {
    vpsRef: { name: 'agent' },
    provider: 'anthropic',
    secretRef: { name: 'llm', key: 'anthropic' },
    purgeSecretAfterDelivery: false,
  });
  settled = [];
  onSettle = () => {};
  inflight = new InFlight((key) => {
    settled.push(key);
    onSettle();
  });
  deps = { ...fakeVpsDeps({ kube, hcloud, remote, store }, bundle, now), inflight };
});

const nextSettle = () => new Promise<void>((r) => (onSettle = r));
const flush = () => new Promise((r) => setImmediate(r));

/** Reconciles like the queue: again on every re-enqueue, until Ready. */
async function untilReady(max = 20): Promise<void> {
  for (let i = 0; i < max; i++) {
    const wait = nextSettle();
    const r = await reconcileVps(kube.vps('agent'), deps).catch(() => undefined);
    if (kube.vps('agent').status.ready) return;
    if (r?.type === 'requeueAfter' && inflight.running > 0) await wait;
  }
  throw new Error('not Ready');
}

describe('steps in flight, off the workers', () => {
  it('returns the worker while the rescue keygen waits, and finishes on the re-enqueue', async () => {
    let r = await reconcileVps(kube.vps('agent'), deps);
    // The create step ran off the worker too; its end re-enqueued the Vps.
    while (inflight.running > 0) await nextSettle();
    r = await reconcileVps(kube.vps('agent'), deps);
    await flush();
    // The rescue step is blocked on the "boot", yet the reconcile already returned.
    expect(remote.entered).toBe(1);
    expect(inflight.running).toBe(1);
    expect(r).toEqual({ type: 'requeueAfter', ms: 300_000 });
    const ready = kube.vps('agent').status.conditions?.find((c) => c.type === 'Ready');
    expect(ready).toMatchObject({ status: 'False', reason: 'Provisioning' });
    // A reconcile meanwhile (a resync) starts nothing twice and calls Hetzner no more.
    const calls = hcloud.calls.length;
    await reconcileVps(kube.vps('agent'), deps);
    expect(hcloud.calls.length).toBe(calls);
    expect(remote.entered).toBe(1);
    const settledNow = nextSettle();
    remote.release();
    await settledNow;
    expect(settled.at(-1)).toMatch(/^ns\/agent#/);
    await untilReady();
    expect(kube.vps('agent').status).toMatchObject({ hasSshKey: true, gatewayDeployed: true, ready: true });
    expect(hcloud.calls.filter((c) => c === 'enableRescue')).toHaveLength(1);
    // The power state came from the create answer, across the two steps: no GET of the server.
    expect(hcloud.calls).not.toContain('get');
    expect(kube.events.filter((e) => e.reason === 'SshKeyStored')).toHaveLength(1);
  });

  it('fails the next reconcile with the step error (the queue retries), then runs the step again', async () => {
    remote.release();
    faults.arm('remote.afterKeygen');
    await reconcileVps(kube.vps('agent'), deps);
    while (inflight.running > 0) await nextSettle();
    await reconcileVps(kube.vps('agent'), deps);
    while (inflight.running > 0) await nextSettle();
    await expect(reconcileVps(kube.vps('agent'), deps)).rejects.toThrow(
      /fault injected at remote.afterKeygen/,
    );
    await untilReady();
    expect(hcloud.calls.filter((c) => c === 'enableRescue')).toHaveLength(2);
  });

  it('stops a running step before a deletion removes the row, and nothing of it lands after', async () => {
    await reconcileVps(kube.vps('agent'), deps);
    while (inflight.running > 0) await nextSettle();
    await reconcileVps(kube.vps('agent'), deps);
    expect(inflight.running).toBe(1);
    const uid = kube.vps('agent').metadata.uid;
    kube.markDeleting('Vps', 'agent');
    await reconcileVps(kube.vps('agent'), deps);
    expect(inflight.running).toBe(0);
    remote.release();
    await flush();
    expect(remote.calls).not.toContain('rescueKeygen');
    expect(store.rows.has(uid)).toBe(false);
    expect(store.keys.get(uid)?.length ?? 0).toBe(0);
    expect(kube.vpses.has('ns/agent')).toBe(false);
    expect(settled).toHaveLength(1);
  });
});

describe('InFlight', () => {
  it('runs at most `limit` steps at once; a cancelled waiter leaves the line', async () => {
    const done: string[] = [];
    const table = new InFlight((key) => done.push(key), 1);
    const gates = new Map<string, () => void>();
    const started: string[] = [];
    const step = (key: string) => () => {
      started.push(key);
      return new Promise<string>((r) => gates.set(key, () => r(key)));
    };
    const signal = new AbortController().signal;
    table.start('a#1#s', signal, {}, step('a'));
    table.start('b#1#s', signal, {}, step('b'));
    table.start('c#1#s', signal, {}, step('c'));
    await flush();
    expect(started).toEqual(['a']);
    await table.cancel('b#1');
    gates.get('a')?.();
    await flush();
    await flush();
    expect(started).toEqual(['a', 'c']);
    gates.get('c')?.();
    await flush();
    expect(done).toEqual(['a#1#s', 'c#1#s']);
    expect(table.take('c#1#s')).toMatchObject({ state: 'done', note: 'c' });
  });

  it('says when the last running step of a burst has settled, and not before', async () => {
    let drained = 0;
    const table = new InFlight(
      () => {},
      10,
      () => drained++,
    );
    const gates: (() => void)[] = [];
    const step = () => new Promise<string>((r) => gates.push(() => r('ok')));
    const signal = new AbortController().signal;
    table.start('a#1#s', signal, {}, step);
    table.start('b#1#s', signal, {}, step);
    await flush();
    gates[0]?.();
    await flush();
    expect(drained).toBe(0);
    gates[1]?.();
    await flush();
    expect(drained).toBe(1);
  });
});
