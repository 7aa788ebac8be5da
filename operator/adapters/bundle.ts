/**
 * What the deploy step puts on a server: the files of operator/host's templates at the
 * places operator/host/layout.ts names, the commands that start them, and the health
 * check. Pure apart from the proxy bundle's bytes, which are read once at start-up.
 */
import { createHash } from 'node:crypto';
import type { ProviderName } from '../../common/providers.ts';
import { Secret } from '../../common/secret.ts';
import { ANNOTATION_GATEWAY_URL, DEFAULT_GATEWAY_IMAGE } from '../api/schema.ts';
import type { DeliveredKey } from '../controllers/keys.ts';
import type { DeployBundle, VpsObject } from '../controllers/ports.ts';
import {
  BRIDGE_ADDRESS,
  COMPOSE_PROJECT,
  composeFile,
  DEPLOY_LOCK,
  DEPLOY_LOCK_WAIT_S,
  FIREWALL_UNIT_NAME,
  firewallUnit,
  gatewayConfig,
  gatewayEnvFile,
  HOST,
  INTAKE_PATH,
  INTAKE_PORT,
  INTAKE_UNIT_NAME,
  intakeConfig,
  intakeUnit,
  keyFile,
  type NodeArch,
  nftablesRules,
  nodeRuntime,
  PROXY_PORT,
  PROXY_UNIT_NAME,
  PRUNE_DIRECT_KEYS,
  proxyUnit,
  runtimeInstallScript,
  runtimeNode,
  sshdHardening,
} from '../host/index.ts';
import { ENSURE_OWNER_USER, OWNER_AUTHORIZED_KEYS, ownerAuthorizedKeys } from '../host/owner-access.ts';

export interface BundleOptions {
  /** dist/proxy/cannes-proxy.mjs, as built. */
  readonly proxyBundle: string;
  /** Operator-set upstream origins per provider (`--provider-origin`). */
  readonly providerOrigins: Partial<Record<ProviderName, string>>;
  /** Where servers download Node (`--node-dist-url`; default https://nodejs.org/dist). */
  readonly nodeDistUrl?: string;
  /** Replaces the built-in table of Node tarball SHA-256s (`--node-sha256`; the rig's mirror). */
  readonly nodeSha256?: Partial<Record<NodeArch, string>>;
}

const owner = (p: { uid: number; gid: number }) => `${p.uid}:${p.gid}`;

const runtimeOpts = (o: BundleOptions) => ({
  ...(o.nodeDistUrl === undefined ? {} : { baseUrl: o.nodeDistUrl }),
  ...(o.nodeSha256 === undefined ? {} : { sha256: o.nodeSha256 }),
});

/**
 * Changes whenever what a deploy puts on a server would change for the same Vps and keys: it
 * hashes a deploy rendered by this very operator for a fixed sample (every file, the proxy
 * bundle and the templates included, with fake secret values; the start-up, verify and runtime
 * scripts), for both architectures. So a release that changes only a template redeploys each
 * server once, and one that changes nothing costs no SSH (the package version is not part of
 * it: it is unset when the image runs `node dist/operator/main.js`).
 */
export function bundleVersion(o: BundleOptions, render = makeBundle(o)): string {
  const h = createHash('sha256');
  for (const architecture of ['x86', 'arm'] as const) {
    for (const keys of [SAMPLE_KEYS, []]) {
      const b = render(SAMPLE_VPS, keys, SAMPLE_TOKEN, { architecture });
      for (const f of b.files) {
        const content = typeof f.content === 'string' ? f.content : f.content.reveal();
        h.update(JSON.stringify([f.path, f.mode, f.owner, content.length])).update(content);
      }
      h.update(JSON.stringify([b.prepare ?? '', b.activate, b.verify]));
    }
  }
  return h.digest('hex').slice(0, 16);
}

// The fixed sample bundleVersion renders: fake values only (never a real key or token).
const SAMPLE_TOKEN = Secret.of('sample-gateway-token');
const SAMPLE_VPS: VpsObject = {
  apiVersion: 'cannes.dev/v1alpha1',
  kind: 'Vps',
  metadata: {
    name: 'sample',
    namespace: 'sample',
    uid: '00000000-0000-4000-8000-000000000000',
    resourceVersion: '1',
    generation: 1,
    finalizers: [],
    labels: {},
    annotations: {},
    ownerReferences: [],
  },
  spec: {
    serverType: 'cx23',
    location: 'fsn1',
    image: 'docker-ce',
    cloudTokenSecretRef: { name: 'sample', key: 'token' },
    gateway: { image: DEFAULT_GATEWAY_IMAGE, port: 18789 },
    sshKeyRotation: { interval: '720h' },
    access: { sshAuthorizedKeys: [] },
    purgeCloudTokenAfterSetup: true,
    deletionPolicy: 'Delete',
  },
  status: {},
};
const SAMPLE_KEYS: readonly DeliveredKey[] = [
  {
    name: 'sample',
    provider: 'anthropic',
    apiKey: Secret.of('sample-key-not-a-key'),
    models: [],
    default: true,
  },
];

