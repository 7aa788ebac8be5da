import { timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import ssh2, { type ConnectConfig, type ServerHostKeyAlgorithm } from 'ssh2';
import { CannesError, TerminalError } from '../../common/errors.ts';
import { isSecret, Secret } from '../../common/secret.ts';
import { cancelled, cancelSignal } from '../lib/cancel.ts';
import { fingerprintOf, type PublicKey } from './keys.ts';

/**
 * SSH sessions on ssh2. ssh2 accepts any host key unless `hostVerifier` is set, so every
 * connection made here sets one: either the pinned OS host key (`connectPinned`) or, for the
 * one short rescue session of docs/design.md promise 8, `connectRescueAcceptingUnknownHostKey`.
 * There is no third way to open a session.
 */

export interface SshTarget {
  readonly host: string;
  readonly port?: number;
  /** Always root on our servers; kept explicit for tests. */
  readonly username?: string;
}

export interface ConnectOptions {
  /** Per attempt: TCP connect + handshake + auth. */
  readonly readyTimeoutMs?: number;
  /** Keep trying while the server boots (connection refused, unreachable, timeouts) until then. */
  readonly retryForMs?: number;
  readonly keepaliveIntervalMs?: number;
  /** Observes retries (no secrets are passed). */
  readonly onRetry?: (attempt: number, reason: string, delayMs: number) => void;
  /** Observes every connection attempt (a TCP connect to sshd), by how it authenticates. */
  readonly onAttempt?: (auth: 'pinned' | 'rescue') => void;
}

export interface ExecOptions {
  /** Written to the command's stdin, then closed. Secrets are revealed only onto the channel. */
  readonly stdin?: string | Buffer | Secret;
  readonly timeoutMs?: number;
  /** Per stream; the rest is discarded and the result says it was truncated. */
  readonly maxOutputBytes?: number;
}

export interface ExecResult {
  /** null when the command died by a signal or the channel closed without a status. */
  readonly exitCode: number | null;
  readonly signal: string | undefined;
  readonly stdout: string;
  readonly stderr: string;
  readonly stdoutTruncated: boolean;
  readonly stderrTruncated: boolean;
}

const DEFAULT_MAX_OUTPUT = 1024 * 1024;

/** One authenticated SSH connection. `close()` it (sessions are short). */
export class SshSession {
  readonly #client: ssh2.Client;
  readonly #target: string;
  /** SHA256 fingerprint of the host key this session verified or (rescue) saw. */
  readonly hostKeyFingerprint: string;
  #closed = false;

  constructor(client: ssh2.Client, target: string, hostKeyFingerprint: string) {
    this.#client = client;
    this.#target = target;
    this.hostKeyFingerprint = hostKeyFingerprint;
    client.on('close', () => {
      this.#closed = true;
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Runs `command` through the remote user's shell. Output is decoded as UTF-8. */
  async exec(command: string, options: ExecOptions = {}): Promise<ExecResult> {
    const r = await this.#exec(command, options);
    return { ...r, stdout: r.stdout.toString('utf8') };
  }

  /**
   * Runs `command` whose stdout is secret (a private key being read back): stdout comes back
   * as a `Secret` only when the command exits 0; stderr is never expected to hold secrets.
   */
  async execForSecret(command: string, options: ExecOptions = {}): Promise<Secret> {
    const r = await this.#exec(command, options);
    if (r.exitCode !== 0 || r.stdoutTruncated) {
      r.stdout.fill(0);
      throw new CannesError(
        'SshCommandFailed',
        `remote command failed on ${this.#target} (exit ${r.exitCode ?? r.signal}): ${tail(r.stderr)}`,
      );
    }
    const s = new Secret(r.stdout.toString('utf8'));
    r.stdout.fill(0);
    return s;
  }

  #exec(command: string, options: ExecOptions): Promise<Omit<ExecResult, 'stdout'> & { stdout: Buffer }> {
    if (this.#closed)
      return Promise.reject(new CannesError('SshDisconnected', `session to ${this.#target} closed`));
    const max = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;
    const timeoutMs = options.timeoutMs ?? 120_000;
    const cancel = cancelSignal();
    if (cancel?.aborted) return Promise.reject(cancelled());
    return new Promise((resolve, reject) => {
      this.#client.exec(command, (err, stream) => {
        if (err) {
          reject(
            new CannesError('SshExecFailed', `cannot start a command on ${this.#target}: ${err.message}`),
          );
          return;
        }
        const out = new Collector(max);
        const errOut = new Collector(max);
        let exitCode: number | null = null;
        let signal: string | undefined;
        const timer = setTimeout(() => {
          stream.close();
          reject(
            new CannesError(
              'SshTimeout',
              `remote command on ${this.#target} did not finish in ${timeoutMs} ms`,
            ),
          );
        }, timeoutMs);
        // A command that exits before reading its input closes the channel under a pending
        // write: the failure is reported by the exit status, never as an unhandled 'error'.
        stream.on('error', () => {});
        // A cancelled reconcile (lost lease, SIGTERM) stops waiting for the command: the channel
        // is closed, and what a command leaves half done is what a crash leaves (resumable).
        const onAbort = () => {
          clearTimeout(timer);
          stream.close();
          reject(cancelled());
        };
        cancel?.addEventListener('abort', onAbort, { once: true });
        stream.on('close', () => cancel?.removeEventListener('abort', onAbort));
        stream.on('data', (c: Buffer) => out.push(c));
        stream.stderr.on('data', (c: Buffer) => errOut.push(c));
        stream.on('exit', (code: unknown, sig: unknown) => {
          if (typeof code === 'number') exitCode = code;
          if (typeof sig === 'string') signal = sig;
        });
        stream.on('close', () => {
          clearTimeout(timer);
          resolve({
            exitCode,
            signal,
            stdout: out.buffer(),
            stderr: errOut.buffer().toString('utf8'),
            stdoutTruncated: out.truncated,
            stderrTruncated: errOut.truncated,
          });
        });
        const input = options.stdin;
        if (input === undefined) stream.end();
        else stream.end(isSecret(input) ? input.reveal() : input);
      });
    });
  }

  close(): void {
    if (!this.#closed) this.#client.end();
    this.#closed = true;
  }
}

class Collector {
  readonly #chunks: Buffer[] = [];
  #size = 0;
  truncated = false;
  readonly #max: number;
  constructor(max: number) {
    this.#max = max;
  }
  push(c: Buffer): void {
    const room = this.#max - this.#size;
    if (room <= 0) {
      this.truncated = true;
      return;
    }
    const part = c.length > room ? c.subarray(0, room) : c;
    if (part.length < c.length) this.truncated = true;
    this.#chunks.push(Buffer.from(part));
    this.#size += part.length;
  }
  buffer(): Buffer {
    const b = Buffer.concat(this.#chunks);
    for (const c of this.#chunks) c.fill(0);
    return b;
  }
}

function tail(s: string, n = 400): string {
  const t = s.trim();
  return t.length > n ? `…${t.slice(-n)}` : t;
}

/** The one way to authenticate to an installed OS: our private key, and its pinned host key. */
export function connectPinned(
  target: SshTarget,
  credentials: { readonly privateKey: Secret; readonly hostKey: PublicKey },
  options: ConnectOptions = {},
): Promise<SshSession> {
  const pinned = credentials.hostKey;
  return connectWithRetry(
    target,
    options,
    'pinned',
    () => ({ privateKey: credentials.privateKey.reveal() }),
    // Only the pinned key's algorithms are offered, so the server must present that key.
    hostKeyAlgorithmsFor(pinned.type),
    (blob) => blob.length === pinned.blob.length && timingSafeEqual(blob, pinned.blob),
    pinned.fingerprint,
  );
}

/**
 * docs/design.md promise 8's single exception: Hetzner publishes no host key for its rescue
 * system, so this session accepts whatever host key the rescue system presents. It is used
 * only with the one-time rescue root password, only for the short keygen step, and its caller
 * must check that it landed in the rescue system before trusting anything it reads.
 */
export function connectRescueAcceptingUnknownHostKey(
  target: SshTarget,
  rootPassword: Secret,
  options: ConnectOptions = {},
): Promise<SshSession> {
  return connectWithRetry(
    target,
    options,
    'rescue',
    () => ({ password: rootPassword.reveal(), tryKeyboard: false }),
    undefined,
    () => true,
    undefined,
  );
}

function hostKeyAlgorithmsFor(type: string): ServerHostKeyAlgorithm[] {
  switch (type) {
    case 'ssh-ed25519':
    case 'ecdsa-sha2-nistp256':
    case 'ecdsa-sha2-nistp384':
    case 'ecdsa-sha2-nistp521':
      return [type];
    case 'ssh-rsa':
      return ['rsa-sha2-512', 'rsa-sha2-256'];
    default:
      throw new TerminalError('SshKeyInvalid', `cannot pin a host key of type ${type}`);
  }
}

/** Errors worth retrying while a server boots: nothing answered yet, or it hung up early. */
function isTransient(err: Error & { code?: unknown; level?: unknown }): boolean {
  const code = typeof err.code === 'string' ? err.code : '';
  if (['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'ECONNRESET', 'EPIPE'].includes(code))
    return true;
  if (err.level === 'client-timeout') return true;
  return /Timed out while waiting for handshake|Connection lost before handshake|socket hang up/.test(
    err.message,
  );
}

/** Whether the port takes a TCP connection now (closed at once; nothing is sent). */
function portOpen(target: SshTarget, timeoutMs: number): Promise<boolean> {
  throwIfCancelledNow();
  return new Promise((resolve) => {
    const socket = net.connect({ host: target.host, port: target.port ?? 22 });
    const done = (open: boolean) => {
      socket.destroy();
      resolve(open);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

function throwIfCancelledNow(): void {
  if (cancelSignal()?.aborted) throw cancelled();
}

async function connectWithRetry(
  target: SshTarget,
  options: ConnectOptions,
  kind: 'pinned' | 'rescue',
  auth: () => Pick<ConnectConfig, 'privateKey' | 'password' | 'tryKeyboard'>,
  hostKeyAlgorithms: ServerHostKeyAlgorithm[] | undefined,
  acceptHostKey: (blob: Buffer) => boolean,
  expectedFingerprint: string | undefined,
): Promise<SshSession> {
  const deadline = Date.now() + (options.retryForMs ?? 0);
  let delay = 250;
  for (let attempt = 1; ; attempt++) {
    // A server still booting: wait for its port 22 to take a TCP connection before an SSH
    // attempt (no handshake, no credential sent), so SSH connections do not grow with boot time.
    if (
      options.retryForMs !== undefined &&
      Date.now() + delay <= deadline &&
      !(await portOpen(target, options.readyTimeoutMs ?? 10_000))
    ) {
      options.onRetry?.(attempt, `${target.host}:${target.port ?? 22} does not take connections yet`, delay);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 5000);
      continue;
    }
    options.onAttempt?.(kind);
    try {
      return await connectOnce(target, options, auth, hostKeyAlgorithms, acceptHostKey, expectedFingerprint);
    } catch (err) {
      const transient = err instanceof CannesError && err.reason === 'SshUnreachable';
      if (!transient || Date.now() + delay > deadline) throw err;
      options.onRetry?.(attempt, err.message, delay);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 5000);
    }
  }
}

function connectOnce(
  target: SshTarget,
  options: ConnectOptions,
  auth: () => Pick<ConnectConfig, 'privateKey' | 'password' | 'tryKeyboard'>,
  hostKeyAlgorithms: ServerHostKeyAlgorithm[] | undefined,
  acceptHostKey: (blob: Buffer) => boolean,
  expectedFingerprint: string | undefined,
): Promise<SshSession> {
  const where = `${target.host}:${target.port ?? 22}`;
  return new Promise((resolve, reject) => {
    const client = new ssh2.Client();
    let seen: string | undefined;
    let rejectedKey = false;
    let settled = false;
    const fail = (e: Error) => {
      if (settled) return;
      settled = true;
      client.end();
      reject(e);
    };
    client.once('ready', () => {
      if (settled) return;
      settled = true;
      resolve(new SshSession(client, where, seen ?? 'unknown'));
    });
    client.on('error', (err: Error & { level?: unknown }) => {
      if (rejectedKey) {
        fail(
          new TerminalError(
            'HostKeyMismatch',
            `host key of ${where} is ${seen ?? 'unknown'}, expected the pinned ${expectedFingerprint ?? '?'}: refusing to connect`,
          ),
        );
      } else if (err.level === 'client-authentication') {
        fail(new CannesError('SshAuthFailed', `${where} refused our credentials`, { cause: err }));
      } else if (isTransient(err)) {
        fail(new CannesError('SshUnreachable', `cannot reach ${where}: ${err.message}`, { cause: err }));
      } else {
        fail(new CannesError('SshFailed', `SSH to ${where} failed: ${err.message}`, { cause: err }));
      }
    });
    client.on('close', () => fail(new CannesError('SshUnreachable', `${where} closed the connection`)));
    const config: ConnectConfig = {
      host: target.host,
      port: target.port ?? 22,
      username: target.username ?? 'root',
      readyTimeout: options.readyTimeoutMs ?? 20_000,
      keepaliveInterval: options.keepaliveIntervalMs ?? 15_000,
      keepaliveCountMax: 3,
      hostVerifier: (blob: Buffer): boolean => {
        seen = fingerprintOf(blob);
        const ok = acceptHostKey(blob);
        if (!ok) rejectedKey = true;
        return ok;
      },
      ...auth(),
    };
    if (hostKeyAlgorithms) config.algorithms = { serverHostKey: hostKeyAlgorithms };
    try {
      client.connect(config);
    } catch (err) {
      fail(
        new CannesError(
          'SshFailed',
          `SSH to ${where} failed: ${err instanceof Error ? err.message : String(err)}`,
        ),
      );
    }
  });
}
