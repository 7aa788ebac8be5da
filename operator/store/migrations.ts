import { createHash } from 'node:crypto';
import { TerminalError } from '../../common/errors.ts';
import type { Db, Queryable } from './db.ts';
import type { Keyring } from './keyring.ts';
import { routingMac } from './routing.ts';
import { RowReader } from './rows.ts';

/**
 * Ordered, append-only schema migrations. Never edit a released migration: add a new one
 * (the checksum check refuses a database migrated with a different text).
 *
 * Locking that works through PgBouncer in transaction mode (Neon's `-pooler` host): each
 * migration runs in ONE transaction that first takes `pg_advisory_xact_lock` (released by
 * COMMIT/ROLLBACK, so nothing is held across transactions or tied to a session), then
 * re-checks the migrations table inside the lock. Two operators starting at once serialise
 * on the lock; the second sees the row the first committed and skips. DDL is transactional
 * in Postgres, so a crash mid-migration leaves nothing half-applied.
 */

export interface Migration {
  readonly id: number;
  readonly name: string;
  readonly sql: string;
  /**
   * Runs after `sql`, in the same transaction, with the keyring (values only the master key
   * can compute). Not part of the checksum. A migration that finds rows to fill and has no
   * keyring refuses (`MigrationNeedsKeyring`).
   */
  readonly fill?: (q: Queryable, keyring: Keyring | undefined) => Promise<void>;
}

// Arbitrary constant: "cannes" in ASCII, the advisory-lock key for schema changes.
const MIGRATION_LOCK_KEY = 0x63616e6e6573;

export const MIGRATIONS: readonly Migration[] = [
  {
    id: 1,
    name: 'vps, ssh keys, cloud tokens',
    sql: `
CREATE TABLE cannes_vps (
  uid             text PRIMARY KEY,
  namespace       text NOT NULL,
  name            text NOT NULL,
  server_id       bigint,
  ipv4            text,
  host_public_key text,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cannes_vps_namespace_name ON cannes_vps (namespace, name);

CREATE TABLE cannes_ssh_key (
  id              uuid PRIMARY KEY,
  vps_uid         text NOT NULL REFERENCES cannes_vps (uid) ON DELETE CASCADE,
  state           text NOT NULL CHECK (state IN ('pending', 'active', 'retired')),
  public_key      text NOT NULL,
  private_key_enc text NOT NULL,
  kid             text NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now(),
  rotated_at      timestamptz,
  retired_at      timestamptz,
  updated_at      timestamptz NOT NULL DEFAULT now()
);
-- Promise 5: never two active keys, at most one rotation in flight.
CREATE UNIQUE INDEX cannes_ssh_key_one_active ON cannes_ssh_key (vps_uid) WHERE state = 'active';
CREATE UNIQUE INDEX cannes_ssh_key_one_pending ON cannes_ssh_key (vps_uid) WHERE state = 'pending';
CREATE INDEX cannes_ssh_key_kid ON cannes_ssh_key (kid);

CREATE TABLE cannes_cloud_token (
  vps_uid    text PRIMARY KEY REFERENCES cannes_vps (uid) ON DELETE CASCADE,
  token_enc  text NOT NULL,
  kid        text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL
);
CREATE INDEX cannes_cloud_token_kid ON cannes_cloud_token (kid);
`,
  },
  {
    id: 2,
    name: 'ssh key origin (rescue-born keys are rotated once after provisioning)',
    sql: `
ALTER TABLE cannes_ssh_key
  ADD COLUMN origin text NOT NULL DEFAULT 'rotation' CHECK (origin IN ('rescue', 'rotation'));
`,
  },
  {
    id: 3,
    name: 'drop cannes_cloud_token (the operator reads the token from its Secret and never stored it)',
    // Its index goes with it. A row left by a test or an old build held only ciphertext.
    sql: `
DROP TABLE IF EXISTS cannes_cloud_token;
`,
  },
  {
    id: 4,
    name: 'routing MAC: server id, address and host key bound to the master key',
    // Decision (docs/security.md, "Routing fields"): existing rows are MACed HERE, once, by the
    // first operator (or rekey) of this version, under the migration lock and in the same
    // transaction as the ALTER. That is the one moment a row's routing fields are taken as they
    // are. It cannot be replayed: deleting this migration's record makes the ALTER fail (the
    // columns exist), so the operator refuses to start rather than adopt rows again. After it, a
    // row with routing fields and no valid MAC is refused on every read.
    sql: `
ALTER TABLE cannes_vps ADD COLUMN routing_mac text, ADD COLUMN routing_kid text;
CREATE INDEX cannes_vps_routing_kid ON cannes_vps (routing_kid);
`,
    fill: fillRoutingMacs,
  },
];

async function fillRoutingMacs(q: Queryable, keyring: Keyring | undefined): Promise<void> {
  const rows = await q.query(
    `SELECT uid, server_id, ipv4, host_public_key FROM cannes_vps
     WHERE server_id IS NOT NULL OR ipv4 IS NOT NULL OR host_public_key IS NOT NULL`,
  );
  if (rows.rows.length === 0) return;
  if (keyring === undefined)
    throw new TerminalError(
      'MigrationNeedsKeyring',
      `migration 4 must MAC ${rows.rows.length} existing row(s) and was run without the master keys`,
    );
  for (const row of rows.rows) {
    const r = new RowReader(row, 'cannes_vps');
    const f = {
      uid: r.str('uid'),
      serverId: r.intOrNull('server_id'),
      ipv4: r.strOrNull('ipv4'),
      hostPublicKey: r.strOrNull('host_public_key'),
    };
    const { kid, mac } = await routingMac(keyring, f);
    await q.query('UPDATE cannes_vps SET routing_mac = $2, routing_kid = $3 WHERE uid = $1', [
      f.uid,
      mac,
      kid,
    ]);
  }
}

export interface MigrationReport {
  applied: number[];
  alreadyApplied: number[];
}

export function checksum(m: Migration): string {
  return createHash('sha256').update(m.sql).digest('hex');
}

export async function migrate(
  db: Db,
  migrations: readonly Migration[] = MIGRATIONS,
  opts: { keyring?: Keyring } = {},
): Promise<MigrationReport> {
  const report: MigrationReport = { applied: [], alreadyApplied: [] };
  for (const m of [...migrations].sort((a, b) => a.id - b.id)) {
    // Idempotent by construction (re-checked under the lock), so a lost connection is retried.
    const did = await db.transaction(async (q) => {
      await q.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK_KEY]);
      await q.query(
        `CREATE TABLE IF NOT EXISTS cannes_schema_migrations (
           id integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,
           applied_at timestamptz NOT NULL DEFAULT now())`,
      );
      const existing = await q.query<{ checksum: string }>(
        'SELECT checksum FROM cannes_schema_migrations WHERE id = $1',
        [m.id],
      );
      const row = existing.rows[0];
      if (row !== undefined) {
        if (row.checksum !== checksum(m)) {
          throw new TerminalError(
            'MigrationChecksumMismatch',
            `migration ${m.id} (${m.name}) in the database differs from this operator's; refusing to start`,
          );
        }
        return false;
      }
      await q.query(m.sql);
      await m.fill?.(q, opts.keyring);
      await q.query('INSERT INTO cannes_schema_migrations (id, name, checksum) VALUES ($1, $2, $3)', [
        m.id,
        m.name,
        checksum(m),
      ]);
      return true;
    });
    (did ? report.applied : report.alreadyApplied).push(m.id);
  }
  return report;
}
