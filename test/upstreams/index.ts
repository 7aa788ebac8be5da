/**
 * Local fake LLM upstreams (loopback only), reused by the proxy and end-to-end tests:
 *
 *   const up = await anthropic.start({ host: '127.0.0.1', port: 0, keys: [realKey] });
 *   // key file baseUrl: up.url (anthropic), `${up.url}/v1` (openai), `${up.url}/v1beta` (gemini)
 *   up.requests[0].credentials  // every credential header / ?key= that arrived
 *   await up.close();
 */
export * as anthropic from './anthropic.ts';
export type { RunningUpstream, UpstreamOptions, UpstreamRecord } from './common.ts';
export * as gemini from './gemini.ts';
export * as openai from './openai.ts';
