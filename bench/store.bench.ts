/**
 * Secret store benchmark (run by `make bench`; needs the rig's Postgres, see test/rig/postgres.ts).
 *   1. envelope encrypt+decrypt per second for a ~400-byte ed25519 private key, as a ratio to
 *      raw node:crypto AES-256-GCM (same key size, random IV, AAD) measured in the same run;
 *   2. statements per Vps reconcile that changes nothing (target <= 2), through the controller's
 *      Store port, counted by the Db wrapper every statement goes through; and per key rotation.
 * Writes bench/results/store.json.
 */
import { createCipheriv, createDecipheriv, randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Secret } from '../common/secret.ts';
import { controllerStore } from '../operator/adapters/store.ts';
import { sshKeyBinding } from '../operator/store/bindings.ts';
import { decryptSecret, encryptSecret } from '../operator/store/envelope.ts';
import { parseKeyring } from '../operator/store/keyring.ts';
import { PostgresStore } from '../operator/store/postgres.ts';
import { createTestDatabase } from '../test/rig/postgres.ts';

const SECONDS = Number(process.env['BENCH_SECONDS'] ?? 2);

async function opsPerSecond(fn: () => Promise<void> | void): Promise<number> {
  for (let i = 0; i < 200; i++) await fn(); // warm-up
  const deadline = performance.now() + SECONDS * 1000;
  let n = 0;
  const start = performance.now();
  while (performance.now() < deadline) {
    for (let i = 0; i < 50; i++) await fn();
    n += 50;
  }
  return n / ((performance.now() - start) / 1000);
}

// An OpenSSH ed25519 private key file is ~400 bytes; shape and size are what matter here.
const body = randomBytes(300)
  .toString('base64')
  .replace(/(.{70})/g, '$1\n');
const fakeKey = `-----BEGIN OPENSSH PRIVATE KEY-----\n${body}\n-----END OPENSSH PRIVATE KEY-----\n`.slice(
  0,
  400,
);
const keyBytes = Buffer.from(fakeKey);

const rawKey = randomBytes(32);
const keyring = await parseKeyring(`bench ${randomBytes(32).toString('base64')}`, 'bench');
const binding = sshKeyBinding(randomUUID(), randomUUID());
const aad = Buffer.from(JSON.stringify(binding));

const baseline = await opsPerSecond(() => {
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', rawKey, iv);
  c.setAAD(aad);
  const ct = Buffer.concat([c.update(keyBytes), c.final()]);
  const tag = c.getAuthTag();
  const d = createDecipheriv('aes-256-gcm', rawKey, iv);
  d.setAAD(aad);
  d.setAuthTag(tag);
  const pt = Buffer.concat([d.update(ct), d.final()]);
  if (pt.length !== keyBytes.length) throw new Error('baseline round trip failed');
});

const secret = Secret.of(fakeKey);
const envelope = await opsPerSecond(async () => {
  const env = await encryptSecret(keyring, secret, binding);
  const back = await decryptSecret(keyring, env, binding);
  if (back.length !== fakeKey.length) throw new Error('envelope round trip failed');
});

// Queries per reconcile, on real Postgres.
const db = await createTestDatabase();
let noopStatements: number;
let rotationStatements: number;
let reconcileMs: number;
try {
  const { store } = await PostgresStore.open({ connectionString: db.url, keyring });
  try {
    const uid = randomUUID();
    await store.ensureVps({ uid, namespace: 'default', name: 'bench' });
    await store.recordServer(uid, { serverId: 123456, ipv4: '198.18.0.10' });
    await store.pinHostKey(
      uid,
      'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchBenchBenchBenchBenchBenchBenchBench root@os',
    );
    const rescue = await store.saveRescueResult(
      uid,
      'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchHost root@os',
      {
        publicKey: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBench bench',
        privateKey: secret,
      },
    );
    if (rescue.state !== 'active') throw new Error('unexpected: rescue key not active');

    // What the Vps controller reads when nothing changed (operator/controllers/vps.ts through
    // the port adapter): getVps once, then every step finds its work done.
    const ports = controllerStore(store);
    const noopReconcile = async (): Promise<void> => {
      const state = await ports.getVps(uid);
      if (state === null) await ports.upsertVps({ uid, namespace: 'default', name: 'bench' });
      else if (state.record.serverId === null || state.activeKey === null)
        throw new Error('unexpected state');
    };
    const before = store.db.statements;
    await noopReconcile();
    noopStatements = store.db.statements - before;
    reconcileMs = 1000 / (await opsPerSecond(noopReconcile));

    const r0 = store.db.statements;
    const next = await store.insertPendingKey(uid, {
      publicKey: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBench2 b',
      privateKey: secret,
    });
    await store.promotePendingKey(uid, next.id);
    await store.deleteRetiredKeys(uid);
    rotationStatements = store.db.statements - r0;
  } finally {
    await store.close();
  }
} finally {
  await db.drop();
}

const result = {
  benchmark: 'store',
  node: process.version,
  plaintextBytes: keyBytes.length,
  envelopeEncryptDecryptPerSecond: Math.round(envelope),
  baselineAesGcmEncryptDecryptPerSecond: Math.round(baseline),
  envelopeVsBaselineRatio: Number((envelope / baseline).toFixed(3)),
  noopReconcileQueries: noopStatements,
  noopReconcileQueriesTarget: 2,
  noopReconcileMillis: Number(reconcileMs.toFixed(3)),
  keyRotationStatements: rotationStatements,
  measuredAt: new Date().toISOString(),
};
console.log(
  `envelope (jose dir+A256GCM, ${keyBytes.length} B): ${result.envelopeEncryptDecryptPerSecond} enc+dec/s; ` +
    `raw node:crypto AES-256-GCM: ${result.baselineAesGcmEncryptDecryptPerSecond}/s; ratio ${result.envelopeVsBaselineRatio}`,
);
console.log(
  `no-op reconcile: ${noopStatements} quer${noopStatements === 1 ? 'y' : 'ies'} (target <= 2), ${result.noopReconcileMillis} ms; ` +
    `key rotation: ${rotationStatements} statements`,
);
const dir = join(import.meta.dirname, 'results');
mkdirSync(dir, { recursive: true });
writeFileSync(join(dir, 'store.json'), `${JSON.stringify(result, null, 2)}\n`);
if (noopStatements > 2) {
  console.error('no-op reconcile exceeds 2 queries');
  process.exitCode = 1;
}
