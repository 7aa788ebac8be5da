/**
 * `make dev`, the project's main job, run as a user runs it: `node tools/dev.ts` (what the make
 * target calls after building), to Ready with examples/ as they are in their own namespace; the
 * chat command it prints is pasted into bash and must answer; then Ctrl-C, after which nothing
 * it started may be left: no process, no network namespace, no mount.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO, waitFor } from '../lib/system.ts';

const run = promisify(execFile);

/** A process as /proc shows it: pid and start time (a pid alone may be reused). */
type Proc = { pid: number; start: string; cmd: string };

function processes(): Map<number, Proc & { ppid: number }> {
  const all = new Map<number, Proc & { ppid: number }>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const cmd = readFileSync(`/proc/${name}/cmdline`, 'utf8').replaceAll('\0', ' ').trim();
      all.set(Number(name), { pid: Number(name), ppid: Number(rest[1]), start: rest[19] ?? '', cmd });
    } catch {}
  }
  return all;
}

/** `root` and every process below it, by parent links. */
function descendants(root: number): Proc[] {
  const all = processes();
  const out: Proc[] = [];
  const todo = [root];
  while (todo.length > 0) {
    const p = todo.pop();
    for (const q of all.values()) {
      if (q.ppid === p) {
        out.push(q);
        todo.push(q.pid);
      }
    }
  }
  return out;
}

const stillAlive = (procs: Proc[]) => {
  const now = processes();
  return procs.filter((p) => now.get(p.pid)?.start === p.start);
};
const netnsList = async () =>
  (await run('ip', ['netns', 'list'])).stdout
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter(Boolean);
const mounts = () => readFileSync('/proc/self/mounts', 'utf8').split('\n').filter(Boolean);

let dev: ChildProcess | undefined;
let out = '';

afterAll(async () => {
  if (dev && dev.exitCode === null && dev.signalCode === null) {
    dev.kill('SIGINT');
    await new Promise((r) => dev?.once('exit', r));
  }
});

