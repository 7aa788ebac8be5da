/**
 * Where everything Cannes puts on a VPS lives, with the mode and owner the writer (the Vps
 * controller's deploy step, over SSH) must give it. The templates in this folder are pure:
 * they return file contents; this table says where those contents go and who may read them.
 *
 * The rule behind the table: a secret lives in a file readable by root only, outside every
 * path mounted into the gateway container. What the container mounts holds no secret.
 */

/** uid/gid of the gateway container's process (`node` in the OpenClaw image). */
export const GATEWAY_UID = 1000;
export const GATEWAY_GID = 1000;

/** The host-side LLM proxy. */
export const PROXY_PORT = 3101;
/** docker0's address: the proxy listens here and nowhere else. */
export const BRIDGE_ADDRESS = '172.17.0.1';
/** Every Docker bridge network (default and user-defined) allocates from this range. */
export const BRIDGE_CIDR = '172.16.0.0/12';
export const PROXY_METRICS = '127.0.0.1:9464';
/** The key intake, on loopback only: `tailscale serve` maps <gateway URL>/cannes-keys/ here. */
export const INTAKE_PORT = 3102;
export const INTAKE_PATH = '/cannes-keys';

/**
 * Serve's own way to the gateway (only with `spec.tailnet`): a Docker network of its own,
 * `internal` (no route out, no published port), with fixed addresses. `tailscale serve` on the
 * host dials the container's address on it, so the gateway sees Serve's requests come from the
 * host's address on this network and nothing else: that one address is its trusted proxy. The
 * owner's SSH tunnel (and every other host-side client) arrives through the published loopback
 * port from the main network's host address instead, a plain client. In 172.16.0.0/12, where
 * the firewall and the proxy already expect containers; a /29 near the top of Docker's default
 * pools, which allocate from the bottom (172.17, 172.18, …).
 */
export const SERVE_NETWORK = {
  /** The compose network's key (the Docker network is `cannes-gateway_serve`). */
  name: 'serve',
  subnet: '172.31.255.248/29',
  /** The host's address on it: where Serve's connections come from, the one trusted proxy. */
  hostAddress: '172.31.255.249',
  /** The gateway container's address on it: Serve's target. */
  containerAddress: '172.31.255.250',
} as const;

/**
 * Held (flock) by the deploy's start-up script for as long as it runs. An operator that dies
 * mid-deploy leaves its script running on the server (sshd does not stop a command without a
 * terminal when the client goes away); the next operator's script waits for it instead of
 * restarting the proxy and the gateway at the same time.
 */
export const DEPLOY_LOCK = '/run/cannes-deploy.lock';
/** How long a deploy waits for an earlier one's script (under the step's 300 s timeout). */
export const DEPLOY_LOCK_WAIT_S = 240;

/** The container's view. The image runs as `node` with HOME=/home/node. */
export const CONTAINER_HOME = '/home/node';
/** OpenClaw's state (sessions, workspace, sqlite): writable by the gateway. */
export const CONTAINER_STATE_DIR = '/home/node/.openclaw';
/** The generated config, mounted read-only (see docs/gateway.md). */
export const CONTAINER_CONFIG_DIR = '/etc/openclaw';
export const CONTAINER_CONFIG_PATH = `${CONTAINER_CONFIG_DIR}/openclaw.json`;

export interface HostPath {
  readonly path: string;
  readonly kind: 'file' | 'dir';
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  /** True when the content is a secret: written atomically (temp file + rename) with this mode from the start. */
  readonly secret: boolean;
  readonly why: string;
}

const root = { uid: 0, gid: 0 } as const;

