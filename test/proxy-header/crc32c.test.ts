import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { crc32c } from '../../src/proxy-header/crc32c.js';

describe('crc32c', () => {
  it('gives the standard check value 0xE3069283 for "123456789"', () => {
    expect(crc32c(Buffer.from('123456789', 'ascii'))).toBe(0xe3069283);
  });

  it('matches the RFC 3720 (iSCSI) test vectors', () => {
    expect(crc32c(Buffer.alloc(32, 0x00))).toBe(0x8a9136aa);
    expect(crc32c(Buffer.alloc(32, 0xff))).toBe(0x62a8ab43);
    expect(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => i)))).toBe(0x46dd794e);
    expect(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => 31 - i)))).toBe(0x113fdb5c);
  });

  it('is 0 for no bytes and differs from the IEEE CRC-32 of zlib', () => {
    expect(crc32c(Buffer.alloc(0))).toBe(0);
    expect(crc32c(Buffer.from('123456789'))).not.toBe(0xcbf43926); // CRC-32/IEEE check value
  });

  it('continues over split input: crc32c(b, crc32c(a)) === crc32c(a + b)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat(), (bytes, cut) => {
        const at = cut % (bytes.length + 1);
        const whole = crc32c(bytes);
        expect(crc32c(bytes.subarray(at), crc32c(bytes.subarray(0, at)))).toBe(whole);
        expect(whole).toBeGreaterThanOrEqual(0);
        expect(whole).toBeLessThanOrEqual(0xffffffff);
      }),
      { numRuns: 1000 },
    );
  });
});
