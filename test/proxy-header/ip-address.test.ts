import fc from 'fast-check';
import { SocketAddress, isIPv4, isIPv6 } from 'node:net';
import { describe, expect, it } from 'vitest';
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6 } from '../../src/proxy-header/ip-address.js';

const text = (s: string): Buffer => Buffer.from(s, 'latin1');

/** Node's own canonical text for 16 bytes: SocketAddress normalizes the full uncompressed form. */
function nodeIPv6(bytes: Uint8Array): string {
  const full = Array.from({ length: 8 }, (_, i) => ((bytes[2 * i]! << 8) | bytes[2 * i + 1]!).toString(16).padStart(4, '0')).join(':');
  return new SocketAddress({ address: full, family: 'ipv6' }).address;
}

/** 16 bytes biased towards zero runs, mapped and compatible prefixes (where the formatting rules differ). */
const ipv6Bytes = fc.oneof(
  fc.uint8Array({ minLength: 16, maxLength: 16 }),
  fc.array(fc.constantFrom(0, 0, 0, 1, 0xffff, 0x1234), { minLength: 8, maxLength: 8 }).map((words) => {
    const b = new Uint8Array(16);
    words.forEach((w, i) => {
      b[2 * i] = w >> 8;
      b[2 * i + 1] = w & 0xff;
    });
    return b;
  }),
  fc.tuple(fc.constantFrom([0, 0, 0, 0, 0, 0xffff], [0, 0, 0, 0, 0, 0], [0x64, 0xff9b, 0, 0, 0, 0]), fc.uint8Array({ minLength: 4, maxLength: 4 })).map(([words, v4]) => {
    const b = new Uint8Array(16);
    words.forEach((w, i) => {
      b[2 * i] = w >> 8;
      b[2 * i + 1] = w & 0xff;
    });
    b.set(v4, 12);
    return b;
  }),
);

describe('IPv4 text', () => {
  it('accepts four numbers 0-255 and formats them back', () => {
    expect(parseIPv4(text('192.168.0.1'))).toEqual(new Uint8Array([192, 168, 0, 1]));
    expect(parseIPv4(text('0.0.0.0'))).toEqual(new Uint8Array([0, 0, 0, 0]));
    expect(parseIPv4(text('255.255.255.255'))).toEqual(new Uint8Array([255, 255, 255, 255]));
    expect(formatIPv4(new Uint8Array([10, 0, 0, 1]))).toBe('10.0.0.1');
  });

  it.each([
    '01.2.3.4', '1.2.3.04', '1.2.3.00', '256.1.1.1', '1.2.3', '1.2.3.4.5', '1..2.3', '.1.2.3', '1.2.3.', '1.2.3.4 ',
    '+1.2.3.4', '1.2.3.-4', '0x1.2.3.4', '1.2.3.1000', '', 'a.b.c.d', '1.2.3.4\0', '::1',
  ])('rejects %j', (s) => {
    expect(parseIPv4(text(s))).toBeUndefined();
  });

  it('agrees with net.isIPv4 on every dotted quad of small numbers (leading zeros aside)', () => {
    fc.assert(
      fc.property(fc.array(fc.stringMatching(/^[0-9]{1,4}$/), { minLength: 4, maxLength: 4 }), (parts) => {
        const s = parts.join('.');
        const strict = parts.every((p) => p === '0' || !p.startsWith('0'));
        expect(parseIPv4(text(s)) !== undefined).toBe(isIPv4(s) && strict);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('IPv6 text', () => {
  it('accepts the usual forms', () => {
    const cases: [string, string][] = [
      ['::', '::'],
      ['::1', '::1'],
      ['1::', '1::'],
      ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
      ['2001:0db8:0000:0000:0001:0000:0000:0001', '2001:db8::1:0:0:1'],
      ['::ffff:192.0.2.1', '::ffff:192.0.2.1'],
      ['::ffff:c000:0201', '::ffff:192.0.2.1'],
      ['0:0:0:0:0:0:0:0', '::'],
      ['1:2:3:4:5:6:7::', '1:2:3:4:5:6:7:0'],
      ['::2:3:4:5:6:7:8', '0:2:3:4:5:6:7:8'],
      ['1:2:3:4:5:6:1.2.3.4', '1:2:3:4:5:6:102:304'],
      ['ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'],
    ];
    for (const [input, canonical] of cases) {
      const bytes = parseIPv6(text(input));
      expect(bytes, input).toBeDefined();
      expect(formatIPv6(bytes!), input).toBe(canonical);
      expect(nodeIPv6(bytes!), input).toBe(canonical);
    }
  });

  it.each([
    '', ':', ':::', '1:::2', '1::2::3', ':1:2:3:4:5:6:7', '1:2:3:4:5:6:7:', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7',
    '12345::', 'g::', 'fe80::1%eth0', '[::1]', '::1 ', ' ::1', '1:2:3:4:5:6:7:8::', '::1:2:3:4:5:6:7:8',
    '1:2:3:4:5:6:7:1.2.3.4', '::01.2.3.4', '::1.2.3', '::1.2.3.4:5', '1.2.3.4', '::256.0.0.1', '1:2:3:4:5:6::1.2.3.4',
  ])('rejects %j', (s) => {
    expect(parseIPv6(text(s))).toBeUndefined();
  });

  it('formats 16 bytes exactly as Node prints socket addresses, and parses its own output back', () => {
    fc.assert(
      fc.property(ipv6Bytes, (bytes) => {
        const printed = formatIPv6(bytes);
        expect(printed).toBe(nodeIPv6(bytes));
        expect(isIPv6(printed)).toBe(true);
        expect(parseIPv6(text(printed))).toEqual(bytes);
      }),
      { numRuns: 5000 },
    );
  });

  it('parses every spelling Node accepts without a zone id to the same address', () => {
    // Respell random addresses: full, upper-case, leading zeros, compressed at each possible run.
    const spelled = fc.tuple(ipv6Bytes, fc.boolean(), fc.boolean(), fc.nat()).map(([bytes, upper, pad, seed]) => {
      const words = Array.from({ length: 8 }, (_, i) => ((bytes[2 * i]! << 8) | bytes[2 * i + 1]!).toString(16));
      let parts = words.map((w) => (pad ? w.padStart(4, '0') : w));
      const zeros = words.map((w, i) => (w === '0' ? i : -1)).filter((i) => i >= 0);
      if (zeros.length > 0 && seed % 2 === 0) {
        const start = zeros[seed % zeros.length]!;
        let end = start;
        while (end + 1 < 8 && words[end + 1] === '0') end++;
        const before = parts.slice(0, start).join(':');
        const after = parts.slice(end + 1).join(':');
        parts = [`${before}::${after}`];
      }
      const s = parts.join(':');
      return { bytes, s: upper ? s.toUpperCase() : s };
    });
    fc.assert(
      fc.property(spelled, ({ bytes, s }) => {
        expect(isIPv6(s)).toBe(true);
        expect(parseIPv6(text(s))).toEqual(bytes);
      }),
      { numRuns: 5000 },
    );
  });

  it('accepts nothing Node rejects (random strings over the IPv6 alphabet)', () => {
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF:.'.split('')), maxLength: 45 }), (s) => {
        const bytes = parseIPv6(text(s));
        if (bytes !== undefined) {
          expect(isIPv6(s)).toBe(true);
          expect(nodeIPv6(bytes)).toBe(new SocketAddress({ address: s, family: 'ipv6' }).address);
        }
      }),
      { numRuns: 20000 },
    );
  });
});
