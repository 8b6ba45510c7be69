import { mappedIPv4, maskBytes, maskIPv4, parseIPv4, parseIPv6 } from './ip-text.js';

/**
 * A block of IP addresses in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`, or one address, which
 * is a /32 or /128). An IPv4 block matches IPv4 peers whether Node reports them plainly or
 * IPv4-mapped (`::ffff:10.1.2.3`, on a dual-stack listener); an IPv6 block matches an IPv4 peer
 * when it holds the peer's IPv4-mapped address (`::/0` holds every address), as `net.BlockList`
 * does. @internal
 */
export class Cidr {
  private constructor(
    /** The block as given. */
    readonly text: string,
    private readonly v4: { readonly base: number; readonly bits: number } | undefined,
    private readonly v6: { readonly base: Uint8Array; readonly bits: number } | undefined,
  ) {}

  /** Parse a CIDR (or a single address); `undefined` if it is neither. */
  static parse(text: string): Cidr | undefined {
    const slash = text.indexOf('/');
    const addr = slash === -1 ? text : text.slice(0, slash);
    const bitsText = slash === -1 ? undefined : text.slice(slash + 1);
    if (bitsText !== undefined && !/^\d{1,3}$/.test(bitsText)) return undefined;
    const v4 = parseIPv4(addr);
    if (v4 !== undefined) {
      const bits = bitsText === undefined ? 32 : Number(bitsText);
      return bits > 32 ? undefined : new Cidr(text, { base: maskIPv4(v4, bits), bits }, undefined);
    }
    if (addr.includes('%')) return undefined;
    const v6 = parseIPv6(addr);
    if (v6 === undefined) return undefined;
    const bits = bitsText === undefined ? 128 : Number(bitsText);
    return bits > 128 ? undefined : new Cidr(text, undefined, { base: maskBytes(v6, bits), bits });
  }

  /** Whether `address` (as Node prints a peer address) is in the block. */
  contains(address: string): boolean {
    if (this.v4 !== undefined) {
      const n = parseIPv4(address) ?? (address.includes(':') ? mappedIPv4(address) : undefined);
      return n !== undefined && maskIPv4(n, this.v4.bits) === this.v4.base;
    }
    const v6 = this.v6!;
    // An IPv4 client is checked as its IPv4-mapped IPv6 address (::ffff:a.b.c.d), as net.BlockList does.
    const v4 = parseIPv4(address);
    const bytes = v4 === undefined ? parseIPv6(address) : mappedBytes(v4);
    if (bytes === undefined) return false;
    const masked = maskBytes(bytes, v6.bits);
    for (let i = 0; i < 16; i++) if (masked[i] !== v6.base[i]) return false;
    return true;
  }
}

/** `::ffff:a.b.c.d` as 16 bytes. */
function mappedBytes(v4: number): Uint8Array {
  const b = new Uint8Array(16);
  b[10] = 0xff;
  b[11] = 0xff;
  b[12] = v4 >>> 24;
  b[13] = (v4 >>> 16) & 0xff;
  b[14] = (v4 >>> 8) & 0xff;
  b[15] = v4 & 0xff;
  return b;
}

/** A list of CIDR blocks; matches an address in any of them. @internal */
export class CidrSet {
  constructor(private readonly blocks: readonly Cidr[]) {}

  /** Parse every block; returns the first that is not a CIDR instead. */
  static parse(list: readonly string[]): CidrSet | string {
    const blocks: Cidr[] = [];
    for (const text of list) {
      const c = typeof text === 'string' ? Cidr.parse(text) : undefined;
      if (c === undefined) return String(text);
      blocks.push(c);
    }
    return new CidrSet(blocks);
  }

  get size(): number {
    return this.blocks.length;
  }

  contains(address: string | undefined): boolean {
    if (address === undefined) return false;
    for (const b of this.blocks) if (b.contains(address)) return true;
    return false;
  }
}
