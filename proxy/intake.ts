import { randomBytes } from 'node:crypto';
import { closeSync, constants, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { dirname, join } from 'node:path';
import { CannesError } from '../common/errors.ts';
import { INTAKE_PAGE } from './intake-page.ts';
import { isApiKey, isRouteId, parseDirectKeyFile, readSecretFile } from './keys.ts';
import type { Logger } from './log.ts';

/**
 * The key intake (docs/direct-keys.md): the owner hands the key of a Direct ModelKey straight
 * to the server over the tailnet. It listens on loopback only; `tailscale serve` puts it at
 * `<gateway URL>/cannes-keys/` on the tailnet, so the only way in is a tailnet peer through
 * Serve. The caller is the last `X-Forwarded-For` hop Serve adds, looked up with tailscaled's
 * whois and matched against the owners the operator declared. It writes only the Direct keys
 * file, only for routes the operator's key file declares Direct, and answers booleans.
 *
 * No answer, log line or error here ever contains a key: the body is read into a buffer that
 * is checked, written and zeroed; refusals name the rule that was broken.
 */
export const INTAKE_PREFIX = '/cannes-keys';
/** The header every write must carry: a cross-site form or fetch cannot send it without CORS. */
export const INTAKE_HEADER = 'cannes-intake';
export const MAX_KEY_BODY_BYTES = 8192;

export interface PeerIdentity {
  /** The user's login name; undefined for a tagged node (its identity is its tags). */
  readonly loginName: string | undefined;
  readonly tags: readonly string[];
}

export interface IntakeOptions {
  /** The operator's key file: which routes are Direct (read only). */
  readonly keysPath: string;
  /** The Direct keys file this intake alone writes (mode 600). */
  readonly directPath: string;
  /** The intake config (written by the deploy): `{"owners":["alice@example.com","tag:x"]}`. */
  readonly ownersOf: () => readonly string[];
  readonly whois: (ip: string) => Promise<PeerIdentity | undefined>;
  readonly uid: number | null;
  readonly logger: Logger;
  /** Requests per peer per minute (default 30). */
  readonly perMinute?: number;
  readonly now?: () => number;
}

type Reply = { status: number; body: Record<string, unknown>; headers?: Record<string, string> };

const refuse = (status: number, error: string, message: string, headers?: Record<string, string>): Reply => ({
  status,
  body: { error, message },
  ...(headers ? { headers } : {}),
});

/** Tailscale's address ranges: CGNAT 100.64.0.0/10 and fd7a:115c:a1e0::/48. */
export function isTailnetAddress(ip: string): boolean {
  if (isIP(ip) === 4) {
    const [a, b] = ip.split('.').map(Number) as [number, number];
    return a === 100 && b >= 64 && b < 128;
  }
  return isIP(ip) === 6 && ip.toLowerCase().startsWith('fd7a:115c:a1e0:');
}

/** The peer Serve saw: the last X-Forwarded-For hop (Serve appends it; anything before is the caller's). */
export function forwardedPeer(req: IncomingMessage): string | undefined {
  const remote = req.socket.remoteAddress ?? '';
  // Only Serve (on loopback) may say who the peer is.
  if (remote !== '127.0.0.1' && remote !== '::1' && remote !== '::ffff:127.0.0.1') return undefined;
  const raw = req.headers['x-forwarded-for'];
  const value = Array.isArray(raw) ? raw.join(',') : raw;
  const last = value?.split(',').at(-1)?.trim();
  return last && isTailnetAddress(last) ? last : undefined;
}

export function isOwner(who: PeerIdentity, owners: readonly string[]): boolean {
  if (who.tags.length > 0) return who.tags.some((t) => owners.includes(t));
  return who.loginName !== undefined && owners.includes(who.loginName);
}

/** The ids of the routes the operator declared Direct (the key file's `"delivery":"direct"`). */
export function declaredDirect(keysPath: string, uid: number | null): Set<string> {
  const bytes = readSecretFile(keysPath, uid, 'key file');
  try {
    const doc: unknown = JSON.parse(bytes.toString('utf8'));
    const keys = isObject(doc) && isObject(doc['keys']) ? doc['keys'] : {};
    const out = new Set<string>();
    for (const [id, e] of Object.entries(keys))
      if (isRouteId(id) && isObject(e) && e['delivery'] === 'direct') out.add(id);
    return out;
  } catch {
    throw new CannesError('KeyFileInvalid', 'the key file is not valid JSON');
  } finally {
    bytes.fill(0);
  }
}

/** The Direct keys now on disk (missing file: none). */
export function readDirectKeys(path: string, uid: number | null): Map<string, string> {
  let bytes: Buffer;
  try {
    bytes = readSecretFile(path, uid, 'direct key file');
  } catch (err) {
    if (err instanceof CannesError && err.reason === 'KeyFileMissing') return new Map();
    throw err;
  }
  try {
    return parseDirectKeyFile(bytes.toString('utf8'));
  } finally {
    bytes.fill(0);
  }
}

/** Writes the Direct keys file atomically: a new mode-600 file in the same folder, fsync, rename. */
export function writeDirectKeys(path: string, keys: ReadonlyMap<string, string>): void {
  const doc = { version: 1, keys: Object.fromEntries([...keys].map(([id, apiKey]) => [id, { apiKey }])) };
  const bytes = Buffer.from(`${JSON.stringify(doc, null, 2)}\n`, 'utf8');
  const tmp = join(dirname(path), `.cannes-direct.${randomBytes(6).toString('hex')}`);
  const fd = openSync(
    tmp,
    constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
    0o600,
  );
  try {
    let off = 0;
    while (off < bytes.length) off += writeSync(fd, bytes, off, bytes.length - off);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    unlinkSync(tmp);
    throw err;
  } finally {
    bytes.fill(0);
  }
  closeSync(fd);
  renameSync(tmp, path);
  const dfd = openSync(dirname(path), constants.O_RDONLY);
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

/** Reads at most `max` bytes of the body; undefined when it is larger (the rest is not read). */
async function readBody(req: IncomingMessage, max: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    const chunk = c as Buffer;
    size += chunk.length;
    if (size > max) {
      for (const x of chunks) x.fill(0);
      chunk.fill(0);
      return undefined;
    }
    chunks.push(chunk);
  }
  const body = Buffer.concat(chunks);
  for (const x of chunks) x.fill(0);
  return body;
}

export class KeyIntake {
  readonly #o: IntakeOptions;
  readonly #hits = new Map<string, { start: number; count: number }>();
  /** Writes one at a time (read, change, rename): no lost update between two owners. */
  #queue: Promise<unknown> = Promise.resolve();

  constructor(o: IntakeOptions) {
    this.#o = o;
  }

  listen(host: string, port: number): Promise<Server> {
    const server = createServer({ requestTimeout: 30_000, headersTimeout: 10_000 }, (req, res) => {
      this.handle(req)
        .catch((err: unknown) => {
          const message = err instanceof CannesError ? err.message : 'internal error';
          this.#o.logger.error('key intake failed', { message });
          return refuse(500, 'IntakeFailed', message);
        })
        .then((r) => send(res, r));
    });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host, port, exclusive: true }, () => resolve(server));
    });
  }

  async handle(req: IncomingMessage): Promise<Reply> {
    const url = new URL(req.url ?? '/', 'http://intake');
    const path = url.pathname.startsWith(`${INTAKE_PREFIX}/`)
      ? url.pathname.slice(INTAKE_PREFIX.length)
      : url.pathname === INTAKE_PREFIX
        ? '/'
        : url.pathname;
    const peer = forwardedPeer(req);
    if (!this.#allow(peer ?? req.socket.remoteAddress ?? '?'))
      return refuse(429, 'RateLimited', 'too many requests from this peer: wait a minute', {
        'retry-after': '60',
      });
    if (req.method === 'GET' && path === '/')
      return { status: 200, body: {}, headers: { 'content-type': 'text/html; charset=utf-8' } };
    if (!peer)
      return refuse(
        403,
        'NoTailnetIdentity',
        'the request did not come from a tailnet peer through tailscale serve',
      );
    const who = await this.#o.whois(peer);
    if (!who) return refuse(403, 'NoTailnetIdentity', `tailscaled does not know the peer ${peer}`);
    const name = who.tags.length > 0 ? who.tags.join(',') : (who.loginName ?? '?');
    if (!isOwner(who, this.#o.ownersOf()))
      return refuse(403, 'NotAnOwner', `${name} is not in spec.tailnet.owners of this Vps`);
    if (req.method === 'GET' && path === '/keys') return this.#status();
    const m = /^\/keys\/([^/]+)$/.exec(path);
    if (!m || (req.method !== 'PUT' && req.method !== 'DELETE'))
      return refuse(404, 'NotFound', 'use GET /keys, PUT /keys/<ModelKey> or DELETE /keys/<ModelKey>');
    return this.#change(req, m[1] ?? '', name);
  }

  #status(): Reply {
    const declared = declaredDirect(this.#o.keysPath, this.#o.uid);
    const have = readDirectKeys(this.#o.directPath, this.#o.uid);
    const routes: Record<string, boolean> = {};
    for (const id of [...declared].sort()) routes[id] = have.has(id);
    return { status: 200, body: { routes } };
  }

  async #change(req: IncomingMessage, id: string, who: string): Promise<Reply> {
    if (!isRouteId(id)) return refuse(400, 'BadRouteName', 'the route name is not a ModelKey name');
    if (req.headers[INTAKE_HEADER] !== '1')
      return refuse(
        403,
        'MissingIntakeHeader',
        `send the header "${INTAKE_HEADER}: 1" (cross-site requests cannot)`,
      );
    let key: string | undefined;
    if (req.method === 'PUT') {
      const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
      if (type !== 'text/plain')
        return refuse(415, 'WrongContentType', 'send the key as the body with content-type text/plain');
      const body = await readBody(req, MAX_KEY_BODY_BYTES);
      if (!body) return refuse(413, 'BodyTooLarge', `a key is at most ${MAX_KEY_BODY_BYTES} bytes`);
      key = body.toString('latin1');
      body.fill(0);
      if (!isApiKey(key))
        return refuse(
          400,
          'KeyMalformed',
          'the key must be 1 to 4096 visible ASCII characters (no spaces or newlines)',
        );
    }
    const run = this.#queue.then(() => this.#write(id, key));
    this.#queue = run.catch(() => undefined);
    const r = await run;
    if (r.status === 200)
      this.#o.logger.info(key ? 'direct key set' : 'direct key removed', { route: id, by: who });
    return r;
  }

  #write(id: string, key: string | undefined): Reply {
    const declared = declaredDirect(this.#o.keysPath, this.#o.uid);
    if (!declared.has(id))
      return refuse(404, 'UnknownRoute', `no Direct ModelKey named ${id} is deployed on this server`);
    const keys = readDirectKeys(this.#o.directPath, this.#o.uid);
    // Keys of routes the operator no longer declares go with this write.
    for (const k of [...keys.keys()]) if (!declared.has(k)) keys.delete(k);
    if (key === undefined) keys.delete(id);
    else keys.set(id, key);
    writeDirectKeys(this.#o.directPath, keys);
    return { status: 200, body: { route: id, hasKey: key !== undefined } };
  }

  #allow(peer: string): boolean {
    const now = (this.#o.now ?? Date.now)();
    const limit = this.#o.perMinute ?? 30;
    const h = this.#hits.get(peer);
    if (!h || now - h.start >= 60_000) {
      if (this.#hits.size > 1000) this.#hits.clear();
      this.#hits.set(peer, { start: now, count: 1 });
      return true;
    }
    h.count++;
    return h.count <= limit;
  }
}

function send(res: ServerResponse, r: Reply): void {
  const html = r.headers?.['content-type']?.startsWith('text/html') === true;
  const body = html ? INTAKE_PAGE : `${JSON.stringify(r.body)}\n`;
  res.writeHead(r.status, {
    'content-type': 'application/json',
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    'content-security-policy':
      "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
    ...r.headers,
  });
  res.end(body);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
