/**
 * ConfigMaps as the generic object the controller-core tests drive: the resource both the unit
 * tests (over the fake API) and the integration tests (over the rig's API server) watch.
 */
import type { ResourceType } from '../../operator/kube/client.ts';
import { isRecord, type KubeObject, parseKubeObject } from '../../operator/kube/object.ts';

export const CONFIGMAPS = {
  group: '',
  version: 'v1',
  plural: 'configmaps',
  kind: 'ConfigMap',
  namespaced: true,
} as const satisfies ResourceType;

export interface ConfigMap extends KubeObject {
  data: Record<string, string>;
}

/** Metadata plus the string values of `data` (anything else in `data` is dropped). */
export function parseConfigMap(raw: unknown): ConfigMap {
  const base = parseKubeObject(raw);
  const data = isRecord(raw) && isRecord(raw['data']) ? raw['data'] : {};
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(data)) if (typeof v === 'string') out[k] = v;
  return { ...base, data: out };
}
