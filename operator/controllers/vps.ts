/**
 * The Vps controller: DESIGN.md §4 as one level-triggered reconcile. Each call re-reads what
 * it needs, does the next step(s) whose outcome is not yet recorded, and returns "done" or
 * "requeue after T". Every step is idempotent and resumable after a crash at any line:
 * a step's result is recorded (Postgres row, annotation) only after the step succeeded, and
 * re-running a step whose result was lost is harmless (see the comment on each step).
 */
import { createHash } from 'node:crypto';
import type { VpsStatus } from '../api/schema.ts';
import { ANNOTATION_IPV4, ANNOTATION_SERVER_ID, FINALIZER, LABEL_VPS_UID } from '../api/schema.ts';
import { type Condition, setCondition } from '../kube/conditions.ts';
import { done, type Result, requeueAfter } from '../kube/controller.ts';
import { parseGoDuration } from '../lib/duration.ts';
import { CannesError, reasonOf, TerminalError } from '../lib/errors.ts';
import { faultPoint } from '../lib/faults.ts';
import type { Logger } from '../lib/log.ts';
import type { Secret } from '../lib/secret.ts';
import { collectKeys, DELIVERED_ANNOTATION, type DeliveredKey } from './keys.ts';
import type { DeployBundle, Hcloud, Kube, ObjectMeta, Remote, Store, VpsObject } from './ports.ts';

/** Fingerprint of what was last deployed; equal fingerprints mean no SSH connection at all. */
export const DEPLOYED_ANNOTATION = 'cannes.dev/deployed';

export interface VpsDeps {
  readonly kube: Kube;
  readonly hcloud: Hcloud;
  readonly remote: Remote;
  readonly store: Store;
  /** Renders what goes onto the server (operator/remote templates + the proxy bundle). */
  readonly bundle: (vps: VpsObject, keys: readonly DeliveredKey[], gatewayToken: Secret) => DeployBundle;
  /** Changes when the proxy bundle or the templates change, so a new operator redeploys. */
  readonly bundleVersion: string;
  readonly now: () => Date;
  readonly log: Logger;
  /** Step timings; optional so unit tests can omit them. */
  readonly observe?: (step: string, seconds: number, ok: boolean) => void;
  /** After every reconcile: the Vps's state and its active key's birth (for metrics). */
  readonly report?: (
    vps: VpsObject,
    state: 'provisioning' | 'ready' | 'error' | 'deleting',
    keyBornAt: Date | null,
  ) => void;
}

const T = {
  ServerCreated: 'ServerCreated',
  HasSshKey: 'HasSshKey',
  GatewayDeployed: 'GatewayDeployed',
  KeyRotated: 'KeyRotated',
  CloudTokenPurged: 'CloudTokenPurged',
  Deleting: 'Deleting',
  Ready: 'Ready',
} as const;

/** Collects status booleans and conditions during one reconcile; written once at the end. */
class StatusDraft {
  readonly status: VpsStatus;
  /** Set when the finalizer was removed: the object is about to disappear. */
  released = false;
  /** When the active SSH key was made (null until there is one). */
  keyBornAt: Date | null = null;
  #conditions: Condition[];
  readonly #generation: number;
  readonly #now: Date;

  constructor(vps: VpsObject, now: Date) {
    this.status = { ...vps.status, observedGeneration: vps.metadata.generation ?? 0 };
    this.#conditions = [...((vps.status.conditions ?? []) as Condition[])];
    this.#generation = vps.metadata.generation ?? 0;
    this.#now = now;
  }

  set(type: string, ok: boolean | 'Unknown', reason: string, message: string): void {
    const status = ok === 'Unknown' ? 'Unknown' : ok ? 'True' : 'False';
    this.#conditions = setCondition(
      this.#conditions,
      { type, status, reason, message, observedGeneration: this.#generation },
      this.#now,
    );
  }

  drop(type: string): void {
    this.#conditions = this.#conditions.filter((c) => c.type !== type);
  }

