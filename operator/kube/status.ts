import type { Registry } from 'prom-client';
import {
  ContentType,
  describeResource,
  isConflict,
  type KubeApi,
  type ResourceType,
  resourcePath,
} from './client.ts';
import { coreMetrics } from './metrics.ts';
import { isRecord, type KubeObject } from './object.ts';

export interface UpdateStatusOptions<T extends KubeObject> {
  parse: (raw: unknown) => T;
  /**
   * Computes the complete new `status` from the freshly read object (return `undefined` to leave
   * it alone). Called again after every conflict, so it must be a pure function of the object.
   */
  mutate: (fresh: T) => unknown;
  /** Attempts in total before the 409 is thrown (default 5). */
  attempts?: number;
  signal?: AbortSignal;
  registry?: Registry;
}

/**
 * Writes `status` through the `/status` subresource with optimistic concurrency.
 *
 * It reads the object from the API server (not the cache), lets `mutate` compute the whole status,
 * skips the write when nothing changed (no resourceVersion churn, no self-triggered events), and
 * PUTs the object with its resourceVersion to `/status`: the API server ignores every change but
 * status there, and answers 409 when someone wrote in between, after which it re-reads and retries.
 * A PUT (not a merge patch) so that fields and conditions that `mutate` dropped are really removed.
 * Returns the object as written (or as read, when unchanged).
 */
export async function updateStatus<T extends KubeObject>(
  api: KubeApi,
  resource: ResourceType,
  ref: { namespace?: string | undefined; name: string },
  opts: UpdateStatusOptions<T>,
): Promise<T> {
  const attempts = Math.max(1, opts.attempts ?? 5);
  const path = resourcePath(resource, { namespace: ref.namespace, name: ref.name });
  for (let attempt = 1; ; attempt++) {
    const raw = await api.request('GET', path, opts.signal ? { signal: opts.signal } : {});
    const fresh = opts.parse(raw);
    if (!isRecord(raw)) return fresh;
    const status = opts.mutate(fresh);
    if (status === undefined || jsonEqual(status, raw['status'])) return fresh;
    try {
      const written = await api.request('PUT', `${path}/status`, {
        body: { ...raw, status },
        contentType: ContentType.json,
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
      return opts.parse(written);
    } catch (err) {
      if (!isConflict(err) || attempt >= attempts) throw err;
      if (opts.registry) {
        coreMetrics(opts.registry).statusConflicts.inc({ resource: describeResource(resource) });
      }
    }
  }
}

/** Structural equality of JSON values (object key order ignored). */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) {
    return Array.isArray(b) && a.length === b.length && a.every((v, i) => jsonEqual(v, b[i]));
  }
  if (isRecord(a) && isRecord(b)) {
    const ka = Object.keys(a).filter((k) => a[k] !== undefined);
    const kb = Object.keys(b).filter((k) => b[k] !== undefined);
    return ka.length === kb.length && ka.every((k) => jsonEqual(a[k], b[k]));
  }
  return false;
}
