/**
 * The Cannes API (group `cannes.dev`, version `v1alpha1`): the ONE source of truth for the
 * `Vps` and `ModelKey` resources. The TypeScript types come from `Static<>`, the CRDs in
 * `crds/` are generated from the same objects (`make crds`, see ./crds.ts).
 *
 * Why TypeBox: its builders ARE JSON Schema objects (no conversion step that could drop a
 * keyword), unknown keywords such as `x-kubernetes-validations` pass through untouched, and
 * `Static<>` gives exact TS types from the same value. zod would need a second library to
 * emit JSON Schema and loses Kubernetes extensions on the way.
 */
import { type Static, type TSchema, Type } from '@sinclair/typebox';
import { PROVIDER_NAMES } from '../../common/providers.ts';

export const GROUP = 'cannes.dev';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;

/** The OpenClaw gateway release Cannes deploys unless the Vps says otherwise. */
export const DEFAULT_GATEWAY_IMAGE = 'ghcr.io/openclaw/openclaw:2026.9.6';
export const DEFAULT_GATEWAY_PORT = 18789;
/** Hetzner's Docker CE app image: Docker is installed on first boot. */
export const DEFAULT_IMAGE = 'docker-ce';
export const DEFAULT_ROTATION_INTERVAL = '720h';

/** Annotations carry the non-secret identity a person needs; status holds booleans only. */
export const ANNOTATION_SERVER_ID = 'cannes.dev/server-id';
export const ANNOTATION_IPV4 = 'cannes.dev/ipv4';
/**
 * The server type's `architecture` (`x86` | `arm`), recorded at create so the deploy picks the
 * Node build for it without asking Hetzner again (an idle Vps makes no Hetzner call).
 */
export const ANNOTATION_ARCHITECTURE = 'cannes.dev/architecture';
export const FINALIZER = 'cannes.dev/finalizer';
export const LABEL_VPS_UID = 'cannes.dev/vps-uid';

/** A Go duration as `time.ParseDuration` accepts it (no sign, at least one unit). */
export const GO_DURATION_PATTERN = '^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$';
const DNS_SUBDOMAIN_PATTERN = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$';
const SECRET_KEY_PATTERN = '^[-._a-zA-Z0-9]+$';
/** Key types OpenSSH accepts for users, then base64, then an optional printable comment: no options. */
export const SSH_PUBLIC_KEY_TYPES = [
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'sk-ssh-ed25519@openssh.com',
  'sk-ecdsa-sha2-nistp256@openssh.com',
  'ssh-rsa',
] as const;
export const SSH_PUBLIC_KEY_PATTERN = `^(${SSH_PUBLIC_KEY_TYPES.map((t) => t.replaceAll('.', '\\.')).join('|')}) [A-Za-z0-9+/]+={0,3}( [ -~]{0,1000})?$`;
/**
 * The label a Secret must carry before the operator reads or purges it, naming its one use
 * (as Argo CD's `argocd.argoproj.io/secret-type`): creating a ModelKey or a Vps is not enough
 * to make the operator read, send or purge an arbitrary Secret of the namespace.
 */
export const LABEL_SECRET_USAGE = 'cannes.dev/usage';
export const SECRET_USAGES = ['cloud-token', 'llm-key', 'tailnet-auth-key'] as const;
export type SecretUsage = (typeof SECRET_USAGES)[number];
/** The pinned OS host key of the server (public), for the owner's known_hosts. */
export const ANNOTATION_SSH_HOST_KEY = 'cannes.dev/ssh-host-key';
/**
 * A recovery intent (`cannes-operator recover`): the id of the one Hetzner server carrying this
 * Vps's uid label, which the reconcile may reset into rescue to make a new SSH key although the
 * Vps was provisioned before and the store lost its key (docs/operations.md). Removed when the
 * recovery finished.
 */
