import { PROVIDERS, type ProviderInfo, type ProviderName } from '../common/providers.ts';

/**
 * Which methods and paths a route may reach upstream (issue 19, items 10 and 11). The key the
 * proxy injects can do everything its account can; an agent should only be able to run
 * inference with it. So each API family has an allow list of its inference endpoints, and
 * everything else (OpenAI's `/realtime/client_secrets`, which mints a credential usable
 * elsewhere; files, batches, fine-tuning, vector stores; organisation, project and key
 * administration) is refused before anything goes upstream.
 *
 * Paths are relative to the route's base URL, as the client sends them after
 * `/proxy/<id>`: `/v1/messages` for Anthropic (base `https://api.anthropic.com`),
 * `/chat/completions` for OpenAI (base `…/v1`), `/models/<m>:generateContent` for Google
 * (base `…/v1beta`). `safePath()` has already refused dot segments, backslashes and
 * encoded slashes, so a pattern cannot be escaped with `..`.
 *
 * Pattern syntax: literal text, `*` for one path segment (`[^/]+`), `**` for one or more
 * segments. Compiled once into one anchored regular expression per family and method.
 */
type Family = ProviderInfo['api'];

interface FamilyRules {
  /** Paths answered with GET (and HEAD). */
  readonly get: readonly string[];
  readonly post: readonly string[];
}

export const ENDPOINTS: Readonly<Record<Family, FamilyRules>> = {
  'anthropic-messages': {
    get: ['/v1/models', '/v1/models/*'],
    post: ['/v1/messages', '/v1/messages/count_tokens', '/v1/complete'],
  },
  // OpenAI and every OpenAI-compatible provider (OpenRouter, Mistral, Groq, xAI, DeepSeek,
  // custom): the inference endpoints of the OpenAI API, and Mistral's fill-in-the-middle.
  'openai-completions': {
    get: ['/models', '/models/**', '/responses/*', '/responses/*/input_items'],
    post: [
      '/chat/completions',
      '/completions',
      '/fim/completions',
      '/responses',
      '/responses/input_tokens',
      '/responses/compact',
      '/responses/*/cancel',
      '/embeddings',
      '/moderations',
      '/audio/speech',
      '/audio/transcriptions',
      '/audio/translations',
      '/images/generations',
      '/images/edits',
      '/images/variations',
    ],
  },
  'google-generative-ai': {
    get: ['/models', '/models/*'],
    post: [
      '/models/*:generateContent',
      '/models/*:streamGenerateContent',
      '/models/*:countTokens',
      '/models/*:embedContent',
      '/models/*:batchEmbedContents',
      '/models/*:predict',
    ],
  },
};

/** Methods the default allow lists use. */
export const DEFAULT_METHODS = ['GET', 'HEAD', 'POST'] as const;
/**
 * Methods the provider APIs use at all, allowed on widened paths (`--allow-path-prefix`,
 * `--allow-any-path`). Never TRACE, TRACK, CONNECT, OPTIONS or WebDAV methods.
 */
export const WIDE_METHODS = ['GET', 'HEAD', 'POST', 'DELETE', 'PATCH'] as const;

export type EndpointVerdict = 'ok' | 'method' | 'path';

export interface EndpointPolicyOptions {
  /** No path check at all (`--allow-any-path`): any path, the wide methods. */
  readonly anyPath?: boolean;
  /** Extra path prefixes for every route (`--allow-path-prefix`), the wide methods. */
  readonly extraPrefixes?: readonly string[];
}

function compile(patterns: readonly string[]): RegExp {
  const alts = patterns.map((p) =>
    p
      .split(/(\*\*|\*)/)
      .map((part) =>
        part === '**'
          ? '[^/]+(?:/[^/]+)*'
          : part === '*'
            ? '[^/]+'
            : part.replace(/[.+?^${}()|[\]\\]/g, '\\$&'),
      )
      .join(''),
  );
  return new RegExp(`^(?:${alts.join('|')})$`);
}

interface Compiled {
  readonly get: RegExp;
  readonly post: RegExp;
}

/** The method and path policy, built once from the command line; checked per request. */
export class EndpointPolicy {
  readonly #anyPath: boolean;
  readonly #prefixes: readonly string[];
  readonly #families: Readonly<Record<Family, Compiled>>;
  readonly #wide: ReadonlySet<string> = new Set<string>(WIDE_METHODS);
  /** The `Allow` header of a 405. */
  readonly allowHeader: string;

  constructor(options: EndpointPolicyOptions = {}) {
    this.#anyPath = options.anyPath === true;
    this.#prefixes = (options.extraPrefixes ?? []).map((p) => p.replace(/\/+$/, ''));
    const families = {} as Record<Family, Compiled>;
    for (const f of Object.keys(ENDPOINTS) as Family[]) {
      families[f] = { get: compile(ENDPOINTS[f].get), post: compile(ENDPOINTS[f].post) };
    }
    this.#families = families;
    this.allowHeader = (this.#anyPath || this.#prefixes.length > 0 ? WIDE_METHODS : DEFAULT_METHODS).join(
      ', ',
    );
  }

  /** A method some provider API uses (the 405 check before anything else). */
  methodKnown(method: string): boolean {
    return this.#wide.has(method);
  }

  /**
   * `ok`, or why not: `method` (a method no provider API uses, or one this endpoint does not
   * take: 405) or `path` (not an endpoint of this provider's allow list: 403).
   */
  check(provider: ProviderName, method: string, path: string): EndpointVerdict {
    if (!this.#wide.has(method)) return 'method';
    if (this.#anyPath) return 'ok';
    for (const p of this.#prefixes) {
      if (path.startsWith(p) && (path.length === p.length || path.charCodeAt(p.length) === 47)) return 'ok';
    }
    const rules = this.#families[PROVIDERS[provider].api];
    const isGet = method === 'GET' || method === 'HEAD';
    if (isGet ? rules.get.test(path) : method === 'POST' && rules.post.test(path)) return 'ok';
    // The endpoint exists under another method: say so (405) rather than "no such path".
    if (rules.get.test(path) || rules.post.test(path)) return 'method';
    return 'path';
  }
}

/** `--allow-path-prefix` values: absolute, no query, no dot segments, no wildcards. */
export function validPathPrefix(p: string): boolean {
  return /^\/[A-Za-z0-9._~:@!$&'()+,;=%/-]*$/.test(p) && !p.split('/').some((s) => s === '.' || s === '..');
}
