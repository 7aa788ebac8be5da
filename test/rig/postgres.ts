import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import pg from 'pg';

/**
 * The rig's Postgres. In order of preference:
 *   1. DATABASE_URL, when set (a user's own server or Neon);
 *   2. the machine's local server on 127.0.0.1:5432 (user postgres, trust auth), if it answers;
 *   3. a throwaway cluster started from the system binaries (/usr/lib/postgresql/N/bin, the
 *      Debian `postgresql` package that `make apt` installs) on a free port, removed at exit.
 * Each test file gets its own database from `createTestDatabase()`.
 *
 * Also here: a throwaway cluster any test may restart (never the shared 5432 server), pg_dump,
 * and a real PgBouncer in transaction mode with TLS on the client side (Neon's pooler).
 */

const run = promisify(execFile);
const isRoot = process.getuid?.() === 0;

/** Highest-versioned /usr/lib/postgresql/N/bin with the tool in it. */
export function pgBinDir(tool = 'initdb'): string | null {
  const base = '/usr/lib/postgresql';
  if (!existsSync(base)) return null;
  const versions = readdirSync(base)
    .filter((v) => /^\d+$/.test(v) && existsSync(join(base, v, 'bin', tool)))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] === undefined ? null : join(base, versions[0], 'bin');
}

function pgTool(tool: string): string {
  const dir = pgBinDir(tool);
  return dir === null ? tool : join(dir, tool);
}

/** Runs a command as the `postgres` OS user when we are root (initdb, postgres and pgbouncer refuse root). */
function asPostgres(cmd: string, args: string[]): [string, string[]] {
  return isRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args];
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