export const ANNOTATION_RECOVER = 'cannes.dev/recover';
/**
 * A Vps whose server vanished (docs/security.md, "A server that vanished"). The operator
 * records the id Hetzner answered 404 for in `server-gone` and waits; the owner consents to a
 * new server by setting `recreate-server` to that same id (a stale value never recreates a
 * later server).
 */
export const ANNOTATION_SERVER_GONE = 'cannes.dev/server-gone';
export const ANNOTATION_RECREATE_SERVER = 'cannes.dev/recreate-server';
/** The gateway's URL on the owner's tailnet (`https://<name>.<tailnet>.ts.net/`), once joined. */
export const ANNOTATION_GATEWAY_URL = 'cannes.dev/gateway-url';
/** Tailscale's own coordination server: the default `spec.tailnet.loginServer`. */
export const DEFAULT_TAILNET_LOGIN_SERVER = 'https://controlplane.tailscale.com';
/** A tailnet hostname (one DNS label): what the node is called, `<hostname>.<tailnet>`. */
export const TAILNET_HOSTNAME_PATTERN = '^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$';
export const TAILNET_TAG_PATTERN = '^tag:[a-z0-9-]+$';
/** An owner on the tailnet: a login name (`alice@example.com`, `alice@github`) or an ACL tag. */
export const TAILNET_OWNER_PATTERN = '^(tag:[a-z0-9-]+|[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+)$';
/** How a ModelKey's key reaches the server: from a Secret by the operator, or from the owner directly. */
export const KEY_DELIVERIES = ['Secret', 'Direct'] as const;
export type KeyDelivery = (typeof KEY_DELIVERIES)[number];
/**
 * Set by `key set` on a ModelKey after the server took a Direct key (a timestamp, no secret):
 * the change makes the Vps controller ask the server, once, which routes hold a key.
 */
export const ANNOTATION_KEY_SET = 'cannes.dev/key-set';
/** On a Vps: `{"<ModelKey>":true|false}`, which Direct routes hold a key, as the server said. */
export const ANNOTATION_DIRECT_KEYS = 'cannes.dev/direct-keys';

const str = (description: string, extra: Record<string, unknown> = {}) =>
  Type.String({ description, ...extra });

function secretKeySelector(what: string) {
  return Type.Object(
    {
      name: str(`Name of the Secret, in the same namespace, that holds ${what}.`, {
        minLength: 1,
        maxLength: 253,
        pattern: DNS_SUBDOMAIN_PATTERN,
      }),
      key: str(`Key inside the Secret's data whose value is ${what}.`, {
        minLength: 1,
        maxLength: 253,
        pattern: SECRET_KEY_PATTERN,
      }),
    },
    { description: `Where ${what} is kept: a key of a Secret in the Vps's namespace.` },
  );
}

const immutable = (field: string) => ({
  'x-kubernetes-validations': [{ rule: 'self == oldSelf', message: `${field} is immutable` }],
});

/** metav1.Condition, as Kubernetes itself publishes it. */
export const Condition = Type.Object(
  {
    type: str('Type of condition in CamelCase, e.g. Ready, ServerCreated, HasSshKey.', {
      maxLength: 316,
      pattern:
        '^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$',
    }),
    status: str('Status of the condition: True, False or Unknown.', { enum: ['True', 'False', 'Unknown'] }),
    observedGeneration: Type.Optional(
      Type.Integer({
        description: 'The .metadata.generation the condition was set from.',
        format: 'int64',
        minimum: 0,
      }),
    ),
    lastTransitionTime: str('When the condition last changed from one status to another.', {
      format: 'date-time',
    }),
    reason: str('A CamelCase reason for the last transition, telling what to do next.', {
      minLength: 1,
      maxLength: 1024,
      pattern: '^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$',
    }),
    message: str('A human readable message; it never contains secret material.', { maxLength: 32768 }),
  },
  {
    description: 'A condition of the resource (metav1.Condition).',
  },
);

