import { spawn } from 'node:child_process';
import { randomBytes, randomInt, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Secret } from '../../../common/secret.ts';
import { controllerStore, rotationStore } from '../../../operator/adapters/store.ts';
import type { PublicKey } from '../../../operator/ssh/keys.ts';
import { parseAuthorizedKeys } from '../../../operator/ssh/keys.ts';
import { rescueKeygen } from '../../../operator/ssh/rescue.ts';
import {
  KEYGEN_DIR,
  ROTATION_FAULT_POINTS,
  type RotationStore,
  sshRotationRemote,
} from '../../../operator/ssh/rotation.ts';
import { connectPinned, connectRescueAcceptingUnknownHostKey } from '../../../operator/ssh/session.ts';
import { readRemoteFile, runScriptOk } from '../../../operator/ssh/shell.ts';
import { parseKeyring } from '../../../operator/store/keyring.ts';
import { PostgresStore } from '../../../operator/store/postgres.ts';
import { randomTestIpv4 } from '../../hosts/leftovers.ts';
import { RealHostProvider } from '../../hosts/real-host-provider.ts';
import { endStdin } from '../../lib/stdin.ts';
import { createTestDatabase, type TestDatabase } from '../../rig/postgres.ts';

const WORKER = join(import.meta.dirname, 'rotation-worker.ts');

/** Runs one rotation in a fresh process; with `fault`, that process SIGKILLs itself there. */
function runWorker(
  input: object,
  fault?: string,
): Promise<{ code: number | null; signal: string | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [WORKER], {
      env: { ...process.env, ...(fault ? { CANNES_FAULT: fault } : {}), LOG_LEVEL: 'silent' },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (c: string) => {
      out += c;
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve({ code, signal, out }));
    endStdin(child.stdin, JSON.stringify(input));
  });
}

describe('SSH key rotation: real sshd, real Postgres store, real process kills', () => {
  const provider = new RealHostProvider();
  const serverId = randomInt(100_000, 900_000);
  const ipv4 = randomTestIpv4();
  const vpsId = randomUUID();
  const keyringText = `k1 ${randomBytes(32).toString('base64')}`;
  let db: TestDatabase;
  let pgStore: PostgresStore;
  let store: RotationStore;
  let hostKey: PublicKey;
  let workerInput: object;

  beforeAll(async () => {
    db = await createTestDatabase();
    ({ store: pgStore } = await PostgresStore.open({
      connectionString: db.url,
      keyring: await parseKeyring(keyringText, 'test'),
    }));
    store = rotationStore(pgStore);
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
    // docs/design.md §4 steps 1-4: the row, the server, the pinned host key and the rescue-born key.
    const ports = controllerStore(pgStore);
    await ports.upsertVps({ uid: vpsId, namespace: 'default', name: 'rotation-test' });
    await ports.setServer(vpsId, serverId, ipv4);
    await ports.saveRescueResult(vpsId, hostKey.line, {
      publicKey: first.publicKey.line,
      privateKey: first.privateKey,
    });
    await provider.boot(serverId, { kind: 'os' });
    workerInput = { url: db.url, keyring: keyringText, vpsId, ipv4, hostKey: hostKey.line };
  });

  afterAll(async () => {
    await pgStore?.close();
    await db?.drop();
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
    const before = await activeKey(store);
    const r = await runWorker(workerInput);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ outcome: 'rotated' });
    expect((await activeKey(store)).id).not.toBe(before.id);
    await assertFinished(store, [before.privateKey]);
  });

  for (const point of ROTATION_FAULT_POINTS) {
    it(`killed ${point}: the stored active key still logs in, and a fresh process completes`, async () => {
      const before = await activeKey(store);
      const crashed = await runWorker(workerInput, point);
      expect(crashed.signal).toBe('SIGKILL');
      // At the crash: whatever the store calls active logs in.
      expect(await loginWorks((await activeKey(store)).privateKey)).toBe(true);
      // A fresh process resumes from the store alone.
      const resumed = await runWorker(workerInput);
      expect(resumed.code).toBe(0);
      await assertFinished(store, [before.privateKey]);
    });
  }
});