describe('make dev', () => {
  it('says what it is waiting for and fails with the reason, exit 1, when the Vps is not Ready in time', async () => {
    // Too short to reach Ready: dev must report the silence, then fail saying why, and tear down.
    const r = await run(process.execPath, [join(REPO, 'tools', 'dev.ts')], {
      cwd: REPO,
      env: { ...process.env, V: '', CANNES_DEV_STALL_S: '2', CANNES_DEV_TIMEOUT_S: '12' },
      timeout: 300_000,
    }).then(
      () => ({ code: 0, out: '' }),
      (e: { code?: number; stdout?: string; stderr?: string }) => ({
        code: e.code ?? -1,
        out: `${e.stdout ?? ''}${e.stderr ?? ''}`,
      }),
    );
    expect(r.code, r.out).toBe(1);
    expect(r.out).toMatch(/failed: the Vps did not become Ready within 12 s/);
    // Where it stands: its conditions and the operator's own last lines.
    expect(r.out).toMatch(/Its conditions:/);
    expect(r.out).toMatch(/the operator's last log lines:/);
    expect(r.out).toMatch(/tearing down/);
  }, 300_000);

  it('goes to Ready with examples/ as they are, prints a chat from a laptop on the tailnet and an SSH tunnel that work, and Ctrl-C leaves nothing behind', async () => {
    const netnsBefore = new Set(await netnsList());
    const mountsBefore = new Set(mounts());
    dev = spawn(process.execPath, [join(REPO, 'tools', 'dev.ts')], {
      cwd: REPO,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, V: '' },
    });
    const exited = new Promise<number | null>((r) => dev?.once('exit', (code) => r(code)));
    dev.stdout?.on('data', (b: Buffer) => {
      out += b.toString();
    });
    dev.stderr?.on('data', (b: Buffer) => {
      out += b.toString();
    });
    const tail = () => `make dev said:\n${out.split('\n').slice(-60).join('\n')}`;

    const printed = await waitFor(
      'make dev to print its commands',
      async () => {
        if (dev?.exitCode !== null) return 'exited';
        return out.includes('Ctrl-C tears everything down.') ? 'printed' : undefined;
      },
      1_500_000,
      tail,
    );
    expect(printed, `make dev exited ${dev.exitCode} before Ready\n${tail()}`).toBe('printed');
    expect(out, tail()).toMatch(/applied examples\/ in namespace cannes-demo/);
    expect(out, tail()).toMatch(/Vps agent is Ready/);

    // The command blocks, exactly as printed, pasted into a root shell.
    const lines = out.split('\n');
    const blockAfter = (header: string) => {
      const start = lines.findIndex((l) => l.startsWith(header));
      expect(start, `no "${header}" in\n${tail()}`).toBeGreaterThan(-1);
      const block: string[] = [];
      for (const l of lines.slice(start + 1)) {
        if (l.trim() === '') break;
        if (l.startsWith('    ')) block.push(l.slice(4));
      }
      return block;
    };
    const paste = async (block: string[]) => {
      const r = await run('bash', ['-euo', 'pipefail', '-c', block.join('\n')], { timeout: 300_000 }).catch(
        (e: { stdout?: string; stderr?: string }) => ({
          stdout: e.stdout ?? '',
          stderr: `${e.stderr ?? ''}`,
        }),
      );
      const answer = JSON.parse(r.stdout || '{}') as { choices?: { message?: { content?: string } }[] };
      return { ...r, content: answer.choices?.[0]?.message?.content };
    };
    const chatBlock = blockAfter('  Chat with the agent');
    const chat = await paste(chatBlock);
    // From the laptop on the tailnet; the fake upstream answers only when the proxy injected
    // the canary key.
    expect(chat.content, `${chat.stdout}\n${chat.stderr}\n${tail()}`).toContain('chunk 0');
    // The owner's SSH tunnel, with the token from the first block: a chat through it reaches the
    // fake upstream too, with the tailnet on (Serve has a network of its own).
    const tunnelBlock = blockAfter('  Or with your own SSH key');
    const tokenLine = chatBlock.find((l) => l.startsWith('TOKEN='));
    const viaSsh = await run(
      'bash',
      ['-euo', 'pipefail', '-c', [tokenLine ?? '', ...tunnelBlock].join('\n')],
      // The second chat turn: seconds usually, minutes on a busy machine (docs/gateway.md).
      { timeout: 420_000 },
    ).catch((e: { stdout?: string; stderr?: string }) => ({
      stdout: e.stdout ?? '',
      stderr: `failed: ${e.stderr ?? ''}`,
    }));
    await run('pkill', ['-f', 'owner_ed25519 -L']).catch(() => undefined);
    expect(viaSsh.stderr, `${viaSsh.stdout}\n${tail()}`).not.toMatch(/^failed:/);
    expect(viaSsh.stdout, `${viaSsh.stderr}\n${tail()}`).toContain('chunk 0');
    const block = chatBlock;

    // What dev started: every process below it (the control plane's supervisor included), the
    // network namespaces and the mounts that appeared while it ran.
    const started = descendants(dev.pid ?? -1);
    expect(started.some((p) => p.cmd.includes('kube-apiserver'))).toBe(true);
    // Other test files may make namespaces and mounts meanwhile: only those a process of dev's
    // sits in, or that name dev's own folders, are dev's.
    const inode = (path: string) => {
      try {
        return statSync(path).ino;
      } catch {
        return -1;
      }
    };
    const devNetInodes = new Set(started.map((p) => inode(`/proc/${p.pid}/ns/net`)));
    const newNetns = (await netnsList()).filter(
      (n) => !netnsBefore.has(n) && devNetInodes.has(inode(`/run/netns/${n}`)),
    );
    const laptopNetns = /ip netns exec (\S+) curl/.exec(block.join('\n'))?.[1];
    expect(newNetns).toContain(laptopNetns);
    const devPid = String(dev.pid);
    const newMounts = mounts().filter(
      (m) =>
        !mountsBefore.has(m) &&
        (m.includes(`-${devPid}-`) ||
          m.includes(`run-${devPid}`) ||
          newNetns.some((n) => m.includes(`/run/netns/${n}`))),
    );

    dev.kill('SIGINT');
    expect(await exited, tail()).toBe(0);
    let left: string[] = [];
    await waitFor(
      'everything make dev started to be gone',
      async () => {
        left = [
          ...stillAlive(started).map((p) => `process ${p.pid} ${p.cmd.slice(0, 120)}`),
          ...(await netnsList()).filter((n) => newNetns.includes(n)).map((n) => `netns ${n}`),
          ...mounts()
            .filter((m) => newMounts.includes(m))
            .map((m) => `mount ${m}`),
        ];
        return left.length === 0 ? true : undefined;
      },
      60_000,
      () => `left behind:\n${left.join('\n')}\n${tail()}`,
    );
  }, 1_800_000);
});
