// `systemctl` on a simulated server (test equipment; bundled by real-host-provider.ts and run as
// root inside the server's namespaces). No systemd runs there: this starts, stops and reports
// units from /etc/systemd/system by running their ExecStart= under a small supervisor that
// honours User=, Group=, Environment=, EnvironmentFile=, WorkingDirectory= and Restart=.
// What it runs is real. Unit state lives in /run (gone at reboot, like systemd's); enabled
// units (multi-user.target.wants) are started by the server's boot.
import { spawn, spawnSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { basename, join } from 'node:path';
import { alive, groupAlive, serialised } from './proc.ts';
import { isLightServer, STAND_IN_HTTP, standInCommand } from './stand-in.ts';

const UNIT_DIR = '/etc/systemd/system';
const WANTS = join(UNIT_DIR, 'multi-user.target.wants');
const STATE = '/run/cannes-systemd';
/**
 * Held while a command starts or stops units. systemd queues jobs per unit; one lock for
 * every unit is stricter and just as good here.
 */
const LOCK = '/run/cannes-systemd.lock';
const CHANGES = new Set([
  'start',
  'stop',
  'restart',
  'reload-or-restart',
  'try-restart',
  'enable',
  'disable',
]);

interface Unit {
  readonly name: string;
  readonly exec: string[];
  readonly user: string | undefined;
  readonly group: string | undefined;
  readonly env: Record<string, string>;
  readonly workingDirectory: string | undefined;
  readonly restart: 'no' | 'always' | 'on-failure';
}

function unitName(arg: string): string {
  const n = arg.includes('.') ? arg : `${arg}.service`;
  if (!/^[A-Za-z0-9@_.:-]+$/.test(n)) fail(`invalid unit name ${arg}`);
  return n;
}

function fail(msg: string, code = 1): never {
  process.stderr.write(`systemctl: ${msg}\n`);
  process.exit(code);
}

/** systemd-style word splitting: whitespace, with "double" and 'single' quotes. */
export function splitWords(s: string): string[] {
  const out: string[] = [];
  let cur = '';
  let inWord = false;
  let quote: string | undefined;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (quote) {
      if (c === quote) quote = undefined;
      else if (c === '\\' && quote === '"' && i + 1 < s.length) cur += s[++i];
      else cur += c;
    } else if (c === '"' || c === "'") {
      quote = c;
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) out.push(cur);
      cur = '';
      inWord = false;
    } else if (c === '\\' && i + 1 < s.length) {
      cur += s[++i];
      inWord = true;
    } else {
      cur += c;
      inWord = true;
    }
  }
  if (inWord) out.push(cur);
  return out;
}

function parseUnit(name: string): Unit {
  const path = join(UNIT_DIR, name);
  if (!existsSync(path)) fail(`Unit ${name} not found.`, 5);
  let section = '';
  let exec: string[] | undefined;
  let user: string | undefined;
  let group: string | undefined;
  let workingDirectory: string | undefined;
  let restart: Unit['restart'] = 'no';
  const env: Record<string, string> = {};
  for (const raw of readFileSync(path, 'utf8').split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const sec = /^\[(.+)\]$/.exec(line);
    if (sec) {
      section = sec[1]!;
      continue;
    }
    if (section !== 'Service') continue;
    const eq = line.indexOf('=');
    if (eq < 0) continue;
    const key = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim();
    if (key === 'ExecStart' && value !== '') exec ??= splitWords(value.replace(/^[-@+!:]+/, ''));
    else if (key === 'User') user = value;
    else if (key === 'Group') group = value;
    else if (key === 'WorkingDirectory') workingDirectory = value.replace(/^-/, '');
    else if (key === 'Restart')
      restart = value === 'always' ? 'always' : value === 'no' ? 'no' : 'on-failure';
    else if (key === 'Environment') {
      for (const w of splitWords(value)) {
        const i = w.indexOf('=');
        if (i > 0) env[w.slice(0, i)] = w.slice(i + 1);
      }
    } else if (key === 'EnvironmentFile') {
      const optional = value.startsWith('-');
      const file = value.replace(/^-/, '');
      if (!existsSync(file)) {
        if (!optional) fail(`${name}: EnvironmentFile ${file} missing`);
        continue;
      }
      for (const l of readFileSync(file, 'utf8').split('\n')) {
        const m = /^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(l);
        if (m) env[m[1]!] = m[2]!.replace(/^"(.*)"$/, '$1').replace(/^'(.*)'$/, '$1');
      }
    }
  }
  if (!exec || exec.length === 0) fail(`${name} has no ExecStart=`);
  return { name, exec, user, group, env, workingDirectory, restart };
}

