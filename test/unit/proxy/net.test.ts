import { describe, expect, it } from 'vitest';
import { Allowlist, findBridgeAddresses, isUnspecified, parseHostPort } from '../../../proxy/net.ts';

describe('Allowlist', () => {
  const bridge = new Allowlist(['172.16.0.0/12']);

  it('accepts a client inside 172.16.0.0/12, IPv4 or IPv4-mapped IPv6', () => {
    expect(bridge.allows('172.17.0.2', 'IPv4')).toBe(true);
    expect(bridge.allows('172.31.255.254', 'IPv4')).toBe(true);
    expect(bridge.allows('::ffff:172.17.0.2', 'IPv6')).toBe(true);
  });

  it('rejects a client outside 172.16.0.0/12', () => {
    for (const [a, f] of [
      ['127.0.0.1', 'IPv4'],
      ['10.0.0.2', 'IPv4'],
      ['172.32.0.1', 'IPv4'],
      ['172.15.255.255', 'IPv4'],
      ['::ffff:127.0.0.1', 'IPv6'],
      ['::1', 'IPv6'],
      ['fe80::1', 'IPv6'],
    ] as const) {
      expect(bridge.allows(a, f), a).toBe(false);
    }
    expect(bridge.allows(undefined, undefined)).toBe(false);
    expect(bridge.allows('not-an-ip', 'IPv4')).toBe(false);
  });

  it('parses several ranges, single addresses and IPv6', () => {
    const a = new Allowlist(['10.1.0.0/16', '192.168.1.7', 'fd00::/8']);
    expect(a.allows('10.1.2.3', 'IPv4')).toBe(true);
    expect(a.allows('192.168.1.7', 'IPv4')).toBe(true);
    expect(a.allows('192.168.1.8', 'IPv4')).toBe(false);
    expect(a.allows('fd12::5', 'IPv6')).toBe(true);
  });

  it('refuses malformed ranges', () => {
    for (const c of ['172.16.0.0/33', 'nope/8', '10.0.0.0/', '::/129']) {
      expect(() => new Allowlist([c]), c).toThrow(/--allow/);
    }
  });
});

describe('listen addresses', () => {
  it('parses IPv4 and bracketed IPv6 host:port', () => {
    expect(parseHostPort('172.17.0.1:3101', '--listen')).toEqual({ host: '172.17.0.1', port: 3101 });
    expect(parseHostPort('[::1]:9464', '--metrics')).toEqual({ host: '::1', port: 9464 });
  });

  it('refuses host names and bad ports', () => {
    for (const v of ['localhost:3101', '172.17.0.1', '172.17.0.1:99999', '172.17.0.1:x', '[::1]3101']) {
      expect(() => parseHostPort(v, '--listen'), v).toThrow();
    }
  });

  it('knows the unspecified addresses', () => {
    expect(isUnspecified('0.0.0.0')).toBe(true);
    expect(isUnspecified('::')).toBe(true);
    expect(isUnspecified('0:0::0')).toBe(true);
    expect(isUnspecified('172.17.0.1')).toBe(false);
  });

  it('knows the IPv4-mapped wildcard in every spelling, and a wildcard with a zone id', () => {
    for (const h of [
      '::ffff:0.0.0.0',
      '::ffff:0:0',
      '::FFFF:0.0.0.0',
      '0:0:0:0:0:ffff:0:0',
      '0000:0000:0000:0000:0000:ffff:0000:0000',
      '::ffff:0000:0000',
      '0::ffff:0.0.0.0',
      '::0.0.0.0',
      '::%lo',
      '::ffff:0.0.0.0%eth0',
    ]) {
      expect(isUnspecified(h), h).toBe(true);
    }
    for (const h of ['::ffff:172.17.0.1', '::ffff:0:1', '::1', 'fe80::1%eth0', '::ffff:127.0.0.1']) {
      expect(isUnspecified(h), h).toBe(false);
    }
  });

  it('finds docker0 and br-* IPv4 addresses only', () => {
    const found = findBridgeAddresses({
      lo: [{ address: '127.0.0.1', family: 'IPv4', internal: true, netmask: '', mac: '', cidr: null }],
      eth0: [{ address: '198.18.0.5', family: 'IPv4', internal: false, netmask: '', mac: '', cidr: null }],
      docker0: [
        { address: '172.17.0.1', family: 'IPv4', internal: false, netmask: '', mac: '', cidr: null },
        { address: 'fe80::1', family: 'IPv6', internal: false, netmask: '', mac: '', cidr: null, scopeid: 0 },
      ],
      'br-0123abcd': [
        { address: '172.18.0.1', family: 'IPv4', internal: false, netmask: '', mac: '', cidr: null },
      ],
    });
    expect(found).toEqual([
      { iface: 'br-0123abcd', address: '172.18.0.1' },
      { iface: 'docker0', address: '172.17.0.1' },
    ]);
  });
});
