import { randomUUID } from 'node:crypto';
import { isIPv4 } from 'node:net';
import { CannesError, TerminalError } from '../../common/errors.ts';
import type { Secret } from '../../common/secret.ts';
import { sshKeyBinding } from './bindings.ts';
import { Db, type DbOptions, type Queryable } from './db.ts';
import { type Binding, decryptSecret, EnvelopeError, encryptSecret } from './envelope.ts';
import type { Keyring } from './keyring.ts';
import { type MigrationReport, migrate } from './migrations.ts';
import { ROUTING_UNAUTHENTICATED, type RoutingFields, routingMac, verifyRouting } from './routing.ts';
import { RowReader } from './rows.ts';
import type {
  NewSshKey,
  PromoteResult,
  ServerFacts,
  SshKey,
  SshKeyInfo,
  SshKeyOrigin,
  SshKeyState,
  Store,
  VpsIdentity,
  VpsRow,
  VpsState,
} from './types.ts';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const PUBLIC_KEY = /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)) [A-Za-z0-9+/]+={0,2}( [^\r\n]*)?$/;

const VPS_COLS =
  'v.uid, v.namespace, v.name, v.server_id, v.ipv4, v.host_public_key, v.created_at, v.updated_at, ' +
  'v.routing_mac, v.routing_kid';
const KEY_COLS =
  'k.id, k.vps_uid, k.state, k.origin, k.public_key, k.private_key_enc, k.kid, k.created_at, k.rotated_at, k.retired_at';
// The same key columns under a prefix, for the one-query join in getVpsState.
const KEY_COLS_PREFIXED =
  'k.id AS k_id, k.vps_uid AS k_vps_uid, k.state AS k_state, k.origin AS k_origin, k.public_key AS k_public_key, ' +
  'k.private_key_enc AS k_private_key_enc, k.kid AS k_kid, k.created_at AS k_created_at, ' +
  'k.rotated_at AS k_rotated_at, k.retired_at AS k_retired_at';

function checkUid(uid: string): void {
  if (typeof uid !== 'string' || uid.length === 0 || uid.length > 253 || /[\s/]/.test(uid)) {
    throw new TerminalError('InvalidVpsUid', 'a Vps uid must be 1-253 characters without whitespace or "/"');
  }
}

function checkKeyId(id: string): string {
  const lower = id.toLowerCase();
  if (!UUID.test(lower)) throw new TerminalError('InvalidKeyId', 'an SSH key id must be a UUID');
  return lower;
}

function checkPublicKey(publicKey: string, what: string): void {
  if (!PUBLIC_KEY.test(publicKey.trim()))
    throw new TerminalError('InvalidPublicKey', `${what} is not an OpenSSH public key line`);
}

function pgCode(err: unknown): string | undefined {
  return err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}

function readVps(r: RowReader): VpsRow {
  return {
    uid: r.str('uid'),
    namespace: r.str('namespace'),
    name: r.str('name'),
    serverId: r.intOrNull('server_id'),
    ipv4: r.strOrNull('ipv4'),
    hostPublicKey: r.strOrNull('host_public_key'),
    createdAt: r.date('created_at'),
    updatedAt: r.date('updated_at'),
  };
}

function routingOf(r: RowReader): RoutingFields {
  return {
    uid: r.str('uid'),
    serverId: r.intOrNull('server_id'),
    ipv4: r.strOrNull('ipv4'),
    hostPublicKey: r.strOrNull('host_public_key'),
  };
}

function readOrigin(v: string): SshKeyOrigin {
  if (v === 'rescue' || v === 'rotation') return v;
  throw new CannesError('StoreCorrupt', `unknown ssh key origin ${JSON.stringify(v)}`);
}

function readState(v: string): SshKeyState {
  if (v === 'pending' || v === 'active' || v === 'retired') return v;
  throw new CannesError('StoreCorrupt', `unknown ssh key state ${JSON.stringify(v)}`);
}

export interface PostgresStoreOptions extends DbOptions {
  keyring: Keyring;
}

export class PostgresStore implements Store {
  readonly db: Db;
  readonly #keyring: Keyring;

