/**
 * The API's objects as tests write them: a minimal valid Vps and ModelKey, and the Secrets they
 * point at with the `cannes.dev/usage` label the operator requires (docs/security.md). One place,
 * so a new required field or label is added once. Imports nothing: the API-server tests, the
 * operator's system tests, the chart tests and the benchmarks all use it.
 */

export const GROUP_VERSION = 'cannes.dev/v1alpha1';

/** The `cannes.dev/usage` labels that let the operator use a Secret (docs/security.md). */
export const CLOUD_TOKEN_LABELS = { 'cannes.dev/usage': 'cloud-token' } as const;
export const LLM_KEY_LABELS = { 'cannes.dev/usage': 'llm-key' } as const;
export const TAILNET_AUTH_KEY_LABELS = { 'cannes.dev/usage': 'tailnet-auth-key' } as const;

/** Spec fields to set over the defaults; a field given as `undefined` is left out. */
export type SpecOverrides = Readonly<Record<string, unknown>>;

export type Manifest = Record<string, unknown>;

function metadata(ns: string | undefined, name: string, extra: Readonly<Record<string, unknown>>) {
  return { name, ...(ns === undefined ? {} : { namespace: ns }), ...extra };
}

function merge(defaults: Record<string, unknown>, overrides: SpecOverrides): Record<string, unknown> {
  return Object.fromEntries(Object.entries({ ...defaults, ...overrides }).filter(([, v]) => v !== undefined));
}

/** `(ns, name, overrides?, meta?)`: `ns` undefined leaves the namespace to `kubectl -n` or the request path. */
type Builder = (
  ns: string | undefined,
  name: string,
  overrides?: SpecOverrides,
  meta?: Readonly<Record<string, unknown>>,
) => Manifest;

const builder =
  (kind: 'Vps' | 'ModelKey', defaults: Record<string, unknown>): Builder =>
  (ns, name, overrides = {}, meta = {}) => ({
    apiVersion: GROUP_VERSION,
    kind,
    metadata: metadata(ns, name, meta),
    spec: merge(structuredClone(defaults), overrides),
  });

/** A minimal valid Vps: cx23 in fsn1, the cloud token from Secret `hcloud`, key `token`. */
export const vpsManifest = builder('Vps', {
  serverType: 'cx23',
  location: 'fsn1',
  cloudTokenSecretRef: { name: 'hcloud', key: 'token' },
});

/**
 * A minimal valid ModelKey: anthropic, for Vps `agent`, the key from Secret `llm`, key
 * `apiKey`. With several ModelKeys on one Vps exactly one must set `default: true`.
 */
export const modelKeyManifest = builder('ModelKey', {
  vpsRef: { name: 'agent' },
  provider: 'anthropic',
  secretRef: { name: 'llm', key: 'apiKey' },
});

/** A Secret the operator may read as a Vps's cloud token (`stringData.token`). */
export function cloudTokenSecret(ns: string | undefined, name: string, token: string): Manifest {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: metadata(ns, name, { labels: CLOUD_TOKEN_LABELS }),
    stringData: { token },
  };
}

/** A Secret the operator may read LLM keys from (one entry a key). */
export function llmKeySecret(
  ns: string | undefined,
  name: string,
  keys: Readonly<Record<string, string>>,
): Manifest {
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: metadata(ns, name, { labels: LLM_KEY_LABELS }),
    stringData: { ...keys },
  };
}
