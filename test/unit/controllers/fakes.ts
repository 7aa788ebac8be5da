/**
 * In-memory fakes of the controller ports (unit tests only: integration tests use the rig's
 * real API server, Postgres, simulator and simulated servers).
 */

import { TerminalError } from '../../../common/errors.ts';
import { Secret } from '../../../common/secret.ts';
import { parseVps } from '../../../operator/api/parse.ts';
import type { ModelKeySpec, ModelKeyStatus, SecretUsage, VpsStatus } from '../../../operator/api/schema.ts';
import type {
  ActiveKey,
  CloudServer,
  DeployBundle,
  Hcloud,
  KeyPair,
  Kube,
  ModelKeyObject,
  ObjectMeta,
  OsTarget,
  Remote,
  RescueResult,
  ResolvedVpsSpec,
  SecretValue,
  Store,
  TailnetJoinRequest,
  TailnetJoinResult,
  VpsObject,
  VpsRecord,
} from '../../../operator/controllers/ports.ts';
import type { VpsDeps } from '../../../operator/controllers/vps-steps.ts';
import { createLogger } from '../../../operator/lib/log.ts';
import { vpsManifest } from '../../lib/manifests.ts';

export type Calls = string[];

/** Throws once at the named call, then behaves: a crash at that line. */
export class Faults {
  readonly #armed = new Map<string, Error | undefined>();
  /** `error`: what the call throws (default: a plain Error naming the point). */
  arm(point: string, error?: Error): void {
    this.#armed.set(point, error);
  }
  hit(point: string): void {
    if (!this.#armed.has(point)) return;
    const error = this.#armed.get(point);
    this.#armed.delete(point);
    throw error ?? new Error(`fault injected at ${point}`);
  }
}

let rv = 1;
const nextRv = () => String(++rv);

export function meta(name: string, uid: string, extra: Partial<ObjectMeta> = {}): ObjectMeta {
  return {
    name,
    namespace: 'ns',
    uid,
    resourceVersion: nextRv(),
    generation: 1,
    finalizers: [],
    labels: {},
    annotations: {},
    ownerReferences: [],
    ...extra,
  };
}

/** The minimal test Vps (test/lib/manifests.ts) with the API's defaults filled in, as the operator sees it. */
export function vpsSpec(extra: Partial<ResolvedVpsSpec> = {}): ResolvedVpsSpec {
  const parsed = parseVps(
    vpsManifest('ns', 'agent', {}, { uid: 'uid-spec', resourceVersion: '1', generation: 1 }),
  );
  return { ...parsed.spec, ...extra };
}

/** Updates an object's metadata like the API server: resourceVersion precondition, GC on no finalizers. */
function updateIn<T extends { metadata: ObjectMeta }>(
  map: Map<string, T>,
  key: string,
  precondition: string | undefined,
  fn: (meta: ObjectMeta) => ObjectMeta,
): void {
  const o = map.get(key);
  if (!o) throw new Error(`not found ${key}`);
  if (precondition !== undefined && o.metadata.resourceVersion !== precondition)
    throw new Error('Conflict: stale resourceVersion');
  const next = { ...o, metadata: { ...fn(o.metadata), resourceVersion: nextRv() } };
  if (next.metadata.deletionTimestamp && next.metadata.finalizers.length === 0) map.delete(key);
  else map.set(key, next);
}

export class FakeKube implements Kube {
  readonly secrets = new Map<
    string,
    { data: Map<string, string>; rv: string; usage?: SecretUsage | undefined }
  >();
  readonly vpses = new Map<string, VpsObject>();
  readonly modelKeys = new Map<string, ModelKeyObject>();
  readonly events: { kind: string; name: string; type: string; reason: string; note: string }[] = [];
  calls = 0;

