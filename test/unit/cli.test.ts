/**
 * The operator's command line as a user meets it: the real entry point, spawned. A
 * configuration error is one line on stderr and exit 2, never a stack trace nor a secret.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ENVIRONMENT } from '../../operator/config.ts';

const PKG_VERSION = (JSON.parse(readFileSync('package.json', 'utf8')) as { version: string }).version;
const FAKE_DB = 'postgres://u:FAKEPASSWORD-cli@127.0.0.1:1/db';
const BASE_ENV = { PATH: process.env['PATH'] ?? '/usr/bin:/bin' };

function cli(args: string[], env: Record<string, string> = {}, entry = 'operator/main.ts') {
  const res = spawnSync(process.execPath, [entry, ...args], {
    env: { ...BASE_ENV, ...env },
    encoding: 'utf8',
    timeout: 15_000,
  });
  return { code: res.status, stdout: res.stdout, stderr: res.stderr };
}

/** Exit 2 with exactly one stderr line matching `message`, no stack, no secret. */
function expectOneLineError(res: ReturnType<typeof cli>, message: RegExp) {
  expect(res.code).toBe(2);
  const lines = res.stderr.split('\n').filter((l) => l !== '');
  expect(lines, res.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^cannes-operator: /);
  expect(lines[0]).toMatch(message);
  expect(res.stderr).not.toMatch(/\n\s+at |Error:|FAKEPASSWORD/);
  expect(res.stdout).toBe('');
}

const env = { DATABASE_URL: FAKE_DB, CANNES_MASTER_KEYS_FILE: '/nonexistent/keys' };

describe('cannes-operator configuration errors', () => {
  it('a missing DATABASE_URL', () => {
    expectOneLineError(cli(['run'], { CANNES_MASTER_KEYS_FILE: '/k' }), /DATABASE_URL: not set/);
  });

  it('a DATABASE_URL of the wrong kind, without echoing it', () => {
    expectOneLineError(
      cli(['run'], { ...env, DATABASE_URL: 'mysql://u:FAKEPASSWORD-cli@h/db' }),
      /DATABASE_URL: must start with postgres/,
    );
  });

  it('an unknown flag', () => {
    expectOneLineError(cli(['run', '--nope'], env), /flags: Unknown option '--nope'.*--help/);
  });

  it('a bad address', () => {
    expectOneLineError(cli(['run', '--metrics-bind-address', 'nohost'], env), /--metrics-bind-address/);
    expectOneLineError(cli(['run', '--health-probe-bind-address', ':99999'], env), /port out of range/);
  });

  it('a log level or format it does not list, from the flag or the environment', () => {
    expectOneLineError(cli(['run', '--log-level', 'verbose'], env), /--log-level: expected one of trace/);
    expectOneLineError(cli(['run'], { ...env, LOG_LEVEL: 'loud' }), /LOG_LEVEL: expected one of/);
    expectOneLineError(
      cli(['run', '--log-format', 'pretty'], env),
      /--log-format: expected one of json, console/,
    );
  });

  it('a resync that is no duration', () => {
    expectOneLineError(cli(['run', '--resync', '10 minutes'], env), /--resync: expected a duration/);
    expectOneLineError(cli(['run', '--resync', '48h'], env), /--resync: at most 24h/);
  });

  it('an unknown rekey option', () => {
    const res = cli(['rekey', '--frobnicate']);
    expect(res.code).toBe(2);
    expect(res.stderr).toBe(
      "cannes-operator rekey: Unknown option '--frobnicate' (see cannes-operator rekey --help)\n",
    );
  });

  it('a recover without exactly one <namespace>/<vps>', () => {
    // Few spawns: each is a Node start, and the unit timeout is 20 s on a shared machine.
    for (const args of [
      ['recover', 'agent'],
      ['recover', 'a/b', 'c/d'],
    ]) {
      const res = cli(args, env);
      expect(res.code, args.join(' ')).toBe(2);
      expect(res.stderr).toBe(
        'cannes-operator recover: expected one argument <namespace>/<vps> (see cannes-operator recover --help)\n',
      );
      expect(res.stdout).toBe('');
    }
    const res = cli(['recover', '--force', 'a/b'], env);
    expect(res.stderr).toBe(
      "cannes-operator recover: Unknown option '--force' (see cannes-operator recover --help)\n",
    );
  });

  it('an unknown command', () => {
    expectOneLineError(cli(['frobnicate']), /unknown command 'frobnicate'/);
  });

  it('a master key file that cannot be read stops with exit 1 and a log line naming it, no stack', () => {
    const res = cli(
      [
        'run',
        '--log-format',
        'console',
        '--metrics-bind-address',
        '127.0.0.1:1',
        '--health-probe-bind-address',
        '127.0.0.1:2',
      ],
      env,
    );
    expect(res.code).toBe(1);
    expect(res.stdout).toMatch(
      /^\S+ ERROR KeyringUnreadable: cannot read master key file \/nonexistent\/keys/,
    );
    expect(res.stdout.trim().split('\n')).toHaveLength(1);
    expect(res.stdout + res.stderr).not.toMatch(/\n\s+at |FAKEPASSWORD/);
  });
});

