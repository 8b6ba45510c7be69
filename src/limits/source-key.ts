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

/** A canonical dotted quad (no leading zeros, each part 0–255). */
const DOTTED_QUAD = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

/** Dotted-quad IPv4 as a 32-bit unsigned number, or `undefined`. */
function parseIPv4(s: string): number | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  let n = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return undefined;
    const v = Number(p);
    if (v > 255) return undefined;
    n = n * 256 + v;
  }
  return n;
}

/** The IPv4 address inside `::ffff:a.b.c.d` (or its hex form `::ffff:c000:201`), or `undefined`. */
function mappedIPv4(s: string): number | undefined {
  const bytes = parseIPv6(s);
  if (bytes === undefined) return undefined;
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) return undefined;
  if (bytes[10] !== 0xff || bytes[11] !== 0xff) return undefined;
  return ((bytes[12]! << 24) >>> 0) + (bytes[13]! << 16) + (bytes[14]! << 8) + bytes[15]!;
}

function maskIPv4(n: number, bits: number): number {
  if (bits <= 0) return 0;
  if (bits >= 32) return n;
  return (n & (~0 << (32 - bits))) >>> 0;
}

function formatIPv4(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

/** IPv6 text (with `::`, a zone `%eth0` and an embedded dotted IPv4 tail) as 16 bytes, or `undefined`. */
function parseIPv6(input: string): Uint8Array | undefined {
  const zone = input.indexOf('%');
  const s = zone === -1 ? input : input.slice(0, zone);
  if (!s.includes(':')) return undefined;
  const halves = s.split('::');
  if (halves.length > 2) return undefined;
  const groups = (text: string): number[] | undefined => {
    if (text === '') return [];
    const out: number[] = [];
    const parts = text.split(':');
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i]!;
      if (i === parts.length - 1 && p.includes('.')) {
        const v4 = parseIPv4(p);
        if (v4 === undefined) return undefined;
        out.push(v4 >>> 16, v4 & 0xffff);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(p)) return undefined;
        out.push(parseInt(p, 16));
      }
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (head === undefined || tail === undefined) return undefined;
  const fill = 8 - head.length - tail.length;
  if (halves.length === 1 ? fill !== 0 : fill < 1) return undefined;
  const all = [...head, ...new Array<number>(halves.length === 2 ? fill : 0).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  all.forEach((g, i) => {
    bytes[2 * i] = g >>> 8;
    bytes[2 * i + 1] = g & 0xff;
  });
  return bytes;
}

function maskBytes(bytes: Uint8Array, bits: number): Uint8Array {
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, bits - 8 * i));
    out[i] = keep === 0 ? 0 : bytes[i]! & (0xff << (8 - keep));
  }
  return out;
}

/** 16 bytes as compressed IPv6 text (RFC 5952: the longest run of zero groups becomes `::`). */
function formatIPv6(bytes: Uint8Array): string {
  const g: number[] = [];
  for (let i = 0; i < 16; i += 2) g.push((bytes[i]! << 8) | bytes[i + 1]!);
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (best === -1) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}
