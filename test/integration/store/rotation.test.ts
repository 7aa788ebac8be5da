import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Secret } from '../../../common/secret.ts';
import { controllerStore, rotationStore } from '../../../operator/adapters/store.ts';
import { parsePrivateKey, parsePublicKey } from '../../../operator/ssh/keys.ts';
import { ROTATION_FAULT_POINTS, rotateSshKey } from '../../../operator/ssh/rotation.ts';
import { parseKeyring } from '../../../operator/store/keyring.ts';
import { PostgresStore } from '../../../operator/store/postgres.ts';
import { createTestDatabase, type TestDatabase } from '../../rig/postgres.ts';
import { ModelServer } from '../../unit/ssh/model-server.ts';
import { ed25519TestPair } from '../../unit/ssh/test-keys.ts';

class Crash extends Error {}

const HOST_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostHostHostHostHostHostHostHostHostHost root@os';

describe('the rotation protocol and the Vps controller port on the Postgres store', () => {
  let db: TestDatabase;
  let store: PostgresStore;

  beforeAll(async () => {
    db = await createTestDatabase();
    const keyring = await parseKeyring(`k1 ${randomBytes(32).toString('base64')}`, 'test');
    ({ store } = await PostgresStore.open({ connectionString: db.url, keyring }));
  });

  afterAll(async () => {
    await store?.close();
    await db?.drop();
  });

  /** A provisioned Vps: the rescue-born key stored and authorized on the model server. */
  async function provisioned(): Promise<{ uid: string; server: ModelServer; rescueKey: Secret }> {
    const uid = randomUUID();
    const ports = controllerStore(store);
    await ports.upsertVps({ uid, namespace: 'default', name: `v-${uid.slice(0, 6)}` });
    await ports.setServer(uid, 1001, '198.18.0.20');
    const pair = ed25519TestPair();
    const server = new ModelServer();
    server.authorized.push(parsePublicKey(pair.public));
    const rescueKey = Secret.of(pair.private);
    await ports.saveRescueResult(uid, HOST_KEY, {
      publicKey: parsePublicKey(pair.public).line,
      privateKey: rescueKey,
    });
    return { uid, server, rescueKey };
  }

  async function activeLogsIn(uid: string, server: ModelServer): Promise<boolean> {
    const state = await controllerStore(store).getVps(uid);
    if (!state?.activeKey) return false;
    return (await server.login(state.activeKey.privateKey)) !== 'refused';
  }

  it('gives the controller its row, pinned host key and rescue-born key in one query', async () => {
    const { uid, rescueKey } = await provisioned();
    const before = store.db.statements;
    const state = await controllerStore(store).getVps(uid);
    expect(store.db.statements - before).toBe(1);
    expect(state?.record).toEqual({
      uid,
      namespace: 'default',
      name: `v-${uid.slice(0, 6)}`,
      serverId: 1001,
      ipv4: '198.18.0.20',
      hostKey: HOST_KEY,
    });
    expect(state?.activeKey?.bornInRescue).toBe(true);
    expect(state?.activeKey?.privateKey.reveal()).toBe(rescueKey.reveal());
  });

  it('treats a repeated saveRescueResult as a no-op and a new rescue key as replacing every other key', async () => {
    const { uid, rescueKey } = await provisioned();
    const ports = controllerStore(store);
    const pub = parsePrivateKey(rescueKey).publicKey.line;
    await ports.saveRescueResult(uid, HOST_KEY, { publicKey: pub, privateKey: rescueKey });
    const first = (await ports.getVps(uid))?.activeKey?.id;
    expect((await store.listKeys(uid)).map((k) => k.id)).toEqual([first]);
    const again = ed25519TestPair();
    await ports.saveRescueResult(uid, HOST_KEY, {
      publicKey: parsePublicKey(again.public).line,
      privateKey: Secret.of(again.private),
    });
    const keys = await store.listKeys(uid);
    expect(keys).toHaveLength(1);
    expect(keys[0]?.id).not.toBe(first);
    expect((await keys[0]!.privateKey()).reveal()).toBe(again.private);
  });

  it('rotates the rescue-born key: one active key, not born in rescue, the old key refused', async () => {
    const { uid, server, rescueKey } = await provisioned();
    const r = await rotateSshKey({ store: rotationStore(store), remote: server, vpsId: uid });
    expect(r.outcome).toBe('rotated');
    expect((await store.listKeys(uid)).map((k) => k.state)).toEqual(['active']);
    expect((await controllerStore(store).getVps(uid))?.activeKey?.bornInRescue).toBe(false);
    expect(await server.login(rescueKey)).toBe('refused');
    expect(await activeLogsIn(uid, server)).toBe(true);
  });

  it.each(ROTATION_FAULT_POINTS)(
    'never locks the operator out after a crash %s, and the next run finishes',
    async (point) => {
      const { uid, server } = await provisioned();
      await expect(
        rotateSshKey({
          store: rotationStore(store),
          remote: server,
          vpsId: uid,
          fault: (p) => {
            if (p === point) throw new Crash(p);
          },
        }),
      ).rejects.toBeInstanceOf(Crash);
      // Right after the crash: the stored active key still logs in.
      expect(await activeLogsIn(uid, server)).toBe(true);
      await rotateSshKey({ store: rotationStore(store), remote: server, vpsId: uid });
      const keys = await store.listKeys(uid);
      expect(keys.map((k) => k.state)).toEqual(['active']);
      expect(await activeLogsIn(uid, server)).toBe(true);
      expect(server.authorized).toHaveLength(1);
      expect(server.keygenFiles.size).toBe(0);
    },
  );
});
