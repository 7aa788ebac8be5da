/**
 * Parses Vps and ModelKey objects from wire JSON at the boundary, once. The API
 * server already validated and defaulted them against the same schema; the operator checks
 * again so a hand-crafted object (or a schema skew during an upgrade) fails loudly here.
 */
import type { Static, TSchema } from '@sinclair/typebox';
import { FormatRegistry } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { TerminalError } from '../../common/errors.ts';
import { isRecord, parseKubeObject } from '../kube/object.ts';
import { DEFAULT_TAILNET_LOGIN_SERVER, ModelKeySpec, ModelKeyStatus, VpsSpec, VpsStatus } from './schema.ts';
import type { ModelKeyObject, ResolvedVpsSpec, VpsObject } from './types.ts';

// The formats the schema names (TypeBox knows none by itself). The API server checked them
// already; here they only need to be recognised.
if (!FormatRegistry.Has('date-time')) FormatRegistry.Set('date-time', (v) => !Number.isNaN(Date.parse(v)));
if (!FormatRegistry.Has('int64')) FormatRegistry.Set('int64', () => true);

/** TypeBox's checker ignores `enum` on a string schema; the CRD relies on it, so check it here. */
function enumErrors(schema: unknown, value: unknown, path: string): string[] {
  if (!isRecord(schema)) return [];
  const out: string[] = [];
  if (Array.isArray(schema['enum']) && !schema['enum'].includes(value)) {
    out.push(`${path || '/'}: must be one of ${schema['enum'].join(', ')}`);
  }
  if (isRecord(schema['properties']) && isRecord(value)) {
    for (const [k, sub] of Object.entries(schema['properties'])) {
      if (value[k] !== undefined) out.push(...enumErrors(sub, value[k], `${path}/${k}`));
    }
  }
  if (schema['items'] !== undefined && Array.isArray(value)) {
    for (const [i, item] of value.entries()) out.push(...enumErrors(schema['items'], item, `${path}/${i}`));
  }
  return out;
}

function checked<S extends TSchema>(schema: S, value: unknown, what: string): Static<S> {
  const v = Value.Default(schema, Value.Clone(value ?? {}));
  const errors = Value.Check(schema, v)
    ? enumErrors(schema, v, '')
    : [...Value.Errors(schema, v)].map((e) => `${e.path || '/'}: ${e.message}`);
  if (errors.length === 0 && Value.Check(schema, v)) return v;
  throw new TerminalError('InvalidSpec', `${what} is invalid: ${errors.slice(0, 3).join('; ')}`);
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
    access: { sshAuthorizedKeys: spec.access?.sshAuthorizedKeys ?? [] },
    ...(spec.tailnet
      ? {
          tailnet: {
            authKeySecretRef: spec.tailnet.authKeySecretRef,
            // A Vps name may hold dots (a DNS subdomain); a tailnet hostname is one label.
            hostname: spec.tailnet.hostname ?? tailnetHostname(base.metadata.name),
            tags: spec.tailnet.tags ?? [],
            loginServer: spec.tailnet.loginServer ?? DEFAULT_TAILNET_LOGIN_SERVER,
            purgeAuthKeyAfterJoin: spec.tailnet.purgeAuthKeyAfterJoin ?? true,
            owners: spec.tailnet.owners ?? [],
          },
        }
      : {}),
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

/** The Vps name as one DNS label (dots become dashes, at most 63 characters). */
export function tailnetHostname(vpsName: string): string {
  return (
    vpsName
      .toLowerCase()
      .replace(/[^a-z0-9-]/g, '-')
      .slice(0, 63)
      .replace(/^-+|-+$/g, '') || 'vps'
  );
}
