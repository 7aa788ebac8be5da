import { CREDENTIAL_HEADERS } from '../common/providers.ts';

/**
 * Header policy, precomputed once. Requests: a denylist (hop-by-hop, credentials, anything
 * that would let a client steer the upstream connection), so provider headers such as
 * `anthropic-version`, `anthropic-beta`, `openai-beta` pass. Responses: an allowlist, so
 * nothing an upstream reflects (a Gemini passthrough once echoed `x-goog-api-key`) reaches
 * the agent unless it is known to be harmless.
 */
export const HOP_BY_HOP = [
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
] as const;

/** Removed from every inbound request before it goes upstream. */
export const REQUEST_DROP: ReadonlySet<string> = new Set<string>([
  ...HOP_BY_HOP,
  ...CREDENTIAL_HEADERS,
  // The upstream host comes from the key file, never from the client (Portkey CVE-2025-66405).
  'host',
  // Node answers `100-continue` itself; undici refuses the header.
  'expect',
  // The proxy sets the body framing itself.
  'content-length',
  // Cookies are a credential too, and no provider API wants the container's.
  'cookie',
  'cookie2',
  // Replaced by `identity`: the proxy scans response bodies for the key, which it cannot
  // do in a compressed body (issue 19 item 9).
  'accept-encoding',
  // Nothing about the container network goes to the provider.
  'forwarded',
  'x-forwarded-for',
  'x-forwarded-host',
  'x-forwarded-proto',
  'x-forwarded-port',
  'x-real-ip',
  'via',
]);

/** Response headers relayed to the client (exact names). */
export const RESPONSE_ALLOW: ReadonlySet<string> = new Set<string>([
  'content-type',
  'content-length',
  'content-encoding',
  'content-language',
  'content-disposition',
  'cache-control',
  'expires',
  'etag',
  'last-modified',
  'vary',
  'location',
  'retry-after',
  'request-id',
  'x-request-id',
  'openai-processing-ms',
  'openai-version',
  'x-content-type-options',
]);

/** Response header prefixes relayed to the client (rate-limit information agents act on). */
export const RESPONSE_ALLOW_PREFIXES: readonly string[] = ['x-ratelimit-', 'anthropic-ratelimit-'];

/** Names that never go to a client even if an allow rule matched (defence in depth). */
const RESPONSE_NEVER: ReadonlySet<string> = new Set<string>([
  ...CREDENTIAL_HEADERS,
  'set-cookie',
  'set-cookie2',
]);

export function responseHeaderAllowed(lowerName: string): boolean {
  if (RESPONSE_NEVER.has(lowerName)) return false;
  if (RESPONSE_ALLOW.has(lowerName)) return true;
  for (const p of RESPONSE_ALLOW_PREFIXES) if (lowerName.startsWith(p)) return true;
  return false;
}
