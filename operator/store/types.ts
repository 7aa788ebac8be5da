import type { Secret } from '../../common/secret.ts';

/**
 * What the controllers need from the system of record (docs/design.md §4). One Vps row per
 * Kubernetes uid; SSH keys through a crash-safe rotation. Private keys go in and come out as
 * `Secret`. The cloud token is not here: the operator reads it from its Secret when it calls
 * Hetzner and keeps no copy.
 */

export interface VpsIdentity {
  /** metadata.uid of the Vps: stable across renames, new after delete + recreate. */
  readonly uid: string;
  readonly namespace: string;
  readonly name: string;
}

export interface VpsRow extends VpsIdentity {
  readonly serverId: number | null;
  readonly ipv4: string | null;
  /** The installed OS's host key (OpenSSH public form), pinned while in rescue. */
  readonly hostPublicKey: string | null;
  readonly createdAt: Date;
  readonly updatedAt: Date;
}

export type SshKeyState = 'pending' | 'active' | 'retired';
/** `rescue`: generated in the rescue system at provisioning (docs/design.md §4 step 3); `rotation`: by a rotation. */
export type SshKeyOrigin = 'rescue' | 'rotation';

export interface SshKeyInfo {
  readonly id: string;
  readonly vpsUid: string;
  readonly state: SshKeyState;
  readonly origin: SshKeyOrigin;
  readonly publicKey: string;
  /** Master key the private key is encrypted with (not secret). */
  readonly kid: string;
  readonly createdAt: Date;
  /** When this key became active (null while pending). */
  readonly rotatedAt: Date | null;
  readonly retiredAt: Date | null;
}

/** A key together with the means to open its private half (decrypts on demand, so a reconcile that needs no SSH does no crypto). */
export interface SshKey extends SshKeyInfo {
  privateKey(): Promise<Secret<string>>;
}

/** Everything a reconcile reads, in ONE query. */
export interface VpsState {
  readonly vps: VpsRow;
  readonly activeKey: SshKey | null;
  /** Set while a rotation is in flight (or after a crash in the middle of one). */
  readonly pendingKey: SshKey | null;
}

export interface NewSshKey {
  /** Optional caller-chosen id (a UUID); makes the insert idempotent across retries. */
  readonly id?: string;
  readonly publicKey: string;
  readonly privateKey: Secret<string>;
}

export interface PromoteResult {
  readonly active: SshKeyInfo;
  /** The key that was active before (now retired), null for the first key. */
  readonly retired: SshKeyInfo | null;
}

export interface ServerFacts {
  readonly serverId: number;
  readonly ipv4: string | null;
}

export interface Store {
  /** Step 1 of the reconcile: the row exists (idempotent; namespace/name are refreshed). */
  ensureVps(id: VpsIdentity): Promise<VpsRow>;
  /** Row + active key + pending key in one query; null when there is no row. */
  getVpsState(uid: string): Promise<VpsState | null>;
  recordServer(uid: string, facts: ServerFacts): Promise<void>;
  /**
   * Pins the OS host key. Pinning the same key again is a no-op; a different key is refused
   * (HostKeyAlreadyPinned) unless `replace` is set (a rebuild the operator initiated).
   */
  pinHostKey(uid: string, hostPublicKey: string, opts?: { replace?: boolean }): Promise<void>;
  /**
   * The recorded server is gone (Hetzner 404) and the owner asked for a new one: in ONE
   * transaction, clears server id, address and host key and deletes every SSH key of the Vps
   * (they log in nowhere any more). Only when the row still records `serverId`.
   */
  forgetServer(uid: string, serverId: number): Promise<boolean>;
  /** Drops the row and everything hanging off it (its keys). */
  deleteVps(uid: string): Promise<boolean>;

  // --- SSH keys, crash-safe rotation (promise 5) -----------------------------------
  /** Stores a new key as `pending` BEFORE anything changes on the server. */
  insertPendingKey(uid: string, key: NewSshKey): Promise<SshKeyInfo>;
  /** In ONE transaction: pending → active, previous active → retired. Idempotent. */
  promotePendingKey(uid: string, keyId: string): Promise<PromoteResult>;
  /** Drops a pending key that never made it onto the server (after a crash, or a failed install). */
  discardPendingKey(uid: string, keyId: string): Promise<boolean>;
  /** Keys that may log in right now: the active key first, then a pending one. After a crash, try them in order. */
  listLoginKeys(uid: string): Promise<SshKey[]>;
  /** Deletes retired keys (after their public half left authorized_keys). */
  deleteRetiredKeys(uid: string): Promise<number>;
  /** Deletes one retired key (proven refused by the server). False when there was none. */
  deleteRetiredKey(uid: string, keyId: string): Promise<boolean>;
  /** Every key held for the Vps, all states (rotation resumes from this). */
  listKeys(uid: string): Promise<SshKey[]>;
  /**
   * Provisioning (docs/design.md §4 steps 3-4), in ONE transaction: pins the OS host key read from
   * the disk in rescue and stores the rescue-born key as active. Repeating it with the same key
   * is a no-op; a different key replaces every other key of the Vps (the rescue step rewrote
   * authorized_keys, so none of them logs in any more).
   */
  saveRescueResult(uid: string, hostPublicKey: string, key: NewSshKey): Promise<SshKeyInfo>;

  close(): Promise<void>;
}