  /** A Secret; `usage` is its `cannes.dev/usage` label (none: the operator may not read it). */
  putSecret(name: string, data: Record<string, string>, usage?: SecretUsage): void {
    this.secrets.set(`ns/${name}`, { data: new Map(Object.entries(data)), rv: nextRv(), usage });
  }
  addVps(name: string, spec: ResolvedVpsSpec = vpsSpec()): VpsObject {
    const v: VpsObject = {
      apiVersion: 'cannes.dev/v1alpha1',
      kind: 'Vps',
      metadata: meta(name, `uid-${name}-0000-1111`),
      spec,
      status: {},
    };
    this.vpses.set(`ns/${name}`, v);
    return v;
  }
  addModelKey(name: string, spec: ModelKeySpec): ModelKeyObject {
    const mk: ModelKeyObject = {
      apiVersion: 'cannes.dev/v1alpha1',
      kind: 'ModelKey',
      metadata: meta(name, `uid-mk-${name}`),
      spec,
      status: {},
    };
    this.modelKeys.set(`ns/${name}`, mk);
    return mk;
  }
  vps(name: string): VpsObject {
    const v = this.vpses.get(`ns/${name}`);
    if (!v) throw new Error(`no vps ${name}`);
    return v;
  }
  mk(name: string): ModelKeyObject {
    const v = this.modelKeys.get(`ns/${name}`);
    if (!v) throw new Error(`no modelkey ${name}`);
    return v;
  }
  markDeleting(kind: 'Vps' | 'ModelKey', name: string): void {
    const set = (x: ObjectMeta) => ({ ...x, deletionTimestamp: '2026-11-25T00:00:00Z' });
    if (kind === 'Vps') updateIn(this.vpses, `ns/${name}`, undefined, set);
    else updateIn(this.modelKeys, `ns/${name}`, undefined, set);
  }

  async readSecretKey(
    namespace: string,
    name: string,
    key: string,
    usage: SecretUsage,
  ): Promise<SecretValue> {
    this.calls++;
    const s = this.secrets.get(`${namespace}/${name}`);
    if (s && s.usage !== usage)
      return {
        value: undefined,
        resourceVersion: s.rv,
        notLabelled: `Secret ${name} is not labelled for ${usage}`,
      };
    const v = s?.data.get(key);
    return { value: v === undefined ? undefined : Secret.of(v), resourceVersion: s?.rv };
  }
  async removeSecretKey(namespace: string, name: string, key: string, usage: SecretUsage): Promise<void> {
    this.calls++;
    const s = this.secrets.get(`${namespace}/${name}`);
    if (s && s.usage !== usage) throw new Error(`Secret ${name} is not labelled for ${usage}`);
    if (s?.data.delete(key)) s.rv = nextRv();
  }
  #update(kind: 'Vps' | 'ModelKey', m: ObjectMeta, fn: (meta: ObjectMeta) => ObjectMeta): void {
    const key = `${m.namespace}/${m.name}`;
    if (kind === 'Vps') updateIn(this.vpses, key, m.resourceVersion, fn);
    else updateIn(this.modelKeys, key, m.resourceVersion, fn);
  }
  async addFinalizer(kind: 'Vps' | 'ModelKey', m: ObjectMeta): Promise<void> {
    this.calls++;
    this.#update(kind, m, (x) => ({ ...x, finalizers: [...x.finalizers, 'cannes.dev/finalizer'] }));
  }
  async removeFinalizer(kind: 'Vps' | 'ModelKey', m: ObjectMeta): Promise<void> {
    this.calls++;
    this.#update(kind, m, (x) => ({
      ...x,
      finalizers: x.finalizers.filter((f) => f !== 'cannes.dev/finalizer'),
    }));
  }
  async setAnnotations(
    kind: 'Vps' | 'ModelKey',
    m: ObjectMeta,
    a: Record<string, string | null>,
  ): Promise<void> {
    this.calls++;
    const fn = (x: ObjectMeta) => {
      const annotations = { ...x.annotations };
      for (const [k, v] of Object.entries(a)) {
        if (v === null) delete annotations[k];
        else annotations[k] = v;
      }
      return { ...x, annotations };
    };
    const key = `${m.namespace}/${m.name}`;
    if (kind === 'Vps') updateIn(this.vpses, key, undefined, fn);
    else updateIn(this.modelKeys, key, undefined, fn);
  }
  async patchVpsStatus(m: ObjectMeta, status: VpsStatus): Promise<void> {
    this.calls++;
    const o = this.vpses.get(`${m.namespace}/${m.name}`);
    if (o) this.vpses.set(`${m.namespace}/${m.name}`, { ...o, status });
  }
  async patchModelKeyStatus(m: ObjectMeta, status: ModelKeyStatus): Promise<void> {
    this.calls++;
    const o = this.modelKeys.get(`${m.namespace}/${m.name}`);
    if (o) this.modelKeys.set(`${m.namespace}/${m.name}`, { ...o, status });
  }
  async event(
    kind: 'Vps' | 'ModelKey',
    m: ObjectMeta,
    type: 'Normal' | 'Warning',
    reason: string,
    note: string,
  ) {
    this.events.push({ kind, name: m.name, type, reason, note });
  }
  async ensureGatewayToken(vps: VpsObject): Promise<{ token: Secret; resourceVersion: string }> {
    const name = `${vps.metadata.name}-gateway`;
    if (!this.secrets.has(`ns/${name}`)) this.putSecret(name, { token: `gw-${crypto.randomUUID()}` });
    const s = this.secrets.get(`ns/${name}`)!;
    return { token: Secret.of(s.data.get('token')!), resourceVersion: s.rv };
  }
  listModelKeys(namespace: string): readonly ModelKeyObject[] {
    return [...this.modelKeys.values()].filter((m) => m.metadata.namespace === namespace);
  }
  listVpses(namespace: string): readonly VpsObject[] {
    return [...this.vpses.values()].filter((m) => m.metadata.namespace === namespace);
  }
  getVps(namespace: string, name: string): VpsObject | undefined {
    return this.vpses.get(`${namespace}/${name}`);
  }
  async readVps(namespace: string, name: string): Promise<VpsObject | undefined> {
    this.calls++;
    return this.vpses.get(`${namespace}/${name}`);
  }
}

