/**
 * The Vps provisioning as a table of named steps (docs/design.md §4, "how to add a reconcile
 * step"). Each step says, from recorded facts only (the Postgres row, the Vps's annotations,
 * Secrets), whether it is done; if not, `run` does it and records the fact that makes `assess`
 * say done. The runner in vps.ts walks the table in order; the step's name gives its metric
 * label, its fault points and its Event, so adding a step touches this table only.
 *
 * A step that runs and still does not assess as done is a bug (it did not record its fact):
 * the runner fails it rather than let an idle Vps repeat work on every resync.
 */
import { createHash } from 'node:crypto';
import { CannesError, TerminalError } from '../../common/errors.ts';
import type { Secret } from '../../common/secret.ts';
import {
  ANNOTATION_ARCHITECTURE,
  ANNOTATION_DIRECT_KEYS,
  ANNOTATION_GATEWAY_URL,
  ANNOTATION_IPV4,
  ANNOTATION_KEY_SET,
  ANNOTATION_RECOVER,
  ANNOTATION_RECREATE_SERVER,
  ANNOTATION_SERVER_GONE,
  ANNOTATION_SERVER_ID,
  ANNOTATION_SSH_HOST_KEY,
  FINALIZER,
  LABEL_VPS_UID,
  type VpsStatus,
} from '../api/schema.ts';
import { SERVE_NETWORK } from '../host/layout.ts';
import { tailnetGatewayUrl } from '../host/tailnet.ts';
import { parseGoDuration } from '../lib/duration.ts';
import type { Logger } from '../lib/log.ts';
import type { InFlight } from './inflight.ts';
import {
  collectKeys,
  DELIVERED_ANNOTATION,
  type DeliveredKey,
  type KeySet,
  modelKeysFor,
  parseDirectKeys,
} from './keys.ts';
import type {
  ActiveKey,
  DeployBundle,
  Hcloud,
  Kube,
  ObjectMeta,
  Remote,
  Store,
  VpsObject,
  VpsRecord,
} from './ports.ts';
import { confirmServer, forgetGoneServer, reaching, serverGoneMessage } from './server-check.ts';

/** Fingerprint of the tailnet settings the server last joined and served with (never the key). */
export const TAILNET_ANNOTATION = 'cannes.dev/tailnet-joined';

/** Fingerprint of the hardening put on a server that had no ModelKey yet (the `harden` step). */
export const HARDENED_ANNOTATION = 'cannes.dev/hardened';

/** Fingerprint of what was last deployed; equal fingerprints mean no SSH connection at all. */
export const DEPLOYED_ANNOTATION = 'cannes.dev/deployed';

export interface VpsDeps {
  readonly kube: Kube;
  readonly hcloud: Hcloud;
  readonly remote: Remote;
  readonly store: Store;
  /** Renders what goes onto the server (operator/host templates + the proxy bundle). */
  readonly bundle: (
    vps: VpsObject,
    keys: readonly DeliveredKey[],
    gatewayToken: Secret,
    host: { readonly architecture: Architecture },
  ) => DeployBundle;
  /** Changes when the proxy bundle or the templates change, so a new operator redeploys. */
  readonly bundleVersion: string;
  /**
   * The firewall, sshd hardening and root password lock alone (operator/adapters/bundle.ts),
   * for a server with no ModelKey yet; absent: the `harden` step does not apply.
   */
  readonly hardening?: () => DeployBundle;
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
  /**
   * Where steps marked `background` run, off the workers (inflight.ts). Absent (unit tests),
   * they run on the worker like every other step.
   */
  readonly inflight?: InFlight;
}

/** The server type's `architecture`: which Node build the deploy installs. */
export type Architecture = 'x86' | 'arm';

const knownArchitecture = (v: string | undefined): Architecture | undefined =>
  v === 'x86' || v === 'arm' ? v : undefined;

/** What the steps know and record during one reconcile. */
export interface Facts {
  /** The Postgres row (null before the first step created it). */
  record: VpsRecord | null;
  activeKey: ActiveKey | null;
  /** The server's power state as the server step saw it in this reconcile (saves a GET). */
  seenStatus?: string | undefined;
  /** The server type's architecture (the create answer, else the annotation that recorded it). */
  architecture?: Architecture;
  /** The keys that belong on the server (read once per reconcile by the deploy step). */
  keys?: KeySet;
  gateway?: { token: Secret; resourceVersion: string };
  // Set by a step's run for what the informer cache cannot show yet in this reconcile.
  finalizerAdded?: boolean;
  /**
   * The store had no row for this Vps when this reconcile began, and the finalizer step made
   * it: no server can carry its uid yet (a create is only ever sent after the row exists, and
   * the row goes only after the server), so the create step need not look for one.
   */
  rowCreated?: boolean;
  deployed?: string;
  hardened?: string;
  tokenPurged?: boolean;
  tailnet?: { url: string; fingerprint: string; keyPurged?: boolean };
  /** The purge step removed the recovery intent (the cache copy still shows it). */
  recoveryClosed?: boolean;
  /** The gone server this reconcile replaced (its annotations in the cache are stale: stop here). */
  recreated?: number;
  directStamp?: string;
}

export interface StepContext {
  readonly vps: VpsObject;
  readonly d: VpsDeps;
  readonly facts: Facts;
  /** The reconcile's cancellation: a step checks it between calls and passes it down. */
  readonly signal: AbortSignal;
  /** Crash point `<step>:<label>` (declared in the step's `faultPoints`). */
  fault(label: string): void;
}

