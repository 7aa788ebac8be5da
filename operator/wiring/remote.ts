/**
 * The controllers' `Remote` port over SSH (operator/ssh). Every session is short: opened for
 * one step, closed at its end; every session but the rescue one verifies the pinned host key.
 */
import { posix } from 'node:path';
import type { DeployBundle, OsTarget, Remote, RescueResult } from '../controllers/ports.ts';
import { CannesError } from '../lib/errors.ts';
import type { Secret } from '../lib/secret.ts';
import { parsePublicKey } from '../ssh/keys.ts';
import { runScript, runScriptOk, shq, writeFileAtomic } from '../ssh/remote.ts';
import { rescueKeygen } from '../ssh/rescue.ts';
import { type RotationStore, rotateSshKey, sshRotationRemote } from '../ssh/rotation.ts';
import {
  type ConnectOptions,
  connectPinned,
  connectRescueAcceptingUnknownHostKey,
  type SshSession,
  type SshTarget,
} from '../ssh/session.ts';

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
    const session = await connectPinned(
      this.#target(target.ipv4),
      { privateKey: target.privateKey, hostKey: parsePublicKey(target.hostKey) },
      this.#o.connect ?? {},
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