const conditions = Type.Array(Condition, {
  description: 'The latest observations of the resource state, one per type.',
  maxItems: 32,
  'x-kubernetes-list-type': 'map',
  'x-kubernetes-list-map-keys': ['type'],
});

const observedGeneration = Type.Integer({
  description: 'The .metadata.generation the operator last acted on.',
  format: 'int64',
  minimum: 0,
});

const bool = (description: string) => Type.Boolean({ description });

// ---------------------------------------------------------------------------------------
// Vps

export const VpsSpec = Type.Object(
  {
    serverType: str('Hetzner server type, e.g. cx23, cpx22, cax11. Immutable.', {
      minLength: 2,
      maxLength: 32,
      pattern: '^[a-z0-9][a-z0-9-]*$',
      ...immutable('serverType'),
    }),
    location: str('Hetzner location, e.g. fsn1, nbg1, hel1, ash, hil, sin. Immutable.', {
      minLength: 3,
      maxLength: 16,
      pattern: '^[a-z]{3}[0-9]*$',
      ...immutable('location'),
    }),
    image: Type.Optional(
      str('Hetzner image the server is created from; it must provide Docker. Immutable.', {
        default: DEFAULT_IMAGE,
        minLength: 1,
        maxLength: 64,
        pattern: '^[a-z0-9][a-z0-9._-]*$',
        ...immutable('image'),
      }),
    ),
    cloudTokenSecretRef: secretKeySelector('the Hetzner Cloud API token (read+write)'),
    gateway: Type.Optional(
      Type.Object(
        {
          image: Type.Optional(
            str('OpenClaw gateway container image, pinned to a release tag or digest.', {
              default: DEFAULT_GATEWAY_IMAGE,
              minLength: 1,
              maxLength: 512,
              pattern: '^[a-z0-9][a-z0-9./_-]*(:[A-Za-z0-9._-]+)?(@sha256:[a-f0-9]{64})?$',
            }),
          ),
          port: Type.Optional(
            Type.Integer({
              description: 'Port the gateway listens on inside its container and on the host.',
              default: DEFAULT_GATEWAY_PORT,
              minimum: 1024,
              maximum: 65535,
            }),
          ),
        },
        {
          description: 'The OpenClaw gateway deployed on the server.',
          default: {},

          'x-kubernetes-validations': [
            {
              rule: '!has(self.port) || self.port != 3101',
              message: 'gateway.port 3101 is reserved for the host-side LLM proxy',
            },
          ],
        },
      ),
    ),
    sshKeyRotation: Type.Optional(
      Type.Object(
        {
          interval: Type.Optional(
            str('How often the SSH key is rotated, as a Go duration (e.g. 720h). At least 1h.', {
              default: DEFAULT_ROTATION_INTERVAL,
              maxLength: 64,
              pattern: GO_DURATION_PATTERN,
            }),
          ),
        },
        {
          description: 'Timed rotation of the SSH key the operator uses to reach the server.',
          default: {},

          'x-kubernetes-validations': [
            {
              rule: "!has(self.interval) || duration(self.interval) >= duration('1h')",
              message: 'sshKeyRotation.interval must be at least 1h',
            },
          ],
        },
      ),
    ),
    access: Type.Optional(
      Type.Object(
        {
          sshAuthorizedKeys: Type.Optional(
            Type.Array(
              str(
                'An OpenSSH public key line (`ssh-ed25519 AAAA... comment`), without options: the operator adds ' +
                  'the only options it gets (forward to the gateway port, nothing else).',
                { maxLength: 16384, pattern: SSH_PUBLIC_KEY_PATTERN },
              ),
              {
                description:
                  'Public keys that may open an SSH tunnel to the gateway (`ssh -N -L`) as the user `cannes`. ' +
                  'Removing a key removes it from the server at the next reconcile.',
                maxItems: 32,
                default: [],
              },
            ),
          ),
        },
        {
          description:
            "The owner's own way in without a tailnet: public keys of the unprivileged user `cannes`, " +
            'which may only forward a local port to the gateway (`ssh -N -L`): no shell, no other forward.',
          default: {},
        },
      ),
    ),
    tailnet: Type.Optional(
      Type.Object(
        {
          authKeySecretRef: secretKeySelector(
            'a Tailscale auth key (one-off, pre-authorised, tagged); the Secret must be labelled cannes.dev/usage: tailnet-auth-key',
          ),
          hostname: Type.Optional(
            str("The node's name on the tailnet (one DNS label). Default: the Vps name.", {
              minLength: 1,
              maxLength: 63,
              pattern: TAILNET_HOSTNAME_PATTERN,
            }),
          ),
          tags: Type.Optional(
            Type.Array(
              str('An ACL tag the node advertises, e.g. tag:cannes-vps.', {
                maxLength: 128,
                pattern: TAILNET_TAG_PATTERN,
              }),
              {
                description: 'Tags the node advertises (`--advertise-tags`); the auth key must allow them.',
                maxItems: 16,
                default: [],
              },
            ),
          ),
          loginServer: Type.Optional(
            str('The coordination server (https only): Tailscale by default, or a Headscale URL.', {
              default: DEFAULT_TAILNET_LOGIN_SERVER,
              maxLength: 2048,
              pattern: '^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~!$&()*+,;=:@%/-]*)?$',
            }),
          ),
          purgeAuthKeyAfterJoin: Type.Optional(
            Type.Boolean({
              description: 'Remove the auth key from its Secret once the node has joined the tailnet.',
              default: true,
            }),
          ),
          owners: Type.Optional(
            Type.Array(
              str('A tailnet login name (alice@example.com) or an ACL tag (tag:laptops).', {
                maxLength: 320,
                pattern: TAILNET_OWNER_PATTERN,
              }),
              {
                description:
                  'Who may hand LLM keys of Direct ModelKeys to the server, by tailnet identity (checked by the ' +
                  "server's key intake with tailscale whois). Empty: nobody can.",
                maxItems: 32,
                default: [],
              },
            ),
          ),
        },
        {
          description:
            "The owner's way in over Tailscale: the server joins the tailnet and `tailscale serve` puts the gateway " +
            'at https://<hostname>.<tailnet>/ (plain http on a tailnet without certificates). Nothing else of the ' +
            'server is reachable from the tailnet.',
        },
      ),
    ),
    purgeCloudTokenAfterSetup: Type.Optional(
      Type.Boolean({
        description:
          'Remove the Hetzner token from the referenced Secret once every Vps using it has finished setup. ' +
          'Hetzner has no API to revoke a token: revoke it in the Hetzner Console too.',
        default: true,
      }),
    ),
    deletionPolicy: Type.Optional(
      str('What happens to the Hetzner server when the Vps is deleted: Delete it, or Retain it.', {
        enum: ['Delete', 'Retain'],
        default: 'Delete',
      }),
    ),
  },
  { description: 'The desired state of a Vps: one Hetzner server running an OpenClaw gateway.' },
);

