/**
 * Crash at every step (issue 8). The operator is killed (exit 137, no cleanup, as SIGKILL or
 * the OOM killer would leave it) at every step boundary of the Vps reconcile, through the
 * fault points the step table (operator/controllers/vps-steps.ts) declares, and a fresh operator resumes from exactly that state.
 *
 * To keep the file within a few minutes on a busy 2-core machine the points are chained on
 * one Vps: operator 1 dies at the first point; operator 2, started on the state operator 1
 * left, runs with the second point and dies there; and so on; after the last point an operator
 * without a fault point finishes. So each point's crash is recovered by a fresh process, and
 * between any two crashes the invariants are checked (never two servers, never two active
 * keys). At the end: Ready, exactly one POST /servers, one labelled server, one active key,
 * the gateway answering; after teardown, none of this test's server namespaces remain.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VPS_STEPS } from '../../../operator/controllers/vps-steps.ts';
import { type OperatorProcess, type System, startSystem } from '../../lib/system.ts';
import {
  exited,
  getVps,
  keyStates,
  logTail,
  serverCreates,
  serverNamespaces,
  serversLabelled,
  vpsManifests,
  waitGateway,
  waitReady,
} from './robust.ts';

// Every crash point of the step table, in the order a provisioning reaches them: a step added
// to the table is covered here without editing this file.
const FAULT_POINTS = VPS_STEPS.flatMap((step) => step.faultPoints);

let s: System;
const ops: OperatorProcess[] = [];
const diag = () => logTail(ops)();
const namespacesSeen = new Set<string>();
let uid = '';

beforeAll(async () => {
  // On the rig tailnet, so the tailnet step's crash points are reached too.
  s = await startSystem({ tailnet: true });
}, 300_000);

afterAll(async () => {
  await s?.stop();
}, 180_000);

async function noteNamespace(): Promise<void> {
  if (uid === '') return;
  for (const id of await serversLabelled(s, uid)) {
    const info = s.hosts.info(id);
    if (info) namespacesSeen.add(info.netns);
  }
}

describe('an operator killed at every step boundary', () => {
  for (const [i, point] of FAULT_POINTS.entries()) {
    it(`dies at ${point}; the next operator resumes with one server and at most one active key`, async () => {
      const op = await s.startOperator(['--workers', '2'], { CANNES_FAULT_POINT: point });
      ops.push(op);
      if (i === 0)
        await s.kubectl(
          ['apply', '-f', '-'],
          vpsManifests(s, 'crash', { tailnetKey: await s.mintTailnetKey() }),
        );
      const code = await exited(op, 600_000).catch((e: unknown) => {
        throw new Error(`${String(e)}\n${diag()}`);
      });
      expect(code, diag()).toBe(137);
      expect(op.logs.join('')).toContain(`cannes fault point reached: ${point}`);
      uid = (await getVps(s, 'crash')).metadata.uid;
      await noteNamespace();
      expect((await serversLabelled(s, uid)).length).toBeLessThanOrEqual(1);
      expect(serverCreates(s, uid).length).toBeLessThanOrEqual(1);
      expect((await keyStates(s, uid))['active'] ?? 0).toBeLessThanOrEqual(1);
    }, 660_000);
  }

  it('converges to Ready with a fresh operator: one server, one active key, the gateway answering', async () => {
    const op = await s.startOperator(['--workers', '2']);
    ops.push(op);
    const v = await waitReady(s, 'crash', 600_000, diag);
    expect(serverCreates(s, uid)).toHaveLength(1);
    const servers = await serversLabelled(s, uid);
    expect(servers).toHaveLength(1);
    expect(Number(v.metadata.annotations?.['cannes.dev/server-id'])).toBe(servers[0]);
    const keys = await keyStates(s, uid);
    expect(keys['active']).toBe(1);
    expect(keys['pending'] ?? 0).toBe(0);
    await noteNamespace();
    const status = await waitGateway(s, 'crash', servers[0] ?? 0);
    expect(status).toBeLessThan(500);
    expect(op.proc.exitCode).toBeNull();
  }, 720_000);

  it('leaves no network namespace of its servers after teardown', async () => {
    expect(namespacesSeen.size).toBeGreaterThan(0);
    await s.stop();
    const left = await serverNamespaces();
    expect(left.filter((n) => namespacesSeen.has(n))).toEqual([]);
  }, 180_000);
});
