/**
 * The controllers' `Hcloud` port on the typed client (operator/hcloud). Every call waits for
 * its action, so a step's result is final when the port returns.
 */

import { CannesError } from '../../common/errors.ts';
import type { Secret } from '../../common/secret.ts';
import { LABEL_VPS_UID } from '../api/schema.ts';
import type { CloudServer, Hcloud } from '../controllers/ports.ts';
import type { HcloudClient } from '../hcloud/client.ts';
import { isHcloudError } from '../hcloud/errors.ts';
import type { Server } from '../hcloud/types.ts';

const toCloud = (s: Server): CloudServer => ({
  id: s.id,
  name: s.name,
  status: s.status,
  ipv4: s.public_net.ipv4?.ip ?? null,
  rescueEnabled: s.rescue_enabled,
  architecture: architectureOf(s),
});

function architectureOf(s: Server): 'x86' | 'arm' {
  const a = s.server_type.architecture;
  if (a === 'x86' || a === 'arm') return a;
  // A new architecture needs a Node build and a pinned checksum first: refuse, do not guess.
  throw new CannesError(
    'UnsupportedArchitecture',
    `server type ${s.server_type.name} has architecture ${JSON.stringify(a).slice(0, 32)}; Cannes knows x86 and arm`,
  );
}

/** Kubernetes uids are RFC 4122 UUIDs: safe as a label value and inside a selector. */
const UID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export class HcloudPort implements Hcloud {
  readonly #c: HcloudClient;

  constructor(client: HcloudClient) {
    this.#c = client;
  }

  async findServerByVpsUid(token: Secret, uid: string): Promise<CloudServer | null> {
    if (!UID.test(uid)) throw new TypeError('Vps uid is not a UUID');
    const found = await this.#c.listAllServers(token, { labelSelector: `${LABEL_VPS_UID}==${uid}` });
    // Oldest first: if two ever existed, the reconcile adopts one deterministically.
    const s = found.sort((a, b) => a.id - b.id)[0];
    return s ? toCloud(s) : null;
  }

  async createServer(
    token: Secret,
    req: {
      name: string;
      serverType: string;
      location: string;
      image: string;
      labels: Record<string, string>;
    },
  ): Promise<CloudServer> {
    const r = await this.#c.createServer(token, {
      name: req.name,
      server_type: req.serverType,
      location: req.location,
      image: req.image,
      labels: req.labels,
      // Powered off: enable_rescue + poweron then boots straight into rescue (one boot saved).
      start_after_create: false,
    });
    await this.#c.waitForActions(token, [r.action, ...r.nextActions]);
    // The create answer already carries the id and the IPv4 (Hetzner assigns it at create);
    // with start_after_create false the finished create leaves the server off. A GET would
    // tell nothing more, so it is made only when the answer had no IPv4.
    if (r.server.public_net.ipv4) return { ...toCloud(r.server), status: 'off' };
    return toCloud(await this.#c.getServer(token, r.server.id));
  }

  async getServer(token: Secret, id: number): Promise<CloudServer | null> {
    try {
      return toCloud(await this.#c.getServer(token, id));
    } catch (err) {
      if (isHcloudError(err, 'not_found')) return null;
      throw err;
    }
  }

  async enableRescue(token: Secret, id: number): Promise<Secret> {
    const r = await this.#c.enableRescue(token, id);
    await this.#c.waitForActions(token, [r.action]);
    return r.rootPassword;
  }

  async powerOnOrReset(token: Secret, id: number, knownStatus?: string): Promise<void> {
    const status = knownStatus ?? (await this.#c.getServer(token, id)).status;
    if (status === 'off') {
      // Not polled: the caller's next move is to wait for the rescue system's sshd, and a server
      // that was off answers on port 22 only once this power-on booted it (into rescue). That
      // answer is the action's end; polling it too would only spend calls (issue 24).
      await this.#c.powerOn(token, id);
      return;
    }
    // A running server is reset, and waited for: until the reset is done its old system may still
    // answer on port 22, and it must never be sent the rescue password.
    await this.#c.waitForActions(token, [await this.#c.reset(token, id)]);
  }

  async reboot(token: Secret, id: number): Promise<void> {
    // A hard reset, not an ACPI reboot: the rescue system may ignore ACPI, and nothing on
    // the disk is mid-write (the rescue session unmounted it).
    await this.#c.waitForActions(token, [await this.#c.reset(token, id)]);
  }

  async deleteServer(token: Secret, id: number): Promise<void> {
    try {
      const action = await this.#c.deleteServer(token, id);
      if (action) await this.#c.waitForActions(token, [action]);
    } catch (err) {
      if (isHcloudError(err, 'not_found')) return;
      throw err;
    }
  }
}
