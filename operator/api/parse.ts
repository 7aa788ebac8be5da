/**
 * Parses Vps and ModelKey objects from wire JSON at the boundary, once (STYLE.md 5). The API
 * server already validated and defaulted them against the same schema; the operator checks
 * again so a hand-crafted object (or a schema skew during an upgrade) fails loudly here.
 */
import type { Static, TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import type { ModelKeyObject, ResolvedVpsSpec, VpsObject } from '../controllers/ports.ts';
import { isRecord, parseKubeObject } from '../kube/object.ts';
import { TerminalError } from '../lib/errors.ts';
import { ModelKeySpec, ModelKeyStatus, VpsSpec, VpsStatus } from './schema.ts';

function checked<S extends TSchema>(schema: S, value: unknown, what: string): Static<S> {
  const v = Value.Default(schema, Value.Clone(value ?? {}));
  if (Value.Check(schema, v)) return v;
  const first = [...Value.Errors(schema, v)].slice(0, 3).map((e) => `${e.path || '/'}: ${e.message}`);
  throw new TerminalError('InvalidSpec', `${what} is invalid: ${first.join('; ')}`);
}

export function parseVps(raw: unknown): VpsObject {
  const base = parseKubeObject(raw);
  const r = isRecord(raw) ? raw : {};
  const spec = checked(VpsSpec, r['spec'], `Vps ${base.metadata.name} spec`);
  const status = checked(VpsStatus, r['status'], `Vps ${base.metadata.name} status`);
  // Value.Default filled every defaulted field, so the resolved spec is complete.
  const resolved: ResolvedVpsSpec = {
    serverType: spec.serverType,
    location: spec.location,
    image: spec.image ?? 'docker-ce',
    cloudTokenSecretRef: spec.cloudTokenSecretRef,
    gateway: {
      image: spec.gateway?.image ?? '',
      port: spec.gateway?.port ?? 0,
    },
    sshKeyRotation: { interval: spec.sshKeyRotation?.interval ?? '' },
    purgeCloudTokenAfterSetup: spec.purgeCloudTokenAfterSetup ?? true,
    deletionPolicy: spec.deletionPolicy === 'Retain' ? 'Retain' : 'Delete',
  };
  return { ...base, spec: resolved, status };
}

export function parseModelKey(raw: unknown): ModelKeyObject {
  const base = parseKubeObject(raw);
  const r = isRecord(raw) ? raw : {};
  const spec = checked(ModelKeySpec, r['spec'], `ModelKey ${base.metadata.name} spec`);
  const status = checked(ModelKeyStatus, r['status'], `ModelKey ${base.metadata.name} status`);
  return { ...base, spec, status };
}
