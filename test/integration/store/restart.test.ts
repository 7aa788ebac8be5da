import { randomBytes, randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { reasonOf } from '../../../common/errors.ts';
import { Secret } from '../../../common/secret.ts';
import { parseKeyring } from '../../../operator/store/keyring.ts';
import { PostgresStore } from '../../../operator/store/postgres.ts';
import {
  type Cluster,
  createTestDatabase,
  type PgBouncer,
  startPgBouncer,
  startThrowawayCluster,
} from '../../rig/postgres.ts';
import { FAKE_PUBLIC_KEY } from './worker.ts';

// A throwaway cluster of our own: the machine's shared server on 5432 is never restarted.
describe.each(['direct', 'pgbouncer'] as const)('a Postgres restart in the middle of a run (%s)', (mode) => {
  let cluster: Cluster | undefined;
  let bouncer: PgBouncer | undefined;
  let store: PostgresStore | undefined;

  afterEach(async () => {
    await store?.close().catch(() => undefined);
    await bouncer?.stop();
    await cluster?.destroy();
  });

  it('is survived by retry: every operation of the run completes correctly', async () => {
    cluster = await startThrowawayCluster();
    if (mode === 'pgbouncer') bouncer = await startPgBouncer({ host: cluster.host, port: cluster.port });
    const db = await createTestDatabase(cluster.url);
    const url = bouncer === undefined ? db.url : bouncer.url(db.name);
    const keyring = await parseKeyring(`k1 ${randomBytes(32).toString('base64')}`, 'test');
    ({ store } = await PostgresStore.open({
      connectionString: url,
      keyring,
      connectionTimeoutMillis: 2_000,
    }));
    const s = store;

    const errors: string[] = [];
    let opsAfterRestart = 0;
    let restarted = false;
    const oneRound = async (i: number): Promise<void> => {
      const uid = `restart-${i}-${randomBytes(3).toString('hex')}`;
      const secret = `canary-${randomBytes(8).toString('hex')}`;
      await s.ensureVps({ uid, namespace: 'ns', name: uid });
      const id = randomUUID();
      await s.insertPendingKey(uid, { id, publicKey: FAKE_PUBLIC_KEY, privateKey: Secret.of(secret) });
      await s.promotePendingKey(uid, id);
      const state = await s.getVpsState(uid);
      if ((await state?.activeKey?.privateKey())?.reveal() !== secret)
        throw new Error(`round ${i}: wrong key read back`);
      await s.recordServer(uid, { serverId: i + 1, ipv4: '198.18.0.9' });
      if ((await s.getVpsState(uid))?.vps.serverId !== i + 1)
        throw new Error(`round ${i}: wrong server id read back`);
    };
    const workload = (async () => {
      for (let i = 0; opsAfterRestart < 15 && i < 10_000; i++) {
        try {
          await oneRound(i);
        } catch (err) {
          errors.push(`${reasonOf(err)}: ${err instanceof Error ? err.message : String(err)}`);
        }
        if (restarted) opsAfterRestart++;
      }
    })();
    // Let the run get going, then restart the server under it.
    while (s.db.statements < 40 && errors.length === 0) await new Promise((r) => setTimeout(r, 20));
    // A transaction in flight when the server goes down (PgBouncer could otherwise hide an
    // idle-moment restart by queueing): it must be rerun, not lost.
    let slowRuns = 0;
    const slow = s.db.transaction(async (q) => {
      slowRuns++;
      await q.query('SELECT pg_sleep(2)');
      return 'done';
    });
    await new Promise((r) => setTimeout(r, 500));
    await cluster.restart(1_500);
    restarted = true;
    await workload;
    expect(await slow).toBe('done');
    expect(slowRuns).toBeGreaterThan(1);

    expect(errors).toEqual([]);
    expect(opsAfterRestart).toBeGreaterThanOrEqual(15);
    expect(s.db.retries).toBeGreaterThan(0);
  });
});
