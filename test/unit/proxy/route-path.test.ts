import { describe, expect, it } from 'vitest';
import { parseTarget, safePath, stripCredentialParams } from '../../../proxy/route-path.ts';

describe('parseTarget', () => {
  it('splits /proxy/<id>/<path>?<query>', () => {
    expect(parseTarget('/proxy/my-key/v1/messages?beta=true')).toEqual({
      ok: true,
      id: 'my-key',
      path: '/v1/messages',
      query: 'beta=true',
    });
    expect(parseTarget('/proxy/k')).toEqual({ ok: true, id: 'k', path: '', query: '' });
    expect(parseTarget('/proxy/k?alt=sse')).toEqual({ ok: true, id: 'k', path: '', query: 'alt=sse' });
  });

  it('treats anything outside /proxy/ and an empty id as not found', () => {
    expect(parseTarget('/v1/messages')).toEqual({ ok: false, reason: 'not_found' });
    expect(parseTarget('/proxy//v1')).toEqual({ ok: false, reason: 'not_found' });
    expect(parseTarget('http://evil.example/proxy/k/v1')).toEqual({ ok: false, reason: 'not_found' });
  });

  it('refuses dot segments, encoded or not, and backslashes in the path', () => {
    for (const p of [
      '/v1/../x',
      '/v1/%2e%2e/x',
      '/v1/%2E%2e',
      '/./x',
      '/v1/.%2E/x',
      '/v1\\..\\x',
      '/a%2f..%2fb',
      '/%zz',
    ]) {
      expect(parseTarget(`/proxy/k${p}`), p).toEqual({ ok: false, reason: 'bad_path' });
    }
  });

  it('keeps dots that are not whole segments (model names)', () => {
    expect(safePath('/v1beta/models/gemini-2.5-pro:streamGenerateContent')).toBe(true);
    expect(safePath('/v1/files/file...abc')).toBe(true);
  });
});

describe('stripCredentialParams', () => {
  it('removes ?key= in every spelling and keeps the rest in order', () => {
    expect(stripCredentialParams('alt=sse&key=AIza-canary')).toBe('alt=sse');
    expect(stripCredentialParams('key=1&KEY=2&%6Bey=3&k%65y=4&x=1&key')).toBe('x=1');
    expect(stripCredentialParams('a=1&b=2')).toBe('a=1&b=2');
    expect(stripCredentialParams('keys=1&monkey=2')).toBe('keys=1&monkey=2');
  });

  it('removes every credential-like parameter, case- and separator-insensitive, exact names only', () => {
    expect(
      stripCredentialParams(
        'api_key=1&apiKey=2&API-KEY=3&access_token=4&Access.Token=5&token=6&auth=7&x-goog-api-key=8&' +
          'client_secret=9&id_token=10&refresh_token=11&password=12&secret=13&authorization=14&alt=sse',
      ),
    ).toBe('alt=sse');
    expect(stripCredentialParams('pageToken=abc&pageSize=5&tokens=1&max_tokens=3')).toBe(
      'pageToken=abc&pageSize=5&tokens=1&max_tokens=3',
    );
    expect(stripCredentialParams('%61pi_key=1&x=2')).toBe('x=2');
  });

  it('rejects an undecodable parameter name', () => {
    expect(stripCredentialParams('%zz=1')).toBeNull();
  });
});
