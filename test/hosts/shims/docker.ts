// `docker` on a simulated server (test equipment; bundled by real-host-provider.ts and run as root
// inside the server's namespaces). No Docker engine exists here and images cannot be pulled, so
// `docker compose -f F up -d | down | ps | pull | logs | restart` runs each service as a real
// process "container":
//   - its own network namespace, a veth on the server's `docker0` bridge (172.17.0.1/16), address
//     172.17.0.2, .3, ... and default route via 172.17.0.1; or, for a service with `networks:`,
//     one veth per compose network, each a `br-<id>` bridge holding the network's gateway
//     address (ipam's subnet, else the first free 172.18-30.0.0/16), the container at its
//     `ipv4_address` or the next free one, the default route and the published ports on the
//     first non-internal network (Docker's order), none through an internal one. As with
//     Docker, the host reaches a container from its own address on that bridge;
//   - its own mount namespace and a fresh root (tmpfs) holding only: this machine's /usr (and the
//     /bin, /lib, /sbin links) read-only, a minimal /etc (passwd, group, hosts with
//     `host.docker.internal` → 172.17.0.1 when extra_hosts asks for host-gateway), /proc, a few
//     /dev nodes, /tmp, /home/node, Node at /opt/node, and the compose volumes at their targets.
//     The server's /root, /etc/ssh, /opt, /var/lib are not there;
//   - uid:gid from `user:` (default 1000:1000, like the OpenClaw image's `node`), no capabilities,
//     no_new_privs.
// The image is mapped to a command (docs/hosts.md): the service's `x-cannes-command`, else the
// rig's image map (/run/cannes/shims/images.json: entrypoint, extra read-only binds, env), else the
// service's own `entrypoint` + `command`.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { parse } from 'yaml';
import { alive, groupAlive, serialised } from './proc.ts';
import { isLightServer, STAND_IN_HTTP, standInCommand } from './stand-in.ts';

const STATE = '/var/lib/docker-shim';
/** Held while a command changes containers (see serialised()). */
const LOCK = '/run/docker-shim.lock';
/** The compose verbs that start or stop containers. */
const CHANGES = new Set(['up', 'down', 'stop', 'rm', 'restart']);
const IMAGES = '/run/cannes/shims/images.json';
const BRIDGE_IP = '172.17.0.1';

interface Volume {
  readonly source: string;
  readonly target: string;
  readonly readOnly: boolean;
}
interface Port {
  readonly hostIp: string;
  readonly hostPort: number;
  readonly containerPort: number;
}
/** A compose network (top-level `networks:`), as this shim runs it: a `br-*` bridge. */
interface Network {
  /** The compose key (`default`, `serve`, ...). */
  readonly key: string;
  readonly internal: boolean;
  /** `ipam.config[0]`; without it the first free 172.18-30.0.0/16, like Docker's default pools. */
  readonly subnet: string | undefined;
  readonly gateway: string | undefined;
}
interface Attachment {
  readonly network: string;
  readonly ipv4Address: string | undefined;
}
interface Service {
  readonly name: string;
  /** Empty: docker0 (`network_mode: bridge`, the only mode without `networks:`). */
  readonly networks: Attachment[];
  readonly image: string;
  readonly argv: string[];
  readonly user: string;
  readonly env: Record<string, string>;
  readonly volumes: Volume[];
  readonly hosts: [string, string][];
  readonly workingDir: string;
  readonly ports: Port[];
  readonly extraBinds: Volume[];
  readonly restart: string;
  /** `x-cannes.health`: a URL polled inside the container's network for `ps` Health. */
  readonly health: string | undefined;
  readonly startPeriodMs: number;
}
interface ContainerState {
  readonly service: string;
  readonly image: string;
  readonly pid: number;
  /** The address on the network that has the default route and the published ports. */
  readonly ip: string;
  /** Every address the container holds (docker0 or its networks). */
  readonly addresses?: string[];
  readonly netns: string;
  readonly hash: string;
  readonly forwarders: number[];
  readonly startedAt: string;
  /** The server boot this container was started in: pids of an earlier boot mean nothing. */
  readonly bootId: string;
  readonly health: string | undefined;
  readonly startPeriodMs: number;
}
interface ImageMapping {
  readonly entrypoint?: string[];
  readonly command?: string[];
  readonly binds?: string[];
  readonly env?: Record<string, string>;
}

