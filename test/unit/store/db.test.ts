import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { TerminalError } from '../../../common/errors.ts';
import { isConnectionError, poolConfig } from '../../../operator/store/db.ts';

const dir = mkdtempSync(join(tmpdir(), 'cannes-db-unit-'));
const caFile = join(dir, 'ca.pem');
writeFileSync(caFile, '-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function sslOf(url: string, env: NodeJS.ProcessEnv = {}): unknown {
  return poolConfig({ connectionString: url, env }).ssl;
}

describe('database connection settings (Neon-ready)', () => {
  it('verifies the server with the CA from sslrootcert and strips ssl params from the URL pg would let win', () => {
    const cfg = poolConfig({
      connectionString: `postgres://u:p@ep-x-pooler.eu-central-1.aws.neon.tech/db?sslmode=verify-full&sslrootcert=${encodeURIComponent(caFile)}`,
      env: {},
    });
    expect(cfg.ssl).toEqual({
      rejectUnauthorized: true,
      servername: 'ep-x-pooler.eu-central-1.aws.neon.tech',
      ca: expect.stringContaining('fake'),
    });
    expect(cfg.connectionString).not.toMatch(/sslmode|sslrootcert/);
  });

  it('takes the CA from PGSSLROOTCERT when the URL names none', () => {
    expect(
      sslOf('postgres://u@db.example.test/db?sslmode=verify-full', { PGSSLROOTCERT: caFile }),
    ).toMatchObject({
      rejectUnauthorized: true,
      ca: expect.stringContaining('fake'),
    });
  });

  it('verifies even for sslmode=require and for remote hosts with no sslmode', () => {
    expect(sslOf('postgres://u@db.example.test/db?sslmode=require')).toMatchObject({
      rejectUnauthorized: true,
    });
    expect(sslOf('postgres://u@db.example.test/db')).toMatchObject({ rejectUnauthorized: true });
  });

  it("honours Neon's channel_binding=require and keeps other URL options such as endpoint", () => {
    const cfg = poolConfig({
      connectionString:
        'postgres://u:p@ep-x.eu-central-1.aws.neon.tech/db?sslmode=require&channel_binding=require&options=endpoint%3Dep-x',
      env: {},
    });
    expect(cfg.enableChannelBinding).toBe(true);
    expect(cfg.connectionString).not.toContain('channel_binding');
    expect(cfg.connectionString).toContain('options=endpoint');
  });

  it('uses plaintext only on loopback or when explicitly disabled', () => {
    expect(sslOf('postgres://postgres@127.0.0.1:5432/db')).toBe(false);
    expect(sslOf('postgres://u@db.example.test/db?sslmode=disable')).toBe(false);
  });

  it.each([
    [
      'sslmode=prefer to a remote host',
      'postgres://u@db.example.test/db?sslmode=prefer',
      'DatabaseTlsRequired',
    ],
    ['an unknown sslmode', 'postgres://u@db.example.test/db?sslmode=sometimes', 'DatabaseUrlInvalid'],
    ['a non-postgres URL', 'mysql://u@db.example.test/db', 'DatabaseUrlInvalid'],
    ['garbage', 'not a url', 'DatabaseUrlInvalid'],
    [
      'a missing CA file',
      'postgres://u@db.example.test/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem',
      'DatabaseCaUnreadable',
    ],
  ])('refuses %s', (_name, url, reason) => {
    let err: unknown;
    try {
      poolConfig({ connectionString: url, env: {} });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TerminalError);
    expect((err as TerminalError).reason).toBe(reason);
  });

  it('sets a connect timeout, idle timeout and keepalive, and no startup parameter PgBouncer would reject', () => {
    const cfg = poolConfig({ connectionString: 'postgres://postgres@127.0.0.1/db', env: {} });
    expect(cfg.connectionTimeoutMillis).toBeGreaterThan(0);
    expect(cfg.idleTimeoutMillis).toBeGreaterThan(0);
    expect(cfg.keepAlive).toBe(true);
    expect(cfg.statement_timeout).toBeUndefined();
    expect(cfg.options).toBeUndefined();
  });

  it('treats lost connections as retryable and SQL errors as not', () => {
    const withCode = (message: string, code: string): Error => Object.assign(new Error(message), { code });
    expect(isConnectionError(withCode('connect ECONNREFUSED 127.0.0.1:5432', 'ECONNREFUSED'))).toBe(true);
    expect(isConnectionError(withCode('terminating connection due to administrator command', '57P01'))).toBe(
      true,
    );
    expect(isConnectionError(withCode('server conn crashed?', '08P01'))).toBe(true);
    expect(isConnectionError(new Error('Connection terminated unexpectedly'))).toBe(true);
    expect(isConnectionError(new Error('timeout exceeded when trying to connect'))).toBe(true);
    expect(isConnectionError(withCode('duplicate key value violates unique constraint', '23505'))).toBe(
      false,
    );
    expect(isConnectionError(withCode('syntax error at or near "SELEC"', '42601'))).toBe(false);
    expect(isConnectionError('ECONNREFUSED')).toBe(false);
  });
});
