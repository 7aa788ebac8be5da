import { createHash } from 'node:crypto';
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { inspect } from 'node:util';
import { CannesError } from '../common/errors.ts';
import { isProviderName, PROVIDERS, type ProviderName } from '../common/providers.ts';
import { Secret } from '../common/secret.ts';
import { KeyScrubber } from './scrub.ts';

/**
 * The key file (docs/design.md §6), written by the operator, read here:
 * `{"version":1,"keys":{"<id>":{"provider":"anthropic","apiKey":"…","baseUrl":"https://…"}}}`.
 *
 * Every error message in this module is written so it can never contain key material: no
 * quoting of file content, of values, or of V8's JSON error text (which quotes its input).
 */
export const MAX_KEY_FILE_BYTES = 1024 * 1024;

/** A ModelKey name: a Kubernetes DNS subdomain name. No `/`, no `..`, nothing to traverse with. */
const ID_RE = /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/;
/** Header-safe key text: visible ASCII, no spaces or control characters (no CR/LF injection). */
const API_KEY_RE = /^[\x21-\x7e]{1,4096}$/;

export function isRouteId(v: string): boolean {
  return ID_RE.test(v) && !v.includes('..');
}

/** One upstream route: `/proxy/<id>/…` → `<origin><basePath>/…` with the real key injected. */
export class Route {
  readonly id: string;
  readonly provider: ProviderName;
  /** `https://host[:port]`, fixed by the provider table or the key file; never from a client. */
  readonly origin: string;
  /** Path prefix of the base URL without a trailing slash (`/v1`, `/api/v1`, or ``). */
  readonly basePath: string;
  /** Lower-case header name the credential goes in. */
  readonly authHeader: string;
  /** Finds this route's key in responses (issue 19 item 9); prints as `[redacted]`. */
  readonly scrubber: KeyScrubber;
  readonly #authValue: Secret;
  readonly #apiKey: Secret;

  constructor(id: string, provider: ProviderName, baseUrl: URL, apiKey: Secret) {
    this.#apiKey = apiKey;
    this.id = id;
    this.provider = provider;
    this.origin = baseUrl.origin;
    this.basePath = baseUrl.pathname.replace(/\/+$/, '');
    const auth = PROVIDERS[provider].auth;
    this.authHeader = auth === 'bearer' ? 'authorization' : auth;
    // Precomputed once per load so the hot path only pushes two strings.
    this.#authValue = new Secret(auth === 'bearer' ? `Bearer ${apiKey.reveal()}` : apiKey.reveal());
    this.scrubber = new KeyScrubber(apiKey.reveal());
  }

  /** The one place the key leaves its wrapper: appended to the outgoing upstream headers. */
  injectCredential(headers: string[]): void {
    headers.push(this.authHeader, this.#authValue.reveal());
  }

  /**
   * The route, key included, for the proxy's other threads (`postMessage` inside this
   * process; never written anywhere). `fromWire` builds the same route again.
   */
  toWire(): RouteWire {
    return {
      id: this.id,
      provider: this.provider,
      baseUrl: this.origin + this.basePath,
      apiKey: this.#apiKey.reveal(),
    };
  }

  static fromWire(w: RouteWire): Route {
    return new Route(w.id, w.provider, new URL(w.baseUrl), new Secret(w.apiKey));
  }

  toJSON(): Record<string, string> {
    return { id: this.id, provider: this.provider, origin: this.origin, basePath: this.basePath };
  }

  [inspect.custom](): string {
    return `Route(${this.id} → ${this.provider} ${this.origin}${this.basePath}, key [redacted])`;
  }
}

/** A route as it crosses to another thread of the proxy (structured clone). */
export interface RouteWire {
  readonly id: string;
  readonly provider: ProviderName;
  readonly baseUrl: string;
  readonly apiKey: string;
}

export interface KeyFileContents {
  readonly routes: ReadonlyMap<string, Route>;
  /** sha256 of the bytes read, to skip reloads of an unchanged file. */
  readonly digest: string;
}

export interface ReadOptions {
  /** The uid the file must belong to (the proxy's own); `null` skips the check (non-POSIX). */
  readonly uid: number | null;
  /**
   * The owner's file of Direct keys (written only by the key intake on the server):
   * `{"version":1,"keys":{"<id>":{"apiKey":"…"}}}`. Missing is fine (no Direct key yet).
   */
  readonly directPath?: string;
}

/**
 * Reads and validates the key file (and the Direct keys file, when given). Checks run on the
 * opened descriptor (no race between check and read); a symlink is refused (O_NOFOLLOW) so the
 * file is exactly the one its writer wrote with mode 600.
 */
export function readKeyFile(path: string, options: ReadOptions): KeyFileContents {
  const bytes = readSecretFile(path, options.uid, 'key file');
  let direct: Buffer | undefined;
  try {
    if (options.directPath !== undefined) {
      try {
        direct = readSecretFile(options.directPath, options.uid, 'direct key file');
      } catch (err) {
        if (!(err instanceof CannesError && err.reason === 'KeyFileMissing')) throw err;
      }
    }
    const h = createHash('sha256').update(bytes);
    if (direct) h.update('\0').update(direct);
    const directKeys = direct ? parseDirectKeyFile(direct.toString('utf8')) : new Map<string, string>();
    return { routes: parseKeyFile(bytes.toString('utf8'), directKeys), digest: h.digest('hex') };
  } finally {
    bytes.fill(0);
    direct?.fill(0);
  }
}

/** The bytes of a root-only secret file: regular, mode 600 or stricter, owned by `uid`, not a link. */
export function readSecretFile(path: string, uid: number | null, what: string): Buffer {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'unknown';
    const why =
      code === 'ENOENT'
        ? 'does not exist'
        : code === 'ELOOP'
          ? 'is a symbolic link (refused)'
          : code === 'EACCES'
            ? 'is not readable by the proxy'
            : `cannot be opened (${code})`;
    throw new CannesError(
      code === 'ENOENT' ? 'KeyFileMissing' : 'KeyFileUnreadable',
      `${what} ${path} ${why}`,
    );
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new CannesError('KeyFileNotRegular', `${what} ${path} is not a regular file`);
    if ((st.mode & 0o077) !== 0) {
      const mode = (st.mode & 0o777).toString(8).padStart(3, '0');
      throw new CannesError(
        'KeyFileMode',
        `${what} ${path} has mode ${mode}: it must not be readable or writable by group or others (chmod 600)`,
      );
    }
    if (uid !== null && st.uid !== uid) {
      throw new CannesError(
        'KeyFileOwner',
        `${what} ${path} is owned by uid ${st.uid}, not by the proxy's user (uid ${uid})`,
      );
    }
    if (st.size > MAX_KEY_FILE_BYTES) {
      throw new CannesError('KeyFileTooLarge', `${what} ${path} is larger than ${MAX_KEY_FILE_BYTES} bytes`);
    }
    const bytes = Buffer.alloc(st.size);
    let off = 0;
    while (off < bytes.length) {
      const n = readSync(fd, bytes, off, bytes.length - off, off);
      if (n === 0) break;
      off += n;
    }
    return bytes.subarray(0, off);
  } finally {
    closeSync(fd);
  }
}

