import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { CannesError } from '../common/errors.ts';
import {
  declaredDirect,
  INTAKE_PREFIX,
  KeyIntake,
  type PeerIdentity,
  readDirectKeys,
  writeDirectKeys,
} from './intake.ts';
import { createLogger } from './log.ts';
import { parseHostPort } from './net.ts';

/**
 * The bundle's two other commands (the proxy's own stays `cannes-proxy.mjs --keys ...`):
 *
 *   intake --keys FILE --direct-keys FILE --owners FILE [--listen 127.0.0.1:3102] [--tailscaled-socket PATH]
 *   direct-status --keys FILE --direct-keys FILE [--prune 1]
 *
 * `direct-status` is the root-only helper the operator runs over SSH: one JSON line,
 * `{"<ModelKey>":true|false}` for each Direct route declared, never a key. With `--prune 1`
 * (every deploy) keys of routes no longer declared are removed from the Direct keys file first.
 */
export const INTAKE_USAGE = `usage: node cannes-proxy.mjs intake --keys FILE --direct-keys FILE --owners FILE [--listen 127.0.0.1:3102] [--tailscaled-socket PATH]
       node cannes-proxy.mjs direct-status --keys FILE --direct-keys FILE [--prune 1]
`;

function flags(argv: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (let i = 0; i < argv.length; i += 2) {
    const f = argv[i] ?? '';
    const v = argv[i + 1];
    if (!f.startsWith('--') || v === undefined)
      throw new CannesError('InvalidArgument', `expected --flag value pairs, got ${JSON.stringify(f)}`);
    out.set(f, v);
  }
  return out;
}

function need(m: Map<string, string>, f: string): string {
  const v = m.get(f);
  if (!v) throw new CannesError('InvalidArgument', `${f} is required\n${INTAKE_USAGE}`);
  return v;
}

/** tailscaled's LocalAPI whois over its unix socket (what `tailscale whois --json` asks). */
export function localApiWhois(socketPath: string) {
  return (ip: string): Promise<PeerIdentity | undefined> =>
    new Promise((resolve, reject) => {
      const req = request(
        {
          socketPath,
          host: 'local-tailscaled.sock',
          path: `/localapi/v0/whois?addr=${encodeURIComponent(ip)}`,
          headers: { 'sec-tailscale': 'localapi' },
          timeout: 5000,
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => {
            if (text.length < 1 << 20) text += c;
          });
          res.on('end', () => {
            if (res.statusCode !== 200) return resolve(undefined);
            try {
              resolve(parseWhois(JSON.parse(text)));
            } catch {
              resolve(undefined);
            }
          });
        },
      );
      req.on('timeout', () => req.destroy(new CannesError('WhoisFailed', 'tailscaled did not answer whois')));
      req.on('error', () => reject(new CannesError('WhoisFailed', `cannot ask tailscaled (${socketPath})`)));
      req.end();
    });
}

/** `{Node:{Tags}, UserProfile:{LoginName}}`; a tagged node's user is the "tagged-devices" placeholder. */
export function parseWhois(v: unknown): PeerIdentity | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const r = v as { Node?: { Tags?: unknown }; UserProfile?: { LoginName?: unknown } };
  const tags = Array.isArray(r.Node?.Tags)
    ? r.Node.Tags.filter((t): t is string => typeof t === 'string')
    : [];
  const login = r.UserProfile?.LoginName;
  if (!r.Node) return undefined;
  return { tags, loginName: tags.length === 0 && typeof login === 'string' ? login : undefined };
}

export function readOwners(path: string): readonly string[] {
  try {
    const v: unknown = JSON.parse(readFileSync(path, 'utf8'));
    const owners = (v as { owners?: unknown }).owners;
    return Array.isArray(owners) ? owners.filter((o): o is string => typeof o === 'string') : [];
  } catch {
    // No config (or a broken one): nobody is an owner, every write is refused.
    return [];
  }
}

export async function intakeCommand(argv: readonly string[]): Promise<void> {
  const m = flags(argv);
  const uid = typeof process.getuid === 'function' ? process.getuid() : null;
  const ownersPath = need(m, '--owners');
  const intake = new KeyIntake({
    keysPath: need(m, '--keys'),
    directPath: need(m, '--direct-keys'),
    ownersOf: () => readOwners(ownersPath),
    whois: localApiWhois(m.get('--tailscaled-socket') ?? '/run/tailscale/tailscaled.sock'),
    uid,
    logger: createLogger({ level: 'info' }),
  });
  const at = parseHostPort(m.get('--listen') ?? '127.0.0.1:3102', '--listen');
  if (at.host !== '127.0.0.1' && at.host !== '::1')
    throw new CannesError(
      'InvalidArgument',
      '--listen must be a loopback address (tailscale serve is the way in)',
    );
  await intake.listen(at.host, at.port);
  process.stderr.write(
    `cannes key intake on ${at.host}:${at.port} (served at ${INTAKE_PREFIX}/ on the tailnet)\n`,
  );
}

export function directStatusCommand(argv: readonly string[]): void {
  const m = flags(argv);
  const uid = typeof process.getuid === 'function' ? process.getuid() : null;
  let declared: Set<string>;
  try {
    declared = declaredDirect(need(m, '--keys'), uid);
  } catch (err) {
    if (err instanceof CannesError && err.reason === 'KeyFileMissing') declared = new Set();
    else throw err;
  }
  const directPath = need(m, '--direct-keys');
  const have = readDirectKeys(directPath, uid);
  if (m.get('--prune') === '1' && [...have.keys()].some((id) => !declared.has(id))) {
    // A ModelKey deleted: its route left the key file, its key leaves the server too.
    for (const id of [...have.keys()]) if (!declared.has(id)) have.delete(id);
    writeDirectKeys(directPath, have);
  }
  const out: Record<string, boolean> = {};
  for (const id of [...declared].sort()) out[id] = have.has(id);
  process.stdout.write(`${JSON.stringify(out)}\n`);
}