export class FakeHcloud implements Hcloud {
  readonly servers = new Map<number, CloudServer & { labels: Record<string, string>; tokenSeen: string }>();
  readonly calls: Calls = [];
  #nextId = 100;
  readonly faults: Faults;
  constructor(faults: Faults) {
    this.faults = faults;
  }

  async findServerByVpsUid(_token: Secret, uid: string): Promise<CloudServer | null> {
    this.calls.push('find');
    this.faults.hit('hcloud.find');
    return [...this.servers.values()].find((s) => s.labels['cannes.dev/vps-uid'] === uid) ?? null;
  }
  async createServer(
    token: Secret,
    req: {
      name: string;
      serverType: string;
      location: string;
      image: string;
      labels: Record<string, string>;
    },
  ): Promise<CloudServer> {
    this.calls.push('create');
    const id = this.#nextId++;
    const s = {
      id,
      name: req.name,
      status: 'off',
      ipv4: `198.18.0.${id - 90}`,
      rescueEnabled: false,
      // The simulator's catalogue: Arm types are the cax line.
      architecture: req.serverType.startsWith('cax') ? ('arm' as const) : ('x86' as const),
      labels: req.labels,
      tokenSeen: token.reveal(),
    };
    this.servers.set(id, s);
    this.faults.hit('hcloud.afterCreate');
    return s;
  }
  async getServer(_t: Secret, id: number): Promise<CloudServer | null> {
    this.calls.push('get');
    return this.servers.get(id) ?? null;
  }
  async enableRescue(_t: Secret, id: number): Promise<Secret> {
    this.calls.push('enableRescue');
    const s = this.servers.get(id);
    if (!s) throw new Error('not found');
    this.servers.set(id, { ...s, rescueEnabled: true });
    return Secret.of(`rescue-pw-${crypto.randomUUID()}`);
  }
  async powerOnOrReset(_t: Secret, id: number, knownStatus?: string): Promise<void> {
    this.calls.push('powerOnOrReset');
    // The port reads the server first when it is not told its state (HcloudPort).
    if (knownStatus === undefined) this.calls.push('get');
    const seen = this.servers.get(id)?.status;
    if (knownStatus !== undefined && knownStatus !== seen)
      throw new Error(`powerOnOrReset told status ${knownStatus}, the server is ${seen ?? 'gone'}`);
    const s = this.servers.get(id);
    if (s) this.servers.set(id, { ...s, status: 'running' });
  }
  async reboot(_t: Secret, id: number): Promise<void> {
    this.calls.push('reboot');
    this.faults.hit('hcloud.reboot');
    const s = this.servers.get(id);
    if (s) this.servers.set(id, { ...s, rescueEnabled: false });
  }
  async deleteServer(_t: Secret, id: number): Promise<void> {
    this.calls.push('delete');
    this.servers.delete(id);
  }
}

