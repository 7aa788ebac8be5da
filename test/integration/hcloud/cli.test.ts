import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomToken, type Simulator, startSimulator } from '../../hcloud-sim/simulator.ts';
import { StateOnlyProvider } from '../../hcloud-sim/state-only-provider.ts';
import { waitUntil } from '../../lib/wait.ts';

/**
 * A real Hetzner client that no one here wrote: the official `hcloud` CLI (mk/hcloud.mk
 * installs it), pointed at the simulator with HCLOUD_ENDPOINT. Where it and the simulator
 * disagree, the simulator is wrong.
 */
const cache = process.env['CANNES_CACHE'] ?? join(homedir(), '.cache', 'cannes');
const CLI = [process.env['HCLOUD_CLI'], join(cache, 'hcloud-cli-deb', 'hcloud'), '/usr/bin/hcloud'].find(
  (p): p is string => p !== undefined && existsSync(p),
);
if (!CLI) {
  // `make test` installs it; a bare `vitest run` on a machine without it skips, CI must not.
  if (process.env['CI']) throw new Error('hcloud CLI missing: run `make hcloud-cli`');
  console.warn('SKIPPED: hcloud CLI not installed (make hcloud-cli)');
}

describe.skipIf(!CLI)('the official hcloud CLI against the simulator', () => {
  let sim: Simulator;
  let provider: StateOnlyProvider;
  let dir: string;
  const name = `cli-${Math.random().toString(36).slice(2, 8)}`;
  let id = 0;

  function hcloud(args: string[], token?: string): Promise<{ code: number; out: string; err: string }> {
    return new Promise((resolve) => {
      execFile(
        CLI!,
        args,
        {
          timeout: 60_000,
          env: {
            PATH: process.env['PATH'] ?? '/usr/bin:/bin',
            HOME: dir,
            HCLOUD_CONFIG: join(dir, 'cli.toml'),
            HCLOUD_ENDPOINT: sim.endpoint,
            HCLOUD_TOKEN: token ?? sim.token.reveal(),
          },
        },
        (error, stdout, stderr) => {
          const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
          resolve({ code, out: stdout, err: stderr });
        },
      );
    });
  }

  async function describeJson(): Promise<Record<string, unknown>> {
    const r = await hcloud(['server', 'describe', name, '-o', 'json']);
    expect(r.code, r.err).toBe(0);
    const v: unknown = JSON.parse(r.out);
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('describe: not an object');
    return Object.fromEntries(Object.entries(v));
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cannes-hcloud-cli-'));
    provider = new StateOnlyProvider();
    sim = await startSimulator({ provider, actionDurationMs: 100 });
  });
  afterAll(async () => {
    await sim?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('creates a server and prints its IPv4 and root password', async () => {
    const r = await hcloud([
      'server',
      'create',
      '--name',
      name,
      '--type',
      'cx23',
      '--image',
      'ubuntu-24.04',
      '--location',
      'fsn1',
      '--label',
      'app=cannes',
    ]);
    expect(r.code, r.err).toBe(0);
    const m = /Server (\d+) created/.exec(r.out);
    expect(m).not.toBeNull();
    id = Number(m![1]);
    expect(r.out).toMatch(/IPv4:\s+198\.(18|19)\.\d+\.\d+/);
    expect(r.out).toMatch(/Root password:\s+[A-Za-z0-9]{20}/);
    expect(sim.admin.server(id)?.['status']).toBe('running');
    expect(provider.state(id)).toBe('os');
  });

  it('lists it, by label selector too', async () => {
    const all = await hcloud(['server', 'list', '-o', 'noheader', '-o', 'columns=id,name,status,location']);
    expect(all.code, all.err).toBe(0);
    expect(all.out.trim().split(/\s+/)).toEqual([String(id), name, 'running', 'fsn1']);
    const sel = await hcloud([
      'server',
      'list',
      '-o',
      'noheader',
      '-o',
      'columns=name',
      '-l',
      'app in (cannes,x)',
    ]);
    expect(sel.out.trim()).toBe(name);
    const none = await hcloud(['server', 'list', '-o', 'noheader', '-l', 'app!=cannes']);
    expect(none.out.trim()).toBe('');
  });

  it('describes it as the API does', async () => {
    const s = await describeJson();
    expect(s['id']).toBe(id);
    expect(s['status']).toBe('running');
    expect(s['rescue_enabled']).toBe(false);
    expect(JSON.stringify(s['server_type'])).toContain('"name":"cx23"');
    expect(JSON.stringify(s['datacenter'])).toContain('"name":"fsn1"');
    expect(s['labels']).toEqual({ app: 'cannes' });
    const text = await hcloud(['server', 'describe', name]);
    expect(text.out).toMatch(/Status:\s+running/);
    expect(text.out).toMatch(/Rescue System:\s+disabled/);
    expect(text.out).toMatch(/Location:\s*\n\s+Name:\s+fsn1/);
  });

  it('enables rescue and gets a one-time root password', async () => {
    const r = await hcloud(['server', 'enable-rescue', name]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(new RegExp(`Rescue enabled for server ${id} with root password: [A-Za-z0-9]{20}`));
    expect((await describeJson())['rescue_enabled']).toBe(true);
  });

  it('resets it into rescue, after which rescue is off again', async () => {
    const r = await hcloud(['server', 'reset', name]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain(`Server ${id} reset`);
    expect(provider.state(id)).toBe('rescue');
    const s = await describeJson();
    expect(s['status']).toBe('running');
    expect(s['rescue_enabled']).toBe(false);
  });

  it('deletes it', async () => {
    const r = await hcloud(['server', 'delete', name]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain(`Server ${name} deleted`);
    const list = await hcloud(['server', 'list', '-o', 'noheader']);
    expect(list.out).not.toContain(name);
    await waitUntil('the host to be destroyed', () => provider.state(id) === 'destroyed', 5_000, {
      intervalMs: 25,
    });
  });

  it('fails with unauthorized for a wrong token', async () => {
    const r = await hcloud(['server', 'list'], randomToken());
    expect(r.code).not.toBe(0);
    expect(r.err).toContain('(unauthorized)');
  });
});