export const VpsStatus = Type.Object(
  {
    observedGeneration: Type.Optional(observedGeneration),
    serverCreated: Type.Optional(bool('The Hetzner server exists.')),
    hasSshKey: Type.Optional(bool('An SSH key born on the server is stored, encrypted, in Postgres.')),
    gatewayDeployed: Type.Optional(bool('The OpenClaw gateway is deployed and healthy.')),
    proxyReady: Type.Optional(bool('The host-side LLM proxy answers from the Docker bridge.')),
    cloudTokenPurged: Type.Optional(bool('Every copy of the Hetzner token Cannes held is deleted.')),
    tailnetJoined: Type.Optional(bool('The server is a node of the tailnet of spec.tailnet.')),
    gatewayReachable: Type.Optional(
      bool('The gateway answers at its tailnet URL (annotation cannes.dev/gateway-url).'),
    ),
    ready: Type.Optional(bool('Provisioning is complete and the gateway answers through the proxy.')),
    conditions: Type.Optional(conditions),
  },
  {
    description: 'Observed state: booleans only (plus observedGeneration and conditions). Never a secret.',
  },
);

// ---------------------------------------------------------------------------------------
// ModelKey

export const ModelEntry = Type.Object(
  {
    id: str('Model id as the provider names it, e.g. claude-sonnet-4-5.', {
      minLength: 1,
      maxLength: 256,
      pattern: '^[A-Za-z0-9][A-Za-z0-9._:/@-]*$',
    }),
    name: Type.Optional(str('Display name in the gateway.', { maxLength: 256 })),
    reasoning: Type.Optional(bool('The model supports reasoning.')),
    contextWindow: Type.Optional(
      Type.Integer({ description: 'Context window in tokens.', minimum: 1, maximum: 100_000_000 }),
    ),
    maxTokens: Type.Optional(
      Type.Integer({ description: 'Maximum output tokens.', minimum: 1, maximum: 100_000_000 }),
    ),
  },
  { description: 'A model offered through this key.' },
);

