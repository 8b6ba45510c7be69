import { DOTTED_QUAD, formatIPv4, formatIPv6, mappedIPv4, maskBytes, maskIPv4, parseIPv4, parseIPv6 } from './ip-text.js';

/**
 * How peers are grouped for per-source bounds: by IPv4 address and by IPv6 prefix.
 *
 * Every per-source rule in corral (the bound on silent sockets today; rate limits and per-address
 * caps at the edge) groups peers with {@link sourceKey}, so one peer is one source for all of them.
 */

/** Prefix lengths that group peer addresses into sources. */
export interface SourcePrefix {
  /** Bits of an IPv4 address that name its source. Default 32: one address, one source. */
  readonly ipv4: number;
  /**
   * Bits of an IPv6 address that name its source. Default 64: one /64, one source — the block a
   * single host or home network is usually given, and which it can fill with addresses at will.
   */
  readonly ipv6: number;
}

/** The grouping used unless a listener says otherwise: IPv4 /32, IPv6 /64. */
export const DEFAULT_SOURCE_PREFIX: SourcePrefix = { ipv4: 32, ipv6: 64 };

/**
 * The source an address belongs to, as a short string, or `undefined` when the address is not an
 * IP address (a Unix socket peer has none).
 *
 * An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, what a dual-stack listener on `::` reports for
 * an IPv4 client) is read as the IPv4 address it carries, so an IPv4 client is one source whether
 * it reached an IPv4 or a dual-stack socket; otherwise every IPv4 client of a dual-stack listener
 * would fall into the one IPv6 /64 `::ffff:0:0`. The key keeps the prefix's bits and names its
 * length (`192.0.2.1/32`, `2001:db8:0:1::/64`): equal keys, same source.
 */
export function sourceKey(address: string | undefined, prefix: SourcePrefix = DEFAULT_SOURCE_PREFIX): string | undefined {
  if (address === undefined || address === '') return undefined;
  // Fast path for what Node reports for an IPv4 peer (a plain or an IPv4-mapped dotted quad) and
  // a whole-address prefix: no parsing beyond a shape check.
  if (prefix.ipv4 === 32) {
    const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
    if (DOTTED_QUAD.test(v4)) return `${v4}/32`;
  }
  const v4 = parseIPv4(address) ?? mappedIPv4(address);
  if (v4 !== undefined) return `${formatIPv4(maskIPv4(v4, prefix.ipv4))}/${prefix.ipv4}`;
  const v6 = parseIPv6(address);
  if (v6 === undefined) return undefined;
  return `${formatIPv6(maskBytes(v6, prefix.ipv6))}/${prefix.ipv6}`;
}

/** Check prefix lengths: IPv4 0–32, IPv6 0–128. Returns a message for the first bad one. @internal */
export function checkSourcePrefix(value: unknown): SourcePrefix | string {
  if (value === undefined) return DEFAULT_SOURCE_PREFIX;
  if (typeof value !== 'object' || value === null) return 'must be an object { ipv4, ipv6 }';
  const o = value as Record<string, unknown>;
  for (const key of Object.keys(o)) if (key !== 'ipv4' && key !== 'ipv6') return `has an unknown key ${key}`;
  const ipv4 = o.ipv4 ?? DEFAULT_SOURCE_PREFIX.ipv4;
  const ipv6 = o.ipv6 ?? DEFAULT_SOURCE_PREFIX.ipv6;
  if (typeof ipv4 !== 'number' || !Number.isInteger(ipv4) || ipv4 < 0 || ipv4 > 32) return `.ipv4 must be an integer from 0 to 32, got ${String(ipv4)}`;
  if (typeof ipv6 !== 'number' || !Number.isInteger(ipv6) || ipv6 < 0 || ipv6 > 128) return `.ipv6 must be an integer from 0 to 128, got ${String(ipv6)}`;
  return { ipv4, ipv6 };
}
