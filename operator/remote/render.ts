import type { ProviderName } from '../../proxy/providers.ts';
import type { ModelEntry } from '../api/schema.ts';
import type { Secret } from '../lib/secret.ts';
import { composeFile, gatewayEnvFile } from './compose.ts';
import { gatewayConfig } from './gateway-config.ts';
import { keyFile } from './key-file.ts';
import { HOST, type HostPath } from './layout.ts';
import { firewallUnit, nftablesRules } from './nftables.ts';
import { proxyUnit } from './proxy-unit.ts';
import { sshdHardening } from './sshd.ts';

/**
 * Everything the deploy step writes on a VPS (except the proxy bundle, which is a build
 * artefact: HOST.proxyBundle), rendered from one input so the key file and the gateway
 * config can never disagree about which ModelKeys exist. Pure: the writer (Vps controller,
 * over SSH) creates the directories, then writes each file with its mode and owner, secret
 * ones by temp file + rename.
 */
export interface HostModelKey {
  /** ModelKey name: the proxy route id and the `cannes-<name>` provider id. */
  readonly name: string;
  readonly provider: ProviderName;
  readonly models?: readonly ModelEntry[];
  /** ModelKey.spec.baseUrl (custom provider). */
  readonly baseUrl?: string;
  readonly apiKey: Secret;
  /** ModelKey.spec.default. */
  readonly default?: boolean;
}

export interface HostInput {
  readonly gateway: { readonly image: string; readonly port: number };
  /** Delivered ModelKeys, in creation order (the first one's first model is the default). */
  readonly modelKeys: readonly HostModelKey[];
  /** Operator-generated gateway token (the chat endpoint's Bearer token). */
  readonly gatewayToken: Secret;
}

export type RenderedPath = HostPath & { readonly content: string | Secret | null };

export function renderHost(input: HostInput): RenderedPath[] {
  const providers = input.modelKeys.map((k) => k.provider);
  const file = (p: HostPath, content: string | Secret): RenderedPath => ({ ...p, content });
  const dir = (p: HostPath): RenderedPath => ({ ...p, content: null });
  return [
    dir(HOST.gatewayDir),
    dir(HOST.gatewayConfigDir),
    dir(HOST.gatewayStateDir),
    file(
      HOST.keyFile,
      keyFile(
        input.modelKeys.map((k) => ({
          id: k.name,
          provider: k.provider,
          apiKey: k.apiKey,
          ...(k.baseUrl !== undefined ? { baseUrl: k.baseUrl } : {}),
        })),
      ),
    ),
    file(HOST.proxyUnit, proxyUnit()),
    file(HOST.nftables, nftablesRules()),
    file(HOST.firewallUnit, firewallUnit()),
    file(HOST.sshdHardening, sshdHardening()),
    file(
      HOST.gatewayConfig,
      `${JSON.stringify(
        gatewayConfig({
          port: input.gateway.port,
          modelKeys: input.modelKeys.map((k) => ({
            name: k.name,
            provider: k.provider,
            ...(k.models !== undefined ? { models: k.models } : {}),
            ...(k.default !== undefined ? { default: k.default } : {}),
          })),
        }),
        null,
        2,
      )}\n`,
    ),
    file(HOST.gatewayEnv, gatewayEnvFile(input.gatewayToken)),
    file(HOST.composeFile, composeFile({ image: input.gateway.image, port: input.gateway.port, providers })),
  ];
}