export class FakeStore implements Store {
  readonly rows = new Map<string, VpsRecord>();
  readonly keys = new Map<
    string,
    { id: string; key: KeyPair; state: string; createdAt: Date; bornInRescue: boolean }[]
  >();
  readonly faults: Faults;
  readonly now: () => Date;
  constructor(faults: Faults, now: () => Date) {
    this.faults = faults;
    this.now = now;
  }

  async getVps(uid: string) {
    const record = this.rows.get(uid);
    if (!record) return null;
    const k = (this.keys.get(uid) ?? []).find((x) => x.state === 'active');
    const activeKey: ActiveKey | null = k
      ? {
          id: k.id,
          privateKey: k.key.privateKey,
          publicKey: k.key.publicKey,
          createdAt: k.createdAt,
          bornInRescue: k.bornInRescue,
        }
      : null;
    return { record, activeKey };
  }
  async upsertVps(rec: { uid: string; namespace: string; name: string }) {
    if (!this.rows.has(rec.uid))
      this.rows.set(rec.uid, { ...rec, serverId: null, ipv4: null, hostKey: null });
  }
  async setServer(uid: string, serverId: number, ipv4: string | null) {
    this.faults.hit('store.setServer');
    const r = this.rows.get(uid);
    if (r) this.rows.set(uid, { ...r, serverId, ipv4 });
  }
  async saveRescueResult(uid: string, hostKey: string, key: KeyPair) {
    this.faults.hit('store.saveRescueResult');
    const r = this.rows.get(uid);
    if (r) this.rows.set(uid, { ...r, hostKey });
    const list = (this.keys.get(uid) ?? []).map((k) => ({
      ...k,
      state: k.state === 'active' ? 'retired' : k.state,
    }));
    list.push({ id: crypto.randomUUID(), key, state: 'active', createdAt: this.now(), bornInRescue: true });
    this.keys.set(uid, list);
  }
  async forgetServer(uid: string, serverId: number) {
    const r = this.rows.get(uid);
    if (r?.serverId !== serverId) return;
    this.rows.set(uid, { ...r, serverId: null, ipv4: null, hostKey: null });
    this.keys.delete(uid);
  }
  async deleteVps(uid: string) {
    this.rows.delete(uid);
    this.keys.delete(uid);
  }
  /** What a rotation does to the store (the real protocol lives in operator/ssh). */
  rotate(uid: string, next: KeyPair): void {
    const list = (this.keys.get(uid) ?? []).map((k) => ({
      ...k,
      state: k.state === 'active' ? 'retired' : k.state,
    }));
    list.push({
      id: crypto.randomUUID(),
      key: next,
      state: 'active',
      createdAt: this.now(),
      bornInRescue: false,
    });
    this.keys.set(uid, list);
  }
}

