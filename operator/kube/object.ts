import { TerminalError } from '../../common/errors.ts';

/**
 * The parts of `metav1.ObjectMeta` the controller core relies on, parsed from wire JSON.
 * Every object the core handles carries this; the rest of the object is the caller's to parse.
 */
export interface ObjectMeta {
  name: string;
  namespace?: string | undefined;
  uid: string;
  resourceVersion: string;
  generation?: number | undefined;
  deletionTimestamp?: string | undefined;
  finalizers: string[];
  labels: Record<string, string>;
  annotations: Record<string, string>;
  ownerReferences: OwnerReference[];
  creationTimestamp?: string | undefined;
}

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean | undefined;
  blockOwnerDeletion?: boolean | undefined;
}

/** What every parsed object exposes: its metadata, plus the raw JSON it was parsed from. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function invalid(what: string): never {
  throw new TerminalError('InvalidObject', `malformed Kubernetes object: ${what}`);
}

function optString(v: unknown, what: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') invalid(what);
  return v;
}

function stringMap(v: unknown, what: string): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (!isRecord(v)) invalid(what);
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) {
    if (typeof val !== 'string') invalid(`${what}.${k}`);
    out[k] = val;
  }
  return out;
}

export function parseOwnerReference(v: unknown): OwnerReference {
  if (!isRecord(v)) invalid('ownerReference');
  const { apiVersion, kind, name, uid, controller, blockOwnerDeletion } = v;
  if (typeof apiVersion !== 'string' || typeof kind !== 'string') invalid('ownerReference.kind');
  if (typeof name !== 'string' || typeof uid !== 'string') invalid('ownerReference.name');
  const ref: OwnerReference = { apiVersion, kind, name, uid };
  if (typeof controller === 'boolean') ref.controller = controller;
  if (typeof blockOwnerDeletion === 'boolean') ref.blockOwnerDeletion = blockOwnerDeletion;
  return ref;
}

export function parseObjectMeta(v: unknown): ObjectMeta {
  if (!isRecord(v)) invalid('metadata');
  const name = v['name'];
  const uid = v['uid'];
  const rv = v['resourceVersion'];
  if (typeof name !== 'string' || name === '') invalid('metadata.name');
  if (typeof uid !== 'string') invalid('metadata.uid');
  if (typeof rv !== 'string') invalid('metadata.resourceVersion');
  const generation = v['generation'];
  if (generation !== undefined && typeof generation !== 'number') invalid('metadata.generation');
  const finalizers = v['finalizers'] ?? [];
  if (!Array.isArray(finalizers) || !finalizers.every((f) => typeof f === 'string')) {
    invalid('metadata.finalizers');
  }
  const owners = v['ownerReferences'] ?? [];
  if (!Array.isArray(owners)) invalid('metadata.ownerReferences');
  return {
    name,
    namespace: optString(v['namespace'], 'metadata.namespace'),
    uid,
    resourceVersion: rv,
    generation,
    deletionTimestamp: optString(v['deletionTimestamp'], 'metadata.deletionTimestamp'),
    finalizers: finalizers.slice(),
    labels: stringMap(v['labels'], 'metadata.labels'),
    annotations: stringMap(v['annotations'], 'metadata.annotations'),
    ownerReferences: owners.map(parseOwnerReference),
    creationTimestamp: optString(v['creationTimestamp'], 'metadata.creationTimestamp'),
  };
}

/** Parses apiVersion, kind and metadata; use it as the first line of a resource's parse function. */
export function parseKubeObject(v: unknown): KubeObject {
  if (!isRecord(v)) invalid('not an object');
  const { apiVersion, kind } = v;
  if (typeof apiVersion !== 'string' || typeof kind !== 'string') invalid('apiVersion/kind');
  return { apiVersion, kind, metadata: parseObjectMeta(v['metadata']) };
}

/** The cache and work-queue key: `namespace/name`, or `name` for cluster-scoped objects. */
export function objectKey(meta: { name: string; namespace?: string | undefined }): string {
  return meta.namespace ? `${meta.namespace}/${meta.name}` : meta.name;
}

export function splitKey(key: string): { namespace?: string; name: string } {
  const i = key.indexOf('/');
  return i < 0 ? { name: key } : { namespace: key.slice(0, i), name: key.slice(i + 1) };
}

/** An owner reference to put on objects the controller creates, so they are garbage-collected with it. */
export function ownerReference(
  owner: KubeObject,
  opts: { controller?: boolean; blockOwnerDeletion?: boolean } = {},
): OwnerReference {
  return {
    apiVersion: owner.apiVersion,
    kind: owner.kind,
    name: owner.metadata.name,
    uid: owner.metadata.uid,
    controller: opts.controller ?? true,
    blockOwnerDeletion: opts.blockOwnerDeletion ?? true,
  };
}

/** True when `obj` carries a controller reference to `owner` (matched by uid, as the GC does). */
export function isControlledBy(obj: KubeObject, owner: KubeObject): boolean {
  return obj.metadata.ownerReferences.some((r) => r.controller === true && r.uid === owner.metadata.uid);
}
