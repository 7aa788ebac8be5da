import { parseArgs } from 'node:util';
import { CannesError } from '../../common/errors.ts';
import { createLogger } from '../lib/log.ts';
import { countByKid, openStoreFromEnv, rekey } from '../store/index.ts';

const HELP = `Usage: cannes-operator rekey [--batch-size N] [--keys-file PATH] [--dry-run]

Re-encrypts every secret in the store (the SSH private keys) to the ACTIVE master
key: the first line of the master key file. Old keys keep decrypting until you remove them.

Rotation, step by step:
  1. Add the new key as the FIRST line of the key file/Secret, keep the old ones below it.
  2. Roll out the operator so every replica encrypts with the new key.
  3. Run "cannes-operator rekey" (safe while the operator runs; resumable: just run it again).
  4. When it reports "remaining 0" and "failed 0", remove the old key line and roll out again.

Options:
  --batch-size N    rows per batch (default 200)
  --keys-file PATH  master key file (default: $CANNES_MASTER_KEYS_FILE)
  --dry-run         only count rows per master key id
  -h, --help        this text

Environment: DATABASE_URL (use sslmode=verify-full; CA via sslrootcert= or PGSSLROOTCERT),
CANNES_MASTER_KEYS_FILE.

Exit status: 0 all rows on the active key; 1 rows failed or remain; 2 usage or setup error.
`;

interface RekeyArgs {
  readonly batchSize: number;
  readonly keysFile: string | undefined;
  readonly dryRun: boolean;
  readonly help: boolean;
}

/** The command line, or the exit status 2 after a one-line message on stderr. */
function parseRekeyArgs(argv: string[]): RekeyArgs | number {
  let values: {
    'batch-size'?: string | undefined;
    'keys-file'?: string | undefined;
    'dry-run'?: boolean | undefined;
    help?: boolean | undefined;
  };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        'batch-size': { type: 'string' },
        'keys-file': { type: 'string' },
        'dry-run': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    // One line, as for `run`: node's first sentence names the option.
    const first = err instanceof Error ? (err.message.split('. ')[0] ?? 'invalid') : 'invalid';
    process.stderr.write(`cannes-operator rekey: ${first} (see cannes-operator rekey --help)\n`);
    return 2;
  }
  const batchSize = values['batch-size'] === undefined ? 200 : Number(values['batch-size']);
  if (values.help !== true && (!Number.isSafeInteger(batchSize) || batchSize < 1 || batchSize > 10_000)) {
    process.stderr.write('rekey: --batch-size must be an integer between 1 and 10000\n');
    return 2;
  }
  return {
    batchSize,
    keysFile: values['keys-file'],
    dryRun: values['dry-run'] === true,
    help: values.help === true,
  };
}

/** `cannes-operator rekey`: prints a report to stdout, returns the exit status. */
export async function rekeyCommand(argv: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const args = parseRekeyArgs(argv);
  if (typeof args === 'number') return args;
  if (args.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const effectiveEnv = args.keysFile === undefined ? env : { ...env, CANNES_MASTER_KEYS_FILE: args.keysFile };
  const logger = createLogger('rekey', { destination: process.stderr });
  let opened: Awaited<ReturnType<typeof openStoreFromEnv>>;
  try {
    opened = await openStoreFromEnv(effectiveEnv, { logger });
  } catch (err) {
    process.stderr.write(`rekey: ${describe(err)}\n`);
    return 2;
  }
  const { store, keyring } = opened;
  try {
    if (args.dryRun) {
      const counts = await countByKid(store.db);
      process.stdout.write(`active key: ${keyring.activeKid}\n`);
      for (const [kid, n] of Object.entries(counts)) {
        process.stdout.write(`  ${kid}: ${n} row(s)${keyring.has(kid) ? '' : ' (NOT IN KEYRING)'}\n`);
      }
      return 0;
    }
    const report = await rekey(store.db, keyring, {
      batchSize: args.batchSize,
      onBatch: (p) => logger.info({ table: p.table, scanned: p.scanned, rekeyed: p.rekeyed }, 'rekey batch'),
    });
    return printReport(
      report,
      keyring.kids.filter((k) => k !== keyring.activeKid),
    );
  } catch (err) {
    process.stderr.write(`rekey: ${describe(err)}\n`);
    return 1;
  } finally {
    await store.close();
  }
}

/** The report on stdout; 0 when every row is on the active key and none failed, else 1. */
function printReport(report: Awaited<ReturnType<typeof rekey>>, old: readonly string[]): number {
  process.stdout.write(`active key: ${report.activeKid}\n`);
  let remaining = 0;
  let failed = 0;
  for (const c of report.columns) {
    remaining += c.remaining;
    failed += c.failed;
    process.stdout.write(
      `${c.table}.${c.column}: scanned ${c.scanned}, rekeyed ${c.rekeyed}, skipped ${c.skipped} (changed concurrently), ` +
        `failed ${c.failed}, remaining ${c.remaining}\n`,
    );
  }
  for (const f of report.failures) process.stdout.write(`  failed: ${f.table} row ${f.rowId}: ${f.reason}\n`);
  process.stdout.write(`rows per key: ${JSON.stringify(report.kidCounts)}\n`);
  process.stdout.write(`total: remaining ${remaining}, failed ${failed}\n`);
  if (remaining !== 0 || failed !== 0) return 1;
  if (old.length > 0)
    process.stdout.write(`done: old key(s) ${old.join(', ')} can now be removed from the keyring\n`);
  return 0;
}

function describe(err: unknown): string {
  if (err instanceof CannesError) return `${err.reason}: ${err.message}`;
  return err instanceof Error ? err.message : String(err);
}
