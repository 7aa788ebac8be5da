/**
 * The controllers' `Kube` port on the real API server (operator/kube core).
 *
 * Secrets are read with a GET when a reconcile needs them, never cached: the operator holds a
 * secret only for the reconcile that uses it (docs/design.md promise 6). A Secret change is noticed on
 * the next event of its Vps/ModelKey or on the informers' periodic resync.
 */
import { randomBytes } from 'node:crypto';
import { CannesError, TerminalError } from '../../common/errors.ts';
import { Secret } from '../../common/secret.ts';
import { parseModelKey, parseVps } from '../api/parse.ts';
import { API_VERSION, FINALIZER, LABEL_SECRET_USAGE, type SecretUsage } from '../api/schema.ts';
import type { Kube, ModelKeyObject, ObjectMeta, SecretValue, VpsObject } from '../controllers/ports.ts';
import {
  ContentType,
  isNotFound,
  type KubeApi,
  KubeApiError,
  type ResourceType,
  resourcePath,
} from '../kube/client.ts';
import type { EventRecorder } from '../kube/events.ts';
import { addFinalizer, removeFinalizer } from '../kube/finalizers.ts';
import type { Informer } from '../kube/informer.ts';
import { isRecord, type KubeObject, objectKey, ownerReference } from '../kube/object.ts';
import { updateStatus } from '../kube/status.ts';

export const VPS_RESOURCE: ResourceType = {
  group: 'cannes.dev',
  version: 'v1alpha1',
  plural: 'vpses',
  kind: 'Vps',
  namespaced: true,
};
export const MODELKEY_RESOURCE: ResourceType = {
  group: 'cannes.dev',
  version: 'v1alpha1',
  plural: 'modelkeys',
  kind: 'ModelKey',
  namespaced: true,
};
const SECRET_RESOURCE: ResourceType = {
  group: '',
  version: 'v1',
  plural: 'secrets',
  kind: 'Secret',
  namespaced: true,
};

const resourceOf = (kind: 'Vps' | 'ModelKey') => (kind === 'Vps' ? VPS_RESOURCE : MODELKEY_RESOURCE);
const asObject = (kind: 'Vps' | 'ModelKey', metadata: ObjectMeta): KubeObject => ({
  apiVersion: API_VERSION,
  kind,
  metadata,
});

const LAST_APPLIED = 'kubectl.kubernetes.io/last-applied-configuration';

