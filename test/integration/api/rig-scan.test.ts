/**
 * The places a canary scan reads to prove a key never reached the cluster (the Direct keys e2e):
 * a dump of every key in the rig's etcd and the API server's audit log. They are only worth
 * scanning if they do hold what the API server was given: a Secret's value shows in both.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Rig } from '../../rig/rig.ts';
import { useRig } from '../../rig/shared.ts';
import { tempNamespace } from './fixtures.ts';

let rig: Rig;
let ns: string;
let drop: () => Promise<void> = async () => {};
beforeAll(async () => {
  rig = await useRig();
  ({ ns, drop } = await tempNamespace(rig, 'scan'));
});
afterAll(async () => {
  await drop();
});

describe("the rig's etcd dump and audit log", () => {
  it('hold the value of a Secret just written (so a scan of them can find a leaked key)', async () => {
    const canary = `scan-canary-${randomBytes(12).toString('hex')}`;
    await rig.kubectl(['-n', ns, 'create', 'secret', 'generic', 'c', `--from-literal=v=${canary}`]);
    const all = Buffer.from([0]).toString('base64');
    const res = await fetch(`${rig.etcdUrl}/v3/kv/range`, {
      method: 'POST',
      body: JSON.stringify({ key: all, range_end: all }),
    });
    const kvs = ((await res.json()) as { kvs?: { key: string; value?: string }[] }).kvs ?? [];
    const dump = kvs.map((kv) => Buffer.from(kv.value ?? '', 'base64').toString('latin1')).join('\n');
    expect(dump).toContain(canary);
    expect(readFileSync(rig.auditLogPath ?? '', 'latin1')).toContain(Buffer.from(canary).toString('base64'));
  });
});