export class FakeRemote implements Remote {
  readonly calls: Calls = [];
  readonly deployed: DeployBundle[] = [];
  /** Files on the (single) fake host. */
  readonly files = new Map<string, string>();
  readonly hostKey = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKE host';
  readonly faults: Faults;
  readonly store: FakeStore;
  constructor(faults: Faults, store: FakeStore) {
    this.faults = faults;
    this.store = store;
  }

  async rescueKeygen(_ip: string, pw: Secret): Promise<RescueResult> {
    this.calls.push('rescueKeygen');
    if (!pw.reveal().startsWith('rescue-pw-')) throw new Error('wrong rescue password');
    this.faults.hit('remote.afterKeygen');
    return {
      privateKey: Secret.of(`FAKE PRIVATE KEY ${crypto.randomUUID()}`),
      publicKey: 'ssh-ed25519 AAAAfake cannes',
      osHostKey: this.hostKey,
    };
  }
  async readFile(target: OsTarget, path: string): Promise<Secret | undefined> {
    this.calls.push('readFile');
    this.#check(target);
    const v = this.files.get(path);
    return v === undefined ? undefined : Secret.of(v);
  }
  async deploy(target: OsTarget, bundle: DeployBundle): Promise<void> {
    this.calls.push('deploy');
    this.#check(target);
    this.faults.hit('remote.deploy');
    for (const f of bundle.files)
      this.files.set(f.path, typeof f.content === 'string' ? f.content : f.content.reveal());
    this.deployed.push(bundle);
  }
  /** What the fake server's helper says about Direct routes. */
  directKeys: Record<string, boolean> = {};
  async directKeyStatus(target: OsTarget): Promise<Record<string, boolean>> {
    this.calls.push('directKeyStatus');
    this.#check(target);
    return { ...this.directKeys };
  }
  /** The fake node's tailnet state: joined with which key, served on which port. */
  tailnet: { joinedWith: string; hostname: string; servedPort: number } | undefined;
  async joinTailnet(target: OsTarget, req: TailnetJoinRequest): Promise<TailnetJoinResult> {
    this.calls.push('joinTailnet');
    this.#check(target);
    if (!this.tailnet) {
      if (!req.authKey) throw new TerminalError('TailnetAuthKeyRequired', 'no auth key');
      if (!req.authKey.reveal().startsWith('tskey-auth-'))
        throw new TerminalError('TailnetAuthKeyRejected', 'the control server refused the auth key');
      this.tailnet = {
        joinedWith: req.authKey.reveal(),
        hostname: req.hostname,
        servedPort: req.gatewayPort,
      };
    }
    this.faults.hit('remote.joinTailnet');
    this.tailnet = { ...this.tailnet, hostname: req.hostname, servedPort: req.gatewayPort };
    return { dnsName: `${req.hostname}.tail-fake.ts.net`, httpsAvailable: true, gatewayReachable: true };
  }
  async rotate(vpsUid: string, target: Omit<OsTarget, 'privateKey'>): Promise<void> {
    this.calls.push('rotate');
    if (target.hostKey !== this.hostKey) throw new Error('host key mismatch');
    this.faults.hit('remote.rotate');
    this.store.rotate(vpsUid, {
      privateKey: Secret.of(`FAKE ROTATED ${crypto.randomUUID()}`),
      publicKey: 'ssh-ed25519 AAAArot',
    });
  }
  #check(target: OsTarget): void {
    if (target.hostKey !== this.hostKey) throw new Error('host key mismatch');
  }
}

/** The Vps controller's dependencies on the fakes above (unit tests of the reconcile and its steps). */
export function fakeVpsDeps(
  parts: { kube: FakeKube; hcloud: FakeHcloud; remote: FakeRemote; store: FakeStore },
  bundle: VpsDeps['bundle'],
  now: () => Date,
): VpsDeps {
  return { ...parts, bundle, bundleVersion: 'v1', now, log: createLogger('test', { level: 'silent' }) };
}
