import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FrameTooLargeError } from '../../src/errors.js';
import { BufferingFramer } from '../../src/framing/buffering-framer.js';
import type { Framer } from '../../src/framing/framer.js';
import { lengthPrefixedFraming } from '../../src/framing/length-prefixed.js';
import { lineFraming } from '../../src/framing/line.js';
import { ReferenceLengthPrefixedFramer, ReferenceLineFramer } from './reference-framers.js';

const MiB = 1024 * 1024;

function buffering(framer: Framer): BufferingFramer {
  if (!(framer instanceof BufferingFramer)) throw new Error('not a BufferingFramer');
  return framer;
}

/** `data` cut into pieces of `size` bytes (the last one shorter). */
function pieces(data: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < data.length; at += size) out.push(Buffer.from(data.subarray(at, at + size)));
  return out;
}

function lengthPrefixed(payload: Buffer): Buffer {
  const header = Buffer.alloc(4);
  header.writeUInt32BE(payload.length);
  return Buffer.concat([header, payload]);
}

/**
 * Feeds `reads` one at a time, pulling every frame after each as the core does. Returns the frames,
 * the bytes the framer copied and the most pieces it held at once.
 */
function trickle(framer: Framer, reads: readonly Buffer[]): { frames: Buffer[]; copied: number; mostPieces: number } {
  const frames: Buffer[] = [];
  let mostPieces = 0;
  for (const read of reads) {
    framer.push(read);
    mostPieces = Math.max(mostPieces, buffering(framer).piecesHeld);
    for (let frame = framer.next(); frame !== undefined; frame = framer.next()) frames.push(frame);
  }
  return { frames, copied: buffering(framer).bytesCopied, mostPieces };
}

