import { randomUUID } from 'node:crypto';
import { CannesError } from '../../common/errors.ts';
import type { Secret } from '../../common/secret.ts';
import {
  type AuthorizedKeysLine,
  type PublicKey,
  parseAuthorizedKeys,
  parsePrivateKey,
  parsePublicKey,
  renderAuthorizedKeys,
  samePublicKey,
} from './keys.ts';
import { wipeDir } from './rescue.ts';
import { type ConnectOptions, connectPinned, type SshSession, type SshTarget } from './session.ts';
import { readRemoteFile, runScriptOk, writeFileAtomic } from './shell.ts';

/**
 * Crash-safe SSH key rotation (docs/design.md promise 5). The order of the steps is the whole
 * point; docs/rotation.md says why each one is safe to be killed at. In short:
 *
 *   1. generate the new key ON THE SERVER (promise 3), read it back
 *   2. store it as `pending` (encrypted by the store) before anything changes on the server
 *   3. wipe the key file from the server
 *   4. add its public key to authorized_keys (through the active key)
 *   5. log in with it (proves it works before anyone depends on it)
 *   6. ONE transaction: pending → active, active → retired
 *   7. remove the retired public key (through the new active key)
 *   8. log in with the retired key: must be refused
 *   9. forget the retired key's secret; sweep the keygen folder again
 *
 * Invariant: at every instant the store's ACTIVE key logs in. A fresh run resumes from the
 * store alone (pending present → finish installing it; retired present → finish removing it).
 */

export type SshKeyState = 'pending' | 'active' | 'retired';

export interface StoredSshKey {
  readonly id: string;
  readonly state: SshKeyState;
  /** OpenSSH public key line. Public. */
  readonly publicKey: string;
  readonly privateKey: Secret;
}

/**
 * What rotation needs from the store (operator/store implements it on Postgres, encrypting
 * `privateKey` with AES-256-GCM bound to its row). Each method is one transaction.
 */
export interface RotationStore {
  /** Every key held for this server (pending, active, retired-but-not-yet-forgotten). */
  listKeys(vpsId: string): Promise<StoredSshKey[]>;
  /** Adds a key in state `pending`. */
  addPending(
    vpsId: string,
    key: { readonly id: string; readonly publicKey: string; readonly privateKey: Secret },
  ): Promise<void>;
  /** In ONE transaction: `pendingId` becomes active, the active key becomes retired. */
  activate(vpsId: string, pendingId: string): Promise<void>;
  /** The retired key is proven refused by the server: drop it (its secret goes with it). */
  forget(vpsId: string, keyId: string): Promise<void>;
}

/** Every point a crash is simulated at in tests (the hook runs right AFTER the named step). */
export const ROTATION_FAULT_POINTS = [
  'afterGenerate',
  'afterStorePending',
  'afterWipe',
  'afterAddPublicKey',
  'afterVerifyNew',
  'afterActivate',
  'afterRemoveOld',
  'afterVerifyOldRefused',
  'afterForget',
] as const;
export type RotationFaultPoint = (typeof ROTATION_FAULT_POINTS)[number];

/** The server side of rotation, narrow so unit tests can model it. */
export interface RotationRemote {
  /** Logs in with `key`; 'refused' when the server rejects it (any other failure throws). */
  login(key: Secret): Promise<RotationSession | 'refused'>;
}

export interface RotationSession {
  /** ssh-keygen on the server; returns the key read back (the file stays until wipeKeygen). */
  generateKey(id: string): Promise<{ privateKey: Secret; publicKey: PublicKey }>;
  /** Removes every key file the keygen folder holds (shred where it helps), and proves it. */
  wipeKeygen(): Promise<void>;
  /** Appends the key (once) to root's authorized_keys, atomically, mode 600. */
  authorizeKey(key: PublicKey, comment: string): Promise<void>;
  /** Removes these keys from root's authorized_keys, atomically; never removes `keep`. */
  revokeKeys(remove: readonly PublicKey[], keep: PublicKey): Promise<void>;
  close(): void;
}

export interface RotateOptions {
  readonly store: RotationStore;
  readonly remote: RotationRemote;
  readonly vpsId: string;
  /** Test hook: called after each step; throwing there simulates a crash at that point. */
  readonly fault?: (point: RotationFaultPoint) => void | Promise<void>;
  readonly newKeyId?: () => string;
}

export interface RotateResult {
  /** 'rotated': a new key became active in this run; 'resumed': an interrupted run was finished. */
  readonly outcome: 'rotated' | 'resumed';
  readonly activeKeyId: string;
}