describe('cannes-operator --version and --help', () => {
  it('prints the package.json version from the source and from the build, without npm', () => {
    for (const args of [['--version'], ['run', '--version']]) {
      const res = cli(args);
      expect(res.code).toBe(0);
      expect(res.stdout).toBe(`cannes-operator ${PKG_VERSION}\n`);
    }
    // As the image runs it: `node dist/operator/main.js`, npm_package_version unset.
    if (existsSync('dist/operator/main.js')) {
      const res = cli(['--version'], {}, 'dist/operator/main.js');
      expect(res.stdout).toBe(`cannes-operator ${PKG_VERSION}\n`);
    }
  });

  it('names every command in --help, and recover --help says what it checks and what it does', () => {
    const top = cli(['--help']);
    expect(top.stdout).toMatch(/usage: cannes-operator \[run\|rekey\|recover\|key\]/);
    expect(top.stdout).toMatch(/^ {2}key {6}hand a Direct ModelKey/m);
    expect(top.stdout).toMatch(/^ {2}recover {2}<namespace>\/<vps>: /m);
    const res = cli(['recover', '--help']);
    expect(res.code).toBe(0);
    expect(res.stderr).toBe('');
    for (const text of [
      'Usage: cannes-operator recover <namespace>/<vps>',
      'cannes.dev/usage=cloud-token',
      'cannes.dev/vps-uid=<the Vps',
      'cannes.dev/recover=<server id>',
      'CANNES_MASTER_KEYS_FILE',
      'Exit status: 0 recovery requested; 1 an API failed (run it again); 2 usage error or refusal.',
    ])
      expect(res.stdout).toContain(text);
  });

  it('lists every flag run accepts and every environment variable the operator reads', () => {
    const res = cli(['run', '--help']);
    expect(res.code).toBe(0);
    for (const flag of ['--version', '--log-format', '--leader-election-id', '--resync DURATION']) {
      expect(res.stdout).toContain(flag);
    }
    expect(res.stdout).toContain('trace|debug|info|warn|error|fatal|silent');
    expect(cli(['--help']).stdout).toContain(ENVIRONMENT);
    // Every variable the operator's sources read, found by grepping them.
    const read = new Set<string>();
    const walk = (dir: string) => {
      for (const f of readdirSync(dir)) {
        const p = join(dir, f);
        if (statSync(p).isDirectory()) walk(p);
        else if (p.endsWith('.ts'))
          for (const m of readFileSync(p, 'utf8').matchAll(/env\[['"]([A-Z_][A-Z0-9_]*)['"]\]/g))
            read.add(m[1]!);
      }
    };
    walk('operator');
    expect(read.size).toBeGreaterThan(8);
    const missing = [...read].filter((v) => !new RegExp(`^  ${v} `, 'm').test(res.stdout));
    expect(missing).toEqual([]);
  });
});
