import { CannesError } from '../../common/errors.ts';
import { ENCRYPTED_COLUMNS, type EncryptedColumn } from './bindings.ts';
import type { Db } from './db.ts';
import { decryptBytes, EnvelopeError, encryptBytes } from './envelope.ts';
import type { Keyring } from './keyring.ts';
import { type RoutingFields, routingMac, verifyRouting } from './routing.ts';
import { RowReader } from './rows.ts';

/**
 * Re-encrypts every secret column to the keyring's active key.
 *
 * - In batches, keyset-paged by primary key; each batch is one SELECT and one UPDATE.
 * - Resumable by construction: progress IS the data (`kid` = active key), so a rerun after a
 *   crash simply continues with the rows still on an old key.
 * - Safe next to running operators: the UPDATE is a compare-and-set on the old ciphertext, so
 *   a row a writer changed in between (always to the active key) is skipped, never clobbered;
 *   readers keep working because every old key stays in the ring until rekey reports 0 left.
 * - Rows that cannot be decrypted (unknown kid, tampered) are counted and named (table + row
 *   id, never content) and left as they are.
 */

export interface RekeyFailure {
  table: string;
  rowId: string;
  reason: string;
}

export interface RekeyColumnReport {
  table: string;
  column: string;
  scanned: number;
  rekeyed: number;
  /** Changed by someone else between read and write (they wrote with the active key). */
  skipped: number;
  failed: number;
  /** Rows still not on the active key after the pass. */
  remaining: number;
}

export interface RekeyReport {
  activeKid: string;
  columns: RekeyColumnReport[];
  failures: RekeyFailure[];
  /** Rows per kid after the pass (what an operator checks before removing an old key). */
  kidCounts: Record<string, number>;
}

export interface RekeyOptions {
  batchSize?: number;
  onBatch?: (progress: RekeyColumnReport) => void;
  /** Failure details kept in the report (counts are always complete). */
  maxFailuresListed?: number;
}

export async function countByKid(db: Db): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const col of ENCRYPTED_COLUMNS) {
    const res = await db.query(`SELECT kid, count(*)::bigint AS n FROM ${col.table} GROUP BY kid`);
    for (const row of res.rows) {
      const r = new RowReader(row, col.table);
      const kid = r.str('kid');
      counts[kid] = (counts[kid] ?? 0) + r.int('n');
    }
  }
  // The routing MACs' keys are derived from a master key too: it stays until none uses it.
  const macs = await db.query(
    'SELECT routing_kid AS kid, count(*)::bigint AS n FROM cannes_vps WHERE routing_kid IS NOT NULL GROUP BY routing_kid',
  );
  for (const row of macs.rows) {
    const r = new RowReader(row, 'cannes_vps');
    const kid = r.str('kid');
    counts[kid] = (counts[kid] ?? 0) + r.int('n');
  }
  return counts;
}

export async function rekey(db: Db, keyring: Keyring, opts: RekeyOptions = {}): Promise<RekeyReport> {
  const batchSize = opts.batchSize ?? 200;
  const maxListed = opts.maxFailuresListed ?? 100;
  const failures: RekeyFailure[] = [];
  const columns: RekeyColumnReport[] = [];
  for (const col of ENCRYPTED_COLUMNS) {
    columns.push(await rekeyColumn(db, keyring, col, batchSize, failures, maxListed, opts.onBatch));
  }
  columns.push(await remacRouting(db, keyring, batchSize, failures, maxListed, opts.onBatch));
  return { activeKid: keyring.activeKid, columns, failures, kidCounts: await countByKid(db) };
}

