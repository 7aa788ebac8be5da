import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Db } from '../../../operator/store/db.ts';
import {
  createTestDatabase,
  makeTls,
  type PgBouncer,
  startPgBouncer,
  type TestDatabase,
} from '../../rig/postgres.ts';
import { storeSuite } from './suite.ts';

// Neon fidelity: the same suite through a real PgBouncer in transaction mode, TLS verify-full.
storeSuite('pgbouncer');

describe('the Neon-like pooler the suite runs through', () => {
  let bouncer: PgBouncer;
  let db: TestDatabase;
  let otherCaDir: string;

  beforeAll(async () => {
    db = await createTestDatabase();
    const u = new URL(db.url);
    bouncer = await startPgBouncer({ host: u.hostname, port: Number(u.port || 5432) });
    otherCaDir = mkdtempSync(join(tmpdir(), 'cannes-other-ca-'));
  });

  afterAll(async () => {
    await bouncer?.stop();
    await db?.drop();
    if (otherCaDir) rmSync(otherCaDir, { recursive: true, force: true });
  });

  it('is PgBouncer in pool_mode=transaction', async () => {
    const admin = new pg.Client({
      connectionString: bouncer.url('pgbouncer').replace(/\?.*$/, ''),
      ssl: { ca: readFileSync(bouncer.tls.caFile, 'utf8'), servername: 'localhost' },
    });
    await admin.connect();
    try {
      const res = await admin.query('SHOW CONFIG');
      const mode = res.rows.find((r) => r['key'] === 'pool_mode');
      expect(mode?.['value']).toBe('transaction');
    } finally {
      await admin.end();
    }
  });

  it('speaks TLS verified against the test CA (verify-full)', async () => {
    const store = new Db({ connectionString: bouncer.url(db.name) });
    try {
      const res = await store.query('SELECT 1 AS one');
      expect(res.rows[0]?.['one']).toBe(1);
    } finally {
      await store.close();
    }
  });

  it('refuses a pooler whose certificate another CA signed', async () => {
    const other = await makeTls(otherCaDir);
    const url = bouncer
      .url(db.name)
      .replace(/sslrootcert=[^&]*/, `sslrootcert=${encodeURIComponent(other.caFile)}`);
    const store = new Db({
      connectionString: url,
      retry: { maxElapsedMillis: 0, baseMillis: 1, capMillis: 1 },
    });
    try {
      await expect(store.query('SELECT 1')).rejects.toThrow(/certificate/i);
    } finally {
      await store.close();
    }
  });

  it('refuses plaintext clients', async () => {
    const plain = new pg.Client({ connectionString: bouncer.url(db.name).replace(/\?.*$/, ''), ssl: false });
    await expect(plain.connect()).rejects.toThrow(/SSL required/i);
    await plain.end().catch(() => undefined);
  });
});
