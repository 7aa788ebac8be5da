import { CannesError } from '../../common/errors.ts';
import { isSecret, type Secret } from '../../common/secret.ts';
import type { ExecOptions, ExecResult } from './session.ts';

/** What remote steps need from a session (SshSession has it; unit tests record it). */
export interface RemoteShell {
  exec(command: string, options?: ExecOptions): Promise<ExecResult>;
}

/**
 * Remote steps with typed results. Scripts are bash, passed as one quoted argument (never
 * containing secrets: command lines are visible in `ps` on the server); secret content always
 * travels over stdin.
 */

/** Quotes one word for a POSIX shell. */
export function shq(word: string): string {
  if (word.includes('\0')) throw new CannesError('InvalidArgument', 'NUL byte in a shell word');
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

export interface ScriptOptions extends ExecOptions {
  /** Positional parameters ($1, $2, ...) for the script. */
  readonly args?: readonly string[];
}

/** Runs a bash script (`set -euo pipefail` prepended) and returns whatever happened. */
export function runScript(
  session: RemoteShell,
  script: string,
  options: ScriptOptions = {},
): Promise<ExecResult> {
  return session.exec(scriptCommand(script, options.args), options);
}

/** Like runScript, but a non-zero exit is a `RemoteScriptFailed` error carrying the stderr tail. */
export async function runScriptOk(
  session: RemoteShell,
  script: string,
  options: ScriptOptions & { readonly what?: string } = {},
): Promise<ExecResult> {
  const r = await runScript(session, script, options);
  if (r.exitCode !== 0) {
    throw new CannesError(
      'RemoteScriptFailed',
      `${options.what ?? 'remote script'} failed (exit ${r.exitCode ?? r.signal ?? 'unknown'}): ${r.stderr.trim().slice(-500)}`,
    );
  }
  return r;
}

export function scriptCommand(script: string, args: readonly string[] = []): string {
  return ['bash', '-c', shq(`set -euo pipefail\n${script}`), 'cannes', ...args.map(shq)].join(' ');
}

const OWNER = /^[a-z_][a-z0-9_-]{0,31}(:[a-z_][a-z0-9_-]{0,31})?$|^\d{1,10}(:\d{1,10})?$/;

function assertRemotePath(path: string): void {
  if (!path.startsWith('/') || path.includes('\n') || path.split('/').includes('..') || path.endsWith('/')) {
    throw new CannesError('InvalidArgument', `not an absolute file path: ${JSON.stringify(path)}`);
  }
}

/** What the session writes to stdin, in bytes (a string travels as UTF-8). */
function byteLength(content: string | Buffer | Secret): number {
  const v = isSecret(content) ? content.reveal() : content;
  return typeof v === 'string' ? Buffer.byteLength(v, 'utf8') : v.length;
}

/**
 * Writes a file atomically: a temp file in the same directory is created (mktemp: 0600), given
 * its owner and mode BEFORE any content lands, filled from stdin, flushed to disk, then renamed
 * over the target. A reader sees the old file or the new one, never a partial or wrongly
 * permissioned one. The content's length travels as an argument and is checked before the
 * rename: when the operator dies mid-send, sshd closes the command's stdin and `cat` ends as if
 * the content were complete, so without the check the cut file would replace the good one. A
 * crash leaves at most a `.cannes-tmp.*` file (mode 0600) that the next write does not depend
 * on. The directory must exist.
 */
export async function writeFileAtomic(
  session: RemoteShell,
  path: string,
  content: string | Buffer | Secret,
  mode: number,
  owner: string,
): Promise<void> {
  assertRemotePath(path);
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777)
    throw new CannesError('InvalidArgument', 'bad file mode');
  if (!OWNER.test(owner)) throw new CannesError('InvalidArgument', `bad owner ${JSON.stringify(owner)}`);
  const script = `
p=$1 mode=$2 owner=$3 size=$4
d=$(dirname -- "$p")
t=$(mktemp -- "$d/.cannes-tmp.XXXXXXXX")
trap 'rm -f -- "$t"' EXIT
chown -- "$owner" "$t"
chmod -- "$mode" "$t"
cat >"$t"
got=$(stat -c %s -- "$t")
[ "$got" = "$size" ] || { echo "short write: $got of $size bytes arrived for $p" >&2; exit 1; }
sync -- "$t"
mv -f -- "$t" "$p"
trap - EXIT
sync -- "$d" || true
`;
  await runScriptOk(session, script, {
    args: [path, mode.toString(8).padStart(4, '0'), owner, String(byteLength(content))],
    stdin: content,
    what: `writing ${path}`,
  });
}

/** Reads a small remote file (not for secrets: see SshSession.execForSecret). */
export async function readRemoteFile(
  session: RemoteShell,
  path: string,
  options: { readonly missingOk?: boolean; readonly maxBytes?: number } = {},
): Promise<string | undefined> {
  assertRemotePath(path);
  const max = options.maxBytes ?? 1024 * 1024;
  const r = await runScript(session, 'if [ -e "$1" ]; then cat -- "$1"; else exit 3; fi', {
    args: [path],
    maxOutputBytes: max,
  });
  if (r.exitCode === 3 && options.missingOk) return undefined;
  if (r.exitCode !== 0)
    throw new CannesError('RemoteScriptFailed', `cannot read ${path}: ${r.stderr.trim().slice(-300)}`);
  if (r.stdoutTruncated) throw new CannesError('RemoteOutputTooLarge', `${path} is larger than ${max} bytes`);
  return r.stdout;
}

export interface RemoteStat {
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly type: 'file' | 'directory' | 'other';
}

/** stat(1) of a remote path, parsed; undefined when it does not exist. */
export async function statRemote(session: RemoteShell, path: string): Promise<RemoteStat | undefined> {
  assertRemotePath(path.length > 1 ? path.replace(/\/$/, '') : path);
  const r = await runScript(session, 'if [ -e "$1" ]; then stat -c "%a %u %g %F" -- "$1"; else exit 3; fi', {
    args: [path],
  });
  if (r.exitCode === 3) return undefined;
  const m = /^([0-7]{1,4}) (\d+) (\d+) (.+)\n?$/.exec(r.stdout);
  if (r.exitCode !== 0 || !m) throw new CannesError('RemoteOutputInvalid', `cannot stat ${path}`);
  const kind = m[4] ?? '';
  return {
    mode: Number.parseInt(m[1] ?? '', 8),
    uid: Number(m[2]),
    gid: Number(m[3]),
    type: kind.startsWith('regular') ? 'file' : kind === 'directory' ? 'directory' : 'other',
  };
}
