import { BlockList, isIP, isIPv4 } from 'node:net';
import { networkInterfaces } from 'node:os';
import { CannesError } from '../common/errors.ts';

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

export const DEFAULT_ALLOW = '172.16.0.0/12';
export const DEFAULT_PORT = 3101;

/** `1.2.3.4:80` or `[::1]:80`. Only IP literals: a name could resolve to anything. */
export function parseHostPort(value: string, what: string): HostPort {
  let host: string;
  let portText: string;
  if (value.startsWith('[')) {
    const end = value.indexOf(']');
    if (end === -1 || value[end + 1] !== ':') throw badArg(what, value);
    host = value.slice(1, end);
    portText = value.slice(end + 2);
  } else {
    const colon = value.lastIndexOf(':');
    if (colon === -1) throw badArg(what, value);
    host = value.slice(0, colon);
    portText = value.slice(colon + 1);
  }
  if (isIP(host) === 0) throw badArg(what, value, 'the host must be an IP address literal');
  if (!/^[0-9]{1,5}$/.test(portText)) throw badArg(what, value, 'the port must be a number');
  const port = Number(portText);
  if (port > 65535) throw badArg(what, value, 'the port must be at most 65535');
  return { host, port };
}

/**
 * Listening on every address would expose the proxy beyond the bridge: never allowed. That
 * is `0.0.0.0`, `::`, and the IPv4-mapped wildcard `::ffff:0.0.0.0` in any spelling
 * (`::ffff:0:0`, `0:0:0:0:0:ffff:0:0`, …), which Linux binds as `0.0.0.0` for IPv4 traffic.
 * A zone id (`::%lo`) does not make the wildcard narrower. IPv6 text is compared in its
 * canonical form (the WHATWG URL parser's), so no spelling slips through.
 */
export function isUnspecified(host: string): boolean {
  if (isIPv4(host)) return host === '0.0.0.0';
  const zone = host.indexOf('%');
  const addr = zone === -1 ? host : host.slice(0, zone);
  let canonical: string;
  try {
    canonical = new URL(`http://[${addr}]/`).hostname;
  } catch {
    // Not an IPv6 literal we can read: treat it as the worst case.
    return true;
  }
  return canonical === '[::]' || canonical === '[::ffff:0:0]';
}

function badArg(what: string, value: string, hint = 'expected HOST:PORT'): CannesError {
  return new CannesError('InvalidArgument', `${what} ${JSON.stringify(value)}: ${hint}`, { terminal: true });
}

/**
 * The source allowlist, checked on every accepted connection. `net.BlockList` matches
 * IPv4 rules against IPv4-mapped IPv6 addresses (`::ffff:172.17.0.2`), which is what a
 * dual-stack socket reports for an IPv4 peer.
 */
export class Allowlist {
  readonly #list = new BlockList();
  readonly cidrs: readonly string[];

  constructor(cidrs: readonly string[]) {
    for (const c of cidrs) {
      const slash = c.indexOf('/');
      const addr = slash === -1 ? c : c.slice(0, slash);
      const family = isIP(addr);
      if (family === 0) throw badArg('--allow', c, 'expected an IPv4 or IPv6 CIDR such as 172.16.0.0/12');
      const max = family === 4 ? 32 : 128;
      const prefix = slash === -1 ? max : Number(c.slice(slash + 1));
      if (
        !Number.isInteger(prefix) ||
        prefix < 0 ||
        prefix > max ||
        (slash !== -1 && c.slice(slash + 1) === '')
      ) {
        throw badArg('--allow', c, `the prefix length must be 0..${max}`);
      }
      this.#list.addSubnet(addr, prefix, family === 4 ? 'ipv4' : 'ipv6');
    }
    this.cidrs = [...cidrs];
  }

  allows(address: string | undefined, family: string | undefined): boolean {
    if (!address) return false;
    const type = family === 'IPv6' || (family === undefined && address.includes(':')) ? 'ipv6' : 'ipv4';
    try {
      return this.#list.check(address, type);
    } catch {
      return false;
    }
  }
}

/** What the server asks of a connection's source (an `Allowlist`, or a `BridgeAllowlist`). */
export interface SourceCheck {
  allows(address: string | undefined, family: string | undefined): boolean;
}

/** The IPv4 subnets of the Docker bridges present (docker0, br-*), as network CIDRs. */
export function bridgeSubnets(
  interfaces: ReturnType<typeof networkInterfaces> = networkInterfaces(),
): string[] {
  const out = new Set<string>();
  for (const [name, addrs] of Object.entries(interfaces)) {
    if (name !== 'docker0' && !name.startsWith('br-')) continue;
    for (const a of addrs ?? []) {
      if (a.family !== 'IPv4' || a.internal || !a.cidr) continue;
      const prefix = Number(a.cidr.slice(a.cidr.indexOf('/') + 1));
      if (!Number.isInteger(prefix) || prefix < 0 || prefix > 32) continue;
      const ip = a.address.split('.').reduce((n, o) => ((n << 8) | Number(o)) >>> 0, 0);
      const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
      const net = (ip & mask) >>> 0;
      out.add(`${[24, 16, 8, 0].map((sh) => (net >>> sh) & 255).join('.')}/${prefix}`);
    }
  }
  return [...out].sort();
}

/**
 * `--bridges-only`: a source must be inside `--allow` AND inside the subnet of a Docker bridge
 * present on the host (docker0, br-*), not merely somewhere in 172.16.0.0/12 (Hetzner's own
 * gateway lies in that range). Bridges come after the proxy (compose makes its `br-*`
 * network later): a source outside every known bridge re-reads the interfaces, at most once
 * a second, before it is refused.
 */
export class BridgeAllowlist implements SourceCheck {
  readonly #outer: Allowlist;
  readonly #read: () => ReturnType<typeof networkInterfaces>;
  readonly #now: () => number;
  #subnets: Allowlist = new Allowlist([]);
  #readAt = Number.NEGATIVE_INFINITY;

  constructor(
    outer: Allowlist,
    read: () => ReturnType<typeof networkInterfaces> = networkInterfaces,
    now: () => number = () => performance.now(),
  ) {
    this.#outer = outer;
    this.#read = read;
    this.#now = now;
    this.#refresh();
  }

  /** The bridge subnets as last read. */
  get subnets(): readonly string[] {
    return this.#subnets.cidrs;
  }

  #refresh(): void {
    this.#readAt = this.#now();
    try {
      this.#subnets = new Allowlist(bridgeSubnets(this.#read()));
    } catch {
      this.#subnets = new Allowlist([]);
    }
  }

  allows(address: string | undefined, family: string | undefined): boolean {
    if (!this.#outer.allows(address, family)) return false;
    if (this.#subnets.allows(address, family)) return true;
    if (this.#now() - this.#readAt < 1000) return false;
    this.#refresh();
    return this.#subnets.allows(address, family);
  }
}

export interface BridgeAddress {
  readonly iface: string;
  readonly address: string;
}

/** Docker's default bridge is `docker0`; user-defined networks are `br-<id>`. IPv4 only. */
export function findBridgeAddresses(
  interfaces: ReturnType<typeof networkInterfaces> = networkInterfaces(),
): BridgeAddress[] {
  const out: BridgeAddress[] = [];
  for (const [name, addrs] of Object.entries(interfaces)) {
    if (name !== 'docker0' && !name.startsWith('br-')) continue;
    for (const a of addrs ?? []) {
      if (a.family === 'IPv4' && !a.internal) out.push({ iface: name, address: a.address });
    }
  }
  return out.sort((x, y) => (x.iface < y.iface ? -1 : x.iface > y.iface ? 1 : 0));
}
