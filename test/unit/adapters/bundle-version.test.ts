import { describe, expect, it } from 'vitest';
import { bundleVersion, makeBundle } from '../../../operator/adapters/bundle.ts';
import { HOST } from '../../../operator/host/index.ts';

/**
 * The deploy fingerprint's operator part: a release that changes what lands on a server (any
 * template, the proxy, a script) redeploys each server once; one that changes nothing does not.
 */
const opts = { proxyBundle: '// proxy v1\n', providerOrigins: {} };

describe('bundleVersion', () => {
  it('is the same for the same operator, whatever the package version says', () => {
    const a = bundleVersion(opts);
    process.env['npm_package_version'] = '9.9.9';
    try {
      expect(bundleVersion({ ...opts })).toBe(a);
    } finally {
      delete process.env['npm_package_version'];
    }
  });

  it('changes when only a host template changes (here the firewall rules)', () => {
    const real = makeBundle(opts);
    const changed: typeof real = (...args) => {
      const b = real(...args);
      return {
        ...b,
        files: b.files.map((f) =>
          f.path === HOST.nftables.path && typeof f.content === 'string'
            ? { ...f, content: `${f.content}# changed\n` }
            : f,
        ),
      };
    };
    expect(bundleVersion(opts, changed)).not.toBe(bundleVersion(opts));
  });

  it('changes with the proxy bundle, the start-up script and the Node download source', () => {
    const base = bundleVersion(opts);
    expect(bundleVersion({ ...opts, proxyBundle: '// proxy v2\n' })).not.toBe(base);
    const real = makeBundle(opts);
    expect(
      bundleVersion(opts, (...a) => ({ ...real(...a), activate: `${real(...a).activate}\ntrue` })),
    ).not.toBe(base);
    expect(bundleVersion({ ...opts, nodeDistUrl: 'https://mirror.example/dist' })).not.toBe(base);
  });
});