/**
 * The Direct keys file: `{"version":1,"keys":{"<id>":{"apiKey":"…"}}}`. Throws `CannesError`
 * whose message never quotes the input. Entries for routes the key file does not declare are
 * ignored by parseKeyFile (a caller cannot add a route, only fill one).
 */
export function parseDirectKeyFile(text: string): Map<string, string> {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new CannesError('KeyFileInvalid', 'direct key file is not valid JSON');
  }
  const bad = (what: string) => new CannesError('KeyFileInvalid', `direct key file is invalid: ${what}`);
  if (!isObject(doc) || doc['version'] !== 1 || !isObject(doc['keys']))
    throw bad('it must be {"version":1,"keys":{...}}');
  const out = new Map<string, string>();
  for (const [id, entry] of Object.entries(doc['keys'])) {
    if (!isRouteId(id)) throw bad('an id is not a valid name (lower-case DNS name)');
    const apiKey = isObject(entry) ? entry['apiKey'] : undefined;
    if (typeof apiKey !== 'string' || !isApiKey(apiKey))
      throw bad(`keys.${id}.apiKey must be a non-empty string of visible ASCII characters`);
    out.set(id, apiKey);
  }
  return out;
}

/** The one rule for key text (the operator's writer and the intake use the same). */
export function isApiKey(v: string): boolean {
  return API_KEY_RE.test(v);
}

/** Parses the key file text. Throws `CannesError` whose message never quotes the input. */
export function parseKeyFile(
  text: string,
  directKeys: ReadonlyMap<string, string> = new Map(),
): Map<string, Route> {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new CannesError('KeyFileInvalid', 'key file is not valid JSON');
  }
  if (!isObject(doc)) throw invalid('the top level must be an object');
  if (doc['version'] !== 1) throw invalid('"version" must be 1');
  const keys = doc['keys'];
  if (!isObject(keys)) throw invalid('"keys" must be an object');
  const routes = new Map<string, Route>();
  let index = 0;
  for (const [id, entry] of Object.entries(keys)) {
    index++;
    // The id is only quoted once it is known to be a well-formed name.
    if (!isRouteId(id))
      throw invalid(`key entry #${index}: the id is not a valid name (lower-case DNS name)`);
    if (!isObject(entry)) throw invalid(`keys.${id} must be an object`);
    const provider = entry['provider'];
    if (!isProviderName(provider)) throw invalid(`keys.${id}.provider is not a known provider`);
    let apiKey = entry['apiKey'];
    if (entry['delivery'] === 'direct') {
      // Declared by the operator with no key: served only once the owner's key is there
      // (until then the route is unknown: fail closed).
      if (apiKey !== undefined) throw invalid(`keys.${id} is a direct route and must not carry an apiKey`);
      apiKey = directKeys.get(id);
      if (apiKey === undefined) continue;
    } else if (entry['delivery'] !== undefined) {
      throw invalid(`keys.${id}.delivery must be "direct" or absent`);
    }
    if (typeof apiKey !== 'string' || !API_KEY_RE.test(apiKey)) {
      throw invalid(`keys.${id}.apiKey must be a non-empty string of visible ASCII characters`);
    }
    const rawBase = entry['baseUrl'] ?? PROVIDERS[provider].origin;
    if (rawBase === null) throw invalid(`keys.${id}.baseUrl is required for provider ${provider}`);
    if (typeof rawBase !== 'string') throw invalid(`keys.${id}.baseUrl must be a string`);
    routes.set(id, new Route(id, provider, parseBaseUrl(rawBase, id), new Secret(apiKey)));
  }
  return routes;
}

function parseBaseUrl(raw: string, id: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw invalid(`keys.${id}.baseUrl is not a valid URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:')
    throw invalid(`keys.${id}.baseUrl must be http(s)`);
  if (url.username !== '' || url.password !== '') {
    throw invalid(`keys.${id}.baseUrl must not contain credentials`);
  }
  if (url.search !== '' || url.hash !== '')
    throw invalid(`keys.${id}.baseUrl must not have a query or fragment`);
  return url;
}

function invalid(what: string): CannesError {
  return new CannesError('KeyFileInvalid', `key file is invalid: ${what}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