function fail(msg: string, code = 1): never {
  process.stderr.write(`docker: ${msg}\n`);
  process.exit(code);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
function strList(v: unknown, what: string): string[] {
  if (v === undefined || v === null) return [];
  if (typeof v === 'string') return shellWords(v);
  if (Array.isArray(v) && v.every((x) => typeof x === 'string' || typeof x === 'number'))
    return v.map(String);
  return fail(`${what}: expected a string or a list of strings`);
}
function shellWords(s: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g;
  for (let m = re.exec(s); m; m = re.exec(s))
    out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : (m[2] ?? m[3] ?? ''));
  return out;
}

function imageMap(): Record<string, ImageMapping> {
  if (!existsSync(IMAGES)) return {};
  const v: unknown = JSON.parse(readFileSync(IMAGES, 'utf8'));
  return isRecord(v) ? (v as Record<string, ImageMapping>) : {};
}

function imageKey(image: string): string {
  // registry/name:tag@digest → registry/name
  const noDigest = image.split('@')[0] ?? image;
  const slash = noDigest.lastIndexOf('/');
  const colon = noDigest.lastIndexOf(':');
  return colon > slash ? noDigest.slice(0, colon) : noDigest;
}

function parseNetworks(doc: Record<string, unknown>): Map<string, Network> {
  const out = new Map<string, Network>();
  const raw = isRecord(doc['networks']) ? doc['networks'] : {};
  for (const [key, v] of Object.entries(raw)) {
    const n = isRecord(v) ? v : {};
    if (n['external'] === true || (n['driver'] !== undefined && n['driver'] !== 'bridge'))
      fail(`network ${key}: only compose-made bridge networks are supported`);
    const ipam =
      isRecord(n['ipam']) && Array.isArray(n['ipam']['config']) ? n['ipam']['config'][0] : undefined;
    const cfg = isRecord(ipam) ? ipam : {};
    out.set(key, {
      key,
      internal: n['internal'] === true,
      subnet: typeof cfg['subnet'] === 'string' ? cfg['subnet'] : undefined,
      gateway: typeof cfg['gateway'] === 'string' ? cfg['gateway'] : undefined,
    });
  }
  return out;
}

function serviceNetworks(
  name: string,
  raw: Record<string, unknown>,
  nets: Map<string, Network>,
): Attachment[] {
  const v = raw['networks'];
  if (v === undefined) return [];
  if (raw['network_mode'] !== undefined) fail(`service ${name}: network_mode and networks are exclusive`);
  const entries: [string, unknown][] = Array.isArray(v)
    ? v.map((k) => [String(k), {}])
    : isRecord(v)
      ? Object.entries(v)
      : [];
  return entries.map(([key, cfg]) => {
    if (key !== 'default' && !nets.has(key)) fail(`service ${name}: network ${key} is not declared`);
    const c = isRecord(cfg) ? cfg : {};
    return {
      network: key,
      ipv4Address: typeof c['ipv4_address'] === 'string' ? c['ipv4_address'] : undefined,
    };
  });
}