export const ModelKeySpec = Type.Object(
  {
    vpsRef: Type.Object(
      {
        name: str('Name of the Vps, in the same namespace.', {
          minLength: 1,
          maxLength: 253,
          pattern: DNS_SUBDOMAIN_PATTERN,
        }),
      },
      { description: 'The Vps whose proxy receives this key. Immutable.', ...immutable('vpsRef') },
    ),
    provider: str('LLM provider; decides the credential header and the default upstream origin. Immutable.', {
      enum: [...PROVIDER_NAMES],
    }),
    baseUrl: Type.Optional(
      str('Upstream base URL; required exactly when provider is custom. https only. Immutable.', {
        maxLength: 2048,
        pattern: '^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~!$&()*+,;=:@%/-]*)?$',
      }),
    ),
    delivery: Type.Optional(
      str(
        'Secret: the operator reads the key from secretRef and delivers it over SSH. Direct: the owner hands the ' +
          "key to the server over the tailnet (`key set` or the intake's page); it never exists in the cluster, " +
          'and secretRef is not allowed.',
        { enum: [...KEY_DELIVERIES], default: 'Secret' },
      ),
    ),
    secretRef: Type.Optional(secretKeySelector('the LLM API key')),
    models: Type.Optional(
      Type.Array(ModelEntry, {
        description: "Models offered through this key; empty means the provider's default model.",
        maxItems: 64,
        'x-kubernetes-list-type': 'map',
        'x-kubernetes-list-map-keys': ['id'],
      }),
    ),
    purgeSecretAfterDelivery: Type.Optional(
      Type.Boolean({
        description: 'Remove the key from the referenced Secret once it is delivered to the Vps.',
        default: false,
      }),
    ),
    default: Type.Optional(
      Type.Boolean({
        description:
          "This key's first model is the agent's default model. With several ModelKeys on one Vps, exactly one " +
          'must say so (never chosen by name order); a single ModelKey is the default by itself.',
        default: false,
      }),
    ),
  },
  {
    description:
      'An LLM API key delivered to the host-side proxy of one Vps. The route id is the ModelKey name.',

    'x-kubernetes-validations': [
      {
        rule: "has(self.baseUrl) == (self.provider == 'custom')",
        message: 'baseUrl is required when provider is custom, and not allowed for other providers',
      },
      {
        rule: "(has(self.delivery) && self.delivery == 'Direct') != has(self.secretRef)",
        message: 'secretRef is required with delivery Secret, and not allowed with delivery Direct',
      },
      // Re-pointing a ModelKey would send the key it names to another provider or host.
      { rule: 'self.provider == oldSelf.provider', message: 'provider is immutable' },
      {
        rule: "(has(self.baseUrl) ? self.baseUrl : '') == (has(oldSelf.baseUrl) ? oldSelf.baseUrl : '')",
        message: 'baseUrl is immutable',
      },
    ],
  },
);

