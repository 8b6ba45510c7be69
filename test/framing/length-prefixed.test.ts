import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { chunk, chunkingArb, drive, expectTooLarge, flat, pushAndDrain } from '../support/chunking.js';
import { lengthPrefixedFraming } from '../../src/framing/length-prefixed.js';

const MiB = 1024 * 1024;

function header(size: 2 | 4, length: number): Buffer {
  const h = Buffer.alloc(size);
  if (size === 2) h.writeUInt16BE(length);
  else h.writeUInt32BE(length);
  return h;
}

describe('lengthPrefixedFraming', () => {
  it('is named length-prefixed', () => {
    expect(lengthPrefixedFraming().name).toBe('length-prefixed');
  });

  describe('encode', () => {
    it('uses a 4-byte big-endian header by default', () => {
      expect([...flat(lengthPrefixedFraming().encode('hi'))]).toEqual([0, 0, 0, 2, 0x68, 0x69]);
    });

    it('uses a 2-byte big-endian header with headerSize: 2', () => {
      expect([...flat(lengthPrefixedFraming({ headerSize: 2 }).encode('hi'))]).toEqual([0, 2, 0x68, 0x69]);
      expect([...flat(lengthPrefixedFraming({ headerSize: 2 }).encode(Buffer.alloc(0x0102))).subarray(0, 2)]).toEqual([
        1, 2,
      ]);
    });

    it('writes the header big-endian for longer payloads', () => {
      expect([...flat(lengthPrefixedFraming().encode(Buffer.alloc(0x010203))).subarray(0, 4)]).toEqual([0, 1, 2, 3]);
    });

    it('encodes strings as UTF-8 and accepts bytes', () => {
      expect([...flat(lengthPrefixedFraming({ headerSize: 2 }).encode('é'))]).toEqual([0, 2, 0xc3, 0xa9]);
      expect([...flat(lengthPrefixedFraming({ headerSize: 2 }).encode(new Uint8Array([7, 8, 9])))]).toEqual([
        0, 3, 7, 8, 9,
      ]);
    });

    it('encodes an empty payload as a header of zero', () => {
      expect([...flat(lengthPrefixedFraming().encode(''))]).toEqual([0, 0, 0, 0]);
      expect([...flat(lengthPrefixedFraming({ headerSize: 2 }).encode(new Uint8Array(0)))]).toEqual([0, 0]);
    });

    it('accepts a payload of exactly maxLength and rejects maxLength + 1', () => {
      const framing = lengthPrefixedFraming({ maxLength: 3 });
      expect([...flat(framing.encode('abc'))]).toEqual([0, 0, 0, 3, 0x61, 0x62, 0x63]);
      expectTooLarge(() => framing.encode('abcd'), 3);
      expectTooLarge(() => framing.encode(new Uint8Array(4)), 3);
    });

    it('defaults maxLength to 1 MiB with a 4-byte header', () => {
      const framing = lengthPrefixedFraming();
      expect(flat(framing.encode(Buffer.alloc(MiB))).length).toBe(MiB + 4);
      expectTooLarge(() => framing.encode(Buffer.alloc(MiB + 1)), MiB);
    });

    it('defaults maxLength to 65535 with a 2-byte header', () => {
      const framing = lengthPrefixedFraming({ headerSize: 2 });
      expect([...flat(framing.encode(Buffer.alloc(65535))).subarray(0, 2)]).toEqual([0xff, 0xff]);
      expectTooLarge(() => framing.encode(Buffer.alloc(65536)), 65535);
    });
  });

  describe('framer', () => {
    it('returns a frame once header and body have arrived', () => {
      const framer = lengthPrefixedFraming().createFramer();
      framer.push(Buffer.from([0, 0]));
      expect(framer.next()).toBeUndefined();
      expect(framer.buffered).toBe(2);
      framer.push(Buffer.from([0, 5, 0x68, 0x65]));
      expect(framer.next()).toBeUndefined();
      expect(framer.buffered).toBe(6);
      framer.push(Buffer.from('llo'));
      expect(framer.next()?.toString()).toBe('hello');
      expect(framer.next()).toBeUndefined();
      expect(framer.buffered).toBe(0);
    });

    it('reads the header big-endian', () => {
      for (const size of [2, 4] as const) {
        const framer = lengthPrefixedFraming({ headerSize: size }).createFramer();
        const body = Buffer.alloc(0x0102, 7);
        const frames = drive(framer, [Buffer.concat([header(size, 0x0102), body])]);
        expect(frames.length).toBe(1);
        expect(frames[0]!.equals(body)).toBe(true);
      }
    });

    it('returns several frames from one chunk and counts unreturned bytes in buffered', () => {
      const framer = lengthPrefixedFraming({ headerSize: 2 }).createFramer();
      framer.push(Buffer.from([0, 1, 0x61, 0, 2, 0x62, 0x63, 0, 3, 0x64]));
      expect(framer.buffered).toBe(10);
      expect(framer.next()?.toString()).toBe('a');
      expect(framer.buffered).toBe(7);
      expect(framer.next()?.toString()).toBe('bc');
      expect(framer.buffered).toBe(3);
      expect(framer.next()).toBeUndefined();
      expect(framer.buffered).toBe(3);
    });

    it('returns zero-length frames', () => {
      const framer = lengthPrefixedFraming().createFramer();
      const frames = drive(framer, [Buffer.from([0, 0, 0, 0, 0, 0, 0, 1, 0x78, 0, 0]), Buffer.from([0, 0])]);
      expect(frames.map((f) => f.toString())).toEqual(['', 'x', '']);
      expect(framer.buffered).toBe(0);
    });

    it('accepts a header announcing exactly maxLength', () => {
      const framer = lengthPrefixedFraming({ headerSize: 2, maxLength: 4 }).createFramer();
      framer.push(header(2, 4));
      expect(framer.next()).toBeUndefined();
      framer.push(Buffer.from('abcd'));
      expect(framer.next()?.toString()).toBe('abcd');
    });

    it('rejects a header announcing more than maxLength at once, before the body arrives', () => {
      const framer = lengthPrefixedFraming({ headerSize: 2, maxLength: 4 }).createFramer();
      framer.push(header(2, 5));
      expectTooLarge(() => framer.next(), 4);
    });

    it('rejects an oversized header split across chunks as soon as it is complete', () => {
      const framer = lengthPrefixedFraming({ maxLength: 100 }).createFramer();
      const h = header(4, 101);
      for (let i = 0; i < 3; i++) {
        framer.push(h.subarray(i, i + 1));
        expect(framer.next()).toBeUndefined();
      }
      framer.push(h.subarray(3));
      expectTooLarge(() => framer.next(), 100);
    });

    it('returns the good frames before an oversized header, then fails', () => {
      const framer = lengthPrefixedFraming({ headerSize: 2, maxLength: 2 }).createFramer();
      framer.push(Buffer.from([0, 1, 0x61, 0, 2, 0x62, 0x63, 0, 3]));
      expect(framer.next()?.toString()).toBe('a');
      expect(framer.next()?.toString()).toBe('bc');
      expectTooLarge(() => framer.next(), 2);
    });

    it('defaults maxLength to 1 MiB with a 4-byte header', () => {
      const ok = lengthPrefixedFraming().createFramer();
      ok.push(header(4, MiB));
      expect(ok.next()).toBeUndefined();
      ok.push(Buffer.alloc(MiB));
      expect(ok.next()?.length).toBe(MiB);

      const tooBig = lengthPrefixedFraming().createFramer();
      tooBig.push(header(4, MiB + 1));
      expectTooLarge(() => tooBig.next(), MiB);

      const huge = lengthPrefixedFraming().createFramer();
      huge.push(Buffer.from([0xff, 0xff, 0xff, 0xff]));
      expectTooLarge(() => huge.next(), MiB);
    });

    it('accepts the largest u16 length by default with a 2-byte header', () => {
      const framer = lengthPrefixedFraming({ headerSize: 2 }).createFramer();
      framer.push(Buffer.from([0xff, 0xff]));
      expect(framer.next()).toBeUndefined();
      framer.push(Buffer.alloc(65535));
      expect(framer.next()?.length).toBe(65535);
    });

    it('returns frames that stay valid after later pushes', () => {
      const framer = lengthPrefixedFraming({ headerSize: 2 }).createFramer();
      const out: Buffer[] = [];
      pushAndDrain(framer, Buffer.from([0, 3, 0x61, 0x62, 0x63, 0, 3, 0x64]), out);
      pushAndDrain(framer, Buffer.from([0x65, 0x66, 0, 1]), out);
      pushAndDrain(framer, Buffer.from([0x67]), out);
      expect(out.map((f) => f.toString())).toEqual(['abc', 'def', 'g']);
    });
  });

  describe('properties', () => {
    it('round-trips any payloads through encode, however the stream is chunked', () => {
      const input = fc
        .record({ headerSize: fc.constantFrom<2 | 4>(2, 4), maxLength: fc.integer({ min: 0, max: 300 }) })
        .chain(({ headerSize, maxLength }) =>
          fc.record({
            headerSize: fc.constant(headerSize),
            maxLength: fc.constant(maxLength),
            payloads: fc.array(
              fc.oneof(
                fc.uint8Array({ maxLength }),
                fc.uint8Array({ minLength: maxLength, maxLength }),
                fc.constant(new Uint8Array(0)),
              ),
              { maxLength: 20 },
            ),
            chunking: chunkingArb,
          }),
        );
      fc.assert(
        fc.property(input, ({ headerSize, maxLength, payloads, chunking }) => {
          const framing = lengthPrefixedFraming({ headerSize, maxLength });
          const data = Buffer.concat(payloads.map((p) => flat(framing.encode(p))));
          expect(data.length).toBe(payloads.reduce((n, p) => n + headerSize + p.length, 0));
          const framer = framing.createFramer();
          const out: Buffer[] = [];
          for (const piece of chunk(data, chunking)) {
            pushAndDrain(framer, piece, out);
            // At most one incomplete frame is held.
            expect(framer.buffered).toBeLessThan(headerSize + maxLength);
          }
          expect(out.length).toBe(payloads.length);
          out.forEach((frame, i) => expect(frame.equals(payloads[i]!)).toBe(true));
          expect(framer.buffered).toBe(0);
        }),
        { numRuns: 500 },
      );
    });

    it('fails on the chunk that completes an oversized header, after returning every frame before it', () => {
      const input = fc
        .record({ headerSize: fc.constantFrom<2 | 4>(2, 4), maxLength: fc.integer({ min: 0, max: 60 }) })
        .chain(({ headerSize, maxLength }) =>
          fc.record({
            headerSize: fc.constant(headerSize),
            maxLength: fc.constant(maxLength),
            payloads: fc.array(fc.uint8Array({ maxLength }), { maxLength: 10 }),
            announced: fc.integer({ min: maxLength + 1, max: headerSize === 2 ? 0xffff : 0xffffffff }),
            trailing: fc.uint8Array({ maxLength: 20 }),
            chunking: chunkingArb,
          }),
        );
      fc.assert(
        fc.property(input, ({ headerSize, maxLength, payloads, announced, trailing, chunking }) => {
          const framing = lengthPrefixedFraming({ headerSize, maxLength });
          const good = Buffer.concat(payloads.map((p) => flat(framing.encode(p))));
          const badHeaderEnd = good.length + headerSize;
          const data = Buffer.concat([good, header(headerSize, announced), trailing]);
          const framer = framing.createFramer();
          const out: Buffer[] = [];
          let seen = 0;
          for (const piece of chunk(data, chunking)) {
            seen += piece.length;
            if (seen >= badHeaderEnd) {
              expectTooLarge(() => pushAndDrain(framer, piece, out), maxLength);
              expect(out.length).toBe(payloads.length);
              out.forEach((frame, i) => expect(frame.equals(payloads[i]!)).toBe(true));
              return;
            }
            pushAndDrain(framer, piece, out);
          }
          throw new Error('unreachable: the whole input was pushed without an error');
        }),
        { numRuns: 500 },
      );
    });
  });
});
