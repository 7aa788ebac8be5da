import type { Store as ControllerStore } from '../controllers/ports.ts';
import type { RotationStore } from '../ssh/rotation.ts';
import type { PostgresStore } from '../store/postgres.ts';

/**
 * The store seen through the narrow ports its consumers declared (the Vps controller's
 * `Store`, the SSH rotation's `RotationStore`), so the wiring is one call each. Type-only
 * imports: no runtime dependency from the store on its consumers, and tsc flags any drift.
 */

export function controllerStore(store: PostgresStore): ControllerStore {
  return {
    // One query (row + active key); the private key is decrypted here because the controller
    // uses it right away for SSH.
    async getVps(uid) {
      const state = await store.getVpsState(uid);
      if (state === null) return null;
      const { vps, activeKey } = state;
      return {
        record: {
          uid: vps.uid,
          namespace: vps.namespace,
          name: vps.name,
          serverId: vps.serverId,
          ipv4: vps.ipv4,
          hostKey: vps.hostPublicKey,
        },
        activeKey:
          activeKey === null
            ? null
            : {
                id: activeKey.id,
                privateKey: await activeKey.privateKey(),
                publicKey: activeKey.publicKey,
                createdAt: activeKey.rotatedAt ?? activeKey.createdAt,
                bornInRescue: activeKey.origin === 'rescue',
              },
      };
    },
    async upsertVps(rec) {
      await store.ensureVps(rec);
    },
    async setServer(uid, serverId, ipv4) {
      await store.recordServer(uid, { serverId, ipv4 });
    },
    async saveRescueResult(uid, hostKey, key) {
      await store.saveRescueResult(uid, hostKey, { publicKey: key.publicKey, privateKey: key.privateKey });
    },
    async forgetServer(uid, serverId) {
      await store.forgetServer(uid, serverId);
    },
    async deleteVps(uid) {
      await store.deleteVps(uid);
    },
  };
}

export function rotationStore(store: PostgresStore): RotationStore {
  return {
    async listKeys(vpsId) {
      const keys = await store.listKeys(vpsId);
      return Promise.all(
        keys.map(async (k) => ({
          id: k.id,
          state: k.state,
          publicKey: k.publicKey,
          privateKey: await k.privateKey(),
        })),
      );
    },
    async addPending(vpsId, key) {
      await store.insertPendingKey(vpsId, {
        id: key.id,
        publicKey: key.publicKey,
        privateKey: key.privateKey,
      });
    },
    async activate(vpsId, pendingId) {
      await store.promotePendingKey(vpsId, pendingId);
    },
    async forget(vpsId, keyId) {
      await store.deleteRetiredKey(vpsId, keyId);
    },
  };
}
