import { stringify } from 'yaml';
import { TerminalError } from '../../common/errors.ts';
import type { ProviderName } from '../../common/providers.ts';
import { Secret } from '../../common/secret.ts';
import { DEFAULT_BRIDGE_ORIGIN, usesBridgeLiteral } from './gateway-config.ts';
import {
  CONTAINER_CONFIG_DIR,
  CONTAINER_CONFIG_PATH,
  CONTAINER_HOME,
  CONTAINER_STATE_DIR,
  GATEWAY_GID,
  GATEWAY_UID,
  HOST,
  PROXY_PORT,
  SERVE_NETWORK,
} from './layout.ts';

/**
 * The docker compose file of the gateway (`/opt/cannes/gateway/compose.yaml`). It holds no
 * secret: the gateway token comes from `env_file` (gateway.env, root 600 on the host, read by
 * compose, never mounted), the LLM keys never come near it.
 *
 * Shape decisions (docs/gateway.md has the long form):
 * - `network_mode: bridge`: the container sits on docker0 (172.17.0.0/16), the network the
 *   proxy listens on and the firewall rules name; compose's own `br-*` network would not be.
 * - mounts: the config directory read-only, the state directory read-write; never /root,
 *   never the key file, never the docker socket.
 * - the port is published on 127.0.0.1 only: the gateway is full operator access to the
 *   agent, so it is reached through an SSH tunnel or the user's own authenticated ingress,
 *   never straight from the internet.
 * - `x-cannes`: what the test rig's `docker compose` shim needs to run the service without a
 *   Docker engine (the npm package that the image corresponds to, the health URL).
 */

export interface ComposeInput {
  /** Vps.spec.gateway.image, e.g. ghcr.io/openclaw/openclaw:2026.9.6 */
  readonly image: string;
  /** Vps.spec.gateway.port: inside the container and on the host's loopback. */
  readonly port: number;
  /** The ModelKeys' providers: a Google one adds the trusted-origins variable. */
  readonly providers: readonly ProviderName[];
  /** Proxy origin by bridge IP literal (default http://172.17.0.1:3101). */
  readonly bridgeOrigin?: string;
  /**
   * With `spec.tailnet`: the container also joins Serve's own internal network (SERVE_NETWORK),
   * and its main network is compose's own instead of docker0 (compose cannot put a container on
   * the default `bridge` and a user-defined network at once: Docker refuses the aliases compose
   * sets on `bridge`). The proxy stays on docker0's address, which the container reaches through
   * its own network's gateway, the host.
   */
  readonly serveNetwork?: boolean;
}

export const COMPOSE_PROJECT = 'cannes-gateway';
export const COMPOSE_SERVICE = 'gateway';
export const GOOGLE_TRUSTED_ORIGINS_ENV = 'OPENCLAW_GOOGLE_GENERATIVE_AI_TRUSTED_ORIGINS';

export function gatewayCommand(port: number): string[] {
  // No --allow-unconfigured: the generated config sets gateway.mode=local, and a gateway that
  // cannot read it must fail to start (and fail the health check) rather than run unconfigured.
  return ['node', 'openclaw.mjs', 'gateway', '--bind', 'lan', '--port', String(port)];
}