async function rekeyColumn(
  db: Db,
  keyring: Keyring,
  col: EncryptedColumn,
  batchSize: number,
  failures: RekeyFailure[],
  maxListed: number,
  onBatch: RekeyOptions['onBatch'],
): Promise<RekeyColumnReport> {
  const report: RekeyColumnReport = {
    table: col.table,
    column: col.column,
    scanned: 0,
    rekeyed: 0,
    skipped: 0,
    failed: 0,
    remaining: 0,
  };
  const active = keyring.activeKid;
  let cursor: string | null = null;
  for (;;) {
    const page = await db.query(
      `SELECT ${col.key}::text AS k, ${col.rowIdSql} AS rid, ${col.column} AS e
       FROM ${col.table}
       WHERE kid <> $1 AND ($2::text IS NULL OR ${col.key} > $2::${col.keyType})
       ORDER BY ${col.key} LIMIT $3`,
      [active, cursor, batchSize],
    );
    if (page.rows.length === 0) break;
    const keys: string[] = [];
    const olds: string[] = [];
    const news: string[] = [];
    for (const row of page.rows) {
      const r = new RowReader(row, col.table);
      const k = r.str('k');
      const rid = r.str('rid');
      const old = r.str('e');
      cursor = k;
      report.scanned++;
      const binding = { table: col.table, column: col.column, rowId: rid };
      try {
        const plain = await decryptBytes(keyring, old, binding);
        try {
          news.push(await encryptBytes(keyring, plain, binding));
        } finally {
          plain.fill(0);
        }
        keys.push(k);
        olds.push(old);
      } catch (err) {
        if (!(err instanceof EnvelopeError)) throw err;
        report.failed++;
        if (failures.length < maxListed) failures.push({ table: col.table, rowId: rid, reason: err.reason });
      }
    }
    if (keys.length > 0) {
      // Compare-and-set: only rows whose ciphertext is still what we read.
      const upd = await db.query(
        `UPDATE ${col.table} AS t SET ${col.column} = u.e, kid = $1
         FROM unnest($2::${col.keyType}[], $3::text[], $4::text[]) AS u(k, old, e)
         WHERE t.${col.key} = u.k AND t.${col.column} = u.old`,
        [active, keys, olds, news],
      );
      const n = upd.rowCount ?? 0;
      report.rekeyed += n;
      report.skipped += keys.length - n;
    }
    onBatch?.({ ...report });
  }
  const left = await db.query(`SELECT count(*)::bigint AS n FROM ${col.table} WHERE kid <> $1`, [active]);
  report.remaining = new RowReader(left.rows[0], col.table).int('n');
  return report;
}

/**
 * Moves every routing MAC (operator/store/routing.ts) to the active key. A MAC is recomputed
 * only after it verified under its old key: a row whose fields were changed without the master
 * key stays refused (counted as failed, `RoutingFieldsUnauthenticated`), never laundered.
 * Compare-and-set on the old MAC and the fields, as for the ciphertexts.
 */
async function remacRouting(
  db: Db,
  keyring: Keyring,
  batchSize: number,
  failures: RekeyFailure[],
  maxListed: number,
  onBatch: RekeyOptions['onBatch'],
): Promise<RekeyColumnReport> {
  const report: RekeyColumnReport = {
    table: 'cannes_vps',
    column: 'routing_mac',
    scanned: 0,
    rekeyed: 0,
    skipped: 0,
    failed: 0,
    remaining: 0,
  };
  const active = keyring.activeKid;
  let cursor: string | null = null;
  for (;;) {
    const page = await db.query(
      `SELECT uid, server_id, ipv4, host_public_key, routing_mac, routing_kid FROM cannes_vps
       WHERE routing_kid IS DISTINCT FROM $1
         AND (routing_mac IS NOT NULL OR server_id IS NOT NULL OR ipv4 IS NOT NULL OR host_public_key IS NOT NULL)
         AND ($2::text IS NULL OR uid > $2) ORDER BY uid LIMIT $3`,
      [active, cursor, batchSize],
    );
    if (page.rows.length === 0) break;
    for (const row of page.rows) {
      const r = new RowReader(row, 'cannes_vps');
      const f: RoutingFields = {
        uid: r.str('uid'),
        serverId: r.intOrNull('server_id'),
        ipv4: r.strOrNull('ipv4'),
        hostPublicKey: r.strOrNull('host_public_key'),
      };
      cursor = f.uid;
      report.scanned++;
      const old = { kid: r.strOrNull('routing_kid'), mac: r.strOrNull('routing_mac') };
      try {
        await verifyRouting(keyring, f, old);
      } catch (err) {
        if (!(err instanceof CannesError)) throw err;
        report.failed++;
        if (failures.length < maxListed)
          failures.push({ table: 'cannes_vps', rowId: f.uid, reason: err.reason });
        continue;
      }
      const next = await routingMac(keyring, f);
      const upd = await db.query(
        `UPDATE cannes_vps SET routing_mac = $2, routing_kid = $3 WHERE uid = $1 AND routing_mac = $4
           AND server_id IS NOT DISTINCT FROM $5 AND ipv4 IS NOT DISTINCT FROM $6 AND host_public_key IS NOT DISTINCT FROM $7`,
        [f.uid, next.mac, next.kid, old.mac, f.serverId, f.ipv4, f.hostPublicKey],
      );
      if ((upd.rowCount ?? 0) > 0) report.rekeyed++;
      else report.skipped++;
    }
    onBatch?.({ ...report });
  }
  const left = await db.query(
    'SELECT count(*)::bigint AS n FROM cannes_vps WHERE routing_kid IS NOT NULL AND routing_kid <> $1',
    [active],
  );
  report.remaining = new RowReader(left.rows[0], 'cannes_vps').int('n');
  return report;
}