/** JSON Pointer escaping of one path segment (RFC 6901). */
const pointer = (s: string) => s.replace(/~/g, '~0').replace(/\//g, '~1');

export interface KubePortOptions {
  readonly api: KubeApi;
  readonly events: EventRecorder;
  readonly vpses: Informer<VpsObject>;
  readonly modelKeys: Informer<ModelKeyObject>;
}

export class KubePort implements Kube {
  readonly #o: KubePortOptions;

  constructor(o: KubePortOptions) {
    this.#o = o;
  }

  async #getSecret(namespace: string, name: string): Promise<Record<string, unknown> | undefined> {
    try {
      const raw = await this.#o.api.request('GET', resourcePath(SECRET_RESOURCE, { namespace, name }));
      return isRecord(raw) ? raw : undefined;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async readSecretKey(
    namespace: string,
    name: string,
    key: string,
    usage: SecretUsage,
  ): Promise<SecretValue> {
    const raw = await this.#getSecret(namespace, name);
    if (!raw) return { value: undefined, resourceVersion: undefined };
    const meta = isRecord(raw['metadata']) ? raw['metadata'] : {};
    const rv = typeof meta['resourceVersion'] === 'string' ? meta['resourceVersion'] : undefined;
    const notLabelled = usageRefusal(meta, name, usage);
    if (notLabelled) return { value: undefined, resourceVersion: rv, notLabelled };
    return this.#valueOf(raw, key, rv);
  }

  #valueOf(raw: Record<string, unknown>, key: string, rv: string | undefined): SecretValue {
    const data = isRecord(raw['data']) ? raw['data'] : {};
    const b64 = data[key];
    if (typeof b64 !== 'string') return { value: undefined, resourceVersion: rv };
    // Secret values are base64 on the wire; a trailing newline from `echo` is a common slip.
    const text = Buffer.from(b64, 'base64')
      .toString('utf8')
      .replace(/\r?\n$/, '');
    return { value: Secret.of(text), resourceVersion: rv };
  }

  async removeSecretKey(namespace: string, name: string, key: string, usage: SecretUsage): Promise<void> {
    // Several Vps sharing one token Secret purge it at about the same time: when another
    // purge changed the Secret between our read and our patch, the patch's `test` fails (422)
    // and the Secret is read again.
    for (let attempt = 1; ; attempt++) {
      try {
        await this.#removeSecretKeyOnce(namespace, name, key, usage);
        return;
      } catch (err) {
        if (!(err instanceof KubeApiError && err.code === 422) || attempt >= 3) throw err;
      }
    }
  }

  async #removeSecretKeyOnce(
    namespace: string,
    name: string,
    key: string,
    usage: SecretUsage,
  ): Promise<void> {
    const raw = await this.#getSecret(namespace, name);
    if (!raw) return;
    const data = isRecord(raw['data']) ? raw['data'] : {};
    if (!(key in data)) return;
    const meta = isRecord(raw['metadata']) ? raw['metadata'] : {};
    const refusal = usageRefusal(meta, name, usage);
    if (refusal) throw new TerminalError('SecretNotLabelled', refusal);
    const annotations = isRecord(meta['annotations']) ? meta['annotations'] : {};
    // `test` on resourceVersion: remove exactly the value we decided on, never a newer one.
    const ops: unknown[] = [
      { op: 'test', path: '/metadata/resourceVersion', value: meta['resourceVersion'] },
      { op: 'remove', path: `/data/${pointer(key)}` },
    ];
    // A client-side `kubectl apply` keeps a full copy of the Secret, values included, in this
    // annotation: a purge that left it would leave the secret behind.
    if (LAST_APPLIED in annotations)
      ops.push({ op: 'remove', path: `/metadata/annotations/${pointer(LAST_APPLIED)}` });
    await this.#o.api.request('PATCH', resourcePath(SECRET_RESOURCE, { namespace, name }), {
      contentType: ContentType.jsonPatch,
      body: ops,
    });
  }

  async addFinalizer(kind: 'Vps' | 'ModelKey', meta: ObjectMeta): Promise<void> {
    await addFinalizer(this.#o.api, resourceOf(kind), asObject(kind, meta), FINALIZER);
  }

  async removeFinalizer(kind: 'Vps' | 'ModelKey', meta: ObjectMeta): Promise<void> {
    await removeFinalizer(this.#o.api, resourceOf(kind), asObject(kind, meta), FINALIZER);
  }

  async setAnnotations(
    kind: 'Vps' | 'ModelKey',
    meta: ObjectMeta,
    annotations: Record<string, string | null>,
  ): Promise<void> {
    await this.#o.api.request(
      'PATCH',
      resourcePath(resourceOf(kind), { namespace: meta.namespace, name: meta.name }),
      {
        contentType: ContentType.mergePatch,
        body: { metadata: { annotations } },
      },
    );
  }

  async patchVpsStatus(meta: ObjectMeta, status: VpsObject['status']): Promise<void> {
    await updateStatus(this.#o.api, VPS_RESOURCE, meta, { parse: parseVps, mutate: () => status });
  }

  async patchModelKeyStatus(meta: ObjectMeta, status: ModelKeyObject['status']): Promise<void> {
    await updateStatus(this.#o.api, MODELKEY_RESOURCE, meta, { parse: parseModelKey, mutate: () => status });
  }

  async event(
    kind: 'Vps' | 'ModelKey',
    meta: ObjectMeta,
    type: 'Normal' | 'Warning',
    reason: string,
    note: string,
  ): Promise<void> {
    this.#o.events.record(asObject(kind, meta), { type, reason, action: 'Reconcile', note });
  }

  /**
   * The Vps's own Secret (`<vps>-gateway`): reused only if this Vps owns it (its controller
   * ownerReference carries the Vps's uid). A Secret of that name made by someone else, e.g.
   * to hand the gateway a token they chose, is refused, never adopted.
   */
  async #readOwnSecret(namespace: string, name: string, key: string, vps: VpsObject): Promise<SecretValue> {
    const raw = await this.#getSecret(namespace, name);
    if (!raw) return { value: undefined, resourceVersion: undefined };
    const meta = isRecord(raw['metadata']) ? raw['metadata'] : {};
    const rv = typeof meta['resourceVersion'] === 'string' ? meta['resourceVersion'] : undefined;
    const owners = Array.isArray(meta['ownerReferences']) ? meta['ownerReferences'] : [];
    const ours = owners.some((o) => isRecord(o) && o['uid'] === vps.metadata.uid && o['controller'] === true);
    if (!ours)
      throw new TerminalError(
        'GatewaySecretNotOwned',
        `Secret ${name} exists but is not owned by Vps ${vps.metadata.name}: delete it (the operator makes its own) or rename the Vps`,
      );
    return this.#valueOf(raw, key, rv);
  }

  async ensureGatewayToken(vps: VpsObject): Promise<{ token: Secret; resourceVersion: string }> {
    const namespace = vps.metadata.namespace ?? 'default';
    const name = `${vps.metadata.name}-gateway`;
    const existing = await this.#readOwnSecret(namespace, name, 'token', vps);
    if (existing.value && existing.resourceVersion) {
      return { token: existing.value, resourceVersion: existing.resourceVersion };
    }
    if (existing.resourceVersion) {
      throw new CannesError('GatewaySecretInvalid', `Secret ${name} exists but has no key "token"`);
    }
    const token = randomBytes(32).toString('hex');
    const created = await this.#o.api.request('POST', resourcePath(SECRET_RESOURCE, { namespace }), {
      body: {
        apiVersion: 'v1',
        kind: 'Secret',
        type: 'Opaque',
        metadata: {
          name,
          namespace,
          labels: { 'app.kubernetes.io/managed-by': 'cannes', 'cannes.dev/vps': vps.metadata.name },
          // Garbage-collected with its Vps.
          ownerReferences: [ownerReference(asObject('Vps', vps.metadata))],
        },
        data: { token: Buffer.from(token).toString('base64') },
      },
    });
    const meta = isRecord(created) && isRecord(created['metadata']) ? created['metadata'] : {};
    return { token: Secret.of(token), resourceVersion: String(meta['resourceVersion'] ?? '') };
  }

  listModelKeys(namespace: string): readonly ModelKeyObject[] {
    return this.#o.modelKeys.list().filter((m) => m.metadata.namespace === namespace);
  }

  listVpses(namespace: string): readonly VpsObject[] {
    return this.#o.vpses.list().filter((m) => m.metadata.namespace === namespace);
  }

  getVps(namespace: string, name: string): VpsObject | undefined {
    return this.#o.vpses.get(objectKey({ namespace, name }));
  }

  async readVps(namespace: string, name: string): Promise<VpsObject | undefined> {
    try {
      return parseVps(await this.#o.api.request('GET', resourcePath(VPS_RESOURCE, { namespace, name })));
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }
}

/** Why a Secret may not be used for `usage` (undefined: it may), naming it, never its data. */
function usageRefusal(meta: Record<string, unknown>, name: string, usage: SecretUsage): string | undefined {
  const labels = isRecord(meta['labels']) ? meta['labels'] : {};
  const have = labels[LABEL_SECRET_USAGE];
  if (have === usage) return undefined;
  const now = typeof have === 'string' ? `it is labelled for "${have}"` : 'it has no such label';
  return `Secret ${name} is not labelled ${LABEL_SECRET_USAGE}=${usage} (${now}), so Cannes does not read it: label it with \`kubectl label secret ${name} ${LABEL_SECRET_USAGE}=${usage}\` to allow this use`;
}
