import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OPERATOR_RUNTIME_ENV } from '../../../operator/config.ts';
import { ensureImage, type PodSpecForPodman, podman, podmanRunArgs } from '../../lib/podman.ts';
import { findObject, render } from '../chart/helm.ts';

// The image `make image` builds (tools/image.sh, built here when missing or stale), run with podman
// as the chart's Deployment runs it: its user, read-only root, no capabilities, no privilege
// escalation, /tmp as the emptyDir and the master keys as the read-only Secret volume.
type Container = PodSpecForPodman['containers'][number] & {
  args: string[];
  env: { name: string; value?: string; valueFrom?: unknown }[];
};
type Spec = PodSpecForPodman & {
  securityContext: { runAsUser: number; runAsGroup: number; fsGroup: number };
  containers: Container[];
};

const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as {
  version: string;
  dependencies: Record<string, string>;
};

/** Top-level packages that package-lock.json marks dev-only. */
function devOnlyPackages(): string[] {
  const lock = JSON.parse(readFileSync('package-lock.json', 'utf8')) as {
    packages: Record<string, { dev?: boolean }>;
  };
  return Object.entries(lock.packages)
    .filter(([path, p]) => p.dev === true && /^node_modules\/(@[^/]+\/)?[^/]+$/.test(path))
    .map(([path]) => path.slice('node_modules/'.length));
}

let image = '';
let spec: Spec;
let runArgs: string[] = [];
let dir = '';
let masterKeysMount = '';
let masterKeysFile = '';

/** `podman run` of the image as the pod spec would; `entrypoint` replaces the image's for checks. */
function run(args: string[], opts: { entrypoint?: string; env?: Record<string, string> } = {}) {
  const flags = [...runArgs];
  for (const [k, v] of Object.entries(opts.env ?? {})) flags.push('-e', `${k}=${v}`);
  if (opts.entrypoint !== undefined) flags.push('--entrypoint', opts.entrypoint);
  return podman(['run', ...flags, image, ...args]);
}

/** The container's plain environment from the pod spec (references to Secrets and fields left out). */
function plainEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of spec.containers[0]!.env) if (e.value !== undefined) env[e.name] = e.value;
  return env;
}

