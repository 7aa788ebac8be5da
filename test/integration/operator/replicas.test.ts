/**
 * Two operator processes with --leader-elect (issue 8): only the leader reconciles; killing
 * it (SIGKILL, so the Lease is not released) hands over once the Lease expires (15 s), and
 * the Vps the dead leader was provisioning still converges, with one server.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { metricSum, type OperatorProcess, type System, startSystem, waitFor } from '../../lib/system.ts';
import {
  getVps,
  keyStates,
  logTail,
  serverCreates,
  serversLabelled,
  vpsManifests,
  waitReady,
} from './robust.ts';

let s: System;
let a: OperatorProcess;
let b: OperatorProcess;
const diag = () => logTail([a, b])();

const isLeader = async (op: OperatorProcess) =>
  (await metricSum(op, 'leader_election_master_status', 'name="cannes-operator"', 0)) === 1;

/** Reconciles a process has done for the vps controller (all results; 0 before its first). */
const vpsReconciles = (op: OperatorProcess) =>
  metricSum(op, 'controller_runtime_reconcile_total', 'controller="vps"', 0);

beforeAll(async () => {
  s = await startSystem();
  const args = ['--leader-elect', '--leader-election-namespace', s.namespace];
  a = await s.startOperator(args, { POD_NAME: 'replica-a' });
  b = await s.startOperator(args, { POD_NAME: 'replica-b' });
}, 300_000);

afterAll(async () => {
  await s?.stop();
}, 180_000);

describe('two operator replicas with leader election', () => {
  let leader: OperatorProcess;
  let follower: OperatorProcess;
  let uid = '';

  it('elects exactly one leader and records it in the Lease', async () => {
    leader = await waitFor(
      'a leader',
      async () => {
        const [la, lb] = await Promise.all([isLeader(a), isLeader(b)]);
        if (la && lb) throw new Error('two leaders');
        return la ? a : lb ? b : undefined;
      },
      120_000,
      diag,
    );
    follower = leader === a ? b : a;
    expect(await isLeader(follower)).toBe(false);
    const lease = JSON.parse(await s.kubectl(['get', 'lease', 'cannes-operator', '-o', 'json'])) as {
      spec: { holderIdentity?: string };
    };
    expect(lease.spec.holderIdentity).toMatch(leader === a ? /^replica-a_/ : /^replica-b_/);
    // /healthz is the elector's health (its failing case: test/unit/run-probes.test.ts).
    for (const op of [leader, follower]) {
      const res = await fetch(`${op.probesUrl}/healthz?verbose`);
      expect(res.status).toBe(200);
      expect(await res.text()).toContain('[+]leader-election ok');
    }
  }, 180_000);

  it('reconciles on the leader only', async () => {
    await s.kubectl(['apply', '-f', '-'], vpsManifests(s, 'ha'));
    await waitFor(
      'the leader to create the server',
      async () => {
        const v = await getVps(s, 'ha');
        uid = v.metadata.uid;
        return v.metadata.annotations?.['cannes.dev/server-id'] !== undefined ? true : undefined;
      },
      300_000,
      diag,
    );
    // Mid-provisioning now (the first reconcile runs on into the rescue step): the follower has
    // not reconciled anything and its controllers never started their workers.
    expect(await vpsReconciles(follower)).toBe(0);
    expect(follower.logs.join('')).not.toContain('starting workers');
    expect(leader.logs.join('')).toContain('starting workers');
  }, 360_000);

  it('hands over when the leader is killed mid-provisioning; the Vps still converges with one server', async () => {
    expect((await getVps(s, 'ha')).status?.ready).not.toBe(true);
    await leader.stop('SIGKILL');
    await waitFor(
      'the follower to lead',
      async () => ((await isLeader(follower)) ? true : undefined),
      90_000,
      diag,
    );
    await waitReady(s, 'ha', 600_000, diag);
    expect(await vpsReconciles(follower)).toBeGreaterThan(0);
    expect(serverCreates(s, uid)).toHaveLength(1);
    expect(await serversLabelled(s, uid)).toHaveLength(1);
    expect((await keyStates(s, uid))['active']).toBe(1);
    const lease = JSON.parse(await s.kubectl(['get', 'lease', 'cannes-operator', '-o', 'json'])) as {
      spec: { holderIdentity?: string };
    };
    expect(lease.spec.holderIdentity).toMatch(follower === a ? /^replica-a_/ : /^replica-b_/);
  }, 720_000);
});