/**
 * Rotates the server's root key, or finishes a rotation that an earlier (crashed) run left
 * half done. Safe to call again after any failure.
 */
export async function rotateSshKey(options: RotateOptions): Promise<RotateResult> {
  const { store, remote, vpsId } = options;
  const fault = options.fault ?? (() => {});
  const keys = await store.listKeys(vpsId);
  const active = keys.filter((k) => k.state === 'active');
  const pending = keys.filter((k) => k.state === 'pending');
  const retired = keys.filter((k) => k.state === 'retired');
  if (active.length !== 1) {
    throw new CannesError(
      'SshKeyStateInvalid',
      `expected exactly one active SSH key, found ${active.length}`,
    );
  }
  const current = active[0]!;
  let resumed = pending.length > 0 || retired.length > 0;

  let newId: string;
  if (pending.length > 0) {
    // A previous run stored a pending key and crashed: finish installing it. There is at most
    // one: a new key is only generated when nothing is pending or retired.
    if (pending.length > 1)
      throw new CannesError('SshKeyStateInvalid', `found ${pending.length} pending SSH keys`);
    newId = pending[0]!.id;
  } else if (retired.length > 0) {
    // Crashed after activation: only the clean-up of the retired key(s) is left.
    await cleanUp(remote, store, vpsId, current, retired, fault);
    return { outcome: 'resumed', activeKeyId: current.id };
  } else {
    resumed = false;
    newId = (options.newKeyId ?? randomUUID)();
    await generatePending(options, current, newId, fault);
  }

  await installPending(options, current, newId, fault);
  await store.activate(vpsId, newId);
  await fault('afterActivate');

  const afterActivate = await store.listKeys(vpsId);
  const nowActive = afterActivate.find((k) => k.id === newId && k.state === 'active');
  if (!nowActive) throw new CannesError('SshKeyStateInvalid', 'activated SSH key is not active');
  await cleanUp(
    remote,
    store,
    vpsId,
    nowActive,
    afterActivate.filter((k) => k.state === 'retired'),
    fault,
  );
  return { outcome: resumed ? 'resumed' : 'rotated', activeKeyId: newId };
}

type Fault = (point: RotationFaultPoint) => void | Promise<void>;

/** Steps 1-3: the server makes a key, the store keeps it pending, the server forgets it. */
async function generatePending(options: RotateOptions, current: StoredSshKey, newId: string, fault: Fault) {
  const { store, remote, vpsId } = options;
  const session = await mustLogin(remote, current.privateKey, 'the active key');
  try {
    const generated = await session.generateKey(newId);
    await fault('afterGenerate');
    // Stored before the server changes: a key the server accepts is always a key we hold.
    await store.addPending(vpsId, {
      id: newId,
      publicKey: generated.publicKey.line,
      privateKey: generated.privateKey,
    });
    await fault('afterStorePending');
    await session.wipeKeygen();
    await fault('afterWipe');
  } finally {
    session.close();
  }
}

/** Steps 4-5: the pending key is authorised (unless it already logs in, after a crash) and tried. */
async function installPending(options: RotateOptions, current: StoredSshKey, newId: string, fault: Fault) {
  const { store, remote, vpsId } = options;
  const next = (await store.listKeys(vpsId)).find((k) => k.id === newId && k.state === 'pending');
  if (!next) throw new CannesError('SshKeyStateInvalid', 'pending SSH key vanished from the store');
  const nextPublic = parsePublicKey(next.publicKey);
  let probe = await remote.login(next.privateKey);
  if (probe === 'refused') {
    const session = await mustLogin(remote, current.privateKey, 'the active key');
    try {
      await session.authorizeKey(nextPublic, `cannes:${newId}`);
    } finally {
      session.close();
    }
    await fault('afterAddPublicKey');
    probe = await remote.login(next.privateKey);
    if (probe === 'refused') {
      throw new CannesError('SshNewKeyRefused', 'the server refuses the new SSH key after it was installed');
    }
  }
  probe.close();
  await fault('afterVerifyNew');
}

