import { ContentType, type KubeApi, type ResourceType, resourcePath } from './client.ts';
import type { KubeObject } from './object.ts';

export function hasFinalizer(obj: KubeObject, finalizer: string): boolean {
  return obj.metadata.finalizers.includes(finalizer);
}

/** True once the object is being deleted (deletionTimestamp set): run cleanup, then remove the finalizer. */
export function isBeingDeleted(obj: KubeObject): boolean {
  return obj.metadata.deletionTimestamp !== undefined;
}

/**
 * Adds `finalizer` unless present. The merge patch carries the resourceVersion the caller saw,
 * so the API server answers 409 Conflict when the object changed since (the finalizer list we
 * computed could be stale): the reconcile then fails, retries, and re-reads. Returns the
 * updated object's wire JSON, or `undefined` when nothing had to change.
 */
export function addFinalizer(
  api: KubeApi,
  resource: ResourceType,
  obj: KubeObject,
  finalizer: string,
  signal?: AbortSignal,
): Promise<unknown> {
  if (hasFinalizer(obj, finalizer)) return Promise.resolve(undefined);
  return patchFinalizers(api, resource, obj, [...obj.metadata.finalizers, finalizer], signal);
}

/** Removes `finalizer` if present, with the same resourceVersion precondition as `addFinalizer`. */
export function removeFinalizer(
  api: KubeApi,
  resource: ResourceType,
  obj: KubeObject,
  finalizer: string,
  signal?: AbortSignal,
): Promise<unknown> {
  if (!hasFinalizer(obj, finalizer)) return Promise.resolve(undefined);
  return patchFinalizers(
    api,
    resource,
    obj,
    obj.metadata.finalizers.filter((f) => f !== finalizer),
    signal,
  );
}

function patchFinalizers(
  api: KubeApi,
  resource: ResourceType,
  obj: KubeObject,
  finalizers: string[],
  signal: AbortSignal | undefined,
): Promise<unknown> {
  const path = resourcePath(resource, { namespace: obj.metadata.namespace, name: obj.metadata.name });
  return api.request('PATCH', path, {
    contentType: ContentType.mergePatch,
    // A merge patch replaces a list wholesale; `null` (not []) deletes the field when empty.
    body: {
      metadata: {
        resourceVersion: obj.metadata.resourceVersion,
        finalizers: finalizers.length ? finalizers : null,
      },
    },
    ...(signal ? { signal } : {}),
  });
}
