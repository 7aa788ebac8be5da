/**
 * The narrow interfaces the controllers talk to. Each is what a controller
 * needs, not what a library offers: `operator/adapters/` adapts the real Hetzner client, SSH
 * layer, Postgres store and Kubernetes API to them; unit tests use in-memory fakes.
 */

import type { ProviderName } from '../../common/providers.ts';
import type { Secret } from '../../common/secret.ts';
import type { ModelKeyStatus, SecretUsage, VpsSpec, VpsStatus } from '../api/schema.ts';
import type { ModelKeyObject, ResolvedVpsSpec, VpsObject } from '../api/types.ts';
import type { Condition } from '../kube/conditions.ts';
import type { ObjectMeta } from '../kube/object.ts';

// ------------------------------------------------------------------ Kubernetes objects

export type { ModelKeyObject, ObjectMeta, ResolvedVpsSpec, VpsObject, VpsSpec };

export interface SecretValue {
  /** The value, or undefined when the Secret or the key is absent, or the Secret is not labelled for this use. */
  readonly value: Secret | undefined;
  /**
   * Set when the Secret exists but does not carry `cannes.dev/usage: <usage>`: it was not read
   * (value undefined). The text says what to do, naming the Secret, never its data.
   */
  readonly notLabelled?: string;
  /** The Secret's resourceVersion (undefined when the Secret does not exist). */
  readonly resourceVersion: string | undefined;
}

export interface Kube {
  /** Reads one key of a Secret labelled `cannes.dev/usage: <usage>` (else `notLabelled`). */
  readSecretKey(namespace: string, name: string, key: string, usage: SecretUsage): Promise<SecretValue>;
  /**
   * Removes one key from a Secret labelled for `usage` (purge). Idempotent; a missing Secret or
   * key is success; an unlabelled Secret is left alone.
   */
  removeSecretKey(namespace: string, name: string, key: string, usage: SecretUsage): Promise<void>;
  addFinalizer(kind: 'Vps' | 'ModelKey', meta: ObjectMeta): Promise<void>;
  removeFinalizer(kind: 'Vps' | 'ModelKey', meta: ObjectMeta): Promise<void>;
  setAnnotations(
    kind: 'Vps' | 'ModelKey',
    meta: ObjectMeta,
    annotations: Record<string, string | null>,
  ): Promise<void>;
  patchVpsStatus(meta: ObjectMeta, status: VpsStatus): Promise<void>;
  patchModelKeyStatus(meta: ObjectMeta, status: ModelKeyStatus): Promise<void>;
  event(
    kind: 'Vps' | 'ModelKey',
    meta: ObjectMeta,
    type: 'Normal' | 'Warning',
    reason: string,
    note: string,
  ): Promise<void>;
  /**
   * The gateway's auth token lives in a Secret `<vps>-gateway` (key `token`) owned by the Vps,
   * so the user can read it to talk to their agent. Created with a random value if absent.
   */
  ensureGatewayToken(vps: VpsObject): Promise<{ token: Secret; resourceVersion: string }>;
  /** From the informer cache. */
  listModelKeys(namespace: string): readonly ModelKeyObject[];
  listVpses(namespace: string): readonly VpsObject[];
  getVps(namespace: string, name: string): VpsObject | undefined;
  /** From the API server, not the cache (a decision that must see this Vps's last own write). */
  readVps(namespace: string, name: string): Promise<VpsObject | undefined>;
}

// ------------------------------------------------------------------ Hetzner

export interface CloudServer {
  readonly id: number;
  readonly name: string;
  readonly status: string;
  readonly ipv4: string | null;
  readonly rescueEnabled: boolean;
  /** The server type's `architecture`: `x86` or `arm`. */
  readonly architecture: 'x86' | 'arm';
}

export interface Hcloud {
  findServerByVpsUid(token: Secret, uid: string): Promise<CloudServer | null>;
  /** Creates powered-off (`start_after_create: false`) and waits for the create action. */
  createServer(
    token: Secret,
    req: {
      name: string;
      serverType: string;
      location: string;
      image: string;
      labels: Record<string, string>;
    },
  ): Promise<CloudServer>;
  getServer(token: Secret, id: number): Promise<CloudServer | null>;
  /** Enables rescue (linux64) and returns its one-time root password; waits for the action. */
  enableRescue(token: Secret, id: number): Promise<Secret>;
  /**
   * Power on if off (not waited for: the caller waits for sshd, which answers only once the
   * server booted), else reset (waited for: the old system may answer until it is done).
   * `knownStatus` is the server's status
   * as this reconcile just saw it (create, find): given, it saves a GET; absent, the server
   * is read first.
   */
  powerOnOrReset(token: Secret, id: number, knownStatus?: string): Promise<void>;
  reboot(token: Secret, id: number): Promise<void>;
  /** Deletes and waits; a server that is already gone is success. */
  deleteServer(token: Secret, id: number): Promise<void>;
}