function parseCompose(file: string): {
  project: string;
  services: Service[];
  networks: Map<string, Network>;
} {
  const doc: unknown = parse(readFileSync(file, 'utf8'));
  if (!isRecord(doc) || !isRecord(doc['services'])) fail(`${file}: no services`);
  const base = dirname(resolve(file));
  const images = imageMap();
  const project = typeof doc['name'] === 'string' ? doc['name'] : basename(base);
  const networks = parseNetworks(doc as Record<string, unknown>);
  if (!networks.has('default'))
    networks.set('default', { key: 'default', internal: false, subnet: undefined, gateway: undefined });
  const services: Service[] = [];
  for (const [name, raw] of Object.entries(doc['services'] as Record<string, unknown>)) {
    if (!isRecord(raw)) fail(`service ${name}: not a mapping`);
    const image = typeof raw['image'] === 'string' ? raw['image'] : '';
    const mapping = images[image] ?? images[imageKey(image)];
    const xc = isRecord(raw['x-cannes']) ? raw['x-cannes'] : {};
    const npm = npmInstall(xc['npmPackage'], xc['npmVersion']);
    const own = strList(raw['x-cannes-command'], `${name}.x-cannes-command`);
    const command = strList(raw['command'], `${name}.command`);
    let argv: string[];
    if (own.length > 0) argv = own;
    else if (mapping?.entrypoint)
      argv = [...mapping.entrypoint, ...(command.length > 0 ? command : (mapping.command ?? []))];
    else argv = [...strList(raw['entrypoint'], `${name}.entrypoint`), ...command];
    if (argv.length === 0) fail(`service ${name}: image ${image} has no command mapping (see docs/hosts.md)`);
    const env: Record<string, string> = { ...(mapping?.env ?? {}) };
    // env_file lines first (read here, as root, like compose does), `environment` wins.
    for (const f of strList(raw['env_file'], `${name}.env_file`)) {
      const path = resolve(base, f);
      if (!existsSync(path)) fail(`service ${name}: env file ${path} not found`);
      for (const line of readFileSync(path, 'utf8').split('\n')) {
        const m = /^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
        if (m) env[m[1]!] = m[2]!;
      }
    }
    const e = raw['environment'];
    if (Array.isArray(e)) {
      for (const item of e) {
        const s = String(item);
        const i = s.indexOf('=');
        if (i > 0) env[s.slice(0, i)] = s.slice(i + 1);
      }
    } else if (isRecord(e)) {
      for (const [k, v] of Object.entries(e)) if (v !== null && v !== undefined) env[k] = String(v);
    }
    const volumes: Volume[] = [];
    for (const v of Array.isArray(raw['volumes']) ? raw['volumes'] : []) {
      if (typeof v === 'string') {
        const [src, target, opts] = v.split(':');
        if (!src || !target) fail(`service ${name}: volume ${v} needs source:target`);
        volumes.push({
          source: volumeSource(src, base, project),
          target,
          readOnly: (opts ?? '').split(',').includes('ro'),
        });
      } else if (isRecord(v) && typeof v['source'] === 'string' && typeof v['target'] === 'string') {
        volumes.push({
          source: volumeSource(v['source'], base, project),
          target: v['target'],
          readOnly: v['read_only'] === true,
        });
      } else fail(`service ${name}: unsupported volume ${JSON.stringify(v)}`);
    }
    const hosts: [string, string][] = [];
    const eh = raw['extra_hosts'];
    const pairs: [string, string][] = Array.isArray(eh)
      ? eh.map((x) => {
          const s = String(x);
          const i = s.search(/[:=]/);
          return [s.slice(0, i), s.slice(i + 1)];
        })
      : isRecord(eh)
        ? Object.entries(eh).map(([k, v]) => [k, String(v)])
        : [];
    for (const [h, ip] of pairs) hosts.push([h, ip === 'host-gateway' ? BRIDGE_IP : ip]);
    const ports: Port[] = [];
    for (const p of Array.isArray(raw['ports']) ? raw['ports'] : []) {
      const parts = String(p)
        .replace(/\/tcp$/, '')
        .split(':');
      const containerPort = Number(parts.at(-1));
      const hostPort = Number(parts.at(-2) ?? parts.at(-1));
      const hostIp = parts.length === 3 ? (parts[0] ?? '0.0.0.0') : '0.0.0.0';
      if (!Number.isInteger(containerPort) || !Number.isInteger(hostPort))
        fail(`service ${name}: bad port ${String(p)}`);
      ports.push({ hostIp, hostPort, containerPort });
    }
    const extraBinds: Volume[] = (mapping?.binds ?? []).map((b) => {
      const [source, target] = b.split(':');
      if (!source || !target) return fail(`image map bind ${b} needs source:target`);
      return { source, target, readOnly: true };
    });
    if (npm) extraBinds.push({ source: npm.prefix, target: NPM_MOUNT, readOnly: true });
    const hc = isRecord(raw['healthcheck']) ? raw['healthcheck'] : {};
    services.push({
      name,
      networks: serviceNetworks(name, raw, networks),
      image,
      argv,
      user: raw['user'] === undefined ? '1000:1000' : String(raw['user']),
      env,
      volumes,
      hosts,
      workingDir:
        typeof raw['working_dir'] === 'string'
          ? raw['working_dir']
          : npm
            ? join(NPM_MOUNT, 'node_modules', npm.name)
            : '/home/node',
      ports,
      extraBinds,
      restart: typeof raw['restart'] === 'string' ? raw['restart'] : 'no',
      health: typeof xc['health'] === 'string' ? xc['health'] : undefined,
      startPeriodMs: durationMs(hc['start_period']) ?? 0,
    });
  }
  return { project, services, networks };
}

/** Where the rig bound its tool cache (read-only) in the server: `make openclaw` installs there. */
const CACHE = '/run/cannes/cache';
/** Where an npm install prefix appears in the container; the command runs in the package dir. */
const NPM_MOUNT = '/opt/npm';

/**
 * `x-cannes.npmPackage`/`npmVersion`: the npm package an image is built from, installed by the
 * rig at `$CANNES_CACHE/<name>-<version>/node_modules/<name>` (mk/openclaw.mk). The whole
 * install prefix is bound read-only (the package's dependencies are hoisted next to it).
 */
function npmInstall(name: unknown, version: unknown): { name: string; prefix: string } | undefined {
  if (typeof name !== 'string' || !/^[a-z0-9][a-z0-9._-]{0,100}$/.test(name)) return undefined;
  if (typeof version !== 'string' || !/^[0-9A-Za-z.+-]{1,64}$/.test(version)) return undefined;
  const prefix = join(CACHE, `${name}-${version}`);
  return existsSync(join(prefix, 'node_modules', name)) ? { name, prefix } : undefined;
}

