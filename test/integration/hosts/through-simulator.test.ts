import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Secret } from '../../../common/secret.ts';
import { type RescueKeygenResult, rescueKeygen } from '../../../operator/ssh/rescue.ts';
import { connectPinned, connectRescueAcceptingUnknownHostKey } from '../../../operator/ssh/session.ts';
import { runScriptOk } from '../../../operator/ssh/shell.ts';
import { type Simulator, startSimulator } from '../../hcloud-sim/simulator.ts';
import { footprint, type HostFootprint, leftovers } from '../../hosts/leftovers.ts';
import { RealHostProvider } from '../../hosts/real-host-provider.ts';

/** Just enough Hetzner API client for this test (the operator has its own typed client). */
function api(sim: Simulator) {
  const call = async (method: string, path: string, body?: unknown): Promise<Record<string, unknown>> => {
    const res = await fetch(`${sim.endpoint}${path}`, {
      method,
      headers: { authorization: `Bearer ${sim.token.reveal()}`, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const json = (await res.json().catch(() => ({}))) as Record<string, unknown>;
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
    return json;
  };
  const waitAction = async (a: unknown): Promise<void> => {
    const id = (a as { id: number }).id;
    for (let i = 0; i < 600; i++) {
      const { action } = (await call('GET', `/actions/${id}`)) as { action: { status: string } };
      if (action.status === 'success') return;
      if (action.status === 'error') throw new Error(`action ${id} failed`);
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`action ${id} did not finish`);
  };
  return { call, waitAction };
}

describe('a server created through the Hetzner simulator is a real host', () => {
  const provider = new RealHostProvider();
  let sim: Simulator;
  let serverId = 0;
  let ipv4 = '';
  let keys: RescueKeygenResult;
  let fp: HostFootprint;

  beforeAll(async () => {
    sim = await startSimulator({ host: '127.0.0.1', port: 0, provider, actionDurationMs: 50 });
  });

  afterAll(async () => {
    await sim.close(); // closes the provider too
  });

  it('create (off) → enable_rescue → poweron boots rescue with the one-time password', async () => {
    const { call, waitAction } = api(sim);
    const created = (await call('POST', '/servers', {
      name: `sim-${randomBytes(3).toString('hex')}`,
      server_type: 'cx23',
      image: 'ubuntu-24.04',
      location: 'fsn1',
      start_after_create: false,
      labels: { 'cannes.dev/test': 'hosts' },
    })) as { server: { id: number; public_net: { ipv4: { ip: string } } }; action: unknown };
    serverId = created.server.id;
    ipv4 = created.server.public_net.ipv4.ip;
    await waitAction(created.action);
    const rescue = (await call('POST', `/servers/${serverId}/actions/enable_rescue`, {
      type: 'linux64',
    })) as {
      root_password: string;
      action: unknown;
    };
    await waitAction(rescue.action);
    await waitAction(
      ((await call('POST', `/servers/${serverId}/actions/poweron`)) as { action: unknown }).action,
    );

    const session = await connectRescueAcceptingUnknownHostKey(
      { host: ipv4 },
      Secret.of(rescue.root_password),
      {
        retryForMs: 30_000,
      },
    );
    keys = await rescueKeygen(session);
    session.close();
    expect(keys.osHostKey.type).toBe('ssh-ed25519');
  });

  it('reboot leaves rescue (it is for one boot) and the OS accepts the new key with the pinned host key', async () => {
    const { call, waitAction } = api(sim);
    await waitAction(
      ((await call('POST', `/servers/${serverId}/actions/reboot`)) as { action: unknown }).action,
    );
    const os = await connectPinned(
      { host: ipv4 },
      { privateKey: keys.privateKey, hostKey: keys.osHostKey },
      { retryForMs: 30_000 },
    );
    const r = await runScriptOk(os, 'hostname');
    os.close();
    expect(r.stdout.trim()).not.toBe('rescue');
    fp = await footprint(provider, serverId);
  });

  it('deleting the server through the API leaves nothing behind', async () => {
    const { call, waitAction } = api(sim);
    const del = (await call('DELETE', `/servers/${serverId}`)) as { action: unknown };
    await waitAction(del.action);
    for (let i = 0; i < 100 && provider.info(serverId) !== undefined; i++)
      await new Promise((r) => setTimeout(r, 100));
    expect(provider.info(serverId)).toBeUndefined();
    expect(await leftovers(fp)).toEqual([]);
  });
});