describe('BufferingFramer', () => {
  describe('a large frame trickling in', () => {
    it('frames a 1 MiB length-prefixed frame sent in 1,400-byte reads, copying its bytes once', () => {
      const payload = Buffer.alloc(MiB);
      for (let i = 0; i < payload.length; i++) payload[i] = (i * 7) & 0xff;
      const data = lengthPrefixed(payload);
      const reads = pieces(data, 1400);
      expect(reads.length).toBe(749);
      const { frames, copied } = trickle(lengthPrefixedFraming().createFramer(), reads);
      expect(frames.length).toBe(1);
      expect(frames[0]!.equals(payload)).toBe(true);
      // One join of header and payload when the last read arrived; the framer before copied
      // everything held at every read: ~375 MiB for this frame.
      expect(copied).toBe(data.length);
    });

    it('frames a 64 KiB line sent in 1,400-byte reads, copying its bytes once', () => {
      const line = Buffer.alloc(65536, 'x');
      const data = Buffer.concat([line, Buffer.from('\r\n')]);
      const { frames, copied } = trickle(lineFraming().createFramer(), pieces(data, 1400));
      expect(frames.map((f) => f.length)).toEqual([65536]);
      expect(frames[0]!.equals(line)).toBe(true);
      expect(copied).toBe(data.length);
    });

    it('copies each byte at most twice and holds few pieces when a frame arrives a byte per read', () => {
      const payload = Buffer.alloc(MiB / 4, 'y');
      const data = lengthPrefixed(payload);
      const { frames, copied, mostPieces } = trickle(lengthPrefixedFraming().createFramer(), pieces(data, 1));
      expect(frames.length).toBe(1);
      expect(frames[0]!.equals(payload)).toBe(true);
      expect(copied).toBeLessThanOrEqual(2 * data.length);
      // Held one by one, 262,148 1-byte reads would cost ~50 MB; in blocks, a few dozen pieces.
      expect(mostPieces).toBeLessThanOrEqual(40);

      const line = Buffer.concat([Buffer.alloc(65536, 'z'), Buffer.from('\n')]);
      const lines = trickle(lineFraming().createFramer(), pieces(line, 1));
      expect(lines.frames.map((f) => f.length)).toEqual([65536]);
      expect(lines.copied).toBeLessThanOrEqual(2 * line.length);
      expect(lines.mostPieces).toBeLessThanOrEqual(40);
    });

    it('returns frames within one read as views of it, without copying', () => {
      const framer = lineFraming().createFramer();
      const read = Buffer.from('one\ntwo\r\nthree\n');
      framer.push(read);
      const first = framer.next()!;
      expect(first.buffer).toBe(read.buffer);
      expect(first.byteOffset).toBe(read.byteOffset);
      expect(framer.next()!.byteOffset).toBe(read.byteOffset + 4);
      expect(buffering(framer).bytesCopied).toBe(0);
    });
  });

  describe('properties: the same frames, errors and buffered counts as the framer before', () => {
    /** How the input is cut: read sizes, cycled (tiny, small and MSS-sized ones). */
    const readSizes = fc.array(
      fc.oneof(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 1, max: 60 }), fc.integer({ min: 1000, max: 1500 })),
      { minLength: 1, maxLength: 40 },
    );
    /** How many frames are pulled after each read: mostly all (as the core does), sometimes fewer. */
    const pulls = fc.array(fc.oneof({ weight: 3, arbitrary: fc.constant(Infinity) }, { weight: 1, arbitrary: fc.nat(2) }), {
      minLength: 1,
      maxLength: 10,
    });

    /** `data` cut by `sizes`, cycled; a size of 0 is an empty read. */
    function cut(data: Buffer, sizes: readonly number[]): Buffer[] {
      if (sizes.every((size) => size === 0)) sizes = [1];
      const out: Buffer[] = [];
      for (let at = 0, i = 0; at < data.length; i++) {
        const size = sizes[i % sizes.length]!;
        out.push(Buffer.from(data.subarray(at, at + size)));
        at += size;
      }
      return out;
    }

    type Pulled = { frame: Buffer } | { error: string } | undefined;

    function pull(framer: Framer): Pulled {
      try {
        const frame = framer.next();
        return frame === undefined ? undefined : { frame };
      } catch (error) {
        if (!(error instanceof FrameTooLargeError)) throw error;
        return { error: `${error.code} ${error.maxLength} ${error.message}` };
      }
    }

    /**
     * Runs both framers through the same pushes and pulls and compares every answer (with `expect`
     * only on a difference: a run makes thousands of comparisons).
     */
    function agree(framer: Framer, reference: Framer, reads: readonly Buffer[], pullCounts: readonly number[]): void {
      const kept: { frame: Buffer; copy: Buffer }[] = [];
      let pushed = 0;
      const sameBuffered = (): void => {
        if (framer.buffered !== reference.buffered) expect(framer.buffered).toBe(reference.buffered);
      };
      for (let i = 0; i <= reads.length; i++) {
        if (i < reads.length) {
          framer.push(reads[i]!);
          reference.push(reads[i]!);
          pushed += reads[i]!.length;
          sameBuffered();
        }
        const wanted = i < reads.length ? pullCounts[i % pullCounts.length]! : Infinity;
        for (let n = 0; n < wanted; n++) {
          const got = pull(framer);
          const expected = pull(reference);
          if (expected === undefined || 'error' in expected) {
            expect(got).toEqual(expected);
            if (expected !== undefined) return;
            break;
          }
          if (got === undefined || !('frame' in got) || !got.frame.equals(expected.frame)) expect(got).toEqual(expected);
          kept.push({ frame: (got as { frame: Buffer }).frame, copy: Buffer.from(expected.frame) });
          sameBuffered();
        }
        if (buffering(framer).bytesCopied > 2 * pushed) expect(buffering(framer).bytesCopied).toBeLessThanOrEqual(2 * pushed);
      }
      // Frames handed out earlier were not overwritten by what arrived after them.
      for (const { frame, copy } of kept) if (!frame.equals(copy)) expect(frame).toEqual(copy);
    }

    it('line', () => {
      const segment = fc.record({
        length: fc.oneof(fc.integer({ min: 0, max: 12 }), fc.integer({ min: 0, max: 2000 })),
        byte: fc.constantFrom(0x61, 0x0d, 0x0a, 0x00),
        ending: fc.constantFrom('\n', '\r\n', '\r', '', '\n\n'),
      });
      const input = fc.record({
        maxLength: fc.oneof(fc.integer({ min: 0, max: 16 }), fc.integer({ min: 0, max: 2500 })),
        segments: fc.array(segment, { maxLength: 10 }),
        readSizes,
        pulls,
      });
      fc.assert(
        fc.property(input, ({ maxLength, segments, readSizes: sizes, pulls: pullCounts }) => {
          const data = Buffer.concat(segments.map((s) => Buffer.concat([Buffer.alloc(s.length, s.byte), Buffer.from(s.ending)])));
          agree(lineFraming({ maxLength }).createFramer(), new ReferenceLineFramer(maxLength), cut(data, sizes), pullCounts);
        }),
        { numRuns: 500 },
      );
    });

    it('length-prefixed', () => {
      const frame = fc.record({
        length: fc.oneof(fc.integer({ min: 0, max: 20 }), fc.integer({ min: 0, max: 4000 }), fc.integer({ min: 0, max: 0xffffffff })),
        byte: fc.nat(255),
      });
      const input = fc.record({
        headerSize: fc.constantFrom<2 | 4>(2, 4),
        maxLength: fc.oneof(fc.integer({ min: 0, max: 20 }), fc.integer({ min: 0, max: 4000 })),
        frames: fc.array(frame, { maxLength: 10 }),
        trailing: fc.uint8Array({ maxLength: 30 }),
        readSizes,
        pulls,
      });
      fc.assert(
        fc.property(input, ({ headerSize, maxLength, frames, trailing, readSizes: sizes, pulls: pullCounts }) => {
          const parts: Buffer[] = [];
          for (const f of frames) {
            const length = headerSize === 2 ? f.length & 0xffff : f.length;
            const header = Buffer.alloc(headerSize);
            if (headerSize === 2) header.writeUInt16BE(length);
            else header.writeUInt32BE(length);
            // Bodies are sent only up to a few KiB: a larger announced length is an error (or a
            // frame that never completes) either way.
            parts.push(header, Buffer.alloc(Math.min(length, 5000), f.byte));
          }
          parts.push(Buffer.from(trailing));
          const data = Buffer.concat(parts);
          agree(
            lengthPrefixedFraming({ headerSize, maxLength }).createFramer(),
            new ReferenceLengthPrefixedFramer(headerSize, maxLength),
            cut(data, sizes),
            pullCounts,
          );
        }),
        { numRuns: 500 },
      );
    });
  });
});