export function composeFile(input: ComposeInput): string {
  checkPort(input.port);
  if (!IMAGE_RE.test(input.image)) {
    throw new TerminalError(
      'InvalidGatewayImage',
      `gateway image ${JSON.stringify(input.image)} is not a valid image reference`,
    );
  }
  const environment: Record<string, string> = {
    HOME: CONTAINER_HOME,
    OPENCLAW_CONFIG_PATH: CONTAINER_CONFIG_PATH,
    OPENCLAW_STATE_DIR: CONTAINER_STATE_DIR,
    // The operator owns openclaw.json: the gateway, its doctor and its wizards must not rewrite it.
    OPENCLAW_CONFIG_READONLY: '1',
    // No mDNS advertising of the gateway from a server on the public internet.
    OPENCLAW_DISABLE_BONJOUR: '1',
    // The image is pinned by the Vps spec; upgrades go through the operator.
    OPENCLAW_NO_AUTO_UPDATE: '1',
  };
  if (input.providers.some(usesBridgeLiteral)) {
    environment[GOOGLE_TRUSTED_ORIGINS_ENV] = (input.bridgeOrigin ?? DEFAULT_BRIDGE_ORIGIN).replace(
      /\/+$/,
      '',
    );
  }
  const service = {
    image: input.image,
    user: `${GATEWAY_UID}:${GATEWAY_GID}`,
    command: gatewayCommand(input.port),
    ...networking(input.serveNetwork === true),
    environment,
    env_file: [HOST.gatewayEnv.path],
    volumes: [
      `${HOST.gatewayConfigDir.path}:${CONTAINER_CONFIG_DIR}:ro`,
      `${HOST.gatewayStateDir.path}:${CONTAINER_STATE_DIR}`,
    ],
    extra_hosts: ['host.docker.internal:host-gateway'],
    ports: [`127.0.0.1:${input.port}:${input.port}`],
    cap_drop: ['ALL'],
    security_opt: ['no-new-privileges:true'],
    restart: 'unless-stopped',
    healthcheck: {
      test: [
        'CMD',
        'node',
        '-e',
        `fetch('http://127.0.0.1:${input.port}/readyz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))`,
      ],
      interval: '30s',
      timeout: '5s',
      retries: 3,
      // Measured: ~30 s to /readyz on a busy 2-core machine (docs/gateway.md).
      start_period: '120s',
    },
    'x-cannes': {
      // The npm package the image is built from, and its entry file relative to the image's
      // working directory: the rig's compose shim runs `command` in that package's directory.
      npmPackage: 'openclaw',
      npmVersion: imageVersion(input.image),
      health: `http://127.0.0.1:${input.port}/readyz`,
    },
  };
  // Every value quoted: no YAML 1.1 reader can take `1000:1000` or a version for a number.
  const doc = {
    name: COMPOSE_PROJECT,
    services: { [COMPOSE_SERVICE]: service },
    ...(input.serveNetwork === true ? { networks: SERVE_NETWORKS } : {}),
  };
  return `# Generated by the Cannes operator; changes are overwritten. See docs/gateway.md.\n${stringify(doc, { lineWidth: 0, defaultStringType: 'QUOTE_DOUBLE', defaultKeyType: 'PLAIN' })}`;
}

/**
 * The service's networks. Without a tailnet: docker0 (`network_mode: bridge`). With one:
 * compose's `default` network (the default route, where the port is published: Docker puts
 * both on a non-internal network before an internal one) and Serve's internal network at a
 * fixed address.
 */
function networking(serve: boolean): Record<string, unknown> {
  if (!serve) return { network_mode: 'bridge' };
  return {
    networks: { default: {}, [SERVE_NETWORK.name]: { ipv4_address: SERVE_NETWORK.containerAddress } },
  };
}

const SERVE_NETWORKS = {
  default: {},
  [SERVE_NETWORK.name]: {
    internal: true,
    ipam: { config: [{ subnet: SERVE_NETWORK.subnet, gateway: SERVE_NETWORK.hostAddress }] },
  },
};

/** `/opt/cannes/gateway/gateway.env` (root 600): the only place the gateway token is written. */
export function gatewayEnvFile(token: Secret): Secret {
  const t = token.reveal();
  // Token is operator-generated; still refuse anything that could break the env file format.
  if (!/^[A-Za-z0-9._~+/=-]{16,512}$/.test(t)) {
    throw new TerminalError('InvalidGatewayToken', 'the gateway token must be 16-512 URL-safe characters');
  }
  return new Secret(`OPENCLAW_GATEWAY_TOKEN=${t}\n`);
}

/** The release in the image tag (`…:2026.9.6`), or null for a digest-only or odd tag. */
export function imageVersion(image: string): string | null {
  const m = /:([0-9]{4}\.[0-9]+\.[0-9]+(?:-[A-Za-z0-9.]+)?)(?:@sha256:[a-f0-9]{64})?$/.exec(image);
  return m ? m[1]! : null;
}

function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 1024 || port > 65535 || port === PROXY_PORT) {
    throw new TerminalError(
      'InvalidGatewayPort',
      `gateway port ${port} must be 1024-65535 and not ${PROXY_PORT} (the proxy)`,
    );
  }
}

// Same pattern as VpsSpec.gateway.image.
const IMAGE_RE = /^[a-z0-9][a-z0-9./_-]*(:[A-Za-z0-9._-]+)?(@sha256:[a-f0-9]{64})?$/;
