import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const dir = mkdtempSync(join(tmpdir(), 'cannes-bundle-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the proxy bundle', () => {
  it('runs with plain node from a folder holding only that file', () => {
    copyFileSync('dist/proxy/cannes-proxy.mjs', join(dir, 'cannes-proxy.mjs'));
    expect(readdirSync(dir)).toEqual(['cannes-proxy.mjs']);
    const out = execFileSync(process.execPath, ['cannes-proxy.mjs', '--help'], {
      cwd: dir,
      encoding: 'utf8',
      env: { PATH: '/usr/bin:/bin' },
    });
    expect(out).toContain('--keys');
  });
});
