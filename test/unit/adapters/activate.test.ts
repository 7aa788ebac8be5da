import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ACTIVATE } from '../../../operator/adapters/bundle.ts';
import { DEPLOY_LOCK } from '../../../operator/host/index.ts';

/**
 * The deploy's start-up script, run by the real bash against stand-in commands that only
 * record their calls: what it asks of the host, in order. (The whole script on a simulated
 * server is covered by the e2e tests.)
 */
const dir = mkdtempSync(join(tmpdir(), 'cannes-activate-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function run(commands: string[]): { code: number | null; stderr: string; calls: string[] } {
  const bin = join(dir, `bin-${commands.length}-${Math.random().toString(36).slice(2)}`);
  const log = join(bin, 'calls.log');
  spawnSync('mkdir', ['-p', bin]);
  for (const c of commands) {
    writeFileSync(join(bin, c), `#!/bin/bash\necho "${c} $*" >> ${log}\n`);
    chmodSync(join(bin, c), 0o755);
  }
  const script = ACTIVATE.replaceAll(DEPLOY_LOCK, join(bin, 'deploy.lock'));
  const r = spawnSync('/bin/bash', ['-c', script], { env: { PATH: bin }, encoding: 'utf8' });
  const calls = spawnSync('/bin/cat', [log], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
  return { code: r.status, stderr: r.stderr, calls };
}

const ALL = ['flock', 'install', 'systemctl', 'id', 'useradd', 'usermod', 'nft', 'sshd', 'docker'];

describe('the deploy start-up script', () => {
  it('reloads the host firewall on every deploy and makes the root password unusable', () => {
    const r = run(ALL);
    expect(r.code, r.stderr).toBe(0);
    expect(r.calls).toContain('nft -f /etc/cannes/nftables.nft');
    expect(r.calls).toContain('usermod -p * root');
  });

  it('fails, saying why, on a server without nft: no firewall, no deploy', () => {
    const r = run(ALL.filter((c) => c !== 'nft'));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('nft is missing');
    expect(r.calls.some((c) => c.startsWith('docker'))).toBe(false);
  });
});