const gatewayState = HOST.gatewayStateDir;
/**
 * Starts what the deploy wrote. One deploy at a time (DEPLOY_LOCK): an earlier one's script,
 * left running by an operator that died, finishes first. The lock's fd is closed for the
 * commands inside, so what they start (the proxy, the containers) never holds it.
 */
export const ACTIVATE = `
set -e
exec 9>${DEPLOY_LOCK}
flock -w ${DEPLOY_LOCK_WAIT_S} 9 || { echo "an earlier deploy still holds ${DEPLOY_LOCK} after ${DEPLOY_LOCK_WAIT_S} s" >&2; exit 1; }
{
install -d -m ${gatewayState.mode.toString(8)} -o ${gatewayState.uid} -g ${gatewayState.gid} ${gatewayState.path}
systemctl daemon-reload
${ENSURE_OWNER_USER}
# The host firewall is reloaded on every deploy (the unit, RemainAfterExit, loads it at boot
# only); without nft there is no firewall, so there is no deploy.
command -v nft >/dev/null 2>&1 || { echo "nft is missing on this server: the host firewall cannot be loaded" >&2; exit 1; }
nft -f ${HOST.nftables.path}
systemctl enable ${FIREWALL_UNIT_NAME} >/dev/null 2>&1 || true
# The root password Hetzner set at create can never log in: '*' is no password (not a locked
# '!', which sshd without PAM would read as a locked account, keys included).
usermod -p '*' root
systemctl enable ${PROXY_UNIT_NAME} >/dev/null 2>&1 || true
systemctl restart ${PROXY_UNIT_NAME}
systemctl enable ${INTAKE_UNIT_NAME} >/dev/null 2>&1 || true
systemctl restart ${INTAKE_UNIT_NAME}
${PRUNE_DIRECT_KEYS}
if command -v sshd >/dev/null 2>&1 && sshd -t >/dev/null 2>&1; then systemctl reload ssh >/dev/null 2>&1 || systemctl reload sshd >/dev/null 2>&1 || true; fi
docker compose -p ${COMPOSE_PROJECT} -f ${HOST.composeFile.path} up -d --force-recreate
} 9>&-
`;

/** Runs `script` holding the deploy lock (the runtime install, before the files are written). */
export function underDeployLock(script: string): string {
  return `
exec 9>${DEPLOY_LOCK}
flock -w ${DEPLOY_LOCK_WAIT_S} 9 || { echo "an earlier deploy still holds ${DEPLOY_LOCK} after ${DEPLOY_LOCK_WAIT_S} s" >&2; exit 1; }
${script}`;
}

/** A file at a place of the HOST table, with that place's mode and owner. */
function at(
  place: { readonly path: string; readonly mode: number; readonly uid: number; readonly gid: number },
  content: string | Secret,
) {
  return { path: place.path, content, mode: place.mode, owner: owner(place) };
}

/** No ModelKey left: take every key off the server; the gateway keeps its last config. */
function keysOffBundle(): DeployBundle {
  return {
    files: [at(HOST.keyFile, keyFile([]))],
    // No ModelKey left: take every key off the server (the Direct ones too); the gateway keeps its last config.
    activate: PRUNE_DIRECT_KEYS,
    verify: `curl -fsS --max-time 5 http://${BRIDGE_ADDRESS}:${PROXY_PORT}/healthz >/dev/null`,
  };
}

/** The gateway's two non-secret files: its config and its compose file. */
function gatewayFiles(vps: VpsObject, keys: readonly DeliveredKey[]) {
  const port = vps.spec.gateway.port;
  const tailnetUrl = vps.spec.tailnet ? vps.metadata.annotations[ANNOTATION_GATEWAY_URL] : undefined;
  const config = gatewayConfig({
    port,
    ...(tailnetUrl ? { tailnetOrigin: tailnetUrl } : {}),
    modelKeys: keys.map((k) => ({
      name: k.name,
      provider: k.provider,
      models: k.models,
      default: k.default,
    })),
  });
  const compose = composeFile({
    image: vps.spec.gateway.image,
    port,
    providers: keys.map((k) => k.provider),
    // Serve's own network from the first deploy on, so Serve has its target when it is set up.
    serveNetwork: vps.spec.tailnet !== undefined,
  });
  return {
    compose: at(HOST.composeFile, compose),
    config: at(HOST.gatewayConfig, `${JSON.stringify(config, null, 2)}\n`),
  };
}