async function portAnswers(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host, port });
    const done = (ok: boolean): void => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(timeoutMs, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

async function canQuery(url: string): Promise<boolean> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  try {
    await c.connect();
    await c.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** Makes a temp dir the postgres user can own (it lives under /tmp, outside the work tree). */
function postgresOwnedDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  if (isRoot) {
    const uid = Number(
      readFileSync('/etc/passwd', 'utf8').match(/^postgres:[^:]*:(\d+):(\d+):/m)?.[1] ?? Number.NaN,
    );
    const gid = Number(
      readFileSync('/etc/passwd', 'utf8').match(/^postgres:[^:]*:(\d+):(\d+):/m)?.[2] ?? Number.NaN,
    );
    if (!Number.isInteger(uid)) throw new Error('no postgres OS user: install Debian postgresql (make apt)');
    chownSync(dir, uid, gid);
  }
  chmodSync(dir, 0o700);
  return dir;
}

export interface Cluster {
  readonly host: string;
  readonly port: number;
  /** Superuser URL of the `postgres` database. */
  readonly url: string;
  readonly dataDir: string;
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Fast stop, a pause (clients see refused connections), start. */
  restart(downMillis?: number): Promise<void>;
  destroy(): Promise<void>;
}

const cleanups = new Set<() => void>();
process.once('exit', () => {
  for (const c of cleanups) c();
});

/** A private cluster on a free port, started from the system binaries. */
export async function startThrowawayCluster(): Promise<Cluster> {
  const bin = pgBinDir('initdb');
  if (bin === null)
    throw new Error('PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: run `make apt`');
  const root = postgresOwnedDir('cannes-pg-');
  const dataDir = join(root, 'data');
  const port = await freePort();
  const pgctl = join(bin, 'pg_ctl');
  await run(
    ...asPostgres(join(bin, 'initdb'), [
      '-D',
      dataDir,
      '-A',
      'trust',
      '-U',
      'postgres',
      '--no-sync',
      '-E',
      'UTF8',
    ]),
  );
  const opts = `-p ${port} -k ${root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=100`;
  const start = async (): Promise<void> => {
    await run(
      ...asPostgres(pgctl, [
        '-D',
        dataDir,
        '-l',
        join(root, 'postgres.log'),
        '-o',
        opts,
        '-w',
        '-t',
        '60',
        'start',
      ]),
    );
  };
  const stop = async (): Promise<void> => {
    await run(...asPostgres(pgctl, ['-D', dataDir, '-m', 'fast', '-w', 'stop'])).catch(() => undefined);
  };
  const killNow = (): void => {
    try {
      const pid = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
      if (Number.isInteger(pid) && pid > 0) process.kill(pid, 'SIGQUIT');
    } catch {
      // not running
    }
    rmSync(root, { recursive: true, force: true });
  };
  cleanups.add(killNow);
  await start();
  return {
    host: '127.0.0.1',
    port,
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    dataDir,
    start,
    stop,
    restart: async (downMillis = 1500) => {
      await stop();
      await sleep(downMillis);
      await start();
    },
    destroy: async () => {
      await stop();
      cleanups.delete(killNow);
      rmSync(root, { recursive: true, force: true });
    },
  };
}

let adminUrlPromise: Promise<string> | undefined;

/** A superuser URL for creating test databases (see the preference order above). */
export function adminUrl(): Promise<string> {
  adminUrlPromise ??= (async () => {
    const fromEnv = process.env['DATABASE_URL'];
    if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
    const local = 'postgres://postgres@127.0.0.1:5432/postgres';
    if ((await portAnswers('127.0.0.1', 5432)) && (await canQuery(local))) return local;
    return (await startThrowawayCluster()).url;
  })();
  return adminUrlPromise;
}

export interface TestDatabase {
  readonly url: string;
  readonly name: string;
  drop(): Promise<void>;
}

function withDatabase(url: string, db: string): string {
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString();
}

/** A fresh, uniquely named database (on `baseUrl`'s server, default the rig's). */
export async function createTestDatabase(baseUrl?: string): Promise<TestDatabase> {
  const admin = baseUrl ?? (await adminUrl());
  const name = `cannes_test_${randomBytes(6).toString('hex')}`;
  const c = new pg.Client({ connectionString: admin, connectionTimeoutMillis: 10_000 });
  await c.connect();
  try {
    await c.query(`CREATE DATABASE ${name}`);
  } finally {
    await c.end();
  }
  return {
    url: withDatabase(admin, name),
    name,
    drop: async () => {
      const d = new pg.Client({ connectionString: admin, connectionTimeoutMillis: 10_000 });
      await d.connect();
      try {
        await d.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await d.end();
      }
    },
  };
}

/** pg_dump of a whole database (schema + data) as text, with the system's matching binary. */
export async function pgDump(url: string): Promise<string> {
  const { stdout } = await run(pgTool('pg_dump'), ['--no-owner', '--dbname', url], {
    maxBuffer: 256 * 1024 * 1024,
  });
  return stdout;
}

export interface Tls {
  readonly dir: string;
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
}

/** A CA and a server certificate for localhost/127.0.0.1, made with the openssl CLI. */
export async function makeTls(dir: string): Promise<Tls> {
  const f = (n: string): string => join(dir, n);
  const o = (args: string[]): Promise<unknown> => run('openssl', args);
  await o([
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-days',
    '1',
    '-subj',
    '/CN=cannes-test-ca',
    '-keyout',
    f('ca.key'),
    '-out',
    f('ca.crt'),
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  await o([
    'req',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-subj',
    '/CN=localhost',
    '-keyout',
    f('server.key'),
    '-out',
    f('server.csr'),
  ]);
  writeFileSync(f('server.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  await o([
    'x509',
    '-req',
    '-in',
    f('server.csr'),
    '-CA',
    f('ca.crt'),
    '-CAkey',
    f('ca.key'),
    '-CAcreateserial',
    '-days',
    '1',
    '-extfile',
    f('server.ext'),
    '-out',
    f('server.crt'),
  ]);
  return { dir, caFile: f('ca.crt'), certFile: f('server.crt'), keyFile: f('server.key') };
}

export interface PgBouncer {
  readonly port: number;
  readonly tls: Tls;
  /** The URL of `database` through the pooler, TLS verify-full against the test CA. */
  url(database: string): string;
  stop(): Promise<void>;
}

/**
 * A real PgBouncer (Debian `pgbouncer`) in transaction mode in front of `upstream`, TLS
 * required on the client side (as Neon's `-pooler` endpoint), run as the postgres user.
 */
export async function startPgBouncer(upstream: { host: string; port: number }): Promise<PgBouncer> {
  const binary = ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer'].find((p) => existsSync(p));
  if (binary === undefined)
    throw new Error('pgbouncer not installed: run `make apt` (Debian package pgbouncer)');
  const dir = postgresOwnedDir('cannes-pgbouncer-');
  const port = await freePort();
  const tls = await makeTls(dir);
  writeFileSync(join(dir, 'userlist.txt'), '"postgres" ""\n');
  writeFileSync(
    join(dir, 'pgbouncer.ini'),
    `[databases]
* = host=${upstream.host} port=${upstream.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${port}
unix_socket_dir =
auth_type = trust
auth_file = ${join(dir, 'userlist.txt')}
pool_mode = transaction
max_client_conn = 200
default_pool_size = 10
server_login_retry = 1
admin_users = postgres
server_connect_timeout = 5
query_wait_timeout = 30
ignore_startup_parameters = extra_float_digits
client_tls_sslmode = require
client_tls_cert_file = ${tls.certFile}
client_tls_key_file = ${tls.keyFile}
server_tls_sslmode = disable
logfile = ${join(dir, 'pgbouncer.log')}
pidfile = ${join(dir, 'pgbouncer.pid')}
`,
  );
  if (isRoot) await run('chown', ['-R', 'postgres:postgres', dir]);
  const [cmd, args] = asPostgres(binary, [join(dir, 'pgbouncer.ini')]);
  const child: ChildProcess = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const kill = (): void => {
    // runuser forwards the signal to pgbouncer; SIGTERM is pgbouncer's immediate shutdown.
    if (child.exitCode === null) child.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  };
  cleanups.add(kill);
  for (let i = 0; !(await portAnswers('127.0.0.1', port, 500)); i++) {
    if (child.exitCode !== null || i > 100) {
      kill();
      throw new Error(`pgbouncer did not start: ${stderr.slice(-2000)}`);
    }
    await sleep(100);
  }
  return {
    port,
    tls,
    url: (database) =>
      `postgres://postgres@localhost:${port}/${database}?sslmode=verify-full&sslrootcert=${encodeURIComponent(tls.caFile)}`,
    stop: async () => {
      cleanups.delete(kill);
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await Promise.race([exited, sleep(5000)]);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