/**
 * - `done`: the step's fact is recorded; report the condition (`ok` false for a recorded
 *   "no", e.g. purging disabled) and go on.
 * - `run`: do the step now.
 * - `wait`: the step cannot go on until something outside changes (its watch re-enqueues the
 *   Vps); the condition says what, and the reconcile stops here.
 */
export type Assessment =
  | {
      readonly state: 'done';
      readonly ok?: boolean;
      /** The step does not apply to this Vps (e.g. no spec.tailnet): no condition, no boolean. */
      readonly absent?: boolean;
      readonly reason: string;
      readonly message: string;
      readonly status?: Partial<VpsStatus>;
    }
  | { readonly state: 'run' }
  | {
      readonly state: 'wait';
      readonly reason: string;
      readonly message: string;
      readonly status?: Partial<VpsStatus>;
    };

export interface VpsStep {
  /** Metric label (`cannes_provisioning_step_duration_seconds{step}`) and fault point prefix. */
  readonly name: string;
  /** The condition type this step reports (none for bookkeeping a person need not see). */
  readonly condition?: string;
  /** The status boolean that mirrors the condition (status exposes only booleans). */
  readonly status?: keyof VpsStatus;
  /** The Event reason when `run` completes (its note is what `run` returns); none: no Event. */
  readonly event?: string;
  /** Steps before Ready gate it; later steps (the token purge) report without unsetting it. */
  readonly gatesReady: boolean;
  /**
   * The step mostly waits (Hetzner actions, boots, a cold start): with `deps.inflight` it runs
   * off the worker and the reconcile returns at once (vps.ts).
   */
  readonly background?: boolean;
  /** Crash points inside `run`, in the order they are reached (`<name>:<label>`). */
  readonly faultPoints: readonly string[];
  assess(ctx: StepContext): Promise<Assessment>;
  /** Does the step and records its fact; returns the Event's note. */
  run(ctx: StepContext): Promise<string>;
}

const ns = (m: ObjectMeta): string => m.namespace ?? 'default';