/**
 * Ubuntu's unit of OpenSSH is `ssh.service` (`sshd.service` is its alias): here, the sshd the
 * boot started, whose pid is in its PidFile. `reload` sends it SIGHUP, as its ExecReload does.
 */
const SSH_UNITS = new Set(['ssh.service', 'sshd.service']);

function sshdPid(): number | undefined {
  if (!existsSync('/run/sshd.pid')) return undefined;
  const pid = Number(readFileSync('/run/sshd.pid', 'utf8').trim());
  return Number.isInteger(pid) && pid > 0 && alive(pid) ? pid : undefined;
}

function pidFile(name: string): string {
  return join(STATE, `${name}.pid`);
}

function runningPid(name: string): number | undefined {
  if (SSH_UNITS.has(name)) return sshdPid();
  const f = pidFile(name);
  if (!existsSync(f)) return undefined;
  const pid = Number(readFileSync(f, 'utf8').trim());
  return Number.isInteger(pid) && pid > 0 && alive(pid) ? pid : undefined;
}

/**
 * The stand-in for a unit that runs `node` on a light server: a socat per `--listen
 * host:port` of its ExecStart, answering 200 to every request.
 */
function standInArgv(unit: Unit): string[] {
  const listens: { host: string; port: number }[] = [];
  unit.exec.forEach((a, i) => {
    const l = unit.exec[i + 1];
    if (a !== '--listen' || !l) return;
    const m = /^(.*):(\d+)$/.exec(l);
    if (!m) fail(`${unit.name}: --listen ${l} is not host:port`);
    listens.push({ host: m[1]!, port: Number(m[2]) });
  });
  if (listens.length === 0) fail(`${unit.name}: stand-in needs --listen host:port in ExecStart`);
  return ['/bin/sh', '-c', standInCommand(listens, STAND_IN_HTTP)];
}

function start(name: string): void {
  if (runningPid(name) !== undefined) return;
  const unit = parseUnit(name); // fail early on a bad unit
  mkdirSync(STATE, { recursive: true, mode: 0o755 });
  const log = openSync(join(STATE, `${name}.log`), 'a', 0o600);
  const argv =
    isLightServer() && basename(unit.exec[0]!) === 'node'
      ? standInArgv(unit)
      : [process.execPath, process.argv[1]!, '__supervise', name];
  const sup = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ['ignore', log, log] });
  closeSync(log);
  if (sup.pid === undefined) fail(`cannot start ${name}`);
  writeFileSync(pidFile(name), `${sup.pid}\n`);
  sup.unref();
}

function stop(name: string): void {
  const pid = runningPid(name);
  if (pid !== undefined) {
    try {
      process.kill(-pid, 'SIGTERM');
    } catch {
      process.kill(pid, 'SIGTERM');
    }
    const deadline = Date.now() + 10_000;
    while (groupAlive(pid) && Date.now() < deadline) spawnSync('sleep', ['0.1']);
    if (groupAlive(pid)) process.kill(-pid, 'SIGKILL');
  }
  rmSync(pidFile(name), { force: true });
}

