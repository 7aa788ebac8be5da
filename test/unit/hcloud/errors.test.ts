import { describe, expect, it } from 'vitest';
import { CannesError } from '../../../common/errors.ts';
import { backoff, checkEndpoint } from '../../../operator/hcloud/client.ts';
import { HCLOUD_ERROR_CODES, HcloudError } from '../../../operator/hcloud/errors.ts';

describe('Hetzner error classification', () => {
  it('gives every known code a CamelCase reason starting with Hcloud', () => {
    for (const info of Object.values(HCLOUD_ERROR_CODES))
      expect(info.reason).toMatch(/^Hcloud[A-Z][A-Za-z]+$/);
  });

  it('always retries refusals that did nothing: rate limit, locked, conflict', () => {
    for (const code of ['rate_limit_exceeded', 'locked', 'conflict']) {
      const e = new HcloudError(code, 'x');
      expect(e.retryable(false)).toBe(true);
      expect(e.terminal).toBe(false);
    }
  });

  it('retries server errors and timeouts only for requests that are safe to resend', () => {
    for (const code of ['server_error', 'unavailable', 'timeout', 'network_error', 'request_timeout']) {
      const e = new HcloudError(code, 'x');
      expect(e.retryable(true)).toBe(true);
      expect(e.retryable(false)).toBe(false);
    }
  });

  it('marks what the user must fix as terminal and never retries it', () => {
    for (const code of [
      'invalid_input',
      'unauthorized',
      'token_readonly',
      'forbidden',
      'resource_limit_exceeded',
    ]) {
      const e = new HcloudError(code, 'x');
      expect(e.terminal).toBe(true);
      expect(e.retryable(true)).toBe(false);
      expect(e).toBeInstanceOf(CannesError);
    }
  });

  it('judges an unknown code by its HTTP status', () => {
    expect(new HcloudError('brand_new', 'x', { status: 502 }).retryable(true)).toBe(true);
    expect(new HcloudError('brand_new', 'x', { status: 429 }).reason).toBe('HcloudRateLimited');
    expect(new HcloudError('brand_new', 'x', { status: 418 }).retryable(true)).toBe(false);
  });
});

describe('backoff', () => {
  const opts = (random: () => number) => ({ baseMs: 1000, capMs: 60_000, maxRetries: 5, random });

  it('grows exponentially from 1 s and caps at 60 s', () => {
    const top = opts(() => 0.999999);
    expect(backoff(0, top)).toBeLessThan(1000);
    expect(backoff(0, top)).toBeGreaterThan(999);
    expect(backoff(3, top)).toBeGreaterThan(7999);
    expect(backoff(10, top)).toBeLessThan(60_000);
    expect(backoff(10, top)).toBeGreaterThan(59_999);
  });

  it('uses full jitter: anywhere from zero to the ceiling', () => {
    expect(
      backoff(
        4,
        opts(() => 0),
      ),
    ).toBe(0);
    expect(
      backoff(
        4,
        opts(() => 0.5),
      ),
    ).toBe(8000);
  });
});

describe('the endpoint check', () => {
  it('accepts https and plain http to loopback only', () => {
    expect(checkEndpoint('https://api.hetzner.cloud/v1/')).toBe('https://api.hetzner.cloud/v1');
    expect(checkEndpoint('http://127.0.0.1:4000/v1')).toBe('http://127.0.0.1:4000/v1');
    expect(checkEndpoint('http://[::1]:4000/v1')).toBe('http://[::1]:4000/v1');
  });

  it('allows plain http elsewhere only when asked to explicitly', () => {
    expect(checkEndpoint('http://hcloud-sim.test.svc:4000/v1', true)).toBe(
      'http://hcloud-sim.test.svc:4000/v1',
    );
    expect(() => checkEndpoint('ftp://x.example/v1', true)).toThrow(/must be https/);
  });

  it('refuses to send the token in clear text or to a URL carrying credentials', () => {
    for (const bad of [
      'http://api.hetzner.cloud/v1',
      'http://10.0.0.1/v1',
      'https://u:p@x.example/v1',
      'not a url',
    ]) {
      expect(() => checkEndpoint(bad), bad).toThrow(
        expect.objectContaining({ reason: 'HcloudInvalidEndpoint' }),
      );
    }
  });
});
