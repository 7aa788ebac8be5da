import { describe, expect, it } from 'vitest';
import type { ProviderName } from '../../../common/providers.ts';
import { EndpointPolicy, validPathPrefix } from '../../../proxy/endpoints.ts';

const policy = new EndpointPolicy();
const ok = (p: ProviderName, m: string, path: string) => policy.check(p, m, path);

describe('the endpoint allow list (paths relative to the route base URL)', () => {
  it('lets the inference calls the OpenClaw gateway makes through', () => {
    expect(ok('anthropic', 'POST', '/v1/messages')).toBe('ok');
    expect(ok('anthropic', 'POST', '/v1/messages/count_tokens')).toBe('ok');
    expect(ok('anthropic', 'GET', '/v1/models')).toBe('ok');
    expect(ok('openai', 'POST', '/chat/completions')).toBe('ok');
    expect(ok('openai', 'POST', '/responses')).toBe('ok');
    expect(ok('openai', 'POST', '/embeddings')).toBe('ok');
    expect(ok('openai', 'GET', '/models')).toBe('ok');
    expect(ok('openai', 'HEAD', '/models/ft:gpt-4o-mini:org:x:123')).toBe('ok');
    expect(ok('openrouter', 'GET', '/models/openai/gpt-4o/endpoints')).toBe('ok');
    expect(ok('mistral', 'POST', '/fim/completions')).toBe('ok');
    for (const p of ['groq', 'xai', 'deepseek', 'custom'] as const) {
      expect(ok(p, 'POST', '/chat/completions'), p).toBe('ok');
    }
    expect(ok('google', 'POST', '/models/gemini-2.5-pro:streamGenerateContent')).toBe('ok');
    expect(ok('google', 'POST', '/models/gemini-2.5-pro:generateContent')).toBe('ok');
    expect(ok('google', 'POST', '/models/text-embedding-004:embedContent')).toBe('ok');
    expect(ok('google', 'POST', '/models/gemini-2.5-pro:countTokens')).toBe('ok');
    expect(ok('google', 'GET', '/models')).toBe('ok');
  });

  it('refuses credential minting, account and admin APIs, and other providers’ paths', () => {
    for (const [p, path] of [
      ['openai', '/realtime/client_secrets'],
      ['openai', '/realtime/sessions'],
      ['openai', '/organization/admin_api_keys'],
      ['openai', '/organization/projects/proj_1/api_keys'],
      ['openai', '/api_keys'],
      ['openai', '/files'],
      ['openai', '/batches'],
      ['openai', '/fine_tuning/jobs'],
      ['openai', '/chat/completions/x'],
      ['openai', '/v1/chat/completions'],
      ['xai', '/realtime/client_secrets'],
      ['openrouter', '/keys'],
      ['openrouter', '/credits'],
      ['anthropic', '/v1/organizations/api_keys'],
      ['anthropic', '/v1/messages/batches'],
      ['anthropic', '/v1/files'],
      ['anthropic', '/chat/completions'],
      ['google', '/files'],
      ['google', '/cachedContents'],
      ['google', '/tunedModels'],
      ['google', '/models/x:generateContent/extra'],
      ['google', '/models/a/b:generateContent'],
      ['openai', ''],
      ['openai', '/'],
    ] as const) {
      expect(ok(p, 'POST', path), `${p} ${path}`).toBe('path');
    }
  });

  it('answers 405 for a method the endpoint does not take and for methods no provider uses', () => {
    expect(ok('openai', 'DELETE', '/models/ft:gpt-4o-mini:org:x:123')).toBe('method');
    expect(ok('openai', 'GET', '/chat/completions')).toBe('method');
    expect(ok('anthropic', 'PATCH', '/v1/messages')).toBe('method');
    for (const m of ['TRACE', 'TRACK', 'PROPFIND', 'OPTIONS', 'CONNECT', 'PUT', 'MKCOL', 'get']) {
      expect(ok('openai', m, '/chat/completions'), m).toBe('method');
      expect(policy.methodKnown(m), m).toBe(false);
    }
    expect(policy.allowHeader).toBe('GET, HEAD, POST');
  });

  it('widens with --allow-path-prefix (whole segments) and --allow-any-path, never to TRACE', () => {
    const wide = new EndpointPolicy({ extraPrefixes: ['/files', '/batches/'] });
    expect(wide.check('openai', 'POST', '/files')).toBe('ok');
    expect(wide.check('openai', 'GET', '/files/file-1/content')).toBe('ok');
    expect(wide.check('openai', 'DELETE', '/batches/b1')).toBe('ok');
    expect(wide.check('openai', 'POST', '/filesystem')).toBe('path');
    expect(wide.check('openai', 'TRACE', '/files')).toBe('method');
    expect(wide.allowHeader).toBe('GET, HEAD, POST, DELETE, PATCH');
    const any = new EndpointPolicy({ anyPath: true });
    expect(any.check('openai', 'POST', '/realtime/client_secrets')).toBe('ok');
    expect(any.check('openai', 'PROPFIND', '/x')).toBe('method');
  });

  it('validates --allow-path-prefix values', () => {
    expect(validPathPrefix('/files')).toBe(true);
    expect(validPathPrefix('/v1/files/')).toBe(true);
    for (const p of ['files', '/a/../b', '/a?b=1', '/a#b', '/a\\b', '/*', ''])
      expect(validPathPrefix(p), p).toBe(false);
  });
});
