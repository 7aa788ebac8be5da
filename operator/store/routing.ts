import { webcrypto } from 'node:crypto';
import { CannesError } from '../../common/errors.ts';
import type { Keyring } from './keyring.ts';

/**
 * The routing fields of a Vps row (where the operator connects and which host key it trusts
 * there) bound to the master key. A write to Postgres alone could otherwise move the next
 * deploy, with the key file, to another host (issue 19 item 3, docs/security.md).
 *
 * `routing_mac` = base64url(HMAC-SHA-256(K, canonical(uid, server_id, ipv4, host_public_key)))
 * with K derived by HKDF from master key `routing_kid` (keyring.ts). Checked on every read of
 * the row; every write of one of the fields first checks the old MAC (so an operator write
 * never launders a field changed behind its back), then writes the new MAC with the active
 * key; `rekey` moves MACs to the active key after checking them with the old one.
 *
 * A row whose routing fields are all NULL (nothing recorded yet) needs no MAC.
 */

export interface RoutingFields {
  readonly uid: string;
  readonly serverId: number | null;
  readonly ipv4: string | null;
  readonly hostPublicKey: string | null;
}

export interface RoutingMac {
  readonly kid: string;
  readonly mac: string;
}

export const ROUTING_UNAUTHENTICATED = 'RoutingFieldsUnauthenticated';

function canonical(f: RoutingFields): Uint8Array {
  return new TextEncoder().encode(
    JSON.stringify(['cannes-routing-v1', f.uid, f.serverId, f.ipv4, f.hostPublicKey]),
  );
}

export function routingEmpty(f: RoutingFields): boolean {
  return f.serverId === null && f.ipv4 === null && f.hostPublicKey === null;
}

export async function routingMac(keyring: Keyring, f: RoutingFields): Promise<RoutingMac> {
  const kid = keyring.activeKid;
  const key = keyring.macKey(kid);
  if (key === undefined) throw new CannesError('KeyringInconsistent', `no MAC key for master key ${kid}`);
  const sig = await webcrypto.subtle.sign('HMAC', key, canonical(f));
  return { kid, mac: Buffer.from(sig).toString('base64url') };
}

/**
 * Throws `RoutingFieldsUnauthenticated` unless the MAC matches. The message names the row
 * and what to do, never a key; the addresses are not secret but are left out too (the row is
 * the attacker's text).
 */
export async function verifyRouting(
  keyring: Keyring,
  f: RoutingFields,
  stored: { kid: string | null; mac: string | null },
): Promise<void> {
  if (routingEmpty(f) && stored.mac === null) return;
  const refuse = (why: string): CannesError =>
    new CannesError(
      ROUTING_UNAUTHENTICATED,
      `the store row of Vps ${f.uid} has server id, address or host key ${why}: refusing to ` +
        'connect to it (a write to Postgres without the master key?). See docs/security.md, "Routing fields"',
    );
  if (stored.mac === null || stored.kid === null) throw refuse('without a MAC');
  const key = keyring.macKey(stored.kid);
  if (key === undefined)
    throw refuse(`MACed with master key ${JSON.stringify(stored.kid)}, not in the keyring`);
  const mac = Buffer.from(stored.mac, 'base64url');
  const ok = mac.length === 32 && (await webcrypto.subtle.verify('HMAC', key, mac, canonical(f)));
  if (!ok) throw refuse('that do not match their MAC');
}