// ------------------------------------------------------------------ SSH to the server

export interface KeyPair {
  readonly privateKey: Secret;
  readonly publicKey: string;
}

export interface RescueResult extends KeyPair {
  /** The installed OS's host public key, read from its disk (`ssh-ed25519 AAAA...`). */
  readonly osHostKey: string;
}

export interface OsTarget {
  readonly ipv4: string;
  readonly hostKey: string;
  readonly privateKey: Secret;
}

export interface DeployBundle {
  /**
   * Shell run first, before any file is written (installs the proxy's Node runtime when it is
   * missing). A failure stops the deploy with reason `RuntimeInstallFailed`: nothing changed.
   */
  readonly prepare?: string;
  /** Files to write atomically, with mode and owner. Contents that are secret are `Secret`. */
  readonly files: readonly { path: string; content: string | Secret; mode: number; owner: string }[];
  /** Shell run after the files are written (restart units, compose up, nft load). */
  readonly activate: string;
  /** Shell that exits 0 only when the proxy answers from the bridge and the gateway is healthy. */
  readonly verify: string;
}

/** What the tailnet step asks of the server (nothing here is secret but the key). */
export interface TailnetJoinRequest {
  /** Undefined once purged: a node that is joined needs none; one that is not fails. */
  readonly authKey: Secret | undefined;
  readonly loginServer: string;
  readonly hostname: string;
  readonly tags: readonly string[];
  readonly gatewayPort: number;
}

/** The node's public facts; its tailnet state (keys, peers) stays on the server. */
export interface TailnetJoinResult {
  /** `<hostname>.<tailnet>`, the name Serve answers to. */
  readonly dnsName: string;
  readonly httpsAvailable: boolean;
  /** The gateway answered at its tailnet URL, asked from the server through Serve. */
  readonly gatewayReachable: boolean;
}

export interface Remote {
  /** docs/design.md §4 step 3, in the rescue system. The password is the one-time rescue credential. */
  rescueKeygen(ipv4: string, rootPassword: Secret): Promise<RescueResult>;
  /** Reads the current key file from the host (re-delivery of keys whose Secret was purged). */
  readFile(target: OsTarget, path: string): Promise<Secret | undefined>;
  deploy(target: OsTarget, bundle: DeployBundle): Promise<void>;
  /**
   * Installs Tailscale if missing, joins the tailnet (key on stdin, in a root-only temp file
   * removed after `tailscale up`), serves the gateway's loopback port on the tailnet.
   */
  joinTailnet(target: OsTarget, req: TailnetJoinRequest): Promise<TailnetJoinResult>;
  /**
   * Runs the root-only helper that says which Direct routes hold the owner's key:
   * `{"<ModelKey>":true|false}`. Only booleans cross the session; never a key.
   */
  directKeyStatus(target: OsTarget): Promise<Record<string, boolean>>;
  /** Runs the crash-safe rotation protocol (operator/ssh), store included. */
  rotate(vpsUid: string, target: Omit<OsTarget, 'privateKey'>): Promise<void>;
}

// ------------------------------------------------------------------ Postgres

export interface VpsRecord {
  readonly uid: string;
  readonly namespace: string;
  readonly name: string;
  readonly serverId: number | null;
  readonly ipv4: string | null;
  readonly hostKey: string | null;
}

export interface ActiveKey {
  readonly id: string;
  readonly privateKey: Secret;
  readonly publicKey: string;
  readonly createdAt: Date;
  /** The key was born in the rescue session (the post-provisioning rotation replaces it). */
  readonly bornInRescue: boolean;
}

export interface Store {
  /** Row + active key in one round trip. */
  getVps(uid: string): Promise<{ record: VpsRecord; activeKey: ActiveKey | null } | null>;
  upsertVps(rec: { uid: string; namespace: string; name: string }): Promise<void>;
  setServer(uid: string, serverId: number, ipv4: string | null): Promise<void>;
  /** Stores the OS host key and the rescue-born key (encrypted, active) in one transaction. */
  saveRescueResult(uid: string, hostKey: string, key: KeyPair): Promise<void>;
  /** The recorded server is gone and a new one was asked for: clears server, address, host key and keys. */
  forgetServer(uid: string, serverId: number): Promise<void>;
  deleteVps(uid: string): Promise<void>;
}

export type { Condition, ProviderName };