/** The supervisor: runs ExecStart as User=, restarts per Restart=, forwards SIGTERM. */
function supervise(name: string): void {
  const unit = parseUnit(name);
  let child: ReturnType<typeof spawn> | undefined;
  let stopping = false;
  const launch = () => {
    const argv: string[] = [];
    if (unit.user || unit.group) {
      argv.push('setpriv');
      if (unit.user) argv.push(`--reuid=${unit.user}`, '--init-groups');
      argv.push(`--regid=${unit.group ?? unit.user}`);
      argv.push('--');
    }
    argv.push(...unit.exec);
    const env = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', ...unit.env };
    child = spawn(argv[0]!, argv.slice(1), { stdio: 'inherit', env, cwd: unit.workingDirectory ?? '/' });
    child.on('exit', (code, signal) => {
      process.stderr.write(`systemctl: ${name} exited (${code ?? signal})\n`);
      if (stopping) process.exit(0);
      const again = unit.restart === 'always' || (unit.restart === 'on-failure' && code !== 0);
      if (again) setTimeout(launch, 1000);
      else process.exit(code ?? 1);
    });
    child.on('error', (err) => process.stderr.write(`systemctl: ${name}: ${err.message}\n`));
  };
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.on(sig, () => {
      stopping = true;
      if (child && child.exitCode === null) child.kill('SIGTERM');
      else process.exit(0);
      setTimeout(() => {
        child?.kill('SIGKILL');
        process.exit(0);
      }, 8000).unref();
    });
  }
  launch();
}

function enable(name: string): void {
  parseUnit(name);
  mkdirSync(WANTS, { recursive: true });
  const link = join(WANTS, name);
  if (!existsSync(link)) symlinkSync(join('..', name), link);
}

function main(argv: string[]): void {
  const args = argv.filter((a) => !a.startsWith('-'));
  const flags = new Set(argv.filter((a) => a.startsWith('-')));
  const [verb, ...rest] = args;
  const units = rest.map(unitName);
  const quiet = flags.has('--quiet') || flags.has('-q');
  if (verb !== undefined && CHANGES.has(verb)) serialised(LOCK, argv);
  switch (verb) {
    case '__supervise':
      supervise(rest[0]!);
      return;
    case 'daemon-reload':
    case 'reset-failed':
      return;
    case 'reload':
      for (const u of units) {
        if (!SSH_UNITS.has(u))
          fail(`reload of ${u} is not supported (this is the simulated server's systemctl)`);
        const pid = sshdPid();
        if (pid === undefined) fail(`Unit ${u} is not active.`, 7);
        process.kill(pid, 'SIGHUP');
      }
      return;
    case 'start':
      for (const u of units) start(u);
      return;
    case 'stop':
      for (const u of units) stop(u);
      return;
    case 'restart':
    case 'reload-or-restart':
    case 'try-restart':
      for (const u of units) {
        stop(u);
        start(u);
      }
      return;
    case 'enable':
      for (const u of units) {
        enable(u);
        if (flags.has('--now')) start(u);
      }
      return;
    case 'disable':
      for (const u of units) {
        rmSync(join(WANTS, u), { force: true });
        if (flags.has('--now')) stop(u);
      }
      return;
    case 'is-enabled': {
      const on = units.every((u) => existsSync(join(WANTS, u)));
      if (!quiet) process.stdout.write(`${on ? 'enabled' : 'disabled'}\n`);
      process.exit(on ? 0 : 1);
      return;
    }
    case 'is-active':
    case 'status': {
      let allActive = true;
      for (const u of units) {
        const pid = runningPid(u);
        if (pid === undefined) allActive = false;
        if (quiet) continue;
        if (verb === 'is-active') process.stdout.write(`${pid === undefined ? 'inactive' : 'active'}\n`);
        else {
          process.stdout.write(
            `● ${u}\n     Active: ${pid === undefined ? 'inactive (dead)' : `active (running)\n   Main PID: ${pid}`}\n`,
          );
        }
      }
      process.exit(allActive ? 0 : 3);
      return;
    }
    case 'list-units':
      for (const f of existsSync(STATE) ? spawnSync('ls', [STATE]).stdout.toString().split('\n') : []) {
        if (f.endsWith('.pid')) {
          const u = basename(f, '.pid');
          process.stdout.write(`${u} ${runningPid(u) === undefined ? 'inactive' : 'active'}\n`);
        }
      }
      return;
    default:
      fail(`unsupported command ${verb ?? '(none)'} (this is the simulated server's systemctl)`);
  }
}

if (process.argv[1]?.endsWith('.mjs')) {
  // systemd starts units with umask 022 unless UMask= says otherwise.
  process.umask(0o022);
  try {
    main(process.argv.slice(2));
  } catch (err) {
    fail(err instanceof Error ? err.message : String(err));
  }
}
