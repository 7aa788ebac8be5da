import type { Secret } from '../../../common/secret.ts';
import type { RotationStore, StoredSshKey } from '../../../operator/ssh/rotation.ts';

/**
 * In-memory RotationStore for unit tests: each method is atomic, like the real store's
 * transactions. A "fresh process" is a new instance over the same `rows`.
 */
export class MemoryRotationStore implements RotationStore {
  readonly rows: Map<string, StoredSshKey[]>;

  constructor(rows: Map<string, StoredSshKey[]> = new Map()) {
    this.rows = rows;
  }

  seedActive(vpsId: string, key: { id: string; publicKey: string; privateKey: Secret }): void {
    this.rows.set(vpsId, [{ ...key, state: 'active' }]);
  }

  async listKeys(vpsId: string): Promise<StoredSshKey[]> {
    return [...(this.rows.get(vpsId) ?? [])];
  }

  async addPending(vpsId: string, key: { id: string; publicKey: string; privateKey: Secret }): Promise<void> {
    const rows = this.rows.get(vpsId) ?? [];
    if (rows.some((r) => r.id === key.id)) throw new Error('duplicate key id');
    this.rows.set(vpsId, [...rows, { ...key, state: 'pending' }]);
  }

  async activate(vpsId: string, pendingId: string): Promise<void> {
    const rows = this.rows.get(vpsId) ?? [];
    if (!rows.some((r) => r.id === pendingId && r.state === 'pending'))
      throw new Error('no such pending key');
    this.rows.set(
      vpsId,
      rows.map((r) =>
        r.id === pendingId
          ? { ...r, state: 'active' }
          : r.state === 'active'
            ? { ...r, state: 'retired' }
            : r,
      ),
    );
  }

  async forget(vpsId: string, keyId: string): Promise<void> {
    const rows = this.rows.get(vpsId) ?? [];
    this.rows.set(
      vpsId,
      rows.filter((r) => !(r.id === keyId && r.state === 'retired')),
    );
  }
}
