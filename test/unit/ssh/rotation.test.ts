import { describe, expect, it } from 'vitest';
import { Secret } from '../../../common/secret.ts';
import { parsePublicKey } from '../../../operator/ssh/keys.ts';
import {
  ROTATION_FAULT_POINTS,
  type RotationFaultPoint,
  rotateSshKey,
} from '../../../operator/ssh/rotation.ts';
import { MemoryRotationStore } from './memory-rotation-store.ts';
import { ModelServer } from './model-server.ts';
import { ed25519TestPair } from './test-keys.ts';

class Crash extends Error {}

function initial(): { server: ModelServer; rows: MemoryRotationStore['rows']; firstKey: Secret } {
  const pair = ed25519TestPair();
  const server = new ModelServer();
  const pub = parsePublicKey(pair.public);
  server.authorized.push(pub);
  const store = new MemoryRotationStore();
  const firstKey = Secret.of(pair.private);
  store.seedActive('vps-1', { id: 'k0', publicKey: pub.line, privateKey: firstKey });
  return { server, rows: store.rows, firstKey };
}

async function activeLogsIn(store: MemoryRotationStore, server: ModelServer): Promise<boolean> {
  const active = (await store.listKeys('vps-1')).filter((k) => k.state === 'active');
  if (active.length !== 1) return false;
  const s = await server.login(active[0]!.privateKey);
  return s !== 'refused';
}

describe('SSH key rotation (in-memory store, modelled server)', () => {
  it('rotates: exactly one active key afterwards, the old one refused, no key file left', async () => {
    const { server, rows, firstKey } = initial();
    const store = new MemoryRotationStore(rows);
    const r = await rotateSshKey({ store, remote: server, vpsId: 'vps-1' });
    expect(r.outcome).toBe('rotated');
    const keys = await store.listKeys('vps-1');
    expect(keys.map((k) => k.state)).toEqual(['active']);
    expect(await server.login(firstKey)).toBe('refused');
    expect(await activeLogsIn(store, server)).toBe(true);
    expect(server.keygenFiles.size).toBe(0);
    expect(server.authorized).toHaveLength(1);
  });

  for (const point of ROTATION_FAULT_POINTS) {
    it(`survives a crash ${point}: the active key always logs in, and a fresh run finishes`, async () => {
      const { server, rows, firstKey } = initial();
      const crashing = new MemoryRotationStore(rows);
      await expect(
        rotateSshKey({
          store: crashing,
          remote: server,
          vpsId: 'vps-1',
          fault: (p: RotationFaultPoint) => {
            if (p === point) throw new Crash(p);
          },
        }),
      ).rejects.toBeInstanceOf(Crash);
      // A fresh process: new store object over the same rows, no memory of the crashed run.
      const fresh = new MemoryRotationStore(rows);
      expect(await activeLogsIn(fresh, server)).toBe(true);
      await rotateSshKey({ store: fresh, remote: server, vpsId: 'vps-1' });
      const keys = await fresh.listKeys('vps-1');
      expect(keys.filter((k) => k.state === 'active')).toHaveLength(1);
      expect(keys.filter((k) => k.state !== 'active')).toEqual([]);
      expect(await activeLogsIn(fresh, server)).toBe(true);
      expect(await server.login(firstKey)).toBe('refused');
      expect(server.keygenFiles.size).toBe(0);
      expect(server.authorized).toHaveLength(1);
    });
  }
});
