import { TerminalError } from '../../common/errors.ts';
import type { Logger } from '../lib/log.ts';
import { type Keyring, loadKeyringFile } from './keyring.ts';
import type { StoreMetrics } from './metrics.ts';
import type { MigrationReport } from './migrations.ts';
import { PostgresStore } from './postgres.ts';

export { ENCRYPTED_COLUMNS, sshKeyBinding } from './bindings.ts';
export { Db, type DbOptions, isConnectionError, poolConfig } from './db.ts';
export {
  type Binding,
  decryptBytes,
  decryptSecret,
  EnvelopeError,
  encryptBytes,
  encryptSecret,
} from './envelope.ts';
export {
  Keyring,
  loadKeyringFile,
  parseKeyring,
  parseKeyringSecretData,
  parseKeyringText,
} from './keyring.ts';
export { createStoreMetrics, type StoreMetrics } from './metrics.ts';
export { MIGRATIONS, type MigrationReport, migrate } from './migrations.ts';
export { PostgresStore, type PostgresStoreOptions } from './postgres.ts';
export { countByKid, type RekeyReport, rekey } from './rekey.ts';
export type * from './types.ts';

/** Reads DATABASE_URL (required) from the environment. */
export function databaseUrlFromEnv(env: NodeJS.ProcessEnv): string {
  const url = env['DATABASE_URL'];
  if (url === undefined || url === '') {
    throw new TerminalError(
      'DatabaseUrlMissing',
      'DATABASE_URL is not set (postgres://user:pass@host/db?sslmode=verify-full)',
    );
  }
  return url;
}

/** Reads CANNES_MASTER_KEYS_FILE (required) from the environment. */
export async function keyringFromEnv(env: NodeJS.ProcessEnv): Promise<Keyring> {
  const path = env['CANNES_MASTER_KEYS_FILE'];
  if (path === undefined || path === '') {
    throw new TerminalError(
      'KeyringMissing',
      'CANNES_MASTER_KEYS_FILE is not set (a file of "<kid> <base64 of 32 bytes>" lines)',
    );
  }
  return loadKeyringFile(path);
}

/**
 * How `cannes-operator rekey` opens the store from its environment: keyring first (a bad
 * keyring refuses to start before touching the database), then connect and migrate. The
 * operator's `run` does the same from its parsed config (operator/run.ts).
 */
export async function openStoreFromEnv(
  env: NodeJS.ProcessEnv,
  opts: { logger?: Logger; keyring?: Keyring; metrics?: StoreMetrics } = {},
): Promise<{ store: PostgresStore; keyring: Keyring; migrations: MigrationReport }> {
  const keyring = opts.keyring ?? (await keyringFromEnv(env));
  const connectionString = databaseUrlFromEnv(env);
  const { store, migrations } = await PostgresStore.open({
    connectionString,
    keyring,
    env,
    ...(opts.logger === undefined ? {} : { logger: opts.logger }),
    ...(opts.metrics === undefined ? {} : { metrics: opts.metrics }),
  });
  return { store, keyring, migrations };
}
