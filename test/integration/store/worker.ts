/**
 * A second operator process for the integration tests (run with plain `node`).
 *   node worker.ts migrate <url> <keys-file> <start-at-ms>
 *       waits until start-at (so several processes race), runs the migrations, prints the report.
 *   node worker.ts churn <url> <keys-file> <run-id> <stop-file>
 *       until stop-file exists: rotates the SSH keys of the existing Vps rows, reads each active
 *       key back and checks it against the formula it was written with.
 *       Writes its op count to <stop-file>.ops after each op; prints {ops, errors, errorReasons} as JSON on exit.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { reasonOf } from '../../../common/errors.ts';
import { Secret } from '../../../common/secret.ts';
import { loadKeyringFile } from '../../../operator/store/keyring.ts';
import { migrate } from '../../../operator/store/migrations.ts';
import { PostgresStore } from '../../../operator/store/postgres.ts';

export const privateKeyFor = (runId: string, uid: string, keyId: string): string =>
  `-----BEGIN OPENSSH PRIVATE KEY-----\ncanary-${runId}-${uid}-${keyId}\n-----END OPENSSH PRIVATE KEY-----\n`;
export const FAKE_PUBLIC_KEY =
  'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFake test';

async function main(argv: string[]): Promise<number> {
  const [mode, url, keysFile, arg4, arg5] = argv;
  if (url === undefined || keysFile === undefined)
    throw new Error('usage: worker.ts <mode> <url> <keys-file> ...');
  const keyring = await loadKeyringFile(keysFile);
  if (mode === 'migrate') {
    const store = new PostgresStore({ connectionString: url, keyring });
    await sleep(Math.max(0, Number(arg4) - Date.now()));
    const report = await migrate(store.db);
    process.stdout.write(`${JSON.stringify(report)}\n`);
    await store.close();
    return 0;
  }
  if (mode === 'churn' && arg4 !== undefined && arg5 !== undefined) {
    const runId = arg4;
    const store = new PostgresStore({ connectionString: url, keyring });
    const uidsRes = await store.db.query<{ uid: string }>('SELECT uid FROM cannes_vps ORDER BY uid');
    const uids = uidsRes.rows.map((r) => String(r.uid));
    let ops = 0;
    let errors = 0;
    const errorReasons: string[] = [];
    const fail = (err: unknown): void => {
      errors++;
      if (errorReasons.length < 20)
        errorReasons.push(`${reasonOf(err)}: ${err instanceof Error ? err.message : String(err)}`);
    };
    for (let i = 0; !existsSync(arg5); i++) {
      const uid = uids[i % uids.length]!;
      try {
        const state = await store.getVpsState(uid);
        const active = state?.activeKey;
        if (!active) throw new Error(`no active key for ${uid}`);
        if ((await active.privateKey()).reveal() !== privateKeyFor(runId, uid, active.id))
          throw new Error('wrong plaintext');
        const id = crypto.randomUUID();
        await store.insertPendingKey(uid, {
          id,
          publicKey: FAKE_PUBLIC_KEY,
          privateKey: Secret.of(privateKeyFor(runId, uid, id)),
        });
        await store.promotePendingKey(uid, id);
        await store.deleteRetiredKeys(uid);
        ops++;
        writeFileSync(`${arg5}.ops`, String(ops));
      } catch (err) {
        fail(err);
      }
    }
    process.stdout.write(`${JSON.stringify({ ops, errors, errorReasons })}\n`);
    await store.close();
    return 0;
  }
  throw new Error(`unknown mode ${mode}`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`${reasonOf(err)}: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
