import { execFile, spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CannesError } from '../../../common/errors.ts';
import { Secret } from '../../../common/secret.ts';
import { ENCRYPTED_COLUMNS, sshKeyBinding } from '../../../operator/store/bindings.ts';
import { encryptBytes } from '../../../operator/store/envelope.ts';
import { type Keyring, parseKeyring } from '../../../operator/store/keyring.ts';
import { createStoreMetrics } from '../../../operator/store/metrics.ts';
import { MIGRATIONS, migrate } from '../../../operator/store/migrations.ts';
import { PostgresStore } from '../../../operator/store/postgres.ts';
import { waitUntil } from '../../lib/wait.ts';
import {
  adminUrl,
  createTestDatabase,
  type PgBouncer,
  pgDump,
  startPgBouncer,
  type TestDatabase,
} from '../../rig/postgres.ts';
import { FAKE_PUBLIC_KEY, privateKeyFor } from './worker.ts';

const run = promisify(execFile);
const WORKER = join(import.meta.dirname, 'worker.ts');
const REKEY_CLI = join(import.meta.dirname, 'rekey-cli.ts');

/** `cannes-operator rekey` in its own process; resolves with its exit status and stdout. */
async function rekeyCli(
  args: string[],
  url: string,
  keysFile: string,
): Promise<{ code: number; out: string }> {
  const env = { ...process.env, DATABASE_URL: url, CANNES_MASTER_KEYS_FILE: keysFile, LOG_LEVEL: 'silent' };
  try {
    const { stdout } = await run(process.execPath, [REKEY_CLI, ...args], { env });
    return { code: 0, out: stdout };
  } catch (err) {
    const e = err as { code?: unknown; stdout?: unknown; stderr?: unknown };
    return { code: typeof e.code === 'number' ? e.code : -1, out: `${String(e.stdout)}${String(e.stderr)}` };
  }
}

export type Mode = 'direct' | 'pgbouncer';

/** Everything one test file needs: a database reached as the operator would, plus a direct URL for pg_dump. */
interface Target {
  /** What the store connects to (direct, or PgBouncer with TLS verify-full). */
  connect(db: TestDatabase): string;
  stop(): Promise<void>;
}

async function startTarget(mode: Mode): Promise<Target> {
  if (mode === 'direct') return { connect: (db) => db.url, stop: async () => undefined };
  const direct = new URL(await adminUrl()); // the rig's server, behind the pooler
  const bouncer: PgBouncer = await startPgBouncer({
    host: direct.hostname,
    port: Number(direct.port || 5432),
  });
  return { connect: (db) => bouncer.url(db.name), stop: () => bouncer.stop() };
}

function keyLines(kids: string[]): string {
  return `${kids.map((kid) => `${kid} ${randomBytes(32).toString('base64')}`).join('\n')}\n`;
}

async function reason(p: Promise<unknown>): Promise<string> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CannesError);
  return (err as CannesError).reason;
}

function flipPart(envelope: string, part: number): string {
  const parts = envelope.split('.');
  const bytes = Buffer.from(parts[part]!, 'base64url');
  const i = bytes.length - 1;
  bytes[i] = bytes[i]! ^ 0x80;
  parts[part] = bytes.toString('base64url');
  return parts.join('.');
}

