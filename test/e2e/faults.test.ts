/**
 * Faults (issues 8 and 10), each on a fresh Vps, each ending Ready with exactly one server:
 * - the operator SIGKILLed at random moments while it provisions 5 Vps at once;
 * - Hetzner answering 5xx and 429 in bursts, and failing actions (enable_rescue, reboot);
 * - the SSH session dropped mid-deploy: the simulated server is hard powered off and booted
 *   again while the operator is deploying over SSH;
 * - Postgres restarted while the operator provisions (a throwaway cluster of this test's own,
 *   never the shared server on 5432).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  getVps,
  keyStates,
  logTail,
  serverCreates,
  serversLabelled,
  vpsManifests,
  waitReady,
} from '../integration/operator/robust.ts';
import { type OperatorProcess, type System, startSystem, waitFor } from '../lib/system.ts';
import { type Cluster, startThrowawayCluster } from '../rig/postgres.ts';

async function expectConvergedOnce(s: System, name: string, diag: () => string, dbUrl?: string) {
  const v = await waitReady(s, name, 900_000, diag);
  const uid = v.metadata.uid;
  expect(serverCreates(s, uid)).toHaveLength(1);
  const servers = await serversLabelled(s, uid);
  expect(servers).toHaveLength(1);
  expect(Number(v.metadata.annotations?.['cannes.dev/server-id'])).toBe(servers[0]);
  const keys = await keyStates(s, uid, dbUrl);
  expect(keys['active']).toBe(1);
  expect(keys['pending'] ?? 0).toBe(0);
  return v;
}

describe('Hetzner and SSH faults', () => {
  let s: System;
  let op: OperatorProcess;
  const diag = () => logTail([op])();

  beforeAll(async () => {
    s = await startSystem();
    op = await s.startOperator(['--workers', '2']);
  }, 300_000);
  afterAll(async () => {
    await s?.stop();
  }, 180_000);

  it('converges through 5xx and 429 bursts and failed actions, without a duplicate server', async () => {
    s.sim.admin.setFaults({
      // Every third request a 5xx for a while, a burst of 429s, and two actions that fail.
      errors: [
        { route: '*', code: 'server_error', rate: 0.34, count: 12 },
        { route: '/servers', method: 'POST', code: 'unavailable', count: 2 },
      ],
      rateLimitStorm: 15,
      failActions: [
        { command: 'enable_rescue', count: 1 },
        { command: 'reset_server', count: 1 },
      ],
    });
    await s.kubectl(['apply', '-f', '-'], vpsManifests(s, 'flaky'));
    await waitReady(s, 'flaky', 900_000, diag);
    // The faults were really served (not just configured); then off, so our own checks pass.
    const stats = s.sim.admin.stats();
    const actionFaultsLeft = s.sim.admin.faults().failActions.map((f) => f.count);
    s.sim.admin.clearFaults();
    expect(actionFaultsLeft).toEqual([0, 0]);
    expect(stats.injectedErrors).toBeGreaterThan(0);
    expect(stats.refusedByStorm).toBe(15);
    await expectConvergedOnce(s, 'flaky', diag);
  }, 960_000);

  it('converges after the server is hard rebooted during the deploy (SSH dropped mid-step)', async () => {
    await s.kubectl(['apply', '-f', '-'], vpsManifests(s, 'dropped'));
    // The deploy has begun once /opt/cannes appears on the server's disk and the Vps is not
    // yet annotated as deployed: power the server off hard there, then boot it again.
    const serverId = await waitFor(
      'the deploy to start',
      async () => {
        const v = await getVps(s, 'dropped');
        const id = Number(v.metadata.annotations?.['cannes.dev/server-id']);
        const info = Number.isInteger(id) ? s.hosts.info(id) : undefined;
        if (!info || v.metadata.annotations?.['cannes.dev/deployed'] !== undefined) return undefined;
        return existsSync(join(info.diskDir, 'opt/cannes')) && info.state === 'os' ? id : undefined;
      },
      600_000,
      diag,
    );
    await s.hosts.powerOff(serverId);
    await new Promise((r) => setTimeout(r, 1000));
    await s.hosts.boot(serverId, { kind: 'os' });
    const v = await expectConvergedOnce(s, 'dropped', diag);
    expect(Number(v.metadata.annotations?.['cannes.dev/server-id'])).toBe(serverId);
    // The drop was seen as a failed step, not silently skipped.
    const failed = op.logs
      .join('')
      .split('\n')
      .filter((l) => l.includes('/dropped"') && l.includes('reconcile failed'));
    expect(failed.length).toBeGreaterThan(0);
  }, 960_000);
});

describe('an operator killed at random moments while it provisions 5 Vps', () => {
  let s: System;
  const ops: OperatorProcess[] = [];
  const diag = () => logTail(ops.slice(-2))();
  const names = ['r0', 'r1', 'r2', 'r3', 'r4'];

  beforeAll(async () => {
    s = await startSystem();
  }, 300_000);
  afterAll(async () => {
    await s?.stop();
  }, 180_000);

  it('converges: every Vps Ready, one server and one active key each', async () => {
    ops.push(await s.startOperator(['--workers', '4']));
    for (const name of names) await s.kubectl(['apply', '-f', '-'], vpsManifests(s, name));
    // Four SIGKILLs, 3-25 s apart (random: where they land differs per run; the seed is logged).
    const seed = Math.floor(Math.random() * 1e9);
    let x = seed;
    const rand = () => {
      x = (x * 1103515245 + 12345) % 2 ** 31;
      return x / 2 ** 31;
    };
    console.log(`random kills seed ${seed}`);
    for (let i = 0; i < 4; i++) {
      await new Promise((r) => setTimeout(r, 3000 + rand() * 22_000));
      await ops[ops.length - 1]?.stop('SIGKILL');
      ops.push(await s.startOperator(['--workers', '4']));
    }
    for (const name of names) await expectConvergedOnce(s, name, diag);
  }, 1_500_000);
});

describe('a Postgres restart during provisioning', () => {
  let cluster: Cluster;
  let s: System;
  let op: OperatorProcess;
  const diag = () => logTail([op])();

  beforeAll(async () => {
    cluster = await startThrowawayCluster();
    s = await startSystem({ adminDatabaseUrl: cluster.url });
    op = await s.startOperator(['--workers', '2']);
  }, 300_000);
  afterAll(async () => {
    await s?.stop();
    await cluster?.destroy();
  }, 180_000);

  it('converges with one server and one active key after Postgres went away and came back', async () => {
    await s.kubectl(['apply', '-f', '-'], vpsManifests(s, 'pgrestart'));
    // Restart while the server exists but the key is not stored yet (the rescue step writes it).
    await waitFor(
      'the server to be recorded',
      async () =>
        (await getVps(s, 'pgrestart')).metadata.annotations?.['cannes.dev/server-id'] !== undefined
          ? true
          : undefined,
      300_000,
      diag,
    );
    await cluster.restart(5000);
    await expectConvergedOnce(s, 'pgrestart', diag, s.db.url);
    expect(op.proc.exitCode).toBeNull();
  }, 960_000);
});
