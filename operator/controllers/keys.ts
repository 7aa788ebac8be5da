/**
 * Which LLM keys belong on a Vps, and how to tell what was delivered without touching the
 * server. The Vps annotation `cannes.dev/delivered-keys` maps each ModelKey name to
 * `<name>:<generation>:<secret resourceVersion>` (no secret material): the Vps controller
 * writes it after a deploy, the ModelKey controller reads it to report `delivered`.
 */

import type { ProviderName } from '../../common/providers.ts';
import { Secret } from '../../common/secret.ts';
import { ANNOTATION_DIRECT_KEYS, type ModelEntry } from '../api/schema.ts';
import { isValidApiKey } from '../host/key-file.ts';
import { isRecord } from '../kube/object.ts';
import type { Kube, ModelKeyObject, OsTarget, Remote, VpsObject } from './ports.ts';

export const DELIVERED_ANNOTATION = 'cannes.dev/delivered-keys';

import { HOST } from '../host/layout.ts';

/** The proxy's key file on the host (one definition: the host layout). */
export const KEY_FILE_PATH = HOST.keyFile.path;

export interface DeliveredKey {
  readonly name: string;
  readonly provider: ProviderName;
  readonly baseUrl?: string | undefined;
  /** Undefined for a Direct ModelKey: the route goes to the server without a key. */
  readonly apiKey: Secret | undefined;
  readonly models: readonly ModelEntry[];
  readonly default: boolean;
}

/** The `cannes.dev/delivered-keys` annotation, parsed; garbage reads as "nothing delivered". */
export function deliveredKeysOf(annotations: Readonly<Record<string, string>>): Record<string, string> {
  const raw = annotations[DELIVERED_ANNOTATION];
  if (!raw) return {};
  try {
    const v: unknown = JSON.parse(raw);
    if (!isRecord(v)) return {};
    const out: Record<string, string> = {};
    for (const [k, part] of Object.entries(v)) if (typeof part === 'string') out[k] = part;
    return out;
  } catch {
    return {};
  }
}

export function deliveryPart(mk: ModelKeyObject, secretResourceVersion: string): string {
  return `${mk.metadata.name}:${mk.metadata.generation ?? 0}:${secretResourceVersion}`;
}

/** True when the Vps's last deploy carried this ModelKey at its current generation. */
export function isDelivered(mk: ModelKeyObject, vps: VpsObject | undefined): boolean {
  if (!vps) return false;
  const part = deliveredKeysOf(vps.metadata.annotations)[mk.metadata.name];
  return part?.startsWith(`${mk.metadata.name}:${mk.metadata.generation ?? 0}:`) ?? false;
}

export function modelKeysFor(vps: VpsObject, kube: Kube): ModelKeyObject[] {
  return kube
    .listModelKeys(vps.metadata.namespace ?? 'default')
    .filter((mk) => mk.spec.vpsRef.name === vps.metadata.name && !mk.metadata.deletionTimestamp)
    .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
}

interface Candidate {
  readonly mk: ModelKeyObject;
  readonly part: string;
  /** Undefined: the Secret was purged after delivery; the value is on the server only. */
  readonly value: Secret | undefined;
  /** A Direct ModelKey: never a value here, never read back from the server. */
  readonly direct: boolean;
}

export interface KeySet {
  readonly fingerprintParts: readonly string[];
  readonly delivered: Record<string, string>;
  /** Values for every key; keys whose Secret was purged are read back from the server. */
  resolve(target: OsTarget, remote: Remote): Promise<DeliveredKey[]>;
}

export async function collectKeys(vps: VpsObject, kube: Kube): Promise<KeySet> {
  const previously = deliveredKeysOf(vps.metadata.annotations);
  const candidates: Candidate[] = [];
  for (const mk of modelKeysFor(vps, kube)) {
    const ref = mk.spec.secretRef;
    if (mk.spec.delivery === 'Direct' || !ref) {
      // The route only: the key comes from the owner, straight to the server.
      candidates.push({
        mk,
        part: `${mk.metadata.name}:${mk.metadata.generation ?? 0}:direct`,
        value: undefined,
        direct: true,
      });
      continue;
    }
    const s = await kube.readSecretKey(mk.metadata.namespace ?? 'default', ref.name, ref.key, 'llm-key');
    if (s.value && isValidApiKey(s.value) && s.resourceVersion) {
      candidates.push({ mk, part: deliveryPart(mk, s.resourceVersion), value: s.value, direct: false });
    } else {
      const prev = previously[mk.metadata.name];
      // Purged after delivery (purgeSecretAfterDelivery): keep what the server has.
      if (prev?.startsWith(`${mk.metadata.name}:${mk.metadata.generation ?? 0}:`)) {
        candidates.push({ mk, part: prev, value: undefined, direct: false });
      }
    }
  }
  const delivered: Record<string, string> = {};
  for (const c of candidates) delivered[c.mk.metadata.name] = c.part;
  return {
    fingerprintParts: candidates.map((c) => c.part),
    delivered,
    async resolve(target, remote) {
      let onServer: Record<string, Secret> | undefined;
      const out: DeliveredKey[] = [];
      for (const c of candidates) {
        let value = c.value;
        if (!value && !c.direct) {
          onServer ??= parseKeyFileKeys(await remote.readFile(target, KEY_FILE_PATH));
          value = onServer[c.mk.metadata.name];
          if (!value) {
            delete delivered[c.mk.metadata.name];
            continue;
          }
        }
        out.push({
          name: c.mk.metadata.name,
          provider: c.mk.spec.provider as ProviderName,
          baseUrl: c.mk.spec.baseUrl,
          apiKey: value,
          models: c.mk.spec.models ?? [],
          default: c.mk.spec.default ?? false,
        });
      }
      return out;
    },
  };
}

/** The apiKey of each entry of a key file (docs/design.md §6); anything malformed reads as absent. */
export function parseKeyFileKeys(file: Secret | undefined): Record<string, Secret> {
  if (!file) return {};
  let doc: unknown;
  try {
    doc = JSON.parse(file.reveal());
  } catch {
    return {};
  }
  const out: Record<string, Secret> = {};
  if (!isRecord(doc) || !isRecord(doc['keys'])) return out;
  for (const [id, entry] of Object.entries(doc['keys'])) {
    if (isRecord(entry) && typeof entry['apiKey'] === 'string') out[id] = Secret.of(entry['apiKey']);
  }
  return out;
}

/** The Vps annotation cannes.dev/direct-keys: `{"keys":{"<ModelKey>":bool},"stamp":"…"}`. */
export function parseDirectKeys(annotations: Readonly<Record<string, string>>): {
  keys: Record<string, boolean>;
  stamp: string | undefined;
} {
  try {
    const v: unknown = JSON.parse(annotations[ANNOTATION_DIRECT_KEYS] ?? '');
    if (!isRecord(v)) return { keys: {}, stamp: undefined };
    const keys: Record<string, boolean> = {};
    if (isRecord(v['keys'])) for (const [k, b] of Object.entries(v['keys'])) if (b === true) keys[k] = true;
    return { keys, stamp: typeof v['stamp'] === 'string' ? v['stamp'] : undefined };
  } catch {
    return { keys: {}, stamp: undefined };
  }
}