beforeAll(async () => {
  const built = await ensureImage();
  image = built.image;
  console.log(`[image] ${image} ready in ${built.seconds.toFixed(1)} s (tools/image.sh; ~0.1 s when cached)`);
  const deployment = findObject(await render(), 'Deployment');
  spec = (deployment['spec'] as { template: { spec: Spec } }).template.spec;
  // The Secret volume's one projected key, as the kubelet writes it: mode 0440, group fsGroup.
  dir = mkdtempSync(join(tmpdir(), 'image-test-'));
  chmodSync(dir, 0o755);
  const keysDir = join(dir, 'master-keys');
  const mount = spec.containers[0]!.volumeMounts!.find((m) => m.name === 'master-keys')!;
  masterKeysMount = mount.mountPath;
  const keyEnv = spec.containers[0]!.env.find((e) => e.name === 'CANNES_MASTER_KEYS_FILE')!;
  masterKeysFile = keyEnv.value!;
  const file = join(keysDir, masterKeysFile.slice(masterKeysMount.length + 1));
  mkdirSync(keysDir, { mode: 0o755 });
  writeFileSync(file, `k1 ${randomBytes(32).toString('base64')}\n`);
  chownSync(file, 0, spec.securityContext.fsGroup);
  chmodSync(file, 0o440);
  runArgs = podmanRunArgs(spec, { 'master-keys': keysDir });
}, 1_800_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('the operator image run as the chart runs it', () => {
  it('answers --version with package.json’s version and --help with its environment variables', async () => {
    const version = await run(['--version']);
    expect(version.stderr).toBe('');
    expect(version.code).toBe(0);
    expect(version.stdout.trim()).toBe(`cannes-operator ${pkg.version}`);
    const help = await run(['--help']);
    expect(help.code).toBe(0);
    for (const name of ['DATABASE_URL', 'CANNES_MASTER_KEYS_FILE', 'HCLOUD_ENDPOINT'])
      expect(help.stdout).toContain(name);
  });

  it('starts `run` (the image’s CMD) and stops on a missing DATABASE_URL with one clear line', async () => {
    const res = await run([], { env: plainEnv() });
    expect(res.code).toBe(2);
    expect(res.stderr.trim()).toMatch(/^cannes-operator: DATABASE_URL: /);
    expect(res.stderr).not.toMatch(/\n\s+at /); // no stack trace
  });

  it('runs as the pod’s non-root user with no capabilities, no new privileges and a read-only root', async () => {
    const probe = `
      const fs = require('node:fs');
      const status = fs.readFileSync('/proc/self/status', 'utf8');
      const field = (k) => status.match(new RegExp('^' + k + ':\\\\s*(.*)$', 'm'))[1].trim();
      const tryWrite = (p) => { try { fs.writeFileSync(p, 'x'); fs.rmSync(p); return 'ok'; } catch (e) { return e.code; } };
      console.log(JSON.stringify({
        uid: process.getuid(), gid: process.getgid(), groups: process.getgroups(),
        capEff: field('CapEff'), capBnd: field('CapBnd'), noNewPrivs: field('NoNewPrivs'),
        seccomp: field('Seccomp'),
        writeApp: tryWrite('/app/x'), writeRoot: tryWrite('/x'), writeTmp: tryWrite('/tmp/x'),
        keys: fs.readFileSync(process.env.CANNES_MASTER_KEYS_FILE, 'utf8').split(' ')[0],
      }));`;
    const res = await run(['-e', probe], { entrypoint: 'node', env: plainEnv() });
    expect(res.stderr).toBe('');
    const got = JSON.parse(res.stdout) as Record<string, unknown>;
    expect(got).toMatchObject({
      uid: spec.securityContext.runAsUser,
      gid: spec.securityContext.runAsGroup,
      capEff: '0000000000000000',
      capBnd: '0000000000000000',
      noNewPrivs: '1',
      seccomp: '2', // filter mode: the runtime's default profile, as RuntimeDefault
      writeApp: 'EROFS',
      writeRoot: 'EROFS',
      writeTmp: 'ok',
      keys: 'k1',
    });
    expect(got['uid']).toBeGreaterThan(0);
    expect(got['groups']).toContain(spec.securityContext.fsGroup);
  });

  it('allocates with jemalloc, as the rig’s operator does (the memory docs/robustness.md measures)', async () => {
    const probe = `
      const maps = require('node:fs').readFileSync('/proc/self/maps', 'utf8');
      console.log(JSON.stringify({ jemalloc: maps.includes('/libjemalloc.so.2'), conf: process.env.MALLOC_CONF }));`;
    const res = await run(['-e', probe], { entrypoint: 'node', env: plainEnv() });
    // A preload that failed is a line from ld.so on stderr and a process without the library.
    expect(res.stderr).toBe('');
    expect(JSON.parse(res.stdout)).toEqual({ jemalloc: true, conf: OPERATOR_RUNTIME_ENV['MALLOC_CONF'] });
  });

  it('holds production dependencies only: no devDependency, no compiler, no sources', async () => {
    const probe = `
      const fs = require('node:fs');
      const top = fs.readdirSync('/app/node_modules').flatMap((d) =>
        d.startsWith('@') ? fs.readdirSync('/app/node_modules/' + d).map((s) => d + '/' + s) : [d]);
      const onPath = ['gcc', 'cc', 'g++', 'c++', 'make', 'python3', 'tsc']
        .filter((b) => process.env.PATH.split(':').some((p) => fs.existsSync(p + '/' + b)));
      console.log(JSON.stringify({ top, onPath, app: fs.readdirSync('/app').sort() }));`;
    const res = await run(['-e', probe], { entrypoint: 'node' });
    expect(res.stderr).toBe('');
    const got = JSON.parse(res.stdout) as { top: string[]; onPath: string[]; app: string[] };
    for (const dep of Object.keys(pkg.dependencies)) expect(got.top).toContain(dep);
    // Dev-only packages are those the lock file marks `dev` (a devDependency that a production
    // dependency also needs, such as @types/node for @kubernetes/client-node, is not).
    const devOnly = devOnlyPackages();
    for (const dev of ['typescript', 'vitest', '@biomejs/biome', 'esbuild', '@types/pg'])
      expect(devOnly).toContain(dev);
    expect(got.top.filter((p) => devOnly.includes(p))).toEqual([]);
    expect(got.onPath).toEqual([]);
    expect(got.app).toEqual(['dist', 'node_modules', 'package.json']);
  });
});