/** The key file: each delivered key with the upstream origin the proxy sends it to. */
function keyFileOf(o: BundleOptions, keys: readonly DeliveredKey[]): Secret {
  return keyFile(
    keys.map((k) => {
      const baseUrl = k.baseUrl ?? o.providerOrigins[k.provider];
      return { id: k.name, provider: k.provider, apiKey: k.apiKey, ...(baseUrl ? { baseUrl } : {}) };
    }),
  );
}

export function makeBundle(o: BundleOptions) {
  return (
    vps: VpsObject,
    keys: readonly DeliveredKey[],
    gatewayToken: Secret,
    host: { readonly architecture: 'x86' | 'arm' },
  ): DeployBundle => {
    const port = vps.spec.gateway.port;
    if (keys.length === 0) return keysOffBundle();
    // The proxy's Node, for this server's architecture, installed before any file is written.
    const runtime = nodeRuntime(host.architecture, runtimeOpts(o));
    const gateway = gatewayFiles(vps, keys);
    // In this order since the first release (bundleVersion hashes the order too).
    const files = [
      at(HOST.proxyBundle, o.proxyBundle),
      at(HOST.proxyUnit, proxyUnit({ node: runtimeNode(runtime) })),
      at(HOST.keyFile, keyFileOf(o, keys)),
      at(HOST.intakeUnit, intakeUnit({ node: runtimeNode(runtime) })),
      at(HOST.intakeConfig, intakeConfig(vps.spec.tailnet?.owners ?? [])),
      gateway.compose,
      at(HOST.gatewayEnv, gatewayEnvFile(gatewayToken)),
      gateway.config,
      at(HOST.nftables, nftablesRules()),
      {
        path: `/etc/systemd/system/${FIREWALL_UNIT_NAME}`,
        content: firewallUnit(),
        mode: 0o644,
        owner: '0:0',
      },
      // Root-owned: the owner's account can use these lines, never change them.
      {
        path: OWNER_AUTHORIZED_KEYS,
        content: ownerAuthorizedKeys(vps.spec.access.sshAuthorizedKeys, port),
        mode: 0o644,
        owner: '0:0',
      },
      at(HOST.sshdHardening, sshdHardening()),
    ];
    // Healthy = the proxy answers from the bridge address and the gateway answers /healthz.
    const verify = `
set -e
curl -fsS --max-time 5 http://${BRIDGE_ADDRESS}:${PROXY_PORT}/healthz >/dev/null
curl -fsS --max-time 5 http://127.0.0.1:${port}/healthz >/dev/null
curl -fsS --max-time 5 -o /dev/null http://127.0.0.1:${INTAKE_PORT}${INTAKE_PATH}/
`;
    return { prepare: underDeployLock(runtimeInstallScript(runtime)), files, activate: ACTIVATE, verify };
  };
}

/**
 * What the `harden` step puts on a server before it has anything to run (no ModelKey yet):
 * the host firewall, sshd's hardening and the root password's end, the same files and
 * commands as in every full deploy, so a server never waits for a ModelKey to be locked down.
 */
export const HARDEN = `
set -e
exec 9>${DEPLOY_LOCK}
flock -w ${DEPLOY_LOCK_WAIT_S} 9 || { echo "an earlier deploy still holds ${DEPLOY_LOCK} after ${DEPLOY_LOCK_WAIT_S} s" >&2; exit 1; }
{
systemctl daemon-reload
command -v nft >/dev/null 2>&1 || { echo "nft is missing on this server: the host firewall cannot be loaded" >&2; exit 1; }
nft -f ${HOST.nftables.path}
systemctl enable ${FIREWALL_UNIT_NAME} >/dev/null 2>&1 || true
usermod -p '*' root
if command -v sshd >/dev/null 2>&1 && sshd -t >/dev/null 2>&1; then systemctl reload ssh >/dev/null 2>&1 || systemctl reload sshd >/dev/null 2>&1 || true; fi
} 9>&-
`;

export function hardeningBundle(): DeployBundle {
  return {
    files: [
      {
        path: HOST.nftables.path,
        content: nftablesRules(),
        mode: HOST.nftables.mode,
        owner: owner(HOST.nftables),
      },
      {
        path: `/etc/systemd/system/${FIREWALL_UNIT_NAME}`,
        content: firewallUnit(),
        mode: 0o644,
        owner: '0:0',
      },
      {
        path: HOST.sshdHardening.path,
        content: sshdHardening(),
        mode: HOST.sshdHardening.mode,
        owner: owner(HOST.sshdHardening),
      },
    ],
    activate: HARDEN,
    // The firewall is loaded and root has no password.
    verify: `set -e\nnft list table inet cannes >/dev/null\ntest "$(getent shadow root | cut -d: -f2)" = '*'\n`,
  };
}
