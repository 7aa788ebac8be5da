import { TerminalError } from '../../common/errors.ts';
import { PROVIDERS, type ProviderName } from '../../common/providers.ts';
import type { ModelEntry } from '../api/schema.ts';
import { BRIDGE_ADDRESS, PROXY_PORT, SERVE_NETWORK } from './layout.ts';

/**
 * Who connects to the gateway on behalf of a tailnet peer: `tailscale serve` on the host dials
 * the container's address on Serve's own network (SERVE_NETWORK), so its requests come from the
 * host's address there and from nowhere else. Only that address is trusted to name the client
 * (X-Forwarded-For): the owner's SSH tunnel arrives through the published port from another
 * address and stays a plain client (OpenClaw refuses an authenticated request from a trusted
 * proxy that names no client, `proxy_attribution_required`). Token auth stays on for both.
 */
export const TAILNET_TRUSTED_PROXIES = [SERVE_NETWORK.hostAddress] as const;

/**
 * The OpenClaw gateway's `openclaw.json`, generated from the Vps and its ModelKeys. Checked
 * against the real `openclaw` package (2026.9.6) by test/integration/openclaw/: its own
 * `config validate`, and a real gateway answering a chat through it.
 *
 * What it promises (docs/design.md promise 1):
 * - every model provider points at the host-side proxy (`/proxy/<ModelKey name>`) with
 *   `apiKey: "proxy-managed"`: the container never holds a real key;
 * - `models.mode: "replace"`: OpenClaw's built-in catalog (and a stale generated
 *   `agents/<id>/agent/models.json`) cannot add a provider that bypasses the proxy;
 * - provider ids are `cannes-<name>`, a namespace no built-in provider uses, so no other
 *   credential source (env vars such as ANTHROPIC_API_KEY, auth-profiles.json) attaches to them;
 * - it holds no secret at all: the gateway token reaches the process as OPENCLAW_GATEWAY_TOKEN
 *   (gatewayEnvFile()), so this object can be logged, diffed and shown to the user.
 */

export interface GatewayModelKey {
  /** The ModelKey's name: the proxy route id. */
  readonly name: string;
  readonly provider: ProviderName;
  /** From `ModelKey.spec.models`; empty or absent means the provider's default model. */
  readonly models?: readonly ModelEntry[];
  /** `ModelKey.spec.default`: its first model is the agent's default. */
  readonly default?: boolean;
}

export interface GatewayConfigInput {
  /** Port the gateway listens on inside the container (Vps.spec.gateway.port). */
  readonly port: number;
  /** In order: the first key's first model is the agent's default model. May be empty. */
  readonly modelKeys: readonly GatewayModelKey[];
  /**
   * The gateway's origin on the owner's tailnet (`https://<name>.<tailnet>`), once the server
   * joined (annotation cannes.dev/gateway-url): Serve forwards to the loopback port.
   */
  readonly tailnetOrigin?: string;
  /**
   * Where the container reaches the proxy. Defaults are the production values; tests that run
   * the gateway outside a container point both at a loopback proxy.
   */
  readonly proxy?: {
    /** By name, through compose's `extra_hosts: host.docker.internal:host-gateway`. */
    readonly hostOrigin?: string;
    /** By the bridge IP literal (Google: see googleTrustedOrigin()). */
    readonly bridgeOrigin?: string;
  };
}

export const PROXY_API_KEY = 'proxy-managed';
export const PROVIDER_ID_PREFIX = 'cannes-';
export const DEFAULT_HOST_ORIGIN = `http://host.docker.internal:${PROXY_PORT}`;
export const DEFAULT_BRIDGE_ORIGIN = `http://${BRIDGE_ADDRESS}:${PROXY_PORT}`;

/**
 * The model offered when a ModelKey lists none: the defaults the pinned OpenClaw release
 * documents for each provider (docs/providers/*.md of openclaw 2026.9.6). `custom` has none:
 * an unknown endpoint's model names cannot be guessed.
 */
export const DEFAULT_MODELS: Readonly<Record<ProviderName, ModelEntry | null>> = {
  anthropic: { id: 'claude-opus-5', name: 'Claude Opus 5' },
  openai: { id: 'gpt-5.5', name: 'GPT-5.5' },
  google: { id: 'gemini-3.1-pro-preview', name: 'Gemini 3.1 Pro (preview)' },
  openrouter: { id: 'openrouter/auto', name: 'OpenRouter Auto' },
  mistral: { id: 'mistral-large-latest', name: 'Mistral Large' },
  groq: { id: 'openai/gpt-oss-120b', name: 'GPT-OSS 120B (Groq)' },
  xai: { id: 'grok-4.7', name: 'Grok 4.7' },
  deepseek: { id: 'deepseek-v4-pro', name: 'DeepSeek V4 Pro' },
  custom: null,
};

/** OpenClaw's provider id for a ModelKey. */
export function providerId(modelKeyName: string): string {
  return `${PROVIDER_ID_PREFIX}${modelKeyName}`;
}

/**
 * Google gets the bridge IP literal, not `host.docker.internal`: OpenClaw's Gemini paths
 * distrust non-Google origins and accept plain http only for a private IP literal plus the
 * origin listed in OPENCLAW_GOOGLE_GENERATIVE_AI_TRUSTED_ORIGINS (REFERENCE.md; composeFile()
 * sets it). In the pinned 2026.9.6, chat streaming accepts any configured baseUrl and the
 * media paths accept only https://generativelanguage.googleapis.com (docs/gateway.md).
 */