async function cleanUp(
  remote: RotationRemote,
  store: RotationStore,
  vpsId: string,
  active: StoredSshKey,
  retired: readonly StoredSshKey[],
  fault: (point: RotationFaultPoint) => void | Promise<void>,
): Promise<void> {
  const activePublic = parsePublicKey(active.publicKey);
  const session = await mustLogin(remote, active.privateKey, 'the new active key');
  try {
    await session.revokeKeys(
      retired.map((k) => parsePublicKey(k.publicKey)),
      activePublic,
    );
    await fault('afterRemoveOld');
    for (const old of retired) {
      const probe = await remote.login(old.privateKey);
      if (probe !== 'refused') {
        probe.close();
        throw new CannesError('SshOldKeyStillAccepted', 'the server still accepts the retired SSH key');
      }
    }
    await fault('afterVerifyOldRefused');
    for (const old of retired) await store.forget(vpsId, old.id);
    await fault('afterForget');
    // Sweep: a crash between generate and wipe may have left a key file behind.
    await session.wipeKeygen();
  } finally {
    session.close();
  }
}

async function mustLogin(remote: RotationRemote, key: Secret, which: string): Promise<RotationSession> {
  const s = await remote.login(key);
  if (s === 'refused') throw new CannesError('SshAuthFailed', `the server refuses ${which}`);
  return s;
}

/** Where rotation makes keys on the server: RAM (/run is tmpfs), root only. */
export const KEYGEN_DIR = '/run/cannes-keygen';

/** RotationRemote over real SSH with the pinned OS host key. */
export function sshRotationRemote(
  target: SshTarget,
  hostKey: PublicKey,
  connectOptions: ConnectOptions = {},
): RotationRemote {
  return {
    async login(key: Secret): Promise<RotationSession | 'refused'> {
      try {
        return new SshRotationSession(
          await connectPinned(target, { privateKey: key, hostKey }, connectOptions),
        );
      } catch (err) {
        if (err instanceof CannesError && err.reason === 'SshAuthFailed') return 'refused';
        throw err;
      }
    },
  };
}

const AUTHORIZED_KEYS = '/root/.ssh/authorized_keys';

class SshRotationSession implements RotationSession {
  readonly #s: SshSession;
  constructor(s: SshSession) {
    this.#s = s;
  }

  async generateKey(id: string): Promise<{ privateKey: Secret; publicKey: PublicKey }> {
    if (!/^[A-Za-z0-9-]{1,64}$/.test(id)) throw new CannesError('InvalidArgument', 'bad key id');
    const gen = await runScriptOk(
      this.#s,
      `
umask 077
install -d -m 700 -o root -g root "$1"
f="$1/$2"
rm -f -- "$f" "$f.pub"
ssh-keygen -q -t ed25519 -N '' -C "cannes:$2" -f "$f" </dev/null >/dev/null
cut -d' ' -f1,2 "$f.pub"
`,
      { args: [KEYGEN_DIR, id], what: 'rotation keygen' },
    );
    const publicKey = parsePublicKey(gen.stdout);
    const raw = await this.#s.execForSecret(`cat -- ${KEYGEN_DIR}/${id}`, { maxOutputBytes: 16 * 1024 });
    const { privateKey } = parsePrivateKey(raw, publicKey);
    return { privateKey, publicKey };
  }

  wipeKeygen(): Promise<void> {
    return wipeDir(this.#s, KEYGEN_DIR);
  }

  async authorizeKey(key: PublicKey, comment: string): Promise<void> {
    const lines = await this.#readAuthorized();
    if (lines.some((l) => l.key && samePublicKey(l.key, key))) return;
    await this.#writeAuthorized([...lines, { raw: `${key.line} ${comment}`, key }]);
  }

  async revokeKeys(remove: readonly PublicKey[], keep: PublicKey): Promise<void> {
    const lines = await this.#readAuthorized();
    const kept = lines.filter((l) => {
      const k = l.key;
      if (!k) return true;
      if (samePublicKey(k, keep)) return true;
      return !remove.some((r) => samePublicKey(r, k));
    });
    if (!kept.some((l) => l.key && samePublicKey(l.key, keep))) {
      // Never write a file that would lock us out.
      throw new CannesError('SshKeyStateInvalid', 'the active key is missing from authorized_keys');
    }
    if (kept.length !== lines.length) await this.#writeAuthorized(kept);
  }

  async #readAuthorized(): Promise<AuthorizedKeysLine[]> {
    return parseAuthorizedKeys((await readRemoteFile(this.#s, AUTHORIZED_KEYS, { missingOk: true })) ?? '');
  }

  #writeAuthorized(lines: readonly AuthorizedKeysLine[]): Promise<void> {
    return writeFileAtomic(this.#s, AUTHORIZED_KEYS, renderAuthorizedKeys(lines), 0o600, 'root:root');
  }

  close(): void {
    this.#s.close();
  }
}
