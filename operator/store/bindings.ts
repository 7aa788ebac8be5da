import type { Binding } from './envelope.ts';

/**
 * Every encrypted column, in one place: how its row is bound into the envelope (in TS for
 * the store, in SQL for rekey; the two must agree) and how rekey pages through it.
 */

export function sshKeyBinding(vpsUid: string, keyId: string): Binding {
  return { table: 'cannes_ssh_key', column: 'private_key_enc', rowId: `${vpsUid}/${keyId}` };
}

export interface EncryptedColumn {
  readonly table: string;
  readonly column: string;
  /** Primary key column and its SQL type (for keyset paging and the compare-and-set update). */
  readonly key: string;
  readonly keyType: 'uuid' | 'text';
  /** SQL expression equal to `Binding.rowId` for a row. */
  readonly rowIdSql: string;
}

export const ENCRYPTED_COLUMNS: readonly EncryptedColumn[] = [
  {
    table: 'cannes_ssh_key',
    column: 'private_key_enc',
    key: 'id',
    keyType: 'uuid',
    rowIdSql: "vps_uid || '/' || id::text",
  },
];