  constructor(opts: PostgresStoreOptions) {
    this.db = new Db(opts);
    this.#keyring = opts.keyring;
  }

  /** Connects, runs pending migrations (idempotent, safe with several operators starting at once). */
  static async open(
    opts: PostgresStoreOptions,
  ): Promise<{ store: PostgresStore; migrations: MigrationReport }> {
    const store = new PostgresStore(opts);
    try {
      const migrations = await migrate(store.db, undefined, { keyring: opts.keyring });
      const applied = [...migrations.applied, ...migrations.alreadyApplied];
      if (applied.length > 0) store.db.metrics?.schemaVersion.set(Math.max(...applied));
      return { store, migrations };
    } catch (err) {
      await store.close();
      throw err;
    }
  }

  async close(): Promise<void> {
    await this.db.close();
  }

  #readKey(r: RowReader, prefix = ''): SshKey {
    const info: SshKeyInfo = {
      id: r.str(`${prefix}id`),
      vpsUid: r.str(`${prefix}vps_uid`),
      state: readState(r.str(`${prefix}state`)),
      origin: readOrigin(r.str(`${prefix}origin`)),
      publicKey: r.str(`${prefix}public_key`),
      kid: r.str(`${prefix}kid`),
      createdAt: r.date(`${prefix}created_at`),
      rotatedAt: r.dateOrNull(`${prefix}rotated_at`),
      retiredAt: r.dateOrNull(`${prefix}retired_at`),
    };
    const envelope = r.str(`${prefix}private_key_enc`);
    return {
      ...info,
      privateKey: () => this.#open(envelope, sshKeyBinding(info.vpsUid, info.id)),
    };
  }

  /** A Vps row, its routing fields checked against their MAC (routing.ts): refused if they fail. */
  async #readVps(r: RowReader): Promise<VpsRow> {
    const vps = readVps(r);
    try {
      await verifyRouting(this.#keyring, routingOf(r), {
        kid: r.strOrNull('routing_kid'),
        mac: r.strOrNull('routing_mac'),
      });
    } catch (err) {
      if (err instanceof CannesError && err.reason === ROUTING_UNAUTHENTICATED)
        this.db.metrics?.decryptFailures.inc({ reason: err.reason });
      throw err;
    }
    return vps;
  }

  /** Locks the row and checks its routing fields: a write never launders a field changed behind our back. */
  async #lockRouting(q: Queryable, uid: string): Promise<RoutingFields> {
    const res = await q.query(`SELECT ${VPS_COLS} FROM cannes_vps v WHERE v.uid = $1 FOR UPDATE`, [uid]);
    if (res.rows[0] === undefined) throw new CannesError('VpsRowMissing', `no store row for Vps ${uid}`);
    const r = new RowReader(res.rows[0], 'cannes_vps');
    await this.#readVps(r);
    return routingOf(r);
  }

  /** Writes the routing fields with their MAC under the active master key. */
  async #writeRouting(q: Queryable, f: RoutingFields): Promise<void> {
    const { kid, mac } = await routingMac(this.#keyring, f);
    await q.query(
      `UPDATE cannes_vps SET server_id = $2, ipv4 = $3, host_public_key = $4, routing_mac = $5,
         routing_kid = $6, updated_at = now() WHERE uid = $1`,
      [f.uid, f.serverId, f.ipv4, f.hostPublicKey, mac, kid],
    );
  }

  /** Decrypts, counting failures by reason (tampering must be visible to an SRE, not only in a log). */
  async #open(envelope: string, binding: Binding): Promise<Secret<string>> {
    try {
      return await decryptSecret(this.#keyring, envelope, binding);
    } catch (err) {
      if (err instanceof EnvelopeError) this.db.metrics?.decryptFailures.inc({ reason: err.reason });
      throw err;
    }
  }

  async ensureVps(id: VpsIdentity): Promise<VpsRow> {
    checkUid(id.uid);
    const res = await this.db.query(
      `INSERT INTO cannes_vps AS v (uid, namespace, name) VALUES ($1, $2, $3)
       ON CONFLICT (uid) DO UPDATE SET namespace = EXCLUDED.namespace, name = EXCLUDED.name,
         updated_at = CASE WHEN (v.namespace, v.name) = (EXCLUDED.namespace, EXCLUDED.name) THEN v.updated_at ELSE now() END
       RETURNING ${VPS_COLS}`,
      [id.uid, id.namespace, id.name],
    );
    return this.#readVps(new RowReader(res.rows[0], 'cannes_vps'));
  }

  async getVpsState(uid: string): Promise<VpsState | null> {
    checkUid(uid);
    // One round trip: the row and the keys that may log in.
    const res = await this.db.query(
      `SELECT ${VPS_COLS}, ${KEY_COLS_PREFIXED}
       FROM cannes_vps v
       LEFT JOIN cannes_ssh_key k ON k.vps_uid = v.uid AND k.state IN ('active', 'pending')
       WHERE v.uid = $1`,
      [uid],
    );
    const first = res.rows[0];
    if (first === undefined) return null;
    const r0 = new RowReader(first, 'cannes_vps');
    let activeKey: SshKey | null = null;
    let pendingKey: SshKey | null = null;
    for (const row of res.rows) {
      const r = new RowReader(row, 'cannes_ssh_key');
      if (r.isNull('k_id')) continue;
      const key = this.#readKey(r, 'k_');
      if (key.state === 'active') activeKey = key;
      else pendingKey = key;
    }
    return { vps: await this.#readVps(r0), activeKey, pendingKey };
  }

  async recordServer(uid: string, facts: ServerFacts): Promise<void> {
    checkUid(uid);
    if (!Number.isSafeInteger(facts.serverId) || facts.serverId <= 0)
      throw new TerminalError('InvalidServerId', 'server id must be a positive integer');
    if (facts.ipv4 !== null && !isIPv4(facts.ipv4))
      throw new TerminalError('InvalidIpv4', 'ipv4 is not an IPv4 address');
    await this.db.transaction(async (q) => {
      const f = await this.#lockRouting(q, uid);
      if (f.serverId === facts.serverId && f.ipv4 === facts.ipv4) return;
      await this.#writeRouting(q, { ...f, serverId: facts.serverId, ipv4: facts.ipv4 });
    });
  }

  async pinHostKey(uid: string, hostPublicKey: string, opts: { replace?: boolean } = {}): Promise<void> {
    checkUid(uid);
    checkPublicKey(hostPublicKey, 'host key');
    const key = hostPublicKey.trim();
    await this.db.transaction(async (q) => {
      const f = await this.#lockRouting(q, uid);
      if (f.hostPublicKey === key) return;
      if (f.hostPublicKey !== null && opts.replace !== true)
        throw new TerminalError(
          'HostKeyAlreadyPinned',
          `Vps ${uid} already has a different pinned host key; refusing to replace it`,
        );
      await this.#writeRouting(q, { ...f, hostPublicKey: key });
    });
  }

  async forgetServer(uid: string, serverId: number): Promise<boolean> {
    checkUid(uid);
    return this.db.transaction(async (q) => {
      const res = await q.query(
        `UPDATE cannes_vps SET server_id = NULL, ipv4 = NULL, host_public_key = NULL, routing_mac = NULL,
           routing_kid = NULL, updated_at = now() WHERE uid = $1 AND server_id = $2 RETURNING uid`,
        [uid, serverId],
      );
      if (res.rowCount === 0) return false;
      await q.query('DELETE FROM cannes_ssh_key WHERE vps_uid = $1', [uid]);
      return true;
    });
  }

  async deleteVps(uid: string): Promise<boolean> {
    checkUid(uid);
    const res = await this.db.query('DELETE FROM cannes_vps WHERE uid = $1', [uid]);
    return (res.rowCount ?? 0) > 0;
  }

  async insertPendingKey(uid: string, key: NewSshKey): Promise<SshKeyInfo> {
    checkUid(uid);
    checkPublicKey(key.publicKey, 'SSH public key');
    const id = checkKeyId(key.id ?? randomUUID());
    const publicKey = key.publicKey.trim();
    const envelope = await encryptSecret(this.#keyring, key.privateKey, sshKeyBinding(uid, id));
    let res: Awaited<ReturnType<Db['query']>>;
    try {
      // ON CONFLICT (id): a retry after a lost reply finds its own row instead of failing.
      res = await this.db.query(
        `INSERT INTO cannes_ssh_key AS k (id, vps_uid, state, public_key, private_key_enc, kid)
         VALUES ($1, $2, 'pending', $3, $4, $5)
         ON CONFLICT (id) DO NOTHING
         RETURNING ${KEY_COLS}`,
        [id, uid, publicKey, envelope, this.#keyring.activeKid],
      );
    } catch (err) {
      if (pgCode(err) === '23505') {
        throw new CannesError(
          'RotationInProgress',
          `Vps ${uid} already has a pending SSH key; promote or discard it first`,
        );
      }
      if (pgCode(err) === '23503') throw new CannesError('VpsRowMissing', `no store row for Vps ${uid}`);
      throw err;
    }
    if (res.rows[0] !== undefined) return this.#readKey(new RowReader(res.rows[0], 'cannes_ssh_key'));
    const existing = await this.db.query(`SELECT ${KEY_COLS} FROM cannes_ssh_key k WHERE k.id = $1`, [id]);
    const row = existing.rows[0];
    if (row !== undefined) {
      const k = this.#readKey(new RowReader(row, 'cannes_ssh_key'));
      if (k.vpsUid === uid && k.publicKey === publicKey) return k;
    }
    throw new CannesError('SshKeyIdConflict', `SSH key id ${id} is already used by another key`);
  }

  async promotePendingKey(uid: string, keyId: string): Promise<PromoteResult> {
    checkUid(uid);
    const id = checkKeyId(keyId);
    // One transaction: at no instant are there zero or two active keys (promise 5).
    return this.db.transaction(async (q) => {
      const locked = await q.query(
        `SELECT ${KEY_COLS} FROM cannes_ssh_key k WHERE k.vps_uid = $1 AND k.state <> 'retired' FOR UPDATE`,
        [uid],
      );
      const keys = locked.rows.map((row) => this.#readKey(new RowReader(row, 'cannes_ssh_key')));
      const target = keys.find((k) => k.id === id);
      if (target?.state === 'active') {
        // Already promoted (a retry after a lost COMMIT reply): report the same outcome.
        const prev = await q.query(
          `SELECT ${KEY_COLS} FROM cannes_ssh_key k WHERE k.vps_uid = $1 AND k.state = 'retired' ORDER BY k.retired_at DESC LIMIT 1`,
          [uid],
        );
        const retired =
          prev.rows[0] === undefined ? null : this.#readKey(new RowReader(prev.rows[0], 'cannes_ssh_key'));
        return { active: info(target), retired: retired === null ? null : info(retired) };
      }
      if (target === undefined)
        throw new CannesError('PendingKeyNotFound', `Vps ${uid} has no pending SSH key ${id}`);
      const retiredRes = await q.query(
        `UPDATE cannes_ssh_key k SET state = 'retired', retired_at = now(), updated_at = now()
         WHERE k.vps_uid = $1 AND k.state = 'active' RETURNING ${KEY_COLS}`,
        [uid],
      );
      const activeRes = await q.query(
        `UPDATE cannes_ssh_key k SET state = 'active', rotated_at = now(), updated_at = now()
         WHERE k.id = $1 AND k.state = 'pending' RETURNING ${KEY_COLS}`,
        [id],
      );
      const active = this.#readKey(new RowReader(activeRes.rows[0], 'cannes_ssh_key'));
      const retired =
        retiredRes.rows[0] === undefined
          ? null
          : this.#readKey(new RowReader(retiredRes.rows[0], 'cannes_ssh_key'));
      return { active: info(active), retired: retired === null ? null : info(retired) };
    });
  }

  async discardPendingKey(uid: string, keyId: string): Promise<boolean> {
    checkUid(uid);
    const id = checkKeyId(keyId);
    const res = await this.db.query(
      `DELETE FROM cannes_ssh_key WHERE vps_uid = $1 AND id = $2 AND state = 'pending'`,
      [uid, id],
    );
    return (res.rowCount ?? 0) > 0;
  }

  async listLoginKeys(uid: string): Promise<SshKey[]> {
    checkUid(uid);
    const res = await this.db.query(
      `SELECT ${KEY_COLS} FROM cannes_ssh_key k WHERE k.vps_uid = $1 AND k.state IN ('active', 'pending')
       ORDER BY (k.state = 'active') DESC, k.created_at`,
      [uid],
    );
    return res.rows.map((row) => this.#readKey(new RowReader(row, 'cannes_ssh_key')));
  }

  async deleteRetiredKeys(uid: string): Promise<number> {
    checkUid(uid);
    const res = await this.db.query(`DELETE FROM cannes_ssh_key WHERE vps_uid = $1 AND state = 'retired'`, [
      uid,
    ]);
    return res.rowCount ?? 0;
  }

  async deleteRetiredKey(uid: string, keyId: string): Promise<boolean> {
    checkUid(uid);
    const id = checkKeyId(keyId);
    const res = await this.db.query(
      `DELETE FROM cannes_ssh_key WHERE vps_uid = $1 AND id = $2 AND state = 'retired'`,
      [uid, id],
    );
    return (res.rowCount ?? 0) > 0;
  }

  async listKeys(uid: string): Promise<SshKey[]> {
    checkUid(uid);
    const res = await this.db.query(
      `SELECT ${KEY_COLS} FROM cannes_ssh_key k WHERE k.vps_uid = $1
       ORDER BY CASE k.state WHEN 'active' THEN 0 WHEN 'pending' THEN 1 ELSE 2 END, k.created_at`,
      [uid],
    );
    return res.rows.map((row) => this.#readKey(new RowReader(row, 'cannes_ssh_key')));
  }

  async saveRescueResult(uid: string, hostPublicKey: string, key: NewSshKey): Promise<SshKeyInfo> {
    checkUid(uid);
    checkPublicKey(hostPublicKey, 'host key');
    checkPublicKey(key.publicKey, 'SSH public key');
    const id = checkKeyId(key.id ?? randomUUID());
    const publicKey = key.publicKey.trim();
    const envelope = await encryptSecret(this.#keyring, key.privateKey, sshKeyBinding(uid, id));
    return this.db.transaction(async (q) => {
      // Rescue is the one trusted path to the OS host key (promise 8): it may replace a pin.
      const f = await this.#lockRouting(q, uid);
      if (f.hostPublicKey !== hostPublicKey.trim())
        await this.#writeRouting(q, { ...f, hostPublicKey: hostPublicKey.trim() });
      const current = await q.query(
        `SELECT ${KEY_COLS} FROM cannes_ssh_key k WHERE k.vps_uid = $1 AND k.state = 'active'`,
        [uid],
      );
      const active =
        current.rows[0] === undefined
          ? null
          : this.#readKey(new RowReader(current.rows[0], 'cannes_ssh_key'));
      // The same key again: a retry after a lost COMMIT reply.
      if (active !== null && active.publicKey === publicKey) return info(active);
      await q.query('DELETE FROM cannes_ssh_key WHERE vps_uid = $1', [uid]);
      const res = await q.query(
        `INSERT INTO cannes_ssh_key AS k (id, vps_uid, state, origin, public_key, private_key_enc, kid, rotated_at)
         VALUES ($1, $2, 'active', 'rescue', $3, $4, $5, now())
         RETURNING ${KEY_COLS}`,
        [id, uid, publicKey, envelope, this.#keyring.activeKid],
      );
      return info(this.#readKey(new RowReader(res.rows[0], 'cannes_ssh_key')));
    });
  }
}

function info(k: SshKey): SshKeyInfo {
  return {
    id: k.id,
    vpsUid: k.vpsUid,
    state: k.state,
    origin: k.origin,
    publicKey: k.publicKey,
    kid: k.kid,
    createdAt: k.createdAt,
    rotatedAt: k.rotatedAt,
    retiredAt: k.retiredAt,
  };
}