function durationMs(v: unknown): number | undefined {
  if (typeof v !== 'string') return undefined;
  let total = 0;
  for (const m of v.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) {
    const n = Number(m[1]);
    total += m[2] === 'ms' ? n : m[2] === 's' ? n * 1000 : m[2] === 'm' ? n * 60_000 : n * 3_600_000;
  }
  return total;
}

function bootId(): string {
  return existsSync('/run/cannes/boot-id') ? readFileSync('/run/cannes/boot-id', 'utf8').trim() : '';
}

/** The container is running in THIS boot of the server. */
function running(s: ContainerState): boolean {
  return s.bootId === bootId() && alive(s.pid);
}

function volumeSource(src: string, base: string, project: string): string {
  if (isAbsolute(src)) return src;
  if (src.startsWith('.') || src.startsWith('~')) return resolve(base, src);
  // A named volume.
  return join(STATE, 'volumes', `${project}_${src}`);
}

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) fail(`${cmd} ${args.join(' ')}: ${r.stderr.trim()}`);
  return r.stdout;
}
function shq(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

function stateDir(project: string): string {
  return join(STATE, 'projects', project);
}
function readState(project: string, service: string): ContainerState | undefined {
  const f = join(stateDir(project), `${service}.json`);
  return existsSync(f) ? (JSON.parse(readFileSync(f, 'utf8')) as ContainerState) : undefined;
}
function usedIps(): Set<string> {
  const used = new Set<string>();
  const root = join(STATE, 'projects');
  if (!existsSync(root)) return used;
  for (const p of readdirSync(root)) {
    for (const f of readdirSync(join(root, p))) {
      if (!f.endsWith('.json') || f === 'compose.json') continue;
      const s = JSON.parse(readFileSync(join(root, p, f), 'utf8')) as ContainerState;
      if (running(s)) for (const a of s.addresses ?? [s.ip]) used.add(a);
    }
  }
  return used;
}

const ipNum = (ip: string) => ip.split('.').reduce((n, o) => n * 256 + Number(o), 0);
const ipStr = (n: number) => [24, 16, 8, 0].map((b) => Math.floor(n / 2 ** b) % 256).join('.');

/** A container's link to one network: the bridge, its address there, the network's gateway. */
interface Link {
  readonly bridge: string;
  readonly ip: string;
  readonly prefix: number;
  readonly gateway: string;
  readonly internal: boolean;
  readonly name: string;
}

interface NetworkState {
  readonly bridge: string;
  readonly subnet: string;
  readonly gateway: string;
}
const NETWORKS = join(STATE, 'networks');

/**
 * A compose network as Docker makes one: a `br-<id>` bridge holding the gateway address (also
 * for an internal network: the host reaches its containers, moby#47356), the subnet of
 * `ipam` or the first free /16 of Docker's default pools after docker0's.
 */
function ensureNetwork(project: string, n: Network): NetworkState {
  const name = `${project}_${n.key}`;
  const file = join(NETWORKS, `${name}.json`);
  let st: NetworkState | undefined = existsSync(file)
    ? (JSON.parse(readFileSync(file, 'utf8')) as NetworkState)
    : undefined;
  if (!st) {
    mkdirSync(NETWORKS, { recursive: true });
    const taken = new Set(
      readdirSync(NETWORKS).map(
        (f) => (JSON.parse(readFileSync(join(NETWORKS, f), 'utf8')) as NetworkState).subnet,
      ),
    );
    let subnet = n.subnet;
    for (let b = 18; subnet === undefined && b < 31; b++)
      if (!taken.has(`172.${b}.0.0/16`)) subnet = `172.${b}.0.0/16`;
    if (subnet === undefined) fail(`network ${name}: no free subnet`);
    const [base, bits] = subnet.split('/');
    st = {
      bridge: `br-${createHash('sha256').update(name).digest('hex').slice(0, 12)}`,
      subnet,
      gateway: n.gateway ?? ipStr(ipNum(base ?? '') + 1),
    };
    if (!Number.isInteger(Number(bits))) fail(`network ${name}: bad subnet ${subnet}`);
    writeFileSync(file, `${JSON.stringify(st)}\n`);
  }
  if (spawnSync('ip', ['link', 'show', st.bridge]).status !== 0) {
    sh('ip', ['link', 'add', st.bridge, 'type', 'bridge']);
    sh('ip', ['addr', 'add', `${st.gateway}/${st.subnet.split('/')[1]}`, 'dev', st.bridge]);
    sh('ip', ['link', 'set', st.bridge, 'up']);
  }
  return st;
}

function removeNetworks(project: string): void {
  if (!existsSync(NETWORKS)) return;
  for (const f of readdirSync(NETWORKS)) {
    if (!f.startsWith(`${project}_`)) continue;
    const st = JSON.parse(readFileSync(join(NETWORKS, f), 'utf8')) as NetworkState;
    spawnSync('ip', ['link', 'del', st.bridge]);
    rmSync(join(NETWORKS, f), { force: true });
  }
}

/** The container's links: docker0 alone, or its networks (the default route's first, as Docker orders them). */
function linksOf(project: string, svc: Service, networks: Map<string, Network>): Link[] {
  const used = usedIps();
  const free = (first: number, last: number, skip: string) => {
    for (let n = first; n <= last; n++) if (!used.has(ipStr(n)) && ipStr(n) !== skip) return ipStr(n);
    return fail(`service ${svc.name}: no free address`);
  };
  if (svc.networks.length === 0) {
    ensureBridge();
    const ip = free(ipNum('172.17.0.2'), ipNum('172.17.0.249'), BRIDGE_IP);
    return [{ bridge: 'docker0', ip, prefix: 16, gateway: BRIDGE_IP, internal: false, name: 'bridge' }];
  }
  const links = svc.networks.map((a) => {
    const n = networks.get(a.network) ?? fail(`network ${a.network} is not declared`);
    const st = ensureNetwork(project, n);
    const [base, bits] = st.subnet.split('/');
    const size = 2 ** (32 - Number(bits));
    const ip = a.ipv4Address ?? free(ipNum(base ?? '') + 1, ipNum(base ?? '') + size - 2, st.gateway);
    used.add(ip);
    return {
      bridge: st.bridge,
      ip,
      prefix: Number(bits),
      gateway: st.gateway,
      internal: n.internal,
      name: `${project}_${n.key}`,
    };
  });
  // Docker's gateway endpoint: a non-internal network before an internal one, then by name.
  return links.sort((x, y) => Number(x.internal) - Number(y.internal) || x.name.localeCompare(y.name));
}

function ensureBridge(): void {
  if (spawnSync('ip', ['link', 'show', 'docker0']).status === 0) return;
  sh('ip', ['link', 'add', 'docker0', 'type', 'bridge']);
  sh('ip', ['addr', 'add', `${BRIDGE_IP}/16`, 'dev', 'docker0']);
  sh('ip', ['link', 'set', 'docker0', 'up']);
}

/**
 * The stand-in for a service: in its own real container (namespace, chroot, uid, ports), a
 * socat per published container port answering 200 to every request instead of the image.
 */
function standIn(svc: Service): Service {
  const ports = [...new Set(svc.ports.map((p) => p.containerPort))];
  return {
    ...svc,
    argv: [
      '/bin/sh',
      '-c',
      standInCommand(
        ports.map((port) => ({ port })),
        '/stand-in-http.sh',
      ),
    ],
    extraBinds: [...svc.extraBinds, { source: STAND_IN_HTTP, target: '/stand-in-http.sh', readOnly: true }],
  };
}

function startContainer(
  project: string,
  declared: Service,
  hash: string,
  networks: Map<string, Network>,
): void {
  const light = isLightServer();
  const svc = light ? standIn(declared) : declared;
  ensureBridge();
  const links = linksOf(project, svc, networks);
  const ip = links[0]!.ip;
  const id = createHash('sha256').update(`${project}/${svc.name}/${Date.now()}`).digest('hex').slice(0, 10);
  const netns = `cn-${id}`;
  sh('ip', ['netns', 'add', netns]);
  sh('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
  links.forEach((l, i) => {
    const veth = `v${i}${id}`.slice(0, 15);
    sh('ip', ['link', 'add', veth, 'type', 'veth', 'peer', 'name', `eth${i}`, 'netns', netns]);
    sh('ip', ['link', 'set', veth, 'master', l.bridge, 'up']);
    sh('ip', ['-n', netns, 'addr', 'add', `${l.ip}/${l.prefix}`, 'dev', `eth${i}`]);
    sh('ip', ['-n', netns, 'link', 'set', `eth${i}`, 'up']);
  });
  // The default route: the first non-internal network (an internal one has none, as in Docker).
  const gw = links.find((l) => !l.internal);
  if (gw) sh('ip', ['-n', netns, 'route', 'add', 'default', 'via', gw.gateway]);

  const run = join('/run/docker-shim', id);
  const etc = join(run, 'etc');
  mkdirSync(etc, { recursive: true });
  const [uid, gid] = [
    svc.user.split(':')[0] ?? '1000',
    svc.user.split(':')[1] ?? svc.user.split(':')[0] ?? '1000',
  ];
  if (!/^\d+$/.test(uid) || !/^\d+$/.test(gid)) fail(`service ${svc.name}: user must be numeric uid[:gid]`);
  writeFileSync(
    join(etc, 'passwd'),
    `root:x:0:0:root:/root:/bin/sh\nnode:x:${uid}:${gid}:node:/home/node:/bin/sh\n`,
  );
  writeFileSync(join(etc, 'group'), `root:x:0:\nnode:x:${gid}:\n`);
  writeFileSync(
    join(etc, 'hosts'),
    `127.0.0.1 localhost\n${ip} ${svc.name}\n${svc.hosts.map(([h, a]) => `${a} ${h}`).join('\n')}\n`,
  );
  writeFileSync(join(etc, 'nsswitch.conf'), 'passwd: files\ngroup: files\nhosts: files dns\n');
  writeFileSync(join(etc, 'resolv.conf'), '');

  const R = join(run, 'root');
  mkdirSync(R, { recursive: true });
  const lines = [
    'set -eu',
    'umask 022',
    `R=${shq(R)}`,
    'mount -t tmpfs -o mode=755 tmpfs "$R"',
    'for d in usr bin lib lib32 lib64 libx32 sbin; do',
    '  if [ -L "/$d" ]; then ln -s "$(readlink "/$d")" "$R/$d";',
    '  elif [ -d "/$d" ]; then mkdir "$R/$d"; mount --bind "/$d" "$R/$d"; mount -o remount,bind,ro "$R/$d"; fi',
    'done',
    'mkdir -p "$R/etc" "$R/tmp" "$R/proc" "$R/dev/shm" "$R/home/node" "$R/opt/node" "$R/run"',
    `cp -a ${shq(etc)}/. "$R/etc/"`,
    'mount -t proc proc "$R/proc"',
    'for n in null zero full random urandom tty; do touch "$R/dev/$n"; mount --bind "/dev/$n" "$R/dev/$n"; done',
    'mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"',
    'mount -t tmpfs -o mode=1777 tmpfs "$R/dev/shm"',
    'mount --bind /run/cannes/node "$R/opt/node"; mount -o remount,bind,ro "$R/opt/node"',
    `chown ${uid}:${gid} "$R/home/node"`,
  ];
  for (const v of [...svc.extraBinds, ...svc.volumes]) {
    if (!existsSync(v.source)) mkdirSync(v.source, { recursive: true, mode: 0o755 });
    const isDir = statSync(v.source).isDirectory();
    const t = `"$R"${shq(v.target)}`;
    lines.push(isDir ? `mkdir -p ${t}` : `mkdir -p "$(dirname ${t})"; touch ${t}`);
    lines.push(`mount --bind ${shq(v.source)} ${t}`);
    if (v.readOnly) lines.push(`mount -o remount,bind,ro ${t}`);
  }
  lines.push(`mkdir -p "$R"${shq(svc.workingDir)}`);
  const env = {
    PATH: '/opt/node/bin:/usr/local/bin:/usr/bin:/bin',
    HOME: '/home/node',
    HOSTNAME: svc.name,
    ...svc.env,
  };
  lines.push(
    [
      'exec chroot "$R" /usr/bin/setpriv',
      `--reuid=${uid} --regid=${gid} --clear-groups --no-new-privs --inh-caps=-all --bounding-set=-all --`,
      `/usr/bin/env -i -C ${shq(svc.workingDir)}`,
      ...Object.entries(env).map(([k, v]) => shq(`${k}=${v}`)),
      ...svc.argv.map(shq),
    ].join(' '),
  );
  writeFileSync(join(run, 'launch.sh'), `${lines.join('\n')}\n`, { mode: 0o700 });
  const dir = stateDir(project);
  mkdirSync(dir, { recursive: true });
  const log = openSync(join(dir, `${svc.name}.log`), 'a', 0o600);
  const child = spawn(
    'ip',
    [
      'netns',
      'exec',
      netns,
      'unshare',
      '--mount',
      '--propagation',
      'private',
      '--',
      '/bin/sh',
      join(run, 'launch.sh'),
    ],
    { detached: true, stdio: ['ignore', log, log] },
  );
  closeSync(log);
  if (child.pid === undefined) fail(`cannot start ${svc.name}`);
  child.unref();
  const forwarders = svc.ports.map((p) => {
    const f = light
      ? spawn(
          'socat',
          [`TCP-LISTEN:${p.hostPort},bind=${p.hostIp},fork,reuseaddr`, `TCP:${ip}:${p.containerPort}`],
          { detached: true, stdio: 'ignore' },
        )
      : spawn(
          process.execPath,
          [process.argv[1]!, '__forward', p.hostIp, String(p.hostPort), ip, String(p.containerPort)],
          { detached: true, stdio: 'ignore' },
        );
    f.unref();
    return f.pid ?? 0;
  });
  const state: ContainerState = {
    service: svc.name,
    image: svc.image,
    pid: child.pid,
    ip,
    addresses: links.map((l) => l.ip),
    netns,
    hash,
    forwarders,
    startedAt: new Date().toISOString(),
    bootId: bootId(),
    health: svc.health,
    startPeriodMs: svc.startPeriodMs,
  };
  writeFileSync(join(dir, `${svc.name}.json`), `${JSON.stringify(state)}\n`);
  process.stderr.write(` Container ${project}-${svc.name}-1  Started\n`);
}

function stopContainer(project: string, service: string): void {
  const s = readState(project, service);
  if (!s) return;
  // Pids of an earlier boot are gone (and may have been reused): only this boot's are killed.
  const current = s.bootId === bootId();
  for (const pid of current ? [s.pid, ...s.forwarders] : []) {
    if (pid > 0 && alive(pid)) {
      try {
        process.kill(-pid, 'SIGTERM');
      } catch {
        process.kill(pid, 'SIGTERM');
      }
    }
  }
  const deadline = Date.now() + 10_000;
  while (current && groupAlive(s.pid) && Date.now() < deadline) spawnSync('sleep', ['0.1']);
  for (const pid of current ? [s.pid, ...s.forwarders] : []) {
    if (pid > 0 && alive(pid)) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }
  spawnSync('ip', ['netns', 'del', s.netns]);
  rmSync(join(stateDir(project), `${service}.json`), { force: true });
  process.stderr.write(` Container ${project}-${service}-1  Removed\n`);
}

/** Docker's Health for `ps`: x-cannes.health polled inside the container's network namespace. */
function health(s: ContainerState): string {
  if (!s.health) return '';
  const probe = spawnSync(
    'ip',
    [
      'netns',
      'exec',
      s.netns,
      process.execPath,
      '-e',
      'fetch(process.argv[1], { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))',
      s.health,
    ],
    { timeout: 6000, stdio: 'ignore' },
  );
  if (probe.status === 0) return 'healthy';
  return Date.now() - Date.parse(s.startedAt) < s.startPeriodMs ? 'starting' : 'unhealthy';
}

/** At boot: bring back the projects whose services say restart always / unless-stopped. */
function bootProjects(): void {
  const root = join(STATE, 'projects');
  if (!existsSync(root)) return;
  for (const p of readdirSync(root)) {
    const reg = join(root, p, 'compose.json');
    if (!existsSync(reg)) continue;
    const r: unknown = JSON.parse(readFileSync(reg, 'utf8'));
    if (!isRecord(r) || typeof r['file'] !== 'string' || typeof r['project'] !== 'string') continue;
    if (!existsSync(r['file'])) continue;
    const parsed = parseCompose(r['file']);
    for (const svc of parsed.services) {
      const again = svc.restart === 'always' || (svc.restart === 'unless-stopped' && r['stopped'] !== true);
      if (!again) continue;
      stopContainer(r['project'], svc.name);
      startContainer(
        r['project'],
        svc,
        createHash('sha256').update(JSON.stringify(svc)).digest('hex'),
        parsed.networks,
      );
    }
  }
}

function forward(hostIp: string, hostPort: number, ip: string, port: number): void {
  createServer((c) => {
    const u = createConnection({ host: ip, port });
    c.pipe(u).pipe(c);
    c.on('error', () => u.destroy());
    u.on('error', () => c.destroy());
  }).listen(hostPort, hostIp);
}

function compose(args: string[]): void {
  const files: string[] = [];
  let project: string | undefined;
  let i = 0;
  for (; i < args.length; i++) {
    const a = args[i]!;
    if (a === '-f' || a === '--file') files.push(args[++i] ?? fail('-f needs a file'));
    else if (a === '-p' || a === '--project-name') project = args[++i];
    else if (a.startsWith('--file=')) files.push(a.slice(7));
    else if (a.startsWith('-')) fail(`unsupported compose flag ${a}`);
    else break;
  }
  const verb = args[i];
  const rest = args.slice(i + 1);
  if (verb !== undefined && CHANGES.has(verb)) serialised(LOCK, ['compose', ...args]);
  if (verb === 'version') {
    process.stdout.write('Docker Compose version v2.0.0-cannes-shim\n');
    return;
  }
  if (files.length === 0) files.push(existsSync('compose.yaml') ? 'compose.yaml' : 'docker-compose.yml');
  if (files.length > 1) fail('only one -f file is supported');
  const file = resolve(files[0]!);
  const parsed = parseCompose(file);
  const name = project ?? parsed.project;
  if (!/^[a-z0-9][a-z0-9_-]*$/.test(name)) fail(`invalid project name ${name}`);
  const registry = join(stateDir(name), 'compose.json');
  // Service names: the positional words, skipping the values of options that take one.
  const wanted: string[] = [];
  for (let j = 0; j < rest.length; j++) {
    const a = rest[j]!;
    if (a === '--format' || a === '-t' || a === '--timeout' || a === '--tail') j++;
    else if (!a.startsWith('-')) wanted.push(a);
  }
  const services = parsed.services.filter((s) => wanted.length === 0 || wanted.includes(s.name));
  switch (verb) {
    case 'up': {
      if (!rest.includes('-d') && !rest.includes('--detach')) fail('only `up -d` is supported');
      for (const svc of services) {
        const hash = createHash('sha256').update(JSON.stringify(svc)).digest('hex');
        const cur = readState(name, svc.name);
        if (cur && running(cur) && cur.hash === hash && !rest.includes('--force-recreate')) {
          process.stderr.write(` Container ${name}-${svc.name}-1  Running\n`);
          continue;
        }
        stopContainer(name, svc.name);
        startContainer(name, svc, hash, parsed.networks);
      }
      // Remembered for the next boot (restart: always / unless-stopped).
      writeFileSync(registry, `${JSON.stringify({ file, project: name, stopped: false })}\n`);
      return;
    }
    case 'down':
      for (const svc of services) stopContainer(name, svc.name);
      if (wanted.length === 0) {
        rmSync(stateDir(name), { recursive: true, force: true });
        removeNetworks(name);
      }
      return;
    case 'stop':
    case 'rm':
      for (const svc of services) stopContainer(name, svc.name);
      if (existsSync(registry))
        writeFileSync(registry, `${JSON.stringify({ file, project: name, stopped: true })}\n`);
      return;
    case 'restart':
      for (const svc of services) {
        stopContainer(name, svc.name);
        startContainer(
          name,
          svc,
          createHash('sha256').update(JSON.stringify(svc)).digest('hex'),
          parsed.networks,
        );
      }
      return;
    case 'pull':
      return;
    case 'ps': {
      const json = rest.includes('json') || rest.includes('--format=json');
      const rows = services.flatMap((svc) => {
        const s = readState(name, svc.name);
        if (!s) return [];
        const up = running(s);
        return [
          {
            Name: `${name}-${svc.name}-1`,
            Service: svc.name,
            Image: s.image,
            State: up ? 'running' : 'exited',
            Status: up ? `Up since ${s.startedAt}` : 'Exited',
            Health: up ? health(s) : '',
            IP: s.ip,
          },
        ];
      });
      if (json) for (const r of rows) process.stdout.write(`${JSON.stringify(r)}\n`);
      else {
        process.stdout.write('NAME\tSERVICE\tSTATE\tIP\n');
        for (const r of rows) process.stdout.write(`${r.Name}\t${r.Service}\t${r.State}\t${r.IP}\n`);
      }
      return;
    }
    case 'logs':
      for (const svc of services) {
        const f = join(stateDir(name), `${svc.name}.log`);
        if (existsSync(f)) process.stdout.write(readFileSync(f));
      }
      return;
    default:
      fail(`unsupported compose command ${verb ?? '(none)'} (this is the simulated server's docker shim)`);
  }
}

function main(argv: string[]): void {
  const [cmd, ...rest] = argv;
  if (cmd === '__forward') {
    forward(rest[0]!, Number(rest[1]), rest[2]!, Number(rest[3]));
    return;
  }
  if (cmd === '__boot') {
    serialised(LOCK, argv);
    bootProjects();
    return;
  }
  if (cmd === 'compose') {
    compose(rest);
    return;
  }
  if (cmd === 'version' || cmd === '--version') {
    process.stdout.write('Docker version 0.0.0-cannes-shim (simulated server: no engine)\n');
    return;
  }
  if (cmd === 'info') {
    process.stdout.write('Server: cannes docker shim (no engine; see docs/hosts.md)\n');
    return;
  }
  fail(`unsupported command ${cmd ?? '(none)'}: only \`docker compose\` exists on a simulated server`);
}

if (process.argv[1]?.endsWith('.mjs')) {
  // dockerd's umask, whatever the caller's (an operator script may run under umask 077).
  process.umask(0o022);
  try {
    main(process.argv.slice(2));
  } catch (err) {
    fail(err instanceof Error ? err.message : String(err));
  }
}
