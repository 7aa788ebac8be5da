/**
 * A Vps with no ModelKey yet (issue 19 item 5): its server does not wait for one to be locked
 * down. The whole system on real parts (the rig's API server, Postgres, the Hetzner simulator
 * whose servers are real hosts with sshd and nftables in their own namespaces); the test looks
 * inside the simulated server's namespaces for the firewall and sshd's hardening.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { HOST } from '../../../operator/host/layout.ts';
import { cloudTokenSecret, vpsManifest } from '../../lib/manifests.ts';
import { type OperatorProcess, type System, startSystem, waitFor } from '../../lib/system.ts';

const run = promisify(execFile);
let s: System;
let op: OperatorProcess;
const diag = () => `operator log tail:\n${op.logs.join('').split('\n').slice(-40).join('\n')}`;

beforeAll(async () => {
  s = await startSystem();
  op = await s.startOperator();
  await s.kubectl(
    ['apply', '-f', '-'],
    [
      cloudTokenSecret(s.namespace, 'hcloud-token', s.canaries.hcloudToken),
      vpsManifest(s.namespace, 'bare', { cloudTokenSecretRef: { name: 'hcloud-token', key: 'token' } }),
    ]
      .map((d) => stringify(d))
      .join('---\n'),
  );
}, 300_000);

afterAll(async () => {
  await s?.stop();
}, 120_000);

type Obj = {
  metadata: { annotations?: Record<string, string> };
  status?: { conditions?: { type: string; status: string; reason: string }[] };
};

/** A command inside the running server's namespaces (network and mounts: its own /etc). */
async function onServer(bootPid: number, ...cmd: string[]): Promise<string> {
  return (await run('nsenter', ['-t', String(bootPid), '-m', '-n', '--', ...cmd])).stdout;
}

describe('a Vps without a ModelKey', () => {
  it('gets the host firewall and sshd hardening while it waits for one', async () => {
    const v = await waitFor(
      'cannes.dev/hardened',
      async () => {
        const o = (await s.getJson('vps', 'bare')) as Obj;
        return o.metadata.annotations?.['cannes.dev/hardened'] ? o : undefined;
      },
      600_000,
      diag,
    );
    const id = Number(v.metadata.annotations?.['cannes.dev/server-id']);
    const host = s.hosts.info(id);
    if (host?.bootPid === undefined) throw new Error(`server ${id} is not running`);
    // The firewall's table is loaded in the server's network namespace ...
    const input = await onServer(host.bootPid, 'nft', 'list', 'chain', 'inet', 'cannes', 'input');
    expect(input).toContain('jump from_containers');
    // ... sshd reads the hardening, and root has no password.
    expect(await onServer(host.bootPid, 'cat', HOST.sshdHardening.path)).toMatch(/PasswordAuthentication no/);
    expect((await onServer(host.bootPid, 'getent', 'shadow', 'root')).split(':')[1]).toBe('*');
    // Still waiting for a ModelKey: nothing else was deployed.
    const fresh = (await s.getJson('vps', 'bare')) as Obj;
    const deployed = fresh.status?.conditions?.find((c) => c.type === 'GatewayDeployed');
    expect(deployed?.reason).toBe('WaitingForModelKeys');
    expect(fresh.metadata.annotations?.['cannes.dev/deployed']).toBeUndefined();
  }, 660_000);
});