export const ModelKeyStatus = Type.Object(
  {
    observedGeneration: Type.Optional(observedGeneration),
    hasKey: Type.Optional(
      bool(
        'Secret: the referenced Secret holds a well-formed key. Direct: the server reports a key for the route.',
      ),
    ),
    delivered: Type.Optional(bool("The key is in the Vps's proxy key file and the gateway config.")),
    conditions: Type.Optional(conditions),
  },
  {
    description: 'Observed state: booleans only (plus observedGeneration and conditions). Never a secret.',
  },
);

export type Condition = Static<typeof Condition>;
export type VpsSpec = Static<typeof VpsSpec>;
export type VpsStatus = Static<typeof VpsStatus>;
export type ModelKeySpec = Static<typeof ModelKeySpec>;
export type ModelKeyStatus = Static<typeof ModelKeyStatus>;
export type ModelEntry = Static<typeof ModelEntry>;

export interface KindInfo {
  readonly kind: string;
  readonly plural: string;
  readonly singular: string;
  readonly shortNames: readonly string[];
  readonly description: string;
  readonly spec: TSchema;
  readonly status: TSchema;
  readonly printerColumns: readonly PrinterColumn[];
}

export interface PrinterColumn {
  readonly name: string;
  readonly type: 'string' | 'boolean' | 'integer' | 'date';
  readonly jsonPath: string;
  readonly description: string;
  readonly priority?: number;
}

const age: PrinterColumn = {
  name: 'Age',
  type: 'date',
  jsonPath: '.metadata.creationTimestamp',
  description: 'Time since creation',
};

export const VPS: KindInfo = {
  kind: 'Vps',
  plural: 'vpses',
  singular: 'vps',
  shortNames: [],
  description: 'A Hetzner Cloud server running an OpenClaw gateway beside a key-injecting LLM proxy.',
  spec: VpsSpec,
  status: VpsStatus,
  printerColumns: [
    { name: 'Ready', type: 'boolean', jsonPath: '.status.ready', description: 'Provisioning complete' },
    { name: 'HasSshKey', type: 'boolean', jsonPath: '.status.hasSshKey', description: 'SSH key stored' },
    {
      name: 'Gateway',
      type: 'boolean',
      jsonPath: '.status.gatewayDeployed',
      description: 'Gateway deployed',
    },
    {
      name: 'IPv4',
      type: 'string',
      jsonPath: ".metadata.annotations['cannes\\.dev/ipv4']",
      description: 'Public IPv4 of the server',
    },
    {
      name: 'Status',
      type: 'string',
      jsonPath: '.status.conditions[?(@.type=="Ready")].reason',
      description: "The Ready condition's reason: what it is doing or waiting for",
    },
    age,
  ],
};

export const MODEL_KEY: KindInfo = {
  kind: 'ModelKey',
  plural: 'modelkeys',
  singular: 'modelkey',
  shortNames: ['mk'],
  description: 'An LLM API key that the proxy of one Vps injects; the agent never sees it.',
  spec: ModelKeySpec,
  status: ModelKeyStatus,
  printerColumns: [
    { name: 'Vps', type: 'string', jsonPath: '.spec.vpsRef.name', description: 'Target Vps' },
    { name: 'Provider', type: 'string', jsonPath: '.spec.provider', description: 'LLM provider' },
    { name: 'HasKey', type: 'boolean', jsonPath: '.status.hasKey', description: 'Secret holds a key' },
    {
      name: 'Delivered',
      type: 'boolean',
      jsonPath: '.status.delivered',
      description: 'Key delivered to the proxy',
    },
    {
      name: 'Status',
      type: 'string',
      jsonPath: '.status.conditions[?(@.type=="Ready")].reason',
      description: "The Ready condition's reason: what it is doing or waiting for",
    },
    age,
  ],
};

export const KINDS: readonly KindInfo[] = [VPS, MODEL_KEY];
