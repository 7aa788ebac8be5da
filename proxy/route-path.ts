import { CREDENTIAL_QUERY_PARAMS } from '../common/providers.ts';

/**
 * Splitting `/proxy/<id>/<path>?<query>` without a URL parser (hot path): the id is looked
 * up as-is in the route map, so an encoded or traversing id simply matches nothing.
 */
export const PROXY_PREFIX = '/proxy/';

export type Target =
  | { readonly ok: true; readonly id: string; readonly path: string; readonly query: string }
  | { readonly ok: false; readonly reason: 'not_found' | 'bad_path' };

const NOT_FOUND: Target = { ok: false, reason: 'not_found' };
const BAD_PATH: Target = { ok: false, reason: 'bad_path' };
const CREDENTIAL_PARAMS: ReadonlySet<string> = new Set<string>(CREDENTIAL_QUERY_PARAMS);

export function parseTarget(url: string): Target {
  if (!url.startsWith(PROXY_PREFIX)) return NOT_FOUND;
  const q = url.indexOf('?');
  const pathEnd = q === -1 ? url.length : q;
  let idEnd = url.indexOf('/', PROXY_PREFIX.length);
  if (idEnd === -1 || idEnd > pathEnd) idEnd = pathEnd;
  const id = url.slice(PROXY_PREFIX.length, idEnd);
  if (id === '') return NOT_FOUND;
  const path = url.slice(idEnd, pathEnd);
  if (!safePath(path)) return BAD_PATH;
  if (q === -1) return { ok: true, id, path, query: '' };
  const query = stripCredentialParams(url.slice(q + 1));
  if (query === null) return BAD_PATH;
  return { ok: true, id, path, query };
}

/**
 * The path is appended to the route's base path, so it must not climb out of it: no `.` or
 * `..` segment (also percent-encoded), no backslash (some servers treat it as `/`).
 */
export function safePath(path: string): boolean {
  if (path.includes('\\')) return false;
  if (!path.includes('.') && !path.includes('%')) return true;
  for (const seg of path.split('/')) {
    if (seg === '' || (!seg.includes('.') && !seg.includes('%'))) continue;
    let s: string;
    try {
      s = decodeURIComponent(seg);
    } catch {
      return false;
    }
    if (s === '.' || s === '..' || s.includes('/') || s.includes('\\')) return false;
  }
  return true;
}

/**
 * Removes every credential parameter (`key`, `api_key`, `access_token`, … also
 * percent-encoded or in another case): Gemini accepts `?key=`, and LiteLLM once leaked such
 * keys through logs. Returns the remaining query (maybe empty) or null when a parameter name
 * cannot be decoded.
 */
export function stripCredentialParams(query: string): string | null {
  if (query === '') return '';
  let out = '';
  for (const part of query.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const rawName = eq === -1 ? part : part.slice(0, eq);
    let name: string;
    try {
      name = decodeURIComponent(rawName.replaceAll('+', ' '));
    } catch {
      return null;
    }
    if (CREDENTIAL_PARAMS.has(name.trim().toLowerCase().replace(/[-_.]/g, ''))) continue;
    out = out === '' ? part : `${out}&${part}`;
  }
  return out;
}