export function usesBridgeLiteral(provider: ProviderName): boolean {
  return PROVIDERS[provider].api === 'google-generative-ai';
}

/** The proxy URL a ModelKey's provider uses from inside the container. */
export function proxyBaseUrl(key: GatewayModelKey, proxy: GatewayConfigInput['proxy'] = {}): string {
  const origin = usesBridgeLiteral(key.provider)
    ? (proxy.bridgeOrigin ?? DEFAULT_BRIDGE_ORIGIN)
    : (proxy.hostOrigin ?? DEFAULT_HOST_ORIGIN);
  return `${trimSlash(origin)}/proxy/${key.name}`;
}

/** The OpenClaw config as a plain JSON object (serialise with JSON.stringify). */
export type OpenClawConfig = Record<string, unknown>;

export function gatewayConfig(input: GatewayConfigInput): OpenClawConfig {
  const seen = new Set<string>();
  const providers: Record<string, unknown> = {};
  let primary: string | undefined;
  for (const key of input.modelKeys) {
    if (!NAME_RE.test(key.name)) {
      throw new TerminalError(
        'InvalidModelKeyName',
        `ModelKey name ${JSON.stringify(key.name)} is not a DNS name`,
      );
    }
    if (seen.has(key.name)) {
      throw new TerminalError('DuplicateModelKey', `ModelKey ${key.name} is listed twice`);
    }
    seen.add(key.name);
    const models = modelsFor(key);
    const id = providerId(key.name);
    providers[id] = {
      baseUrl: proxyBaseUrl(key, input.proxy),
      // OpenClaw requires a non-empty apiKey; the proxy strips it and injects the real one.
      apiKey: PROXY_API_KEY,
      api: PROVIDERS[key.provider].api,
      models: models.map(toOpenClawModel),
    };
    if (key.default || input.modelKeys.length === 1) primary = `${id}/${models[0]!.id}`;
  }
  // The default model is explicit: never whichever ModelKey sorts first.
  const marked = input.modelKeys.filter((k) => k.default).map((k) => k.name);
  if (marked.length > 1)
    throw new TerminalError(
      'DefaultModelAmbiguous',
      `ModelKeys ${marked.join(', ')} all say default: true; keep one`,
    );
  if (input.modelKeys.length > 1 && marked.length === 0)
    throw new TerminalError(
      'DefaultModelRequired',
      `several ModelKeys (${input.modelKeys.map((k) => k.name).join(', ')}): set default: true on the one whose first model the agent uses`,
    );
  return {
    gateway: {
      // `local` runs the gateway; the gateway refuses to start on anything else.
      mode: 'local',
      port: input.port,
      // 0.0.0.0 inside the container: Docker's port mapping arrives on eth0, not on loopback.
      // The host publishes the port on 127.0.0.1 only (composeFile()).
      bind: 'lan',
      // The token itself comes from OPENCLAW_GATEWAY_TOKEN (gateway.env, root-only on the host).
      auth: { mode: 'token' },
      // Behind Serve (only with a tailnet): the Control UI's origin, and Serve as the proxy whose
      // X-Forwarded-For names the peer (else authenticated routes refuse forwarded requests).
      ...(input.tailnetOrigin === undefined
        ? {}
        : {
            controlUi: { allowedOrigins: [tailnetOrigin(input.tailnetOrigin)] },
            trustedProxies: [...TAILNET_TRUSTED_PROXIES],
          }),
      http: {
        endpoints: {
          // OpenAI-compatible POST /v1/chat/completions with `Authorization: Bearer <token>`:
          // the end-to-end check (and the user's own tools) talk to the agent through it.
          chatCompletions: { enabled: true },
        },
      },
    },
    models: {
      mode: 'replace',
      providers,
    },
    // With no ModelKey yet the gateway still starts (and passes the validator); chats fail
    // until the first key arrives and the config is re-rendered.
    ...(primary === undefined ? {} : { agents: { defaults: { model: { primary } } } }),
  };
}

function modelsFor(key: GatewayModelKey): readonly ModelEntry[] {
  if (key.models && key.models.length > 0) return key.models;
  const fallback = DEFAULT_MODELS[key.provider];
  if (fallback === null) {
    throw new TerminalError(
      'ModelsRequired',
      `ModelKey ${key.name} uses provider ${key.provider}: list its models in spec.models`,
    );
  }
  return [fallback];
}

function toOpenClawModel(m: ModelEntry): Record<string, unknown> {
  // OpenClaw requires `name`; ModelKey makes it optional.
  const out: Record<string, unknown> = { id: m.id, name: m.name ?? m.id };
  if (m.reasoning !== undefined) out['reasoning'] = m.reasoning;
  if (m.contextWindow !== undefined) out['contextWindow'] = m.contextWindow;
  if (m.maxTokens !== undefined) out['maxTokens'] = m.maxTokens;
  return out;
}

const NAME_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** `https://name.tailnet.ts.net/` -> `https://name.tailnet.ts.net` (an Origin has no path). */
function tailnetOrigin(url: string): string {
  const u = new URL(url);
  if (u.protocol !== 'https:' && u.protocol !== 'http:')
    throw new TerminalError('InvalidGatewayUrl', 'the tailnet gateway URL must be http(s)');
  return u.origin;
}

function trimSlash(s: string): string {
  return s.replace(/\/+$/, '');
}
