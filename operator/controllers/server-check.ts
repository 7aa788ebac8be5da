/**
 * Before the operator connects to a recorded server, and when it cannot reach it: is it still
 * there, at the recorded address? (docs/security.md, "Routing fields" and "A server that
 * vanished".) Asking needs the Hetzner token, which is purged after setup: without it the
 * routing MAC (operator/store/routing.ts) is the defence, and an unreachable server says how
 * to let the operator check.
 */
import { CannesError, TerminalError } from '../../common/errors.ts';
import type { Secret } from '../../common/secret.ts';
import {
  ANNOTATION_ARCHITECTURE,
  ANNOTATION_GATEWAY_URL,
  ANNOTATION_IPV4,
  ANNOTATION_RECREATE_SERVER,
  ANNOTATION_SERVER_GONE,
  ANNOTATION_SERVER_ID,
  ANNOTATION_SSH_HOST_KEY,
} from '../api/schema.ts';
import { DELIVERED_ANNOTATION } from './keys.ts';
import type { Hcloud, Kube, Store, VpsObject } from './ports.ts';

export interface ServerCheckDeps {
  readonly kube: Kube;
  readonly hcloud: Hcloud;
  readonly store: Store;
}

/** What a person reads on the Vps when its server is gone, and what to do. */
export function serverGoneMessage(vps: VpsObject, serverId: number): string {
  return (
    `Hetzner has no server ${serverId} any more (deleted outside Cannes?). Nothing is recreated on its own: ` +
    'what that server held is gone with it. To create a new server (a new SSH key born in rescue, the ModelKeys ' +
    `delivered again), with the Hetzner token in its Secret: kubectl annotate vps ${vps.metadata.name} ` +
    `${ANNOTATION_RECREATE_SERVER}=${serverId}`
  );
}

/** Records that the server is gone (the create_server step then waits for the owner) and fails. */
async function gone(d: ServerCheckDeps, vps: VpsObject, serverId: number): Promise<never> {
  await d.kube.setAnnotations('Vps', vps.metadata, { [ANNOTATION_SERVER_GONE]: String(serverId) });
  throw new TerminalError('ServerGone', serverGoneMessage(vps, serverId));
}

/**
 * Before a deploy: Hetzner still has the server, at the recorded address. Another address
 * fails `AddressMismatch` (a Warning Event, no connection); a 404 fails `ServerGone`.
 */
export async function confirmServer(
  d: ServerCheckDeps,
  vps: VpsObject,
  token: Secret | undefined,
  recorded: { serverId: number; ipv4: string },
): Promise<void> {
  if (token === undefined) return;
  const s = await d.hcloud.getServer(token, recorded.serverId);
  if (s === null) return gone(d, vps, recorded.serverId);
  if (s.ipv4 !== recorded.ipv4)
    throw new TerminalError(
      'AddressMismatch',
      `Hetzner reports server ${recorded.serverId} at ${s.ipv4 ?? 'no IPv4'}, the store recorded ${recorded.ipv4}: ` +
        'not deploying (docs/security.md, "Routing fields")',
    );
}

/** Runs an SSH step; when the server cannot be reached, asks Hetzner whether it still exists. */
export async function reaching<R>(
  d: ServerCheckDeps,
  vps: VpsObject,
  token: () => Promise<Secret | undefined>,
  serverId: number,
  fn: () => Promise<R>,
): Promise<R> {
  try {
    return await fn();
  } catch (err) {
    if (!(err instanceof CannesError) || err.reason !== 'SshUnreachable') throw err;
    const t = await token();
    if (t === undefined)
      throw new CannesError(
        'SshUnreachable',
        `${err.message}. If the server was deleted, put the Hetzner token back in its Secret: the operator then checks`,
      );
    if ((await d.hcloud.getServer(t, serverId)) === null) await gone(d, vps, serverId);
    throw err;
  }
}

/**
 * The owner asked for a new server in place of the gone one: after Hetzner confirms it is gone,
 * forget it (store: server, address, host key, keys; annotations of what was on it).
 */
export async function forgetGoneServer(
  d: ServerCheckDeps,
  vps: VpsObject,
  token: Secret,
  serverId: number,
  serverAnnotations: readonly string[],
): Promise<void> {
  if ((await d.hcloud.getServer(token, serverId)) !== null)
    throw new TerminalError(
      'ServerNotGone',
      `Hetzner still has server ${serverId}: not creating another (remove ${ANNOTATION_SERVER_GONE} and ${ANNOTATION_RECREATE_SERVER})`,
    );
  await d.store.forgetServer(vps.metadata.uid, serverId);
  const cleared: Record<string, null> = {};
  for (const a of [
    ANNOTATION_SERVER_ID,
    ANNOTATION_IPV4,
    ANNOTATION_ARCHITECTURE,
    ANNOTATION_SSH_HOST_KEY,
    ANNOTATION_GATEWAY_URL,
    DELIVERED_ANNOTATION,
    ANNOTATION_SERVER_GONE,
    ANNOTATION_RECREATE_SERVER,
    ...serverAnnotations,
  ])
    cleared[a] = null;
  await d.kube.setAnnotations('Vps', vps.metadata, cleared);
}