/** The Vps's Hetzner token from its `cloud-token` Secret (the reconcile and `recover` read it). */
export async function cloudToken(vps: VpsObject, d: Pick<VpsDeps, 'kube'>, purpose: string): Promise<Secret> {
  const ref = vps.spec.cloudTokenSecretRef;
  const { value, notLabelled } = await d.kube.readSecretKey(
    ns(vps.metadata),
    ref.name,
    ref.key,
    'cloud-token',
  );
  if (notLabelled) throw new TerminalError('SecretNotLabelled', notLabelled);
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

/** The token when it is there to read (it is purged after setup); never an error. */
async function tokenIfAny(vps: VpsObject, d: VpsDeps): Promise<Secret | undefined> {
  try {
    return await cloudToken(vps, d, 'check the server');
  } catch (err) {
    if (err instanceof CannesError) return undefined;
    throw err;
  }
}

/** An SSH step's work; an unreachable server makes it ask Hetzner whether the server is gone. */
function reachingServer<R>(ctx: StepContext, fn: () => Promise<R>): Promise<R> {
  const { vps, d } = ctx;
  return reaching(d, vps, () => tokenIfAny(vps, d), serverOf(ctx).serverId, fn);
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
  keys: KeySet,
  gatewayTokenVersion: string,
  bundleVersion: string,
): string {
  const h = createHash('sha256');
  // The tailnet URL goes into the gateway config (Control UI origin): once the tailnet step
  // records it, the next reconcile redeploys. Absent, the parts are as before (no redeploy of
  // every Vps on upgrade).
  const tailnetUrl = vps.spec.tailnet ? vps.metadata.annotations[ANNOTATION_GATEWAY_URL] : undefined;
  h.update(
    JSON.stringify([
      vps.spec.gateway,
      vps.spec.access,
      // The intake's owners file: a change of owners is a redeploy.
      ...(vps.spec.tailnet?.owners.length ? [vps.spec.tailnet.owners] : []),
      [...keys.fingerprintParts].sort(),
      gatewayTokenVersion,
      bundleVersion,
      ...(tailnetUrl ? [tailnetUrl] : []),
    ]),
  );
  return h.digest('hex').slice(0, 32);
}

function recordOf(ctx: StepContext): VpsRecord {
  const r = ctx.facts.record;
  if (!r) throw new CannesError('StoreInconsistent', 'the Vps row is not recorded');
  return r;
}

/** The server's address and pinned host key, once the earlier steps recorded them. */
function serverOf(ctx: StepContext): { serverId: number; ipv4: string; hostKey: string | null } {
  const r = recordOf(ctx);
  if (r.serverId === null || r.ipv4 === null)
    throw new CannesError('StoreInconsistent', 'server id not recorded');
  return { serverId: r.serverId, ipv4: r.ipv4, hostKey: r.hostKey };
}

function activeKeyOf(ctx: StepContext): ActiveKey & { hostKey: string } {
  const k = ctx.facts.activeKey;
  const hostKey = ctx.facts.record?.hostKey;
  if (!k || !hostKey) throw new CannesError('StoreInconsistent', 'no stored SSH key');
  return { ...k, hostKey };
}

async function reloadFacts(ctx: StepContext): Promise<void> {
  const fresh = await ctx.d.store.getVps(ctx.vps.metadata.uid);
  ctx.facts.record = fresh?.record ?? null;
  ctx.facts.activeKey = fresh?.activeKey ?? null;
}

/**
 * A Vps that had a key (its pinned host key is published) but whose store row has none lost its
 * database or row: resetting its running server into rescue takes the owner's say-so, a recovery
 * intent for exactly the server carrying its uid label (`cannes-operator recover`). Without
 * it the step waits, naming the command; a first provisioning (no host key published) runs.
 */
function recoveryGate(ctx: StepContext): Assessment | undefined {
  const m = ctx.vps.metadata;
  if (m.annotations[ANNOTATION_SSH_HOST_KEY] === undefined) return undefined;
  const intent = m.annotations[ANNOTATION_RECOVER];
  const serverId = ctx.facts.record?.serverId;
  if (intent !== undefined && serverId != null && intent === String(serverId)) return undefined;
  const command = `cannes-operator recover ${ns(m)}/${m.name}`;
  return {
    state: 'wait',
    reason: 'RecoveryRequired',
    message:
      intent === undefined
        ? `the store holds no SSH key for this provisioned server (database or row lost): put a fresh Hetzner token in Secret ${ctx.vps.spec.cloudTokenSecretRef.name} and run "${command}" (docs/operations.md)`
        : `recovery was requested for Hetzner server ${intent.slice(0, 20)}, but this Vps's server is ${serverId ?? 'not recorded'}: run "${command}" again`,
  };
}

const WAITING_FOR_MODEL_KEYS = {
  reason: 'WaitingForModelKeys',
  message: 'create a ModelKey for this Vps (with its key in a Secret): the gateway needs at least one',
} as const;

// ------------------------------------------------------------------ the steps

/** 1. Finalizer first: from here on the operator owns external state that deletion must clean. */
const finalizer: VpsStep = {
  name: 'finalizer',
  gatesReady: true,
  faultPoints: ['finalizer:added'],
  async assess(ctx) {
    const on = ctx.vps.metadata.finalizers.includes(FINALIZER) || ctx.facts.finalizerAdded === true;
    return on && ctx.facts.record !== null
      ? { state: 'done', reason: 'Registered', message: 'finalizer on, row in the store' }
      : { state: 'run' };
  },
  async run(ctx) {
    const m = ctx.vps.metadata;
    if (!m.finalizers.includes(FINALIZER)) {
      await ctx.d.kube.addFinalizer('Vps', m);
      ctx.fault('added');
    }
    ctx.facts.finalizerAdded = true;
    const fresh = ctx.facts.record === null;
    await ctx.d.store.upsertVps({ uid: m.uid, namespace: ns(m), name: m.name });
    if (fresh) ctx.facts.rowCreated = true;
    ctx.facts.record = {
      uid: m.uid,
      namespace: ns(m),
      name: m.name,
      serverId: null,
      ipv4: null,
      hostKey: null,
    };
    return 'the operator now cleans up the server when the Vps is deleted';
  },
};

/**
 * 2. The server. Found by label before creating, so a crash between create and recording the
 *    id adopts the server instead of creating a second one (the first attempt, right after the
 *    row was made, has nothing to find and asks nothing).
 */
const server: VpsStep = {
  name: 'create_server',
  condition: 'ServerCreated',
  status: 'serverCreated',
  event: 'ServerCreated',
  gatesReady: true,
  background: true,
  faultPoints: ['create_server:created', 'create_server:recorded'],
  async assess(ctx) {
    const r = recordOf(ctx);
    if (ctx.facts.recreated !== undefined)
      return {
        state: 'wait',
        reason: 'ServerRecreated',
        message: `server ${ctx.facts.recreated} was gone: created server ${r.serverId} in its place`,
      };
    if (r.serverId === null || r.ipv4 === null) return { state: 'run' };
    // Gone (Hetzner 404, recorded by server-check.ts): wait for the owner's consent to a new one.
    const gone = ctx.vps.metadata.annotations[ANNOTATION_SERVER_GONE];
    if (gone === String(r.serverId))
      return ctx.vps.metadata.annotations[ANNOTATION_RECREATE_SERVER] === gone
        ? { state: 'run' }
        : { state: 'wait', reason: 'ServerGone', message: serverGoneMessage(ctx.vps, r.serverId) };
    // The annotations are a copy for people (docs/design.md §1 promise 4); the store is the record.
    const m = ctx.vps.metadata;
    // The architecture is recorded at create (annotation), so an idle Vps asks Hetzner nothing;
    // a server recorded without it (an older operator) is read once.
    ctx.facts.architecture ??= knownArchitecture(m.annotations[ANNOTATION_ARCHITECTURE]);
    if (ctx.facts.architecture === undefined) {
      const token = await cloudToken(
        ctx.vps,
        ctx.d,
        `read the server's architecture (or annotate ${ANNOTATION_ARCHITECTURE}: x86|arm)`,
      );
      const s = await ctx.d.hcloud.getServer(token, r.serverId);
      if (!s) throw new CannesError('ServerNotFound', `Hetzner server ${r.serverId} not found`);
      ctx.facts.architecture = s.architecture;
    }
    if (
      m.annotations[ANNOTATION_SERVER_ID] !== String(r.serverId) ||
      m.annotations[ANNOTATION_IPV4] !== r.ipv4 ||
      m.annotations[ANNOTATION_ARCHITECTURE] !== ctx.facts.architecture
    ) {
      await ctx.d.kube.setAnnotations('Vps', m, {
        [ANNOTATION_SERVER_ID]: String(r.serverId),
        [ANNOTATION_IPV4]: r.ipv4,
        [ANNOTATION_ARCHITECTURE]: ctx.facts.architecture,
      });
    }
    return { state: 'done', reason: 'ServerExists', message: `Hetzner server ${r.serverId}` };
  },
  async run(ctx) {
    const { vps, d } = ctx;
    const m = vps.metadata;
    const token = await cloudToken(vps, d, 'create the server');
    ctx.signal.throwIfAborted();
    const goneId = recordOf(ctx).serverId;
    const gone = m.annotations[ANNOTATION_SERVER_GONE];
    if (goneId !== null && gone === String(goneId) && m.annotations[ANNOTATION_RECREATE_SERVER] === gone) {
      // Only reached with the owner's consent (assess): the recorded server is gone.
      await forgetGoneServer(d, vps, token, goneId, [
        DEPLOYED_ANNOTATION,
        TAILNET_ANNOTATION,
        HARDENED_ANNOTATION,
      ]);
      ctx.facts.record = { ...recordOf(ctx), serverId: null, ipv4: null, hostKey: null };
      ctx.facts.activeKey = null;
      ctx.facts.recreated = goneId;
    }
    // Found by label first, unless this very reconcile made the row (then none can exist):
    // once only, so any second attempt looks.
    const first = ctx.facts.rowCreated === true;
    ctx.facts.rowCreated = false;
    let s = first ? null : await d.hcloud.findServerByVpsUid(token, m.uid);
    if (!s) {
      s = await d.hcloud.createServer(token, {
        name: serverName(vps),
        serverType: vps.spec.serverType,
        location: vps.spec.location,
        image: vps.spec.image,
        labels: { [LABEL_VPS_UID]: m.uid, 'cannes.dev/managed-by': 'cannes' },
      });
      ctx.fault('created');
    }
    if (!s.ipv4) throw new CannesError('ServerHasNoIPv4', `server ${s.id} has no public IPv4 yet`);
    ctx.facts.seenStatus = s.status;
    ctx.facts.architecture = s.architecture;
    await d.store.setServer(m.uid, s.id, s.ipv4);
    ctx.fault('recorded');
    ctx.facts.record = { ...recordOf(ctx), serverId: s.id, ipv4: s.ipv4 };
    return `Hetzner server ${s.id} (${s.ipv4})`;
  },
};

/**
 * 3+4. The SSH key is born in the rescue system. Until it is stored there is nothing to resume
 *      from: a crash anywhere here re-runs the whole step (a new rescue password, a new key that
 *      OVERWRITES authorized_keys on the disk), so no orphan key can log in.
 */
const sshKey: VpsStep = {
  name: 'rescue_keygen',
  condition: 'HasSshKey',
  status: 'hasSshKey',
  event: 'SshKeyStored',
  gatesReady: true,
  background: true,
  faultPoints: ['rescue_keygen:keygen', 'rescue_keygen:rebooted', 'rescue_keygen:stored'],
  async assess(ctx) {
    const hostKey = ctx.facts.record?.hostKey;
    if (!ctx.facts.activeKey || !hostKey) return recoveryGate(ctx) ?? { state: 'run' };
    // The pinned host key (public) for the owner's known_hosts: their first SSH connection
    // verifies it too, instead of trusting on first use.
    const m = ctx.vps.metadata;
    if (m.annotations[ANNOTATION_SSH_HOST_KEY] !== hostKey)
      await ctx.d.kube.setAnnotations('Vps', m, { [ANNOTATION_SSH_HOST_KEY]: hostKey });
    return {
      state: 'done',
      reason: 'KeyStored',
      message: 'an SSH key born on the server is stored encrypted',
    };
  },
  async run(ctx) {
    const { vps, d } = ctx;
    const { serverId, ipv4 } = serverOf(ctx);
    const token = await cloudToken(vps, d, 'boot the rescue system');
    ctx.signal.throwIfAborted();
    if (vps.metadata.annotations[ANNOTATION_RECOVER] !== undefined) {
      // A recovery redeploys once the new key is stored: the deploy proves the key works and
      // brings back what the rescue reboot stopped. Removed first, so a crash anywhere after
      // this still redeploys; the cache copy of this reconcile does not show it yet.
      await d.kube.setAnnotations('Vps', vps.metadata, { [DEPLOYED_ANNOTATION]: null });
      ctx.facts.deployed = '';
    }
    // The rescue password lives in this closure only: never stored, never logged.
    const password = await d.hcloud.enableRescue(token, serverId);
    // enable_rescue does not change the power state the server step saw.
    await d.hcloud.powerOnOrReset(token, serverId, ctx.facts.seenStatus);
    const r = await d.remote.rescueKeygen(ipv4, password);
    ctx.fault('keygen');
    // Reboot before storing (docs/design.md §4 step 3 → 4): a crash after the reboot loses only this
    // key, and the next attempt goes back to rescue; storing first would need a third state.
    await d.hcloud.reboot(token, serverId);
    ctx.fault('rebooted');
    await d.store.saveRescueResult(vps.metadata.uid, r.osHostKey, r);
    ctx.fault('stored');
    await reloadFacts(ctx);
    if (!ctx.facts.activeKey || !ctx.facts.record?.hostKey)
      throw new CannesError('StoreInconsistent', 'stored SSH key is not readable back');
    return 'SSH key generated in rescue, stored encrypted';
  },
};

function bundleFingerprint(b: DeployBundle): string {
  const h = createHash('sha256');
  for (const f of b.files) {
    const content = typeof f.content === 'string' ? f.content : f.content.reveal();
    h.update(JSON.stringify([f.path, f.mode, f.owner, content]));
  }
  return h
    .update(JSON.stringify([b.prepare ?? '', b.activate, b.verify]))
    .digest('hex')
    .slice(0, 32);
}

/**
 * 4b. Hardening first, before anything is deployed: the host firewall, sshd's hardening and the
 *     root password's end do not wait for a ModelKey (or for a deploy that may fail). Once a
 *     deploy ran, every deploy brings them and this step no longer applies.
 */
const harden: VpsStep = {
  name: 'harden',
  event: 'HostHardened',
  gatesReady: true,
  // The first SSH to the OS after the rescue step's reboot: it waits for the boot.
  background: true,
  faultPoints: ['harden:hardened'],
  async assess(ctx) {
    const { vps, d, facts } = ctx;
    const absent = { state: 'done', absent: true, reason: 'DeployHardens', message: '' } as const;
    if (!d.hardening || (facts.deployed ?? vps.metadata.annotations[DEPLOYED_ANNOTATION]) !== undefined)
      return absent;
    const want = bundleFingerprint(d.hardening());
    return (facts.hardened ?? vps.metadata.annotations[HARDENED_ANNOTATION]) === want
      ? absent
      : { state: 'run' };
  },
  async run(ctx) {
    const { vps, d } = ctx;
    const bundle = d.hardening?.();
    if (!bundle) throw new CannesError('StepNotApplicable', 'no hardening bundle');
    const { ipv4 } = serverOf(ctx);
    const key = activeKeyOf(ctx);
    ctx.signal.throwIfAborted();
    await reachingServer(ctx, () =>
      d.remote.deploy({ ipv4, hostKey: key.hostKey, privateKey: key.privateKey }, bundle),
    );
    ctx.fault('hardened');
    const fingerprint = bundleFingerprint(bundle);
    await d.kube.setAnnotations('Vps', vps.metadata, { [HARDENED_ANNOTATION]: fingerprint });
    ctx.facts.hardened = fingerprint;
    return 'host firewall loaded, sshd hardened, root password removed (no ModelKey yet)';
  },
};

/** 5. Deploy: only when what should be on the server differs from what was put there. */
const deploy: VpsStep = {
  name: 'deploy',
  condition: 'GatewayDeployed',
  status: 'gatewayDeployed',
  event: 'GatewayDeployed',
  gatesReady: true,
  background: true,
  faultPoints: ['deploy:deployed', 'deploy:annotated'],
  async assess(ctx) {
    const { vps, d, facts } = ctx;
    facts.keys ??= await collectKeys(vps, d.kube);
    const noKeys = facts.keys.fingerprintParts.length === 0;
    const deployedBefore = facts.deployed ?? vps.metadata.annotations[DEPLOYED_ANNOTATION];
    // OpenClaw needs at least one model: nothing to deploy until a ModelKey (with a key)
    // exists; its creation re-enqueues this Vps.
    if (noKeys && deployedBefore === undefined) return { state: 'wait', ...WAITING_FOR_MODEL_KEYS };
    facts.gateway ??= await d.kube.ensureGatewayToken(vps);
    const fingerprint = deployFingerprint(vps, facts.keys, facts.gateway.resourceVersion, d.bundleVersion);
    if (deployedBefore !== fingerprint) return { state: 'run' };
    // The last ModelKey went away: its key left the server (an empty key file); the gateway
    // keeps its last config until a ModelKey comes back.
    if (noKeys)
      return {
        state: 'wait',
        ...WAITING_FOR_MODEL_KEYS,
        status: { proxyReady: true, gatewayDeployed: false },
      };
    return {
      state: 'done',
      reason: 'Deployed',
      message: 'gateway healthy, proxy answers from the Docker bridge',
      status: { proxyReady: true },
    };
  },
  async run(ctx) {
    const { vps, d, facts } = ctx;
    const { ipv4 } = serverOf(ctx);
    const key = activeKeyOf(ctx);
    const keys = facts.keys ?? (await collectKeys(vps, d.kube));
    const gw = facts.gateway ?? (await d.kube.ensureGatewayToken(vps));
    const target = { ipv4, hostKey: key.hostKey, privateKey: key.privateKey };
    // Hetzner (when the token is there to ask) still has the server at the recorded address.
    // Not before the first deploy: the address came from Hetzner in this provisioning (the
    // create or the recovery's lookup), and asking again would cost every new Vps a call.
    if (vps.metadata.annotations[DEPLOYED_ANNOTATION] !== undefined)
      await confirmServer(d, vps, await tokenIfAny(vps, d), serverOf(ctx));
    ctx.signal.throwIfAborted();
    const architecture = facts.architecture;
    if (architecture === undefined)
      throw new CannesError('StoreInconsistent', 'server architecture not known');
    await reachingServer(ctx, async () => {
      const values = await keys.resolve(target, d.remote);
      await d.remote.deploy(target, d.bundle(vps, values, gw.token, { architecture }));
    });
    ctx.fault('deployed');
    const fingerprint = deployFingerprint(vps, keys, gw.resourceVersion, d.bundleVersion);
    await d.kube.setAnnotations('Vps', vps.metadata, {
      [DEPLOYED_ANNOTATION]: fingerprint,
      [DELIVERED_ANNOTATION]: JSON.stringify(keys.delivered),
    });
    ctx.fault('annotated');
    // The cache copy this reconcile holds does not show the write yet.
    facts.deployed = fingerprint;
    return `gateway and proxy deployed with ${Object.keys(keys.delivered).length} key(s)`;
  },
};

function tailnetFingerprint(vps: VpsObject): string | undefined {
  const t = vps.spec.tailnet;
  if (!t) return undefined;
  return (
    createHash('sha256')
      // Serve's target and the key intake's path too: a release that changes what Serve maps
      // sets Serve again on every joined node (no auth key needed).
      .update(
        JSON.stringify([
          t.loginServer,
          t.hostname,
          [...t.tags].sort(),
          vps.spec.gateway.port,
          SERVE_NETWORK.containerAddress,
          'intake',
        ]),
      )
      .digest('hex')
      .slice(0, 32)
  );
}

async function tailnetAuthKey(vps: VpsObject, d: VpsDeps): Promise<Secret | undefined> {
  const t = vps.spec.tailnet;
  if (!t) return undefined;
  const ref = t.authKeySecretRef;
  const { value, notLabelled, resourceVersion } = await d.kube.readSecretKey(
    ns(vps.metadata),
    ref.name,
    ref.key,
    'tailnet-auth-key',
  );
  if (notLabelled) throw new TerminalError('SecretNotLabelled', notLabelled);
  // A node that joined before needs no key to change its hostname or Serve: the Secret may be gone.
  if (resourceVersion === undefined && vps.metadata.annotations[TAILNET_ANNOTATION] === undefined)
    throw new TerminalError(
      'TailnetAuthKeySecretMissing',
      `Secret ${ref.name} does not exist: create it (labelled cannes.dev/usage=tailnet-auth-key) with a Tailscale auth key in "${ref.key}"`,
    );
  if (value !== undefined && !/^[A-Za-z0-9_-]{8,512}$/.test(value.reveal().trim()))
    throw new TerminalError(
      'TailnetAuthKeyInvalid',
      `Secret ${ref.name} key "${ref.key}" does not look like a Tailscale auth key (tskey-auth-...)`,
    );
  return value;
}

/**
 * 6. The owner's way in over Tailscale (spec.tailnet, optional): install, join, serve the
 *    gateway on the tailnet, record its URL. Done from annotations alone, so a joined idle Vps
 *    costs no SSH connection; the join fingerprint leaves the key out, so purging it changes
 *    nothing. A crash after the join re-runs it: a joined node is not joined again (no key
 *    needed), Serve is set again to the same thing.
 */
const tailnet: VpsStep = {
  name: 'tailnet',
  condition: 'TailnetJoined',
  status: 'tailnetJoined',
  event: 'TailnetJoined',
  gatesReady: true,
  background: true,
  faultPoints: ['tailnet:joined', 'tailnet:annotated', 'tailnet:purged'],
  async assess(ctx) {
    const { vps, d, facts } = ctx;
    const t = vps.spec.tailnet;
    if (!t) return { state: 'done', absent: true, reason: 'NoTailnet', message: 'spec.tailnet is not set' };
    const m = vps.metadata;
    const url = facts.tailnet?.url ?? m.annotations[ANNOTATION_GATEWAY_URL];
    const joined = facts.tailnet?.fingerprint ?? m.annotations[TAILNET_ANNOTATION];
    if (!url || joined !== tailnetFingerprint(vps)) return { state: 'run' };
    // The key is of no use once joined: purge it (a Kubernetes read, no SSH), also after a crash
    // between the join and the purge.
    if (t.purgeAuthKeyAfterJoin && !facts.tailnet?.keyPurged) {
      const ref = t.authKeySecretRef;
      const { value } = await d.kube.readSecretKey(ns(m), ref.name, ref.key, 'tailnet-auth-key');
      if (value !== undefined) return { state: 'run' };
    }
    return {
      state: 'done',
      reason: 'Joined',
      message: `the gateway is at ${url} on the tailnet${t.purgeAuthKeyAfterJoin ? '; the auth key is purged' : ''}`,
      status: { gatewayReachable: true },
    };
  },
  async run(ctx) {
    const { vps, d, facts } = ctx;
    const t = vps.spec.tailnet;
    if (!t) throw new CannesError('StepNotApplicable', 'no spec.tailnet');
    const m = vps.metadata;
    const fingerprint = tailnetFingerprint(vps) ?? '';
    let url = facts.tailnet?.url ?? m.annotations[ANNOTATION_GATEWAY_URL];
    let note = `the gateway is at ${url} on the tailnet`;
    if (!url || (facts.tailnet?.fingerprint ?? m.annotations[TAILNET_ANNOTATION]) !== fingerprint) {
      const { ipv4 } = serverOf(ctx);
      const key = activeKeyOf(ctx);
      const authKey = await tailnetAuthKey(vps, d);
      ctx.signal.throwIfAborted();
      const r = await d.remote.joinTailnet(
        { ipv4, hostKey: key.hostKey, privateKey: key.privateKey },
        {
          authKey,
          loginServer: t.loginServer,
          hostname: t.hostname,
          tags: t.tags,
          gatewayPort: vps.spec.gateway.port,
        },
      );
      ctx.fault('joined');
      if (!r.gatewayReachable)
        throw new CannesError(
          'GatewayNotReachable',
          `joined the tailnet as ${r.dnsName}, but the gateway does not answer through tailscale serve yet`,
        );
      url = tailnetGatewayUrl(r.dnsName, r.httpsAvailable);
      await d.kube.setAnnotations('Vps', m, {
        [ANNOTATION_GATEWAY_URL]: url,
        [TAILNET_ANNOTATION]: fingerprint,
      });
      ctx.fault('annotated');
      facts.tailnet = { url, fingerprint };
      note = `joined the tailnet: the gateway is at ${url}`;
    }
    if (t.purgeAuthKeyAfterJoin) {
      const ref = t.authKeySecretRef;
      await d.kube.removeSecretKey(ns(m), ref.name, ref.key, 'tailnet-auth-key');
      ctx.fault('purged');
      facts.tailnet = { url, fingerprint, keyPurged: true };
      note += `; removed key "${ref.key}" from Secret ${ref.name}`;
    }
    return note;
  },
};

/**
 * 7. Rotate once after provisioning (the rescue session was the one unpinned connection), then
 *    every interval, measured from the active key's creation.
 */
const rotate: VpsStep = {
  name: 'rotate',
  condition: 'KeyRotated',
  event: 'KeyRotated',
  gatesReady: true,
  background: true,
  faultPoints: ['rotate:rotated'],
  async assess(ctx) {
    const key = activeKeyOf(ctx);
    const interval = parseGoDuration(ctx.vps.spec.sshKeyRotation.interval);
    if (key.bornInRescue || ctx.d.now().getTime() >= key.createdAt.getTime() + interval)
      return { state: 'run' };
    return {
      state: 'done',
      reason: 'KeyCurrent',
      message: `next rotation in ${ctx.vps.spec.sshKeyRotation.interval} after the last`,
    };
  },
  async run(ctx) {
    const { ipv4, hostKey } = serverOf(ctx);
    if (hostKey === null) throw new CannesError('StoreInconsistent', 'no pinned host key');
    ctx.signal.throwIfAborted();
    await reachingServer(ctx, () => ctx.d.remote.rotate(ctx.vps.metadata.uid, { ipv4, hostKey }));
    ctx.fault('rotated');
    await reloadFacts(ctx);
    if (!ctx.facts.activeKey) throw new CannesError('StoreInconsistent', 'no active key after rotation');
    return 'SSH key rotated; the old key is refused by the server';
  },
};

/**
 * 7a. Which Direct routes hold the owner's key (booleans only), asked of the server with the
 *     root-only helper over SSH: after each deploy, and when `key set` annotated a ModelKey
 *     (cannes.dev/key-set), never by polling. An idle Ready Vps costs no SSH here.
 */
const directKeys: VpsStep = {
  name: 'direct_keys',
  gatesReady: false,
  // No crash point: a crash between the answer and the annotation asks once more (read only).
  faultPoints: [],
  async assess(ctx) {
    const stamp = directKeysStamp(ctx);
    if (stamp === undefined)
      return { state: 'done', absent: true, reason: 'NoDirectKeys', message: 'no Direct ModelKey deployed' };
    const recorded = ctx.facts.directStamp ?? parseDirectKeys(ctx.vps.metadata.annotations).stamp;
    if (recorded !== stamp) return { state: 'run' };
    return { state: 'done', reason: 'Reported', message: 'the server said which Direct routes hold a key' };
  },
  async run(ctx) {
    const stamp = directKeysStamp(ctx) ?? '';
    const { ipv4 } = serverOf(ctx);
    const key = activeKeyOf(ctx);
    ctx.signal.throwIfAborted();
    const keys = await ctx.d.remote.directKeyStatus({
      ipv4,
      hostKey: key.hostKey,
      privateKey: key.privateKey,
    });
    await ctx.d.kube.setAnnotations('Vps', ctx.vps.metadata, {
      [ANNOTATION_DIRECT_KEYS]: JSON.stringify({ keys, stamp }),
    });
    ctx.facts.directStamp = stamp;
    const n = Object.values(keys).filter(Boolean).length;
    return `${n} of ${Object.keys(keys).length} Direct route(s) hold a key`;
  },
};

/** Changes with each deploy and each `key set`; undefined when no Direct route is deployed. */
function directKeysStamp(ctx: StepContext): string | undefined {
  const { vps, d, facts } = ctx;
  const deployed = facts.deployed ?? vps.metadata.annotations[DEPLOYED_ANNOTATION];
  const direct = modelKeysFor(vps, d.kube).filter((mk) => mk.spec.delivery === 'Direct');
  if (deployed === undefined || direct.length === 0) return undefined;
  const parts = direct.map(
    (mk) => `${mk.metadata.name}:${mk.metadata.annotations[ANNOTATION_KEY_SET] ?? ''}`,
  );
  return createHash('sha256')
    .update(JSON.stringify([deployed, parts.sort()]))
    .digest('hex')
    .slice(0, 32);
}

const TOKEN_PURGED = 'revoke the token in the Hetzner Console too: Hetzner has no API for it';
/** This Vps purged the token once (True), or left a put-back token alone since (TokenResupplied). */
const purgedBefore = (o: VpsObject) =>
  (o.status.conditions ?? []).some(
    (c) => c.type === 'CloudTokenPurged' && (c.status === 'True' || c.reason === 'TokenResupplied'),
  );

/**
 * 8. Purge the Hetzner token once every Vps that uses the same Secret key has finished setup.
 *    Purge once per Vps, after its own setup: a token put back later is for something else
 *    (deleting a server, or a new Vps applied together with it, whose Secret often reaches us
 *    before the new Vps is in the cache).
 */
const purgeToken: VpsStep = {
  name: 'purge_token',
  condition: 'CloudTokenPurged',
  status: 'cloudTokenPurged',
  event: 'CloudTokenPurged',
  gatesReady: false,
  faultPoints: ['purge_token:purged'],
  async assess(ctx) {
    const { vps, d } = ctx;
    if (recovering(ctx)) return assessRecoveryEnd(ctx);
    const ref = vps.spec.cloudTokenSecretRef;
    const { value, notLabelled } = await d.kube.readSecretKey(
      ns(vps.metadata),
      ref.name,
      ref.key,
      'cloud-token',
    );
    if (notLabelled && !ctx.facts.tokenPurged)
      return { state: 'done', ok: false, reason: 'SecretNotLabelled', message: notLabelled };
    if (value === undefined || ctx.facts.tokenPurged)
      return { state: 'done', reason: 'TokenPurged', message: TOKEN_PURGED };
    if (!vps.spec.purgeCloudTokenAfterSetup)
      return {
        state: 'done',
        ok: false,
        reason: 'PurgeDisabled',
        message: 'purgeCloudTokenAfterSetup is false',
      };
    const resupplied = {
      state: 'done',
      ok: false,
      reason: 'TokenResupplied',
      message: 'this Vps purged the token after setup; it was put back since and is left for its new use',
    } as const;
    if (purgedBefore(vps)) return resupplied;
    const waiting = othersWaitingForToken(ctx);
    if (waiting.length > 0)
      return {
        state: 'wait',
        reason: 'WaitingForOtherVps',
        message: `token still needed by: ${waiting.sort().join(', ')}`,
      };
    // The cache may not show this Vps's own purge yet: the status write that records it is the
    // last thing the reconcile before this one did. Read the Vps from the API server first.
    const fresh = await d.kube.readVps(ns(vps.metadata), vps.metadata.name);
    if (fresh && purgedBefore(fresh)) return resupplied;
    return { state: 'run' };
  },
  async run(ctx) {
    if (recovering(ctx)) return endRecovery(ctx);
    const ref = ctx.vps.spec.cloudTokenSecretRef;
    await ctx.d.kube.removeSecretKey(ns(ctx.vps.metadata), ref.name, ref.key, 'cloud-token');
    ctx.fault('purged');
    ctx.facts.tokenPurged = true;
    return `removed key "${ref.key}" from Secret ${ref.name}`;
  },
};

/** Other Vps of the namespace that use the same token Secret key and are not Ready yet. */
function othersWaitingForToken(ctx: StepContext): string[] {
  const { vps, d } = ctx;
  const ref = vps.spec.cloudTokenSecretRef;
  return d.kube
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
}

/** A recovery intent is on the Vps and this reconcile has not removed it yet. */
const recovering = (ctx: StepContext): boolean =>
  ctx.vps.metadata.annotations[ANNOTATION_RECOVER] !== undefined && ctx.facts.recoveryClosed !== true;

/**
 * The end of a recovery (every earlier step is done: a new key, redeployed, rotated): the token
 * given for it is purged again (as after a first setup, once no other Vps waits for it), and
 * the intent is removed, so a later loss of the store needs a new `recover`.
 */
async function assessRecoveryEnd(ctx: StepContext): Promise<Assessment> {
  const waiting = ctx.vps.spec.purgeCloudTokenAfterSetup ? othersWaitingForToken(ctx) : [];
  if (waiting.length > 0)
    return {
      state: 'wait',
      reason: 'WaitingForOtherVps',
      message: `recovered; the token is still needed by: ${waiting.sort().join(', ')}`,
    };
  return { state: 'run' };
}

async function endRecovery(ctx: StepContext): Promise<string> {
  const { vps, d } = ctx;
  const ref = vps.spec.cloudTokenSecretRef;
  let note = 'recovery finished';
  if (vps.spec.purgeCloudTokenAfterSetup) {
    await d.kube.removeSecretKey(ns(vps.metadata), ref.name, ref.key, 'cloud-token');
    ctx.fault('purged');
    ctx.facts.tokenPurged = true;
    note += `: removed key "${ref.key}" from Secret ${ref.name}; ${TOKEN_PURGED}`;
  }
  await d.kube.setAnnotations('Vps', vps.metadata, { [ANNOTATION_RECOVER]: null });
  ctx.facts.recoveryClosed = true;
  return note;
}

/** The provisioning, in order. The crash test enumerates `faultPoints` of every step. */
export const VPS_STEPS: readonly VpsStep[] = [
  finalizer,
  server,
  sshKey,
  harden,
  deploy,
  tailnet,
  directKeys,
  rotate,
  purgeToken,
];

/** When the next rotation is due (the reconcile requeues for it). */
export function nextRotationInMs(ctx: StepContext): number {
  const key = activeKeyOf(ctx);
  const interval = parseGoDuration(ctx.vps.spec.sshKeyRotation.interval);
  return key.createdAt.getTime() + interval - ctx.d.now().getTime();
}
