import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Controller, done } from '../../../operator/kube/controller.ts';
import { Informer } from '../../../operator/kube/informer.ts';
import { LeaderElector } from '../../../operator/kube/leader.ts';
import { type KubeObject, parseKubeObject } from '../../../operator/kube/object.ts';
import { createLogger } from '../../../operator/lib/log.ts';
import { CONFIGMAPS } from '../../lib/configmaps.ts';
import type { Rig } from '../../rig/rig.ts';
import { useRig } from '../../rig/shared.ts';
import { adminClient, suffix, tempNamespace, until } from './helpers.ts';

const logger = createLogger('replicas-it', { level: process.env['TEST_LOG_LEVEL'] ?? 'silent' });
const TIMING = { leaseDurationMs: 4000, renewDeadlineMs: 3000, retryPeriodMs: 500 };

let rig: Rig;
let ns: { name: string; remove: () => Promise<void> };

beforeAll(async () => {
  rig = await useRig();
  ns = await tempNamespace(rig, 'kube-replicas');
});
afterAll(async () => {
  await ns?.remove();
});

interface Replica {
  id: string;
  stop: AbortController;
  elector: Promise<void>;
  informer: Informer<KubeObject>;
  workers: Promise<void> | undefined;
}

/** One operator replica: its own client, cache, controller and elector, as in a second pod. */
function replica(id: string, lease: string, log: Array<{ replica: string; key: string }>): Replica {
  const api = adminClient(rig);
  const informer = new Informer<KubeObject>({
    api,
    resource: CONFIGMAPS,
    namespace: ns.name,
    labelSelector: 'role=input',
    parse: parseKubeObject,
    logger,
  });
  const controller = new Controller({
    name: 'mirror',
    informer,
    logger,
    reconcile: async ({ key }) => {
      log.push({ replica: id, key });
      return done();
    },
  });
  // Caches run on every replica; only the leader runs workers.
  informer.start();
  const r: Replica = {
    id,
    stop: new AbortController(),
    elector: Promise.resolve(),
    informer,
    workers: undefined,
  };
  const elector = new LeaderElector({
    api,
    namespace: ns.name,
    name: lease,
    identity: id,
    ...TIMING,
    // Stopping a replica here stands for killing it: it does not hand the lease back.
    releaseOnCancel: false,
    logger,
    onStartedLeading: (signal) => {
      r.workers = controller.run(signal);
    },
  });
  r.elector = elector.run(r.stop.signal);
  return r;
}

async function createInput(name: string): Promise<void> {
  const res = await rig.adminRequest('POST', `/api/v1/namespaces/${ns.name}/configmaps`, {
    metadata: { name, labels: { role: 'input' } },
  });
  expect(res.status).toBe(201);
}

describe('two operator replicas', () => {
  it('only the leader reconciles; killing it hands the work to the other', async () => {
    const lease = `lease-${suffix()}`;
    const log: Array<{ replica: string; key: string }> = [];
    const a = replica('replica-a', lease, log);
    const b = replica('replica-b', lease, log);
    try {
      await createInput('one');
      await createInput('two');
      await until(() => new Set(log.map((l) => l.key)).size === 2, 'both inputs reconciled');
      const leaderId = log[0]?.replica;
      expect(log.every((l) => l.replica === leaderId)).toBe(true);
      const [leader, follower] = leaderId === 'replica-a' ? [a, b] : [b, a];
      expect(follower.workers).toBeUndefined();

      const killedAt = Date.now();
      leader.stop.abort();
      await leader.elector;
      await leader.workers;
      await leader.informer.stop();
      const before = log.length;
      await createInput('three');
      await until(() => log.some((l) => l.key === `${ns.name}/three`), 'the new leader reconciles', 30_000);
      const after = log.slice(before);
      expect(after.every((l) => l.replica === follower.id)).toBe(true);
      // The new leader reconciles every object it caches, not only the new one.
      await until(
        () => new Set(log.slice(before).map((l) => l.key)).size === 3,
        'the new leader reconciled all inputs',
      );
      logger.info({ handoverMs: Date.now() - killedAt }, 'handover');
    } finally {
      for (const r of [a, b]) {
        r.stop.abort();
        await r.elector;
        await r.workers;
        await r.informer.stop();
      }
    }
  });
});
