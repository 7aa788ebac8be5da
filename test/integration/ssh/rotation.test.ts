import { randomBytes, randomInt } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Secret } from '../../../operator/lib/secret.ts';
import type { PublicKey } from '../../../operator/ssh/keys.ts';
import { parseAuthorizedKeys } from '../../../operator/ssh/keys.ts';
import { readRemoteFile, runScriptOk } from '../../../operator/ssh/remote.ts';
import { rescueKeygen } from '../../../operator/ssh/rescue.ts';
import {
  KEYGEN_DIR,
  ROTATION_FAULT_POINTS,
  type RotationFaultPoint,
  type RotationStore,
  rotateSshKey,
  sshRotationRemote,
} from '../../../operator/ssh/rotation.ts';
import { connectPinned, connectRescueAcceptingUnknownHostKey } from '../../../operator/ssh/session.ts';
import { randomTestIpv4 } from '../../hosts/leftovers.ts';
import { RealHostProvider } from '../../hosts/real-host-provider.ts';
import { MemoryRotationStore } from '../../unit/ssh/memory-rotation-store.ts';

class Crash extends Error {}

describe('SSH key rotation against a real sshd', () => {
  const provider = new RealHostProvider();
  const serverId = randomInt(100_000, 900_000);
  const ipv4 = randomTestIpv4();
  const vpsId = `vps-${randomBytes(4).toString('hex')}`;
  let hostKey: PublicKey;
  let rows: MemoryRotationStore['rows'];
  const freshStore = (): RotationStore => new MemoryRotationStore(rows);

  beforeAll(async () => {
    await provider.create({
      serverId,
      name: `rot-${randomBytes(3).toString('hex')}`,
      ipv4,
      image: 'docker-ce',
    });
    const password = randomBytes(18).toString('base64url');
    await provider.boot(serverId, { kind: 'rescue', rootPassword: password, sshKeys: [] });
    const rescue = await connectRescueAcceptingUnknownHostKey({ host: ipv4 }, Secret.of(password), {
      retryForMs: 30_000,
    });
    const first = await rescueKeygen(rescue);
    rescue.close();
    hostKey = first.osHostKey;
    const seed = new MemoryRotationStore();
    seed.seedActive(vpsId, { id: 'initial', publicKey: first.publicKey.line, privateKey: first.privateKey });
    rows = seed.rows;
    await provider.boot(serverId, { kind: 'os' });
  });

  afterAll(async () => {
    await provider.close();
  });

  const remote = () => sshRotationRemote({ host: ipv4 }, hostKey, { retryForMs: 20_000 });

  async function loginWorks(key: Secret): Promise<boolean> {
    const s = await remote().login(key);
    if (s === 'refused') return false;
    s.close();
    return true;
  }

  async function activeKey(store: RotationStore) {
    const active = (await store.listKeys(vpsId)).filter((k) => k.state === 'active');
    expect(active).toHaveLength(1);
    return active[0]!;
  }

  async function assertFinished(store: RotationStore, oldKeys: readonly Secret[]): Promise<void> {
    const keys = await store.listKeys(vpsId);
    expect(keys.map((k) => k.state)).toEqual(['active']);
    const active = keys[0]!;
    expect(await loginWorks(active.privateKey)).toBe(true);
    for (const old of oldKeys) expect(await loginWorks(old)).toBe(false);
    const s = await connectPinned({ host: ipv4 }, { privateKey: active.privateKey, hostKey });
    try {
      // Exactly one key in authorized_keys, and no key file left in the keygen folder.
      const ak = parseAuthorizedKeys((await readRemoteFile(s, '/root/.ssh/authorized_keys')) ?? '');
      expect(ak.map((l) => l.key?.line)).toEqual([active.publicKey]);
      const left = await runScriptOk(s, `ls -A ${KEYGEN_DIR} 2>/dev/null || true`);
      expect(left.stdout.trim()).toBe('');
    } finally {
      s.close();
    }
  }

  it('rotates once: exactly one active key, the old one refused, the key file wiped', async () => {
    const store = freshStore();
    const before = await activeKey(store);
    const r = await rotateSshKey({ store, remote: remote(), vpsId });
    expect(r.outcome).toBe('rotated');
    expect(r.activeKeyId).not.toBe(before.id);
    await assertFinished(store, [before.privateKey]);
  });

  for (const point of ROTATION_FAULT_POINTS) {
    it(`killed ${point}: the stored active key still logs in, and a fresh run completes`, async () => {
      const before = await activeKey(freshStore());
      await expect(
        rotateSshKey({
          store: freshStore(),
          remote: remote(),
          vpsId,
          fault: (p: RotationFaultPoint) => {
            if (p === point) throw new Crash(p);
          },
        }),
      ).rejects.toBeInstanceOf(Crash);
      // At the crash: whatever the store calls active logs in.
      expect(await loginWorks((await activeKey(freshStore())).privateKey)).toBe(true);
      // A fresh run (new store object, new remote) resumes from the store alone.
      await rotateSshKey({ store: freshStore(), remote: remote(), vpsId });
      await assertFinished(freshStore(), [before.privateKey]);
    });
  }
});
