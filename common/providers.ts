/**
 * The provider table: one module, shared by the operator (CRD enum, gateway config) and
 * the proxy (credential header, default origin). Upstream origins are fixed here or set by
 * the operator in the key file; a client can never choose the host.
 */
export const PROVIDERS = {
  anthropic: { origin: 'https://api.anthropic.com', auth: 'x-api-key', api: 'anthropic-messages' },
  openai: { origin: 'https://api.openai.com/v1', auth: 'bearer', api: 'openai-completions' },
  google: {
    origin: 'https://generativelanguage.googleapis.com/v1beta',
    auth: 'x-goog-api-key',
    api: 'google-generative-ai',
  },
  openrouter: { origin: 'https://openrouter.ai/api/v1', auth: 'bearer', api: 'openai-completions' },
  mistral: { origin: 'https://api.mistral.ai/v1', auth: 'bearer', api: 'openai-completions' },
  groq: { origin: 'https://api.groq.com/openai/v1', auth: 'bearer', api: 'openai-completions' },
  xai: { origin: 'https://api.x.ai/v1', auth: 'bearer', api: 'openai-completions' },
  deepseek: { origin: 'https://api.deepseek.com/v1', auth: 'bearer', api: 'openai-completions' },
  custom: { origin: null, auth: 'bearer', api: 'openai-completions' },
} as const satisfies Record<string, ProviderInfo>;

export interface ProviderInfo {
  /** Default upstream base URL; null means the key file / ModelKey must give `baseUrl`. */
  readonly origin: string | null;
  /** How the real key is injected: a named header, or `Authorization: Bearer`. */
  readonly auth: 'x-api-key' | 'x-goog-api-key' | 'bearer';
  /** OpenClaw's `models.providers.<id>.api` for this provider. */
  readonly api: 'anthropic-messages' | 'openai-completions' | 'google-generative-ai';
}

export type ProviderName = keyof typeof PROVIDERS;
export const PROVIDER_NAMES = Object.keys(PROVIDERS) as ProviderName[];

export function isProviderName(v: unknown): v is ProviderName {
  return typeof v === 'string' && Object.hasOwn(PROVIDERS, v);
}

/**
 * Every header a client could use to carry a credential. All are removed from inbound
 * requests before the real one is injected (Azure's `api-key` included).
 */
export const CREDENTIAL_HEADERS = [
  'authorization',
  'x-api-key',
  'x-goog-api-key',
  'api-key',
  'proxy-authorization',
] as const;

/**
 * Query parameters that can carry a credential (Gemini's `?key=`, and the usual spellings of
 * the others), removed from every request. Compared after decoding, lower-casing and removing
 * `-`, `_` and `.`: `api_key`, `apiKey`, `API-KEY` are all `apikey`. Exact names only, so
 * `pageToken` (Gemini's pagination) passes.
 */
export const CREDENTIAL_QUERY_PARAMS = [
  'key',
  'apikey',
  'xapikey',
  'xgoogapikey',
  'accesstoken',
  'token',
  'authtoken',
  'auth',
  'authorization',
  'bearer',
  'idtoken',
  'refreshtoken',
  'sessiontoken',
  'clientsecret',
  'secret',
  'password',
] as const;