  result(): VpsStatus {
    return { ...this.status, conditions: this.#conditions };
  }
}

export async function reconcileVps(vps: VpsObject, d: VpsDeps): Promise<Result> {
  const draft = new StatusDraft(vps, d.now());
  try {
    const deleting = vps.metadata.deletionTimestamp !== undefined;
    const result = deleting ? await finalize(vps, d, draft) : await provision(vps, d, draft);
    await writeStatus(vps, d, draft);
    d.report?.(vps, deleting ? 'deleting' : draft.status.ready ? 'ready' : 'provisioning', draft.keyBornAt);
    return result;
  } catch (err) {
    d.report?.(vps, vps.metadata.deletionTimestamp ? 'deleting' : 'error', draft.keyBornAt);
    // Every failure is a condition (with a reason a person can act on) and a Warning Event;
    // the error goes back to the queue, which retries unless it is terminal.
    const reason = reasonOf(err, 'ReconcileFailed');
    const message = safeMessage(err);
    draft.set(T.Ready, false, reason, message);
    draft.status.ready = false;
    await writeStatus(vps, d, draft).catch((e: unknown) =>
      d.log.warn({ err: safeMessage(e) }, 'status write failed'),
    );
    await d.kube.event('Vps', vps.metadata, 'Warning', reason, message);
    throw err;
  }
}

async function writeStatus(vps: VpsObject, d: VpsDeps, draft: StatusDraft): Promise<void> {
  const next = draft.result();
  // Once the finalizer is gone the object may be gone too: nothing left to report on.
  if (draft.released || JSON.stringify(next) === JSON.stringify(vps.status)) return;
  if (vps.metadata.deletionTimestamp && !vps.metadata.finalizers.includes(FINALIZER)) return;
  await d.kube.patchVpsStatus(vps.metadata, next);
}

/** Error text safe for a condition or an Event: our own messages never carry secrets. */
function safeMessage(err: unknown): string {
  if (err instanceof CannesError) return err.message;
  return 'internal error (see operator logs)';
}

async function timed<R>(d: VpsDeps, step: string, fn: () => Promise<R>): Promise<R> {
  const start = performance.now();
  let ok = false;
  try {
    const r = await fn();
    ok = true;
    return r;
  } finally {
    d.observe?.(step, (performance.now() - start) / 1000, ok);
  }
}

async function cloudToken(vps: VpsObject, d: VpsDeps, purpose: string): Promise<Secret> {
  const ref = vps.spec.cloudTokenSecretRef;
  const { value } = await d.kube.readSecretKey(ns(vps.metadata), ref.name, ref.key);
  if (!value || value.length === 0) {
    throw new TerminalError(
      'CloudTokenRequired',
      `Secret ${ref.name} has no key "${ref.key}": put a Hetzner Cloud API token (read+write) there to ${purpose}`,
    );
  }
  if (!/^[A-Za-z0-9]{16,128}$/.test(value.reveal())) {
    throw new TerminalError(
      'CloudTokenInvalid',
      `Secret ${ref.name} key "${ref.key}" does not look like a Hetzner API token (letters and digits, 64 characters)`,
    );
  }
  return value;
}

const ns = (m: ObjectMeta): string => m.namespace ?? 'default';

async function provision(vps: VpsObject, d: VpsDeps, draft: StatusDraft): Promise<Result> {
  const m = vps.metadata;
  // 1. Finalizer first: from here on the operator owns external state that deletion must clean.
  if (!m.finalizers.includes(FINALIZER)) {
    await d.kube.addFinalizer('Vps', m);
    faultPoint('after-finalizer');
  }
  let state = await d.store.getVps(m.uid);
  if (!state) {
    await d.store.upsertVps({ uid: m.uid, namespace: ns(m), name: m.name });
    state = {
      record: { uid: m.uid, namespace: ns(m), name: m.name, serverId: null, ipv4: null, hostKey: null },
      activeKey: null,
    };
  }
  let { record } = state;
  // The server's power state as step 2 saw it in this reconcile (saves a GET in step 3).
  let seenStatus: string | undefined;

  // 2. The server. Found by label before creating, so a crash between create and recording
  //    the id adopts the server instead of creating a second one.
  if (record.serverId === null || record.ipv4 === null) {
    const token = await cloudToken(vps, d, 'create the server');
    const server = await timed(d, 'create_server', async () => {
      const found = await d.hcloud.findServerByVpsUid(token, m.uid);
      if (found) return found;
      const created = await d.hcloud.createServer(token, {
        name: serverName(vps),
        serverType: vps.spec.serverType,
        location: vps.spec.location,
        image: vps.spec.image,
        labels: { [LABEL_VPS_UID]: m.uid, 'cannes.dev/managed-by': 'cannes' },
      });
      faultPoint('after-create-server');
      return created;
    });
    if (!server.ipv4) throw new CannesError('ServerHasNoIPv4', `server ${server.id} has no public IPv4 yet`);
    seenStatus = server.status;
    await d.store.setServer(m.uid, server.id, server.ipv4);
    faultPoint('after-record-server');
    record = { ...record, serverId: server.id, ipv4: server.ipv4 };
    await d.kube.event('Vps', m, 'Normal', 'ServerCreated', `Hetzner server ${server.id} (${server.ipv4})`);
  }
  if (
    m.annotations[ANNOTATION_SERVER_ID] !== String(record.serverId) ||
    m.annotations[ANNOTATION_IPV4] !== record.ipv4
  ) {
    await d.kube.setAnnotations('Vps', m, {
      [ANNOTATION_SERVER_ID]: String(record.serverId),
      [ANNOTATION_IPV4]: record.ipv4,
    });
  }
  draft.status.serverCreated = true;
  draft.set(T.ServerCreated, true, 'ServerExists', `Hetzner server ${record.serverId}`);
  const serverId = record.serverId;
  const ipv4 = record.ipv4;
  if (serverId === null || ipv4 === null)
    throw new CannesError('StoreInconsistent', 'server id not recorded');

  // 3+4. The SSH key is born in the rescue system. Until it is stored there is nothing to
  //      resume from: a crash anywhere here re-runs the whole step (a new rescue password, a
  //      new key that OVERWRITES authorized_keys on the disk), so no orphan key can log in.
  let activeKey = state.activeKey;
  let hostKey = record.hostKey;
  if (!activeKey || !hostKey) {
    const token = await cloudToken(vps, d, 'boot the rescue system');
    const result = await timed(d, 'rescue_keygen', async () => {
      // The rescue password lives in this closure only: never stored, never logged.
      const password = await d.hcloud.enableRescue(token, serverId);
      // enable_rescue does not change the power state step 2 saw.
      await d.hcloud.powerOnOrReset(token, serverId, seenStatus);
      const r = await d.remote.rescueKeygen(ipv4, password);
      faultPoint('after-rescue-keygen');
      // Reboot before storing (DESIGN §4 step 3 → 4): a crash after the reboot loses only this
      // key, and the next attempt goes back to rescue; storing first would need a third state.
      await d.hcloud.reboot(token, serverId);
      faultPoint('after-reboot');
      return r;
    });
    await d.store.saveRescueResult(m.uid, result.osHostKey, result);
    faultPoint('after-store-key');
    await d.kube.event('Vps', m, 'Normal', 'SshKeyStored', 'SSH key generated in rescue, stored encrypted');
    const fresh = await d.store.getVps(m.uid);
    activeKey = fresh?.activeKey ?? null;
    hostKey = fresh?.record.hostKey ?? null;
    if (!activeKey || !hostKey)
      throw new CannesError('StoreInconsistent', 'stored SSH key is not readable back');
  }
  draft.status.hasSshKey = true;
  draft.keyBornAt = activeKey.createdAt;
  draft.set(T.HasSshKey, true, 'KeyStored', 'an SSH key born on the server is stored encrypted');

  // 5. Deploy: only when what should be on the server differs from what was put there.
  const target = { ipv4, hostKey, privateKey: activeKey.privateKey };
  const keys = await collectKeys(vps, d.kube);
  const noKeys = keys.fingerprintParts.length === 0;
  if (noKeys && m.annotations[DEPLOYED_ANNOTATION] === undefined) {
    // OpenClaw needs at least one model: nothing to deploy until a ModelKey (with a key) exists;
    // its creation re-enqueues this Vps.
    draft.set(
      T.GatewayDeployed,
      false,
      'WaitingForModelKeys',
      'create a ModelKey for this Vps (with its key in a Secret)',
    );
    draft.status.ready = false;
    draft.set(T.Ready, false, 'WaitingForModelKeys', 'the gateway needs at least one ModelKey');
    return done();
  }
  const gw = await d.kube.ensureGatewayToken(vps);
  const fingerprint = deployFingerprint(vps, keys.fingerprintParts, gw.resourceVersion, d.bundleVersion);
  if (m.annotations[DEPLOYED_ANNOTATION] !== fingerprint) {
    await timed(d, 'deploy', async () => {
      const values = await keys.resolve(target, d.remote);
      await d.remote.deploy(target, d.bundle(vps, values, gw.token));
      faultPoint('after-deploy');
    });
    await d.kube.setAnnotations('Vps', m, {
      [DEPLOYED_ANNOTATION]: fingerprint,
      [DELIVERED_ANNOTATION]: JSON.stringify(keys.delivered),
    });
    faultPoint('after-annotate-deployed');
    await d.kube.event(
      'Vps',
      m,
      'Normal',
      'GatewayDeployed',
      `gateway and proxy deployed with ${keys.delivered.length} key(s)`,
    );
  }
  draft.status.proxyReady = true;
  if (noKeys) {
    // The last ModelKey went away: its key left the server (an empty key file), the gateway
    // keeps its last config until a ModelKey comes back.
    draft.status.gatewayDeployed = false;
    draft.set(
      T.GatewayDeployed,
      false,
      'WaitingForModelKeys',
      'create a ModelKey for this Vps (with its key in a Secret)',
    );
    draft.status.ready = false;
    draft.set(T.Ready, false, 'WaitingForModelKeys', 'the gateway needs at least one ModelKey');
    return done();
  }
  draft.status.gatewayDeployed = true;
  draft.set(T.GatewayDeployed, true, 'Deployed', 'gateway healthy, proxy answers from the Docker bridge');

  // 6. Rotate once after provisioning (the rescue session was the one unpinned connection),
  //    then every interval, measured from the active key's creation.
  const interval = parseGoDuration(vps.spec.sshKeyRotation.interval);
  const now = d.now().getTime();
  if (activeKey.bornInRescue || now >= activeKey.createdAt.getTime() + interval) {
    await timed(d, 'rotate', () => d.remote.rotate(m.uid, { ipv4, hostKey }));
    faultPoint('after-rotate');
    const fresh = await d.store.getVps(m.uid);
    if (!fresh?.activeKey) throw new CannesError('StoreInconsistent', 'no active key after rotation');
    activeKey = fresh.activeKey;
    draft.keyBornAt = activeKey.createdAt;
    await d.kube.event(
      'Vps',
      m,
      'Normal',
      'KeyRotated',
      'SSH key rotated; the old key is refused by the server',
    );
  }
  draft.set(
    T.KeyRotated,
    true,
    'KeyCurrent',
    `next rotation in ${vps.spec.sshKeyRotation.interval} after the last`,
  );

  draft.status.ready = true;
  draft.set(T.Ready, true, 'Provisioned', 'gateway answers through the proxy');

  // Purge the Hetzner token once every Vps that uses the same Secret key has finished setup.
  await purgeCloudToken(vps, d, draft);

  const due = activeKey.createdAt.getTime() + interval - d.now().getTime();
  return requeueAfter(Math.max(1000, due));
}

async function purgeCloudToken(vps: VpsObject, d: VpsDeps, draft: StatusDraft): Promise<void> {
  const ref = vps.spec.cloudTokenSecretRef;
  const { value } = await d.kube.readSecretKey(ns(vps.metadata), ref.name, ref.key);
  if (value === undefined) {
    draft.status.cloudTokenPurged = true;
    draft.set(
      T.CloudTokenPurged,
      true,
      'TokenPurged',
      'revoke the token in the Hetzner Console too: Hetzner has no API for it',
    );
    return;
  }
  if (!vps.spec.purgeCloudTokenAfterSetup) {
    draft.status.cloudTokenPurged = false;
    draft.set(T.CloudTokenPurged, false, 'PurgeDisabled', 'purgeCloudTokenAfterSetup is false');
    return;
  }
  // Purge once per Vps, after its own setup. A token put back later is for something else:
  // deleting a server, or a new Vps applied together with it (its Secret often reaches us
  // before the new Vps is in the cache, so "no other Vps waiting" would wrongly hold).
  const purgedBefore = (o: VpsObject) =>
    (o.status.conditions ?? []).some((c) => c.type === T.CloudTokenPurged && c.status === 'True');
  const resupplied = () => {
    draft.status.cloudTokenPurged = false;
    draft.set(
      T.CloudTokenPurged,
      false,
      'TokenResupplied',
      'this Vps purged the token after setup; it was put back since and is left for its new use',
    );
  };
  if (purgedBefore(vps)) {
    resupplied();
    return;
  }
  const waiting = d.kube
    .listVpses(ns(vps.metadata))
    .filter(
      (o) =>
        o.metadata.uid !== vps.metadata.uid &&
        !o.metadata.deletionTimestamp &&
        o.spec.cloudTokenSecretRef.name === ref.name &&
        o.spec.cloudTokenSecretRef.key === ref.key &&
        o.status.ready !== true,
    )
    .map((o) => o.metadata.name);
  if (waiting.length > 0) {
    draft.status.cloudTokenPurged = false;
    draft.set(
      T.CloudTokenPurged,
      false,
      'WaitingForOtherVps',
      `token still needed by: ${waiting.sort().join(', ')}`,
    );
    return;
  }
  // The cache may not show this Vps's own purge yet: the status write that records it is the
  // last thing the reconcile before this one did. Read the Vps from the API server first.
  const fresh = await d.kube.readVps(ns(vps.metadata), vps.metadata.name);
  if (fresh && purgedBefore(fresh)) {
    resupplied();
    return;
  }
  await d.kube.removeSecretKey(ns(vps.metadata), ref.name, ref.key);
  faultPoint('after-purge-token');
  draft.status.cloudTokenPurged = true;
  draft.set(
    T.CloudTokenPurged,
    true,
    'TokenPurged',
    'revoke the token in the Hetzner Console too: Hetzner has no API for it',
  );
  await d.kube.event(
    'Vps',
    vps.metadata,
    'Normal',
    'CloudTokenPurged',
    `removed key "${ref.key}" from Secret ${ref.name}`,
  );
}

async function finalize(vps: VpsObject, d: VpsDeps, draft: StatusDraft): Promise<Result> {
  const m = vps.metadata;
  if (!m.finalizers.includes(FINALIZER)) return done();
  const state = await d.store.getVps(m.uid);
  if (vps.spec.deletionPolicy === 'Delete') {
    let token: Secret;
    try {
      token = await cloudToken(vps, d, 'delete the server (or set deletionPolicy: Retain)');
    } catch (err) {
      // A purged token makes deletion wait, saying what to supply; the Secret watch retries.
      draft.set(T.Deleting, false, reasonOf(err), safeMessage(err));
      await d.kube.event('Vps', m, 'Warning', reasonOf(err), safeMessage(err));
      return done();
    }
    await timed(d, 'delete_server', async () => {
      const recorded = state?.record.serverId ?? numericAnnotation(m.annotations[ANNOTATION_SERVER_ID]);
      if (recorded !== null) await d.hcloud.deleteServer(token, recorded);
      // A server created just before a crash may not be recorded anywhere but its label.
      const orphan = await d.hcloud.findServerByVpsUid(token, m.uid);
      if (orphan) await d.hcloud.deleteServer(token, orphan.id);
    });
    await d.kube.event('Vps', m, 'Normal', 'ServerDeleted', 'Hetzner server deleted');
  } else {
    await d.kube.event(
      'Vps',
      m,
      'Normal',
      'ServerRetained',
      'deletionPolicy Retain: the Hetzner server is kept',
    );
  }
  await d.store.deleteVps(m.uid);
  await d.kube.removeFinalizer('Vps', m);
  draft.released = true;
  return done();
}

function numericAnnotation(v: string | undefined): number | null {
  return v !== undefined && /^[0-9]{1,15}$/.test(v) ? Number(v) : null;
}

/** Hetzner names are unique per project: namespace, name and a piece of the uid. */
export function serverName(vps: VpsObject): string {
  const base = `${ns(vps.metadata)}-${vps.metadata.name}`
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, '-')
    .slice(0, 50)
    .replace(/-+$/, '');
  return `${base}-${vps.metadata.uid.replace(/-/g, '').slice(0, 8)}`;
}

function deployFingerprint(
  vps: VpsObject,
  keyParts: readonly string[],
  gatewayTokenVersion: string,
  bundleVersion: string,
): string {
  const h = createHash('sha256');
  h.update(JSON.stringify([vps.spec.gateway, [...keyParts].sort(), gatewayTokenVersion, bundleVersion]));
  return h.digest('hex').slice(0, 32);
}
