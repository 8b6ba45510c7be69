import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { sourceKey } from '../../src/index.js';

const octet = fc.integer({ min: 0, max: 255 });
const ipv4 = fc.tuple(octet, octet, octet, octet).map((o) => o.join('.'));

describe('sourceKey', () => {
  it('groups IPv4 by address and IPv6 by /64 by default', () => {
    expect(sourceKey('192.0.2.7')).toBe('192.0.2.7/32');
    expect(sourceKey('2001:db8:0:1:aaaa::1')).toBe('2001:db8:0:1::/64');
    expect(sourceKey('2001:db8:0:1:bbbb::2')).toBe(sourceKey('2001:db8:0:1:aaaa::1'));
    expect(sourceKey('2001:db8:0:2::1')).not.toBe(sourceKey('2001:db8:0:1::1'));
    expect(sourceKey('::1')).toBe('::/64');
  });

  it('reads an IPv4-mapped IPv6 address (dotted or hex) as the IPv4 address it carries', () => {
    expect(sourceKey('::ffff:192.0.2.7')).toBe('192.0.2.7/32');
    expect(sourceKey('::ffff:c000:207')).toBe('192.0.2.7/32');
    expect(sourceKey('::FFFF:127.0.0.2')).toBe(sourceKey('127.0.0.2'));
    // A dual-stack listener's IPv4 clients are not one IPv6 /64.
    expect(sourceKey('::ffff:127.0.0.2')).not.toBe(sourceKey('::ffff:127.0.0.3'));
  });

  it('applies other prefix lengths, and ignores a zone index', () => {
    expect(sourceKey('192.0.2.200', { ipv4: 24, ipv6: 64 })).toBe('192.0.2.0/24');
    expect(sourceKey('10.1.2.3', { ipv4: 0, ipv6: 64 })).toBe('0.0.0.0/0');
    expect(sourceKey('2001:db8:abcd:1234::1', { ipv4: 32, ipv6: 48 })).toBe('2001:db8:abcd::/48');
    expect(sourceKey('2001:db8::1', { ipv4: 32, ipv6: 128 })).toBe('2001:db8::1/128');
    expect(sourceKey('fe80::1%eth0')).toBe('fe80::/64');
  });

  it('has no key for what is not an IP address (a Unix socket peer)', () => {
    for (const bad of [undefined, '', 'localhost', '1.2.3', '1.2.3.256', '1::2::3', '12345::', ':::']) expect(sourceKey(bad)).toBeUndefined();
  });

  it('property: an IPv4 address and its mapped form share a key, for every prefix', () => {
    fc.assert(
      fc.property(ipv4, fc.integer({ min: 0, max: 32 }), (a, bits) => {
        const prefix = { ipv4: bits, ipv6: 64 };
        expect(sourceKey(`::ffff:${a}`, prefix)).toBe(sourceKey(a, prefix));
      }),
    );
  });

  it('property: addresses that agree on the first n bits of IPv6 share a key at /n, and differ at /n+1 when bit n differs', () => {
    const bytes = fc.uint8Array({ minLength: 16, maxLength: 16 });
    const text = (b: Uint8Array): string => Array.from({ length: 8 }, (_, i) => ((b[2 * i]! << 8) | b[2 * i + 1]!).toString(16)).join(':');
    fc.assert(
      fc.property(bytes, fc.integer({ min: 0, max: 127 }), (b, n) => {
        // Avoid the IPv4-mapped range, which is read as IPv4.
        fc.pre(!(b.slice(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff));
        const other = Uint8Array.from(b);
        other[n >> 3]! ^= 0x80 >> (n & 7); // flip bit n
        fc.pre(!(other.slice(0, 10).every((x) => x === 0) && other[10] === 0xff && other[11] === 0xff));
        expect(sourceKey(text(other), { ipv4: 32, ipv6: n })).toBe(sourceKey(text(b), { ipv4: 32, ipv6: n }));
        expect(sourceKey(text(other), { ipv4: 32, ipv6: n + 1 })).not.toBe(sourceKey(text(b), { ipv4: 32, ipv6: n + 1 }));
      }),
    );
  });
});
