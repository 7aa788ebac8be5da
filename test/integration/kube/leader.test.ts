import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KubeClient } from '../../../operator/kube/client.ts';
import { LeaderElector } from '../../../operator/kube/leader.ts';
import { isRecord } from '../../../operator/kube/object.ts';
import { createLogger } from '../../../operator/lib/log.ts';
import type { Rig } from '../../rig/rig.ts';
import { useRig } from '../../rig/shared.ts';
import { adminClient, adminConnection, suffix, TcpProxy, tempNamespace, until } from './helpers.ts';

const logger = createLogger('leader-it', { level: process.env['TEST_LOG_LEVEL'] ?? 'silent' });

let rig: Rig;
let ns: { name: string; remove: () => Promise<void> };

beforeAll(async () => {
  rig = await useRig();
  ns = await tempNamespace(rig, 'kube-leader');
});
afterAll(async () => {
  await ns?.remove();
});

interface Candidate {
  identity: string;
  startedAt: number | undefined;
  lostAt: number | undefined;
  signal: AbortSignal | undefined;
  stop: AbortController;
  running: Promise<void>;
}

// Short timings so the test runs in seconds; the algorithm is the same at 15 s / 10 s / 2 s.
const TIMING = { leaseDurationMs: 4000, renewDeadlineMs: 3000, retryPeriodMs: 500 };

function candidate(lease: string, identity: string, api: KubeClient, releaseOnCancel = true): Candidate {
  const c: Candidate = {
    identity,
    startedAt: undefined,
    lostAt: undefined,
    signal: undefined,
    stop: new AbortController(),
    running: Promise.resolve(),
  };
  const elector = new LeaderElector({
    api,
    namespace: ns.name,
    name: lease,
    identity,
    ...TIMING,
    releaseOnCancel,
    logger,
    onStartedLeading: (signal) => {
      c.startedAt = Date.now();
      c.signal = signal;
      signal.addEventListener('abort', () => {
        c.lostAt = Date.now();
      });
    },
  });
  c.running = elector.run(c.stop.signal);
  return c;
}

async function holder(lease: string): Promise<string> {
  const res = await rig.adminRequest(
    'GET',
    `/apis/coordination.k8s.io/v1/namespaces/${ns.name}/leases/${lease}`,
  );
  const spec = isRecord(res.body) && isRecord(res.body['spec']) ? res.body['spec'] : {};
  return typeof spec['holderIdentity'] === 'string' ? spec['holderIdentity'] : '';
}

describe('LeaderElector against a real Lease', () => {
  it('lets only one of two replicas lead, and a crashed leader is replaced once its lease runs out', async () => {
    const lease = `lease-${suffix()}`;
    // releaseOnCancel false: stopping behaves like a crash (the lease is left to expire).
    const a = candidate(lease, 'replica-a', adminClient(rig), false);
    const b = candidate(lease, 'replica-b', adminClient(rig), false);
    try {
      await until(() => a.startedAt !== undefined || b.startedAt !== undefined, 'a leader');
      // Several renew periods later, still exactly one leader, and the Lease names it.
      await new Promise((r) => setTimeout(r, 2 * TIMING.retryPeriodMs + 500));
      const leaders = [a, b].filter((c) => c.startedAt !== undefined);
      expect(leaders).toHaveLength(1);
      const [leader] = leaders;
      const follower = leader === a ? b : a;
      expect(await holder(lease)).toBe(leader?.identity);

      leader?.stop.abort();
      await leader?.running;
      expect(leader?.signal?.aborted).toBe(true);
      await until(() => follower.startedAt !== undefined, 'the follower takes over', 30_000);
      expect(await holder(lease)).toBe(follower.identity);
      logger.info({ handoverMs: (follower.startedAt ?? 0) - (leader?.lostAt ?? 0) }, 'handover');
    } finally {
      a.stop.abort();
      b.stop.abort();
      await Promise.all([a.running, b.running]);
    }
  });

  it('releases the lease on graceful shutdown so the follower takes over at its next retry', async () => {
    const lease = `lease-${suffix()}`;
    const a = candidate(lease, 'replica-a', adminClient(rig));
    try {
      await until(() => a.startedAt !== undefined, 'a leads');
      a.stop.abort();
      await a.running;
      expect(await holder(lease)).toBe('');
    } finally {
      a.stop.abort();
    }
  });

  it('a leader cut off from the API server stops its work before anyone else starts', async () => {
    const lease = `lease-${suffix()}`;
    const proxy = new TcpProxy(rig.server);
    const url = await proxy.start();
    const a = candidate(lease, 'replica-a', new KubeClient(adminConnection(rig, url)));
    try {
      await until(() => a.startedAt !== undefined, 'a leads');
      const b = candidate(lease, 'replica-b', adminClient(rig));
      try {
        proxy.refuse(true);
        proxy.cut();
        await until(() => b.startedAt !== undefined, 'b takes over', 30_000);
        // The partitioned leader gave up (renew deadline) before the lease expired for b.
        expect(a.lostAt).toBeDefined();
        expect(a.lostAt ?? Number.POSITIVE_INFINITY).toBeLessThanOrEqual(b.startedAt ?? 0);
        expect(await holder(lease)).toBe('replica-b');
      } finally {
        b.stop.abort();
        await b.running;
      }
    } finally {
      a.stop.abort();
      await a.running;
      await proxy.close();
    }
  });
});