export function storeSuite(mode: Mode): void {
  describe(`store on real Postgres (${mode})`, () => {
    let target: Target;
    let db: TestDatabase;
    let url: string;
    let dir: string;
    let keysOld: string;
    let keyring: Keyring;
    let store: PostgresStore;
    const runId = randomBytes(6).toString('hex');
    const dbs: TestDatabase[] = [];

    beforeAll(async () => {
      target = await startTarget(mode);
      db = await createTestDatabase();
      dbs.push(db);
      url = target.connect(db);
      dir = mkdtempSync(join(tmpdir(), 'cannes-store-test-'));
      keysOld = keyLines(['k-old']);
      writeFileSync(join(dir, 'keys-old'), keysOld, { mode: 0o600 });
      keyring = await parseKeyring(keysOld, 'test');
      ({ store } = await PostgresStore.open({ connectionString: url, keyring }));
    });

    afterAll(async () => {
      await store?.close();
      await target?.stop();
      for (const d of dbs) await d.drop().catch(() => undefined);
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    async function newVps(): Promise<string> {
      const uid = randomUUID();
      await store.ensureVps({ uid, namespace: 'default', name: `vps-${uid.slice(0, 8)}` });
      return uid;
    }

    async function withActiveKey(
      uid: string,
      plaintext?: string,
    ): Promise<{ id: string; plaintext: string }> {
      const id = randomUUID();
      const value = plaintext ?? privateKeyFor(runId, uid, id);
      await store.insertPendingKey(uid, { id, publicKey: FAKE_PUBLIC_KEY, privateKey: Secret.of(value) });
      await store.promotePendingKey(uid, id);
      return { id, plaintext: value };
    }

    it('runs its migrations once; running them again changes nothing', async () => {
      const again = await migrate(store.db);
      expect(again.applied).toEqual([]);
      expect(again.alreadyApplied).toEqual(MIGRATIONS.map((m) => m.id));
      const rows = await store.db.query('SELECT id FROM cannes_schema_migrations ORDER BY id');
      expect(rows.rows.map((r) => r['id'])).toEqual(MIGRATIONS.map((m) => m.id));
    });

    it('applies migrations in order, only the missing ones, and refuses an edited released migration', async () => {
      const fresh = await createTestDatabase();
      dbs.push(fresh);
      const s2 = new PostgresStore({ connectionString: target.connect(fresh), keyring });
      try {
        const first = await migrate(s2.db, MIGRATIONS.slice(0, 1));
        expect(first.applied).toEqual([MIGRATIONS[0]!.id]);
        const rest = await migrate(s2.db);
        expect(rest.alreadyApplied).toEqual([MIGRATIONS[0]!.id]);
        expect(rest.applied).toEqual(MIGRATIONS.slice(1).map((m) => m.id));
        const edited = { ...MIGRATIONS[0]!, sql: `${MIGRATIONS[0]!.sql}\n-- edited after release` };
        expect(await reason(migrate(s2.db, [edited]))).toBe('MigrationChecksumMismatch');
      } finally {
        await s2.close();
      }
    });

    it('drops the cloud-token table of older versions, rows and all (migration 3)', async () => {
      const fresh = await createTestDatabase();
      dbs.push(fresh);
      const s2 = new PostgresStore({ connectionString: target.connect(fresh), keyring });
      try {
        await migrate(
          s2.db,
          MIGRATIONS.filter((m) => m.id < 3),
        );
        const uid = randomUUID();
        // The row as that version wrote it (today's ensureVps needs migration 4's columns).
        await s2.db.query(
          "INSERT INTO cannes_vps (uid, namespace, name) VALUES ($1, 'default', 'from-an-older-version')",
          [uid],
        );
        const canary = `token-envelope-canary-${randomBytes(16).toString('hex')}`;
        await s2.db.query(
          "INSERT INTO cannes_cloud_token (vps_uid, token_enc, kid, expires_at) VALUES ($1, $2, 'k-old', now() + interval '1 hour')",
          [uid, canary],
        );
        expect(await pgDump(fresh.url)).toContain(canary);
        expect((await migrate(s2.db)).applied).toEqual([3, 4]);
        const table = await s2.db.query("SELECT to_regclass('cannes_cloud_token') AS t");
        expect(table.rows[0]?.['t']).toBeNull();
        expect(await pgDump(fresh.url)).not.toContain(canary);
        // Everything else of the Vps is kept.
        expect((await s2.getVpsState(uid))?.vps.name).toBe('from-an-older-version');
      } finally {
        await s2.close();
      }
    });

    it('lets three operator processes migrate one empty database at once without corrupting it', async () => {
      const fresh = await createTestDatabase();
      dbs.push(fresh);
      const freshUrl = target.connect(fresh);
      const startAt = String(Date.now() + 2500);
      const outs = await Promise.all(
        [1, 2, 3].map(() =>
          run(process.execPath, [WORKER, 'migrate', freshUrl, join(dir, 'keys-old'), startAt]),
        ),
      );
      const reports = outs.map(
        (o) => JSON.parse(o.stdout.trim()) as { applied: number[]; alreadyApplied: number[] },
      );
      // Exactly one process applied each migration; the others found it done.
      for (const m of MIGRATIONS) expect(reports.filter((r) => r.applied.includes(m.id))).toHaveLength(1);
      const check = new PostgresStore({ connectionString: freshUrl, keyring });
      try {
        const rows = await check.db.query('SELECT id FROM cannes_schema_migrations');
        expect(rows.rowCount).toBe(MIGRATIONS.length);
        const uid = randomUUID();
        await check.ensureVps({ uid, namespace: 'ns', name: 'n' });
        expect((await check.getVpsState(uid))?.vps.name).toBe('n');
      } finally {
        await check.close();
      }
    });

    it('round-trips a private key: stored encrypted, returned as a Secret', async () => {
      const uid = await newVps();
      const canary = `canary-${randomBytes(12).toString('hex')}`;
      const { id } = await withActiveKey(uid, canary);
      const raw = await store.db.query('SELECT private_key_enc, kid FROM cannes_ssh_key WHERE id = $1', [id]);
      expect(String(raw.rows[0]?.['private_key_enc'])).not.toContain(canary);
      expect(raw.rows[0]?.['kid']).toBe('k-old');
      const state = await store.getVpsState(uid);
      const secret = await state!.activeKey!.privateKey();
      expect(secret).toBeInstanceOf(Secret);
      expect(secret.reveal()).toBe(canary);
      expect(JSON.stringify(state)).not.toContain(canary);
    });

    it.each([
      ['header', 0],
      ['nonce', 2],
      ['ciphertext', 3],
      ['tag', 4],
    ])('refuses a stored ciphertext with one byte of its %s changed', async (_name, part) => {
      const uid = await newVps();
      const { id } = await withActiveKey(uid);
      const raw = await store.db.query('SELECT private_key_enc FROM cannes_ssh_key WHERE id = $1', [id]);
      const tampered = flipPart(String(raw.rows[0]?.['private_key_enc']), part);
      await store.db.query('UPDATE cannes_ssh_key SET private_key_enc = $2 WHERE id = $1', [id, tampered]);
      const state = await store.getVpsState(uid);
      expect(['EnvelopeTampered', 'EnvelopeMalformed']).toContain(
        await reason(state!.activeKey!.privateKey()),
      );
      if (part !== 0) expect(await reason(state!.activeKey!.privateKey())).toBe('EnvelopeTampered');
    });

    it('refuses ciphertexts swapped between two rows', async () => {
      const a = await newVps();
      const b = await newVps();
      const ka = await withActiveKey(a);
      const kb = await withActiveKey(b);
      await store.db.query(
        `UPDATE cannes_ssh_key SET private_key_enc = CASE id WHEN $1 THEN (SELECT private_key_enc FROM cannes_ssh_key WHERE id = $2)
                                                          ELSE (SELECT private_key_enc FROM cannes_ssh_key WHERE id = $1) END
         WHERE id IN ($1, $2)`,
        [ka.id, kb.id],
      );
      for (const uid of [a, b]) {
        const state = await store.getVpsState(uid);
        expect(await reason(state!.activeKey!.privateKey())).toBe('EnvelopeBindingMismatch');
      }
    });

    it('returns typed errors for a truncated, empty, unknown-key or non-UTF-8 stored value', async () => {
      const uid = await newVps();
      const { id } = await withActiveKey(uid);
      const raw = await store.db.query('SELECT private_key_enc FROM cannes_ssh_key WHERE id = $1', [id]);
      const good = String(raw.rows[0]?.['private_key_enc']);
      const otherRing = await parseKeyring(keyLines(['k-unknown']), 'test');
      const cases: Array<[string, string]> = [
        [good.slice(0, Math.floor(good.length / 2)), 'EnvelopeMalformed'],
        ['', 'EnvelopeMalformed'],
        [
          await encryptBytes(otherRing, new TextEncoder().encode('x'), sshKeyBinding(uid, id)),
          'EnvelopeUnknownKey',
        ],
        [
          await encryptBytes(keyring, new Uint8Array([0xc3, 0x28, 0xff]), sshKeyBinding(uid, id)),
          'EnvelopeNotUtf8',
        ],
      ];
      for (const [value, expected] of cases) {
        await store.db.query('UPDATE cannes_ssh_key SET private_key_enc = $2 WHERE id = $1', [id, value]);
        const keys = await store.listLoginKeys(uid);
        expect(await reason(keys[0]!.privateKey())).toBe(expected);
      }
    });

    it('keeps at least one key that can log in at every step of a rotation, and never two active keys', async () => {
      const uid = await newVps();
      const first = await withActiveKey(uid);
      expect((await store.listLoginKeys(uid)).map((k) => [k.id, k.state])).toEqual([[first.id, 'active']]);

      const nextId = randomUUID();
      const pending = await store.insertPendingKey(uid, {
        id: nextId,
        publicKey: FAKE_PUBLIC_KEY,
        privateKey: Secret.of(privateKeyFor(runId, uid, nextId)),
      });
      expect(pending.state).toBe('pending');
      // Retrying the same insert (a lost reply) finds the same row.
      expect(
        (
          await store.insertPendingKey(uid, {
            id: nextId,
            publicKey: FAKE_PUBLIC_KEY,
            privateKey: Secret.of('x'),
          })
        ).id,
      ).toBe(nextId);
      // A crash here: both the old and the new key may log in, active first.
      expect((await store.listLoginKeys(uid)).map((k) => [k.id, k.state])).toEqual([
        [first.id, 'active'],
        [nextId, 'pending'],
      ]);
      const state = await store.getVpsState(uid);
      expect(state?.activeKey?.id).toBe(first.id);
      expect(state?.pendingKey?.id).toBe(nextId);
      expect(
        await reason(
          store.insertPendingKey(uid, { publicKey: FAKE_PUBLIC_KEY, privateKey: Secret.of('another') }),
        ),
      ).toBe('RotationInProgress');

      const promoted = await store.promotePendingKey(uid, nextId);
      expect(promoted.active.id).toBe(nextId);
      expect(promoted.active.rotatedAt).toBeInstanceOf(Date);
      expect(promoted.retired?.id).toBe(first.id);
      // Idempotent: a retry after a lost COMMIT reply reports the same outcome.
      const again = await store.promotePendingKey(uid, nextId);
      expect([again.active.id, again.retired?.id]).toEqual([nextId, first.id]);
      expect((await store.listLoginKeys(uid)).map((k) => [k.id, k.state])).toEqual([[nextId, 'active']]);

      // The schema itself refuses a second active key.
      await expect(
        store.db.query(`UPDATE cannes_ssh_key SET state = 'active' WHERE id = $1`, [first.id]),
      ).rejects.toThrow(/cannes_ssh_key_one_active/);
      expect(await store.deleteRetiredKeys(uid)).toBe(1);
      const states = await store.db.query('SELECT state FROM cannes_ssh_key WHERE vps_uid = $1', [uid]);
      expect(states.rows.map((r) => r['state'])).toEqual(['active']);
      expect((await (await store.listLoginKeys(uid))[0]!.privateKey()).reveal()).toBe(
        privateKeyFor(runId, uid, nextId),
      );
    });

    it('discards a pending key that never reached the server', async () => {
      const uid = await newVps();
      const first = await withActiveKey(uid);
      const p = await store.insertPendingKey(uid, {
        publicKey: FAKE_PUBLIC_KEY,
        privateKey: Secret.of('pending-value'),
      });
      expect(await store.discardPendingKey(uid, p.id)).toBe(true);
      expect(await store.discardPendingKey(uid, first.id)).toBe(false);
      expect(await reason(store.promotePendingKey(uid, p.id))).toBe('PendingKeyNotFound');
      expect((await store.listLoginKeys(uid)).map((k) => k.id)).toEqual([first.id]);
    });

    it('pins a host key once and refuses a different one unless replacing on purpose', async () => {
      const uid = await newVps();
      const hostKey = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostHostHostHostHostHostHostHostHostHost root@os';
      await store.pinHostKey(uid, hostKey);
      await store.pinHostKey(uid, hostKey);
      const other = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherOtherOtherOtherOtherOtherOtherOther root@evil';
      expect(await reason(store.pinHostKey(uid, other))).toBe('HostKeyAlreadyPinned');
      expect((await store.getVpsState(uid))?.vps.hostPublicKey).toBe(hostKey);
      await store.pinHostKey(uid, other, { replace: true });
      expect((await store.getVpsState(uid))?.vps.hostPublicKey).toBe(other);
      await store.recordServer(uid, { serverId: 4242, ipv4: '198.18.0.7' });
      const vps = (await store.getVpsState(uid))?.vps;
      expect([vps?.serverId, vps?.ipv4]).toEqual([4242, '198.18.0.7']);
      expect(await reason(store.recordServer(randomUUID(), { serverId: 1, ipv4: null }))).toBe(
        'VpsRowMissing',
      );
    });

    it('binds server id, address and host key to the master key: a change by SQL alone is refused on read and write', async () => {
      const uid = await newVps();
      await withActiveKey(uid);
      await store.recordServer(uid, { serverId: 4243, ipv4: '198.18.0.8' });
      await store.pinHostKey(uid, FAKE_PUBLIC_KEY);
      expect((await store.getVpsState(uid))?.vps.ipv4).toBe('198.18.0.8');
      const mac = await store.db.query('SELECT routing_mac, routing_kid FROM cannes_vps WHERE uid = $1', [
        uid,
      ]);
      expect(mac.rows[0]?.['routing_kid']).toBe('k-old');
      const evil = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEvilEvilEvilEvilEvilEvilEvilEvilEvilEvil evil';
      const tamper = async (sql: string, values: unknown[]): Promise<void> => {
        await store.db.query(sql, [uid, ...values]);
      };
      const restore = (): Promise<void> =>
        tamper(
          "UPDATE cannes_vps SET server_id = 4243, ipv4 = '198.18.0.8', host_public_key = $2, routing_mac = $3, routing_kid = $4 WHERE uid = $1",
          [FAKE_PUBLIC_KEY, mac.rows[0]?.['routing_mac'], mac.rows[0]?.['routing_kid']],
        );
      const refused = async (): Promise<void> => {
        expect(await reason(store.getVpsState(uid))).toBe('RoutingFieldsUnauthenticated');
        // A write of another field does not launder the changed one.
        expect(await reason(store.recordServer(uid, { serverId: 4243, ipv4: '198.18.0.9' }))).toBe(
          'RoutingFieldsUnauthenticated',
        );
        expect(await reason(store.pinHostKey(uid, evil, { replace: true }))).toBe(
          'RoutingFieldsUnauthenticated',
        );
        await restore();
        expect((await store.getVpsState(uid))?.vps.ipv4).toBe('198.18.0.8');
      };
      await tamper("UPDATE cannes_vps SET ipv4 = '198.18.66.6' WHERE uid = $1", []);
      await refused();
      await tamper('UPDATE cannes_vps SET host_public_key = $2 WHERE uid = $1', [evil]);
      await refused();
      await tamper('UPDATE cannes_vps SET server_id = 1 WHERE uid = $1', []);
      await refused();
      await tamper('UPDATE cannes_vps SET routing_mac = NULL, routing_kid = NULL WHERE uid = $1', []);
      await refused();
      // Another row's valid MAC does not fit (the uid is under the MAC).
      const other = await newVps();
      await store.recordServer(other, { serverId: 4243, ipv4: '198.18.66.6' });
      await store.pinHostKey(other, FAKE_PUBLIC_KEY);
      await tamper(
        "UPDATE cannes_vps SET ipv4 = '198.18.66.6', (routing_mac, routing_kid) = (SELECT routing_mac, routing_kid FROM cannes_vps WHERE uid = $2) WHERE uid = $1",
        [other],
      );
      await refused();
      // A MAC by a key outside the keyring (an attacker's own keyring) is refused too.
      const foreign = await parseKeyring(keyLines(['k-old']), 'attacker');
      const theirs = await PostgresStore.open({ connectionString: url, keyring: foreign });
      try {
        await tamper(
          'UPDATE cannes_vps SET ipv4 = NULL, server_id = NULL, host_public_key = NULL, routing_mac = NULL WHERE uid = $1',
          [],
        );
        await theirs.store.recordServer(uid, { serverId: 4243, ipv4: '198.18.66.6' });
      } finally {
        await theirs.store.close();
      }
      expect(await reason(store.getVpsState(uid))).toBe('RoutingFieldsUnauthenticated');
      await restore();
    });

    it('MACs the rows of an older version once, in migration 4, and never adopts a row again', async () => {
      const fresh = await createTestDatabase();
      dbs.push(fresh);
      const s2 = new PostgresStore({ connectionString: target.connect(fresh), keyring });
      try {
        await migrate(
          s2.db,
          MIGRATIONS.filter((m) => m.id < 4),
        );
        const uid = randomUUID();
        await s2.db.query(
          "INSERT INTO cannes_vps (uid, namespace, name, server_id, ipv4, host_public_key) VALUES ($1, 'default', 'old', 77, '198.18.0.77', $2)",
          [uid, FAKE_PUBLIC_KEY],
        );
        expect(await reason(migrate(s2.db))).toBe('MigrationNeedsKeyring');
        expect((await migrate(s2.db, MIGRATIONS, { keyring })).applied).toEqual([4]);
        expect((await s2.getVpsState(uid))?.vps.ipv4).toBe('198.18.0.77');
        await s2.db.query("UPDATE cannes_vps SET ipv4 = '198.18.66.6' WHERE uid = $1", [uid]);
        expect(await reason(s2.getVpsState(uid))).toBe('RoutingFieldsUnauthenticated');
        // Replaying the adoption by deleting the migration's record: the operator refuses to start.
        await s2.db.query('DELETE FROM cannes_schema_migrations WHERE id = 4');
        await expect(migrate(s2.db, MIGRATIONS, { keyring })).rejects.toThrow(/already exists/);
        expect(await reason(s2.getVpsState(uid))).toBe('RoutingFieldsUnauthenticated');
      } finally {
        await s2.close();
      }
    });

    it('rekey moves routing MACs to the active key after checking them, and leaves a changed row refused', async () => {
      const rdb = await createTestDatabase();
      dbs.push(rdb);
      const rurl = target.connect(rdb);
      const { store: s1 } = await PostgresStore.open({ connectionString: rurl, keyring });
      const good = randomUUID();
      const bad = randomUUID();
      try {
        for (const uid of [good, bad]) {
          await s1.ensureVps({ uid, namespace: 'default', name: uid.slice(0, 8) });
          await s1.recordServer(uid, { serverId: 9, ipv4: '198.18.0.9' });
        }
        await s1.db.query("UPDATE cannes_vps SET ipv4 = '198.18.66.6' WHERE uid = $1", [bad]);
      } finally {
        await s1.close();
      }
      const newLine = keyLines(['k-mac']);
      writeFileSync(join(dir, 'keys-mac'), newLine + keysOld, { mode: 0o600 });
      const out = await rekeyCli([], rurl, join(dir, 'keys-mac'));
      expect(out.code, out.out).toBe(1);
      expect(out.out).toMatch(
        /cannes_vps\.routing_mac: scanned 2, rekeyed 1, skipped 0 \(changed concurrently\), failed 1, remaining 1/,
      );
      expect(out.out).toContain(`failed: cannes_vps row ${bad}: RoutingFieldsUnauthenticated`);
      const newOnly = new PostgresStore({
        connectionString: rurl,
        keyring: await parseKeyring(newLine, 'test'),
      });
      try {
        expect((await newOnly.getVpsState(good))?.vps.ipv4).toBe('198.18.0.9');
        expect(await reason(newOnly.getVpsState(bad))).toBe('RoutingFieldsUnauthenticated');
      } finally {
        await newOnly.close();
      }
    });

    it('reruns a transaction whose connection is killed between statements, without crashing', async () => {
      let runs = 0;
      const retriesBefore = store.db.retries;
      const result = await store.db.transaction(async (q) => {
        runs++;
        const pid = (await q.query('SELECT pg_backend_pid() AS pid')).rows[0]?.['pid'];
        if (runs === 1) {
          // Killed from another connection while this transaction is open and idle.
          await store.db.query('SELECT pg_terminate_backend($1)', [pid]);
          await sleep(300);
        }
        return (await q.query('SELECT 41 + 1 AS n')).rows[0]?.['n'];
      });
      expect(result).toBe(42);
      expect(runs).toBe(2);
      expect(store.db.retries).toBeGreaterThan(retriesBefore);
    });

    it('counts statements, schema version and decrypt failures by reason in its metrics', async () => {
      const registry = new Registry();
      const metered = new PostgresStore({
        connectionString: url,
        keyring,
        metrics: createStoreMetrics(registry),
      });
      try {
        await migrate(metered.db);
        const uid = randomUUID();
        await metered.ensureVps({ uid, namespace: 'ns', name: 'metered' });
        const p = await metered.insertPendingKey(uid, {
          publicKey: FAKE_PUBLIC_KEY,
          privateKey: Secret.of('metered-value'),
        });
        const raw = await metered.db.query('SELECT private_key_enc FROM cannes_ssh_key WHERE id = $1', [
          p.id,
        ]);
        await metered.db.query('UPDATE cannes_ssh_key SET private_key_enc = $2 WHERE id = $1', [
          p.id,
          flipPart(String(raw.rows[0]?.['private_key_enc']), 3),
        ]);
        await reason((await metered.listLoginKeys(uid))[0]!.privateKey());
        const text = await registry.metrics();
        expect(text).toMatch(/cannes_store_decrypt_failures_total\{reason="EnvelopeTampered"\} 1/);
        expect(text).toMatch(new RegExp(`cannes_store_statements_total ${metered.db.statements}\\b`));
        expect(text).not.toContain('metered-value');
      } finally {
        await metered.close();
      }
    });

    it('answers a reconcile that changes nothing with one query', async () => {
      const uid = await newVps();
      await store.recordServer(uid, { serverId: 77, ipv4: '198.18.0.9' });
      await withActiveKey(uid);
      const before = store.db.statements;
      const state = await store.getVpsState(uid);
      expect(state?.vps.serverId).toBe(77);
      expect(state?.activeKey).not.toBeNull();
      expect(store.db.statements - before).toBe(1);
    });

    it('never lets a plaintext canary reach any table (pg_dump scan)', async () => {
      const uid = await newVps();
      const keyCanary = `key-canary-${randomBytes(16).toString('hex')}`;
      await withActiveKey(uid, keyCanary);
      const pendingCanary = `pending-canary-${randomBytes(16).toString('hex')}`;
      await store.insertPendingKey(uid, { publicKey: FAKE_PUBLIC_KEY, privateKey: Secret.of(pendingCanary) });
      const dump = await pgDump(db.url);
      expect(dump).toContain(uid); // the dump does include this Vps's rows
      for (const c of [keyCanary, pendingCanary]) {
        expect(dump).not.toContain(c);
        expect(dump).not.toContain(Buffer.from(c).toString('base64'));
        expect(dump).not.toContain(Buffer.from(c).toString('hex'));
      }
    });

    it('rekeys every row while another process reads and writes; after removing the old key all still decrypt', async () => {
      // A separate database so the concurrent writer touches only rows of this test.
      const rdb = await createTestDatabase();
      dbs.push(rdb);
      const rurl = target.connect(rdb);
      const oldRing = await parseKeyring(keysOld, 'test');
      const { store: s1 } = await PostgresStore.open({ connectionString: rurl, keyring: oldRing });
      const uids: string[] = [];
      try {
        for (let i = 0; i < 40; i++) {
          const uid = `rk-${i.toString().padStart(3, '0')}-${randomBytes(3).toString('hex')}`;
          uids.push(uid);
          await s1.ensureVps({ uid, namespace: 'default', name: uid });
          const id = randomUUID();
          await s1.insertPendingKey(uid, {
            id,
            publicKey: FAKE_PUBLIC_KEY,
            privateKey: Secret.of(privateKeyFor(runId, uid, id)),
          });
          await s1.promotePendingKey(uid, id);
        }
      } finally {
        await s1.close();
      }
      // New key first, old key kept: what every replica runs during a rotation.
      const newLine = keyLines(['k-new']);
      writeFileSync(join(dir, 'keys-both'), newLine + keysOld, { mode: 0o600 });
      writeFileSync(join(dir, 'keys-new-only'), newLine, { mode: 0o600 });
      const stopFile = join(dir, `stop-${randomBytes(4).toString('hex')}`);
      const worker = run(process.execPath, [WORKER, 'churn', rurl, join(dir, 'keys-both'), runId, stopFile]);
      const opsSoFar = (): number => {
        try {
          return Number(readFileSync(`${stopFile}.ops`, 'utf8')) || 0;
        } catch {
          return 0;
        }
      };
      const waitForOps = (n: number): Promise<void> =>
        waitUntil(`${n} operations of the concurrent writer`, () => opsSoFar() >= n, 60_000, {
          intervalMs: 100,
        });
      let rekeyOut: { code: number; out: string };
      try {
        await waitForOps(5); // the writer is running before rekey starts ...
        rekeyOut = await rekeyCli(['--batch-size', '7'], rurl, join(dir, 'keys-both'));
        await waitForOps(opsSoFar() + 5); // ... and keeps going after it
      } finally {
        writeFileSync(stopFile, '');
      }
      const { code, out } = rekeyOut;
      const churn = JSON.parse((await worker).stdout.trim()) as {
        ops: number;
        errors: number;
        errorReasons: string[];
      };
      expect(churn.errorReasons).toEqual([]);
      expect(churn.ops).toBeGreaterThan(0);
      expect(code, out).toBe(0);
      expect(out).toMatch(/total: remaining 0, failed 0/);
      expect(out).toMatch(/cannes_ssh_key\.private_key_enc: scanned \d+, rekeyed \d+/);

      // The old key is gone from the ring: every row must still decrypt, none lost.
      const newRing = await parseKeyring(newLine, 'test');
      const check = new PostgresStore({ connectionString: rurl, keyring: newRing });
      try {
        const kids = await check.db.query('SELECT DISTINCT kid FROM cannes_ssh_key');
        expect(kids.rows.map((r) => r['kid'])).toEqual(['k-new']);
        for (const uid of uids) {
          const state = await check.getVpsState(uid);
          expect(state?.activeKey, uid).not.toBeNull();
          const key = state!.activeKey!;
          expect((await key.privateKey()).reveal()).toBe(privateKeyFor(runId, uid, key.id));
        }
        // And a second rekey run has nothing left to do.
        const second = await rekeyCli([], rurl, join(dir, 'keys-new-only'));
        expect(second.code, second.out).toBe(0);
        expect(second.out).toMatch(/scanned 0, rekeyed 0/);
      } finally {
        await check.close();
      }
    });

    it('resumes a rekey that was killed half-way, and reports rows it cannot decrypt without touching them', async () => {
      const rdb = await createTestDatabase();
      dbs.push(rdb);
      const rurl = target.connect(rdb);
      const oldRing = await parseKeyring(keysOld, 'test');
      const { store: s1 } = await PostgresStore.open({ connectionString: rurl, keyring: oldRing });
      const total = 300;
      try {
        // Enough rows that a batch-size-1 run is still going when we kill it.
        for (let i = 0; i < total; i++) {
          const uid = `rs-${i.toString().padStart(4, '0')}`;
          await s1.ensureVps({ uid, namespace: 'default', name: uid });
          const id = randomUUID();
          const privateKey = Secret.of(privateKeyFor(runId, uid, id));
          await s1.saveRescueResult(uid, FAKE_PUBLIC_KEY, { id, publicKey: FAKE_PUBLIC_KEY, privateKey });
        }
        const newLine = keyLines(['k-resume']);
        const keysFile = join(dir, 'keys-resume');
        writeFileSync(keysFile, newLine + keysOld, { mode: 0o600 });
        const onNew = async (): Promise<number> =>
          Number(
            (await s1.db.query("SELECT count(*) AS n FROM cannes_ssh_key WHERE kid = 'k-resume'")).rows[0]?.[
              'n'
            ],
          );

        // First run: killed (SIGKILL, no cleanup) once some but not all rows moved.
        const env = {
          ...process.env,
          DATABASE_URL: rurl,
          CANNES_MASTER_KEYS_FILE: keysFile,
          LOG_LEVEL: 'silent',
        };
        const child = spawn(process.execPath, [REKEY_CLI, '--batch-size', '1'], { env, stdio: 'ignore' });
        const exited = new Promise((r) => child.once('exit', r));
        let moved = 0;
        for (let i = 0; i < 3000 && moved === 0; i++) {
          moved = await onNew();
          if (moved === 0) await sleep(10);
        }
        child.kill('SIGKILL');
        await exited;
        // The statement the killed process had sent still runs to its end in its backend: wait
        // until no other session of this database is active before counting.
        await waitUntil(
          "the killed rekey's last statement finished",
          async () =>
            Number(
              (
                await s1.db.query(
                  "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'active'",
                )
              ).rows[0]?.['n'],
            ) === 0,
          30_000,
          { intervalMs: 20 },
        );
        const afterKill = await onNew();
        expect(afterKill).toBeGreaterThan(0);
        expect(afterKill).toBeLessThan(total);

        // A row no key in the ring can open: reported by table and row id, left as it is.
        const stranger = await parseKeyring(keyLines(['k-gone']), 'test');
        await s1.ensureVps({ uid: 'rs-stranger', namespace: 'default', name: 'rs-stranger' });
        const strangerId = randomUUID();
        const strangerEnv = await encryptBytes(
          stranger,
          new TextEncoder().encode('x'),
          sshKeyBinding('rs-stranger', strangerId),
        );
        await s1.db.query(
          "INSERT INTO cannes_ssh_key (id, vps_uid, state, public_key, private_key_enc, kid) VALUES ($1, 'rs-stranger', 'active', $2, $3, 'k-gone')",
          [strangerId, FAKE_PUBLIC_KEY, strangerEnv],
        );

        // Second run: picks up where the first stopped.
        const second = await rekeyCli([], rurl, keysFile);
        expect(second.code, second.out).toBe(1);
        expect(second.out).toContain(
          `failed: cannes_ssh_key row rs-stranger/${strangerId}: EnvelopeUnknownKey`,
        );
        expect(second.out).toMatch(
          new RegExp(
            `cannes_ssh_key\\.private_key_enc: scanned ${total - afterKill + 1}, rekeyed ${total - afterKill},`,
          ),
        );
        expect(second.out).toMatch(/total: remaining 1, failed 1/);
        const dry = await rekeyCli(['--dry-run'], rurl, keysFile);
        expect(dry.code, dry.out).toBe(0);
        // Each Vps: its SSH key's ciphertext and its routing MAC (operator/store/routing.ts).
        expect(dry.out).toContain(`k-resume: ${2 * total} row(s)`);
        expect(dry.out).toContain('k-gone: 1 row(s) (NOT IN KEYRING)');
        const still = await s1.db.query('SELECT private_key_enc FROM cannes_ssh_key WHERE id = $1', [
          strangerId,
        ]);
        expect(still.rows[0]?.['private_key_enc']).toBe(strangerEnv);

        const newOnly = new PostgresStore({
          connectionString: rurl,
          keyring: await parseKeyring(newLine, 'test'),
        });
        try {
          for (let i = 0; i < total; i++) {
            const uid = `rs-${i.toString().padStart(4, '0')}`;
            const key = (await newOnly.getVpsState(uid))?.activeKey;
            expect(key, uid).toBeTruthy();
            expect((await key!.privateKey()).reveal()).toBe(privateKeyFor(runId, uid, key!.id));
          }
        } finally {
          await newOnly.close();
        }
      } finally {
        await s1.close();
      }
    });

    it('keeps the binding SQL in rekey equal to the binding the store writes', async () => {
      const uid = await newVps();
      const { id } = await withActiveKey(uid);
      // A new encrypted column gets its own check here.
      expect(ENCRYPTED_COLUMNS.map((c) => `${c.table}.${c.column}`)).toEqual([
        'cannes_ssh_key.private_key_enc',
      ]);
      const r = await store.db.query(
        `SELECT ${ENCRYPTED_COLUMNS[0]!.rowIdSql} AS rid FROM cannes_ssh_key WHERE id = $1`,
        [id],
      );
      expect(r.rows[0]?.['rid']).toBe(sshKeyBinding(uid, id).rowId);
    });
  });
}
