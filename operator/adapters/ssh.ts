/**
 * The controllers' `Remote` port over SSH (operator/ssh). Every session is short: opened for
 * one step, closed at its end; every session but the rescue one verifies the pinned host key.
 */
import { posix } from 'node:path';
import { CannesError, TerminalError } from '../../common/errors.ts';
import type { Secret } from '../../common/secret.ts';
import type {
  DeployBundle,
  OsTarget,
  Remote,
  RescueResult,
  TailnetJoinRequest,
  TailnetJoinResult,
} from '../controllers/ports.ts';
import { DIRECT_STATUS } from '../host/intake-unit.ts';
import {
  JOIN_EXIT,
  parseTailnetStatus,
  redactTailnetKeys,
  TAILNET_CHECK,
  TAILNET_JOIN,
  TAILNET_SERVE,
  TAILSCALE_KEYRING,
  TAILSCALE_REPO_KEY_ASC,
  TAILSCALE_SOURCES_LIST,
  tailnetGatewayUrl,
  tailscaleSourcesList,
} from '../host/tailnet.ts';
import { parsePublicKey } from '../ssh/keys.ts';
import { rescueKeygen } from '../ssh/rescue.ts';
import { type RotationStore, rotateSshKey, sshRotationRemote } from '../ssh/rotation.ts';
import {
  type ConnectOptions,
  connectPinned,
  connectRescueAcceptingUnknownHostKey,
  type SshSession,
  type SshTarget,
} from '../ssh/session.ts';
import { runScript, runScriptOk, shq, writeFileAtomic } from '../ssh/shell.ts';

export interface RemotePortOptions {
  readonly rotationStore: RotationStore;
  /** SSH port (22 on Hetzner; the rig may differ). */
  readonly port?: number;
  readonly connect?: ConnectOptions;
  /** How long the post-deploy health check may take (the gateway's cold start). */
  readonly verifyTimeoutMs?: number;
  readonly sleep?: (ms: number) => Promise<void>;
}

const defaultSleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class RemotePort implements Remote {
  readonly #o: RemotePortOptions;

  constructor(o: RemotePortOptions) {
    this.#o = o;
  }

  #target(ipv4: string): SshTarget {
    return this.#o.port === undefined ? { host: ipv4 } : { host: ipv4, port: this.#o.port };
  }

  async #withOs<R>(target: OsTarget, fn: (s: SshSession) => Promise<R>): Promise<R> {
    // A server just reset may still be booting: wait for its sshd (port 22 probed, no SSH
    // attempt until it answers). The step runs off the workers, so the wait holds none.
    const session = await connectPinned(
      this.#target(target.ipv4),
      { privateKey: target.privateKey, hostKey: parsePublicKey(target.hostKey) },
      { retryForMs: 300_000, ...this.#o.connect },
    );
    try {
      return await fn(session);
    } finally {
      session.close();
    }
  }

  async rescueKeygen(ipv4: string, rootPassword: Secret): Promise<RescueResult> {
    // The one unpinned session (docs/design.md promise 8): one-time password, rescue check inside.
    const session = await connectRescueAcceptingUnknownHostKey(this.#target(ipv4), rootPassword, {
      retryForMs: 300_000,
      ...this.#o.connect,
    });
    try {
      const r = await rescueKeygen(session);
      return { privateKey: r.privateKey, publicKey: r.publicKey.line, osHostKey: r.osHostKey.line };
    } finally {
      session.close();
    }
  }

  async readFile(target: OsTarget, path: string): Promise<Secret | undefined> {
    return this.#withOs(target, async (s) => {
      const exists = await runScript(s, '[ -e "$1" ]', { args: [path] });
      if (exists.exitCode !== 0) return undefined;
      return s.execForSecret(`cat -- ${shq(path)}`, { maxOutputBytes: 1024 * 1024 });
    });
  }

  async deploy(target: OsTarget, bundle: DeployBundle): Promise<void> {
    await this.#withOs(target, async (s) => {
      if (bundle.prepare !== undefined) {
        // Before any file: a runtime that cannot be installed leaves the server as it was.
        const r = await runScript(s, bundle.prepare, { timeoutMs: 900_000 });
        if (r.exitCode !== 0) {
          throw new CannesError(
            'RuntimeInstallFailed',
            `installing the proxy's Node runtime failed (exit ${r.exitCode ?? r.signal ?? 'unknown'}): ${r.stderr.trim().slice(-500)}`,
          );
        }
      }
      const dirs = [...new Set(bundle.files.map((f) => posix.dirname(f.path)))];
      await runScriptOk(s, 'for d in "$@"; do [ -d "$d" ] || install -d -m 0755 -- "$d"; done', {
        args: dirs,
        what: 'creating folders',
      });
      for (const f of bundle.files) await writeFileAtomic(s, f.path, f.content, f.mode, f.owner);
      await runScriptOk(s, bundle.activate, {
        what: 'starting the proxy and the gateway',
        timeoutMs: 300_000,
      });
      const sleep = this.#o.sleep ?? defaultSleep;
      const deadline = Date.now() + (this.#o.verifyTimeoutMs ?? 180_000);
      for (;;) {
        const r = await runScript(s, bundle.verify, { timeoutMs: 30_000 });
        if (r.exitCode === 0) return;
        if (Date.now() > deadline) {
          throw new CannesError(
            'GatewayUnhealthy',
            `the gateway or the proxy did not become healthy: ${r.stderr.trim().slice(-300) || `exit ${r.exitCode}`}`,
          );
        }
        await sleep(2000);
      }
    });
  }

  async joinTailnet(target: OsTarget, req: TailnetJoinRequest): Promise<TailnetJoinResult> {
    return this.#withOs(target, async (s) => {
      await runScriptOk(s, 'install -d -m 0755 /etc/apt/keyrings /etc/apt/sources.list.d', {
        what: 'creating apt folders',
      });
      await writeFileAtomic(s, TAILSCALE_KEYRING, TAILSCALE_REPO_KEY_ASC, 0o644, '0:0');
      await writeFileAtomic(s, TAILSCALE_SOURCES_LIST, tailscaleSourcesList(), 0o644, '0:0');
      const key = req.authKey;
      const r = await runScript(s, TAILNET_JOIN, {
        args: [req.loginServer, req.hostname, req.tags.join(','), key ? '1' : '0'],
        ...(key ? { stdin: key } : {}),
        timeoutMs: 300_000,
        maxOutputBytes: 4 * 1024 * 1024,
      });
      if (r.exitCode !== 0) {
        // tailscale does not echo the key; the filter is for whatever else might.
        let err = r.stderr.trim().slice(-400);
        if (key) err = err.replaceAll(key.reveal(), '[redacted]');
        err = redactTailnetKeys(err);
        if (r.exitCode === JOIN_EXIT.keyRequired)
          throw new TerminalError(
            'TailnetAuthKeyRequired',
            'the server is not on the tailnet and its auth key Secret has no key: put a new auth key there',
          );
        if (r.exitCode === JOIN_EXIT.notInstallable)
          throw new TerminalError('TailscaleNotInstallable', `cannot install tailscale: ${err}`);
        if (r.exitCode === JOIN_EXIT.joinRefused && /invalid authkey/i.test(err))
          throw new TerminalError(
            'TailnetAuthKeyRejected',
            `the tailnet's control server refused the auth key (${/one-off key already used/.test(err) ? 'a one-off key already used' : 'invalid, expired or revoked'}): make a new one-off, pre-authorised key and put it in the Secret`,
          );
        if (r.exitCode === JOIN_EXIT.joinRefused && /tags? .*(invalid|not permitted)/i.test(err))
          throw new TerminalError(
            'TailnetTagsRefused',
            `the tailnet refused the tags ${req.tags.join(',') || '(none)'}: the auth key must allow them (${err})`,
          );
        throw new CannesError('TailnetJoinFailed', `joining the tailnet failed (exit ${r.exitCode}): ${err}`);
      }
      const st = parseTailnetStatus(r.stdout);
      if (st.backendState !== 'Running')
        throw new CannesError('TailnetJoinFailed', `tailscaled is ${st.backendState}, not Running`);
      await runScriptOk(s, TAILNET_SERVE, {
        args: [String(req.gatewayPort), st.httpsAvailable ? '1' : '0'],
        what: 'tailscale serve',
        timeoutMs: 60_000,
      });
      const url = tailnetGatewayUrl(st.dnsName, st.httpsAvailable);
      const check = await runScript(s, TAILNET_CHECK, {
        args: [url, st.dnsName, st.httpsAvailable ? '443' : '80', st.ipv4 ?? '127.0.0.1'],
        timeoutMs: 60_000,
      });
      return {
        dnsName: st.dnsName,
        httpsAvailable: st.httpsAvailable,
        gatewayReachable: check.exitCode === 0,
      };
    });
  }

  async directKeyStatus(target: OsTarget): Promise<Record<string, boolean>> {
    return this.#withOs(target, async (s) => {
      const r = await runScript(s, DIRECT_STATUS, { timeoutMs: 60_000 });
      if (r.exitCode !== 0)
        throw new CannesError(
          'DirectKeyStatusFailed',
          `asking the server which Direct routes hold a key failed: ${r.stderr.trim().slice(-300)}`,
        );
      return parseDirectStatus(r.stdout);
    });
  }

  async rotate(vpsUid: string, target: Omit<OsTarget, 'privateKey'>): Promise<void> {
    await rotateSshKey({
      store: this.#o.rotationStore,
      remote: sshRotationRemote(
        this.#target(target.ipv4),
        parsePublicKey(target.hostKey),
        this.#o.connect ?? {},
      ),
      vpsId: vpsUid,
    });
  }
}

/** The helper's one line, `{"<id>":true|false}`: anything else is refused, booleans only pass. */
export function parseDirectStatus(stdout: string): Record<string, boolean> {
  let v: unknown;
  try {
    v = JSON.parse(stdout.trim());
  } catch {
    throw new CannesError('DirectKeyStatusFailed', "the server's Direct key report is not JSON");
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw new CannesError('DirectKeyStatusFailed', "the server's Direct key report is not an object");
  const out: Record<string, boolean> = {};
  for (const [k, b] of Object.entries(v)) {
    if (typeof b !== 'boolean' || !/^[a-z0-9.-]{1,253}$/.test(k))
      throw new CannesError(
        'DirectKeyStatusFailed',
        "the server's Direct key report holds something other than booleans",
      );
    out[k] = b;
  }
  return out;
}
