import { TerminalError } from '../../common/errors.ts';
import { PROVIDERS, type ProviderName } from '../../common/providers.ts';
import { Secret } from '../../common/secret.ts';

/**
 * `/root/.model-keys.json`, the proxy's key file (docs/design.md §6):
 * `{"version":1,"keys":{"<ModelKey name>":{"provider":"anthropic","apiKey":"…","baseUrl"?:"…"}}}`.
 *
 * The whole content is a secret: it comes back as a `Secret`, and the writer puts it on the
 * host with mode 600, owner root, by temp file + rename in the same directory (HOST.keyFile in
 * ./layout.ts). The proxy refuses the file otherwise, and reloads it on change.
 *
 * The checks here mirror the proxy's parser (proxy/keys.ts) so a bad key is reported on the
 * ModelKey instead of taking every route of the VPS down with an unreadable file.
 */
export interface KeyFileEntry {
  /** The ModelKey name: the route id (`/proxy/<id>/…`). */
  readonly id: string;
  readonly provider: ProviderName;
  /**
   * Undefined: a Direct route (`"delivery":"direct"`, no key); the proxy takes its key from the
   * owner's file (HOST.directKeyFile), written only by the key intake on the server.
   */
  readonly apiKey: Secret | undefined;
  /** Only for `custom` (and an operator override): the upstream base URL, https. */
  readonly baseUrl?: string;
}

export const KEY_FILE_VERSION = 1;

const ID_RE = /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/;
/** Header-safe: visible ASCII only (what the proxy accepts; no CR/LF header injection). */
const API_KEY_RE = /^[\x21-\x7e]{1,4096}$/;

/** The one rule for an API key the proxy can send (the ModelKey controller reports `hasKey` by it). */
export function isValidApiKey(key: Secret): boolean {
  return API_KEY_RE.test(key.reveal());
}

export function keyFile(entries: readonly KeyFileEntry[]): Secret {
  const keys: Record<string, { provider: string; apiKey?: string; delivery?: 'direct'; baseUrl?: string }> =
    {};
  for (const e of entries) {
    if (!ID_RE.test(e.id) || e.id.includes('..')) {
      throw new TerminalError(
        'InvalidModelKeyName',
        `ModelKey name ${JSON.stringify(e.id)} is not a valid route id`,
      );
    }
    if (Object.hasOwn(keys, e.id)) {
      throw new TerminalError('DuplicateModelKey', `ModelKey ${e.id} is listed twice`);
    }
    const baseUrl = e.baseUrl ?? PROVIDERS[e.provider].origin;
    if (baseUrl === null) {
      throw new TerminalError(
        'BaseUrlRequired',
        `ModelKey ${e.id}: provider ${e.provider} needs spec.baseUrl`,
      );
    }
    checkBaseUrl(e.id, baseUrl);
    if (e.apiKey === undefined) {
      keys[e.id] = {
        provider: e.provider,
        delivery: 'direct',
        ...(e.baseUrl !== undefined ? { baseUrl: e.baseUrl } : {}),
      };
      continue;
    }
    // The one place the key leaves its wrapper: into the JSON text that is itself wrapped.
    const apiKey = e.apiKey.reveal();
    if (!isValidApiKey(e.apiKey)) {
      // Never quote the value: it is the secret.
      throw new TerminalError(
        'InvalidKey',
        `the Secret of ModelKey ${e.id} must hold the key as visible ASCII (no spaces, newlines or control characters)`,
      );
    }
    keys[e.id] = {
      provider: e.provider,
      apiKey,
      ...(e.baseUrl !== undefined ? { baseUrl: e.baseUrl } : {}),
    };
  }
  return new Secret(`${JSON.stringify({ version: KEY_FILE_VERSION, keys }, null, 2)}\n`);
}

function checkBaseUrl(id: string, raw: string): void {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new TerminalError('InvalidBaseUrl', `ModelKey ${id}: baseUrl is not a URL`);
  }
  // http is accepted by the proxy for test upstreams; the CRD allows only https for users.
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new TerminalError('InvalidBaseUrl', `ModelKey ${id}: baseUrl must be https`);
  }
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') {
    throw new TerminalError(
      'InvalidBaseUrl',
      `ModelKey ${id}: baseUrl must not carry credentials, a query or a fragment`,
    );
  }
}