export const HOST = {
  proxyBundle: {
    path: '/opt/cannes/cannes-proxy.mjs',
    kind: 'file',
    mode: 0o644,
    ...root,
    secret: false,
    why: 'the proxy bundle (dist/proxy/cannes-proxy.mjs), run by the systemd unit',
  },
  proxyUnit: {
    path: '/etc/systemd/system/cannes-proxy.service',
    kind: 'file',
    mode: 0o644,
    ...root,
    secret: false,
    why: 'proxyUnit(): runs the proxy as root with systemd sandboxing',
  },
  keyFile: {
    path: '/root/.model-keys.json',
    kind: 'file',
    mode: 0o600,
    ...root,
    secret: true,
    why: 'keyFile(): the real LLM keys; the proxy refuses it unless mode 600 and owned by its uid (root)',
  },
  directKeyFile: {
    path: '/root/.model-keys.direct.json',
    kind: 'file',
    mode: 0o600,
    ...root,
    secret: true,
    why: 'the keys of Direct ModelKeys, from the owner over the tailnet; written only by the key intake, never by the operator',
  },
  intakeUnit: {
    path: '/etc/systemd/system/cannes-key-intake.service',
    kind: 'file',
    mode: 0o644,
    ...root,
    secret: false,
    why: 'intakeUnit(): the key intake on 127.0.0.1, reached only through tailscale serve',
  },
  intakeConfig: {
    path: '/etc/cannes/intake.json',
    kind: 'file',
    mode: 0o644,
    ...root,
    secret: false,
    why: 'intakeConfig(): the owners (tailnet logins and tags) the intake accepts keys from',
  },
  gatewayDir: {
    path: '/opt/cannes/gateway',
    kind: 'dir',
    mode: 0o755,
    ...root,
    secret: false,
    why: 'the compose project directory',
  },
  composeFile: {
    path: '/opt/cannes/gateway/compose.yaml',
    kind: 'file',
    mode: 0o644,
    ...root,
    secret: false,
    why: 'composeFile(): holds no secret (the token comes from gatewayEnv)',
  },
  gatewayEnv: {
    path: '/opt/cannes/gateway/gateway.env',
    kind: 'file',
    mode: 0o600,
    ...root,
    secret: true,
    why: 'gatewayEnvFile(): OPENCLAW_GATEWAY_TOKEN, read by compose on the host (env_file), never mounted',
  },
  gatewayConfigDir: {
    path: '/opt/cannes/gateway/config',
    kind: 'dir',
    mode: 0o755,
    ...root,
    secret: false,
    why: `mounted read-only at ${CONTAINER_CONFIG_DIR}: the agent cannot rewrite its providers`,
  },
  gatewayConfig: {
    path: '/opt/cannes/gateway/config/openclaw.json',
    kind: 'file',
    mode: 0o644,
    ...root,
    secret: false,
    why: 'gatewayConfig(): providers point at the proxy with apiKey "proxy-managed"; no secret inside',
  },
  gatewayStateDir: {
    path: '/opt/cannes/gateway/state',
    kind: 'dir',
    mode: 0o700,
    uid: GATEWAY_UID,
    gid: GATEWAY_GID,
    secret: false,
    why: `mounted read-write at ${CONTAINER_STATE_DIR}: OpenClaw's sessions, workspace and databases`,
  },
  nftables: {
    path: '/etc/cannes/nftables.nft',
    kind: 'file',
    mode: 0o644,
    ...root,
    secret: false,
    why: 'nftablesRules(): load with `nft -f` (atomic; the file replaces only table inet cannes)',
  },
  firewallUnit: {
    path: '/etc/systemd/system/cannes-firewall.service',
    kind: 'file',
    mode: 0o644,
    ...root,
    secret: false,
    why: 'firewallUnit(): loads the nftables file at boot, before Docker',
  },
  sshdHardening: {
    path: '/etc/ssh/sshd_config.d/00-cannes-hardening.conf',
    kind: 'file',
    mode: 0o644,
    ...root,
    secret: false,
    why: 'sshdHardening(): first in sshd_config.d because sshd keeps the FIRST value it reads for a keyword',
  },
} as const satisfies Record<string, HostPath>;
