import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { chunk, chunkingArb, drive, expectTooLarge, flat, pushAndDrain } from '../support/chunking.js';
import { FrameTooLargeError } from '../../src/errors.js';
import { lineFraming } from '../../src/framing/line.js';

const LF = 0x0a;
const CR = 0x0d;

function strs(frames: readonly Buffer[]): string[] {
  return frames.map((f) => f.toString('latin1'));
}

/** Any byte except `\n` and `\r`. */
const contentByte = fc.integer({ min: 0, max: 253 }).map((b) => (b < 10 ? b : b < 12 ? b + 1 : b + 2));

const repeat = (n: number, ch = 'a'): Buffer => Buffer.alloc(n, ch);

/**
 * Reference model of what a line framer must have done once it has seen `data` in full:
 * the complete lines before the first violation, and whether `data` already proves a violation
 * (a complete line over maxLength, or a partial line over maxLength + 1 bytes, or of exactly
 * maxLength + 1 bytes not ending in CR).
 */
function lineModel(data: Buffer, max: number): { lines: Buffer[]; partial: number; bad: boolean } {
  const lines: Buffer[] = [];
  let start = 0;
  for (;;) {
    const lf = data.indexOf(LF, start);
    if (lf === -1) break;
    const end = lf > start && data[lf - 1] === CR ? lf - 1 : lf;
    if (end - start > max) return { lines, partial: data.length - start, bad: true };
    lines.push(data.subarray(start, end));
    start = lf + 1;
  }
  const pending = data.length - start;
  const bad = pending > max + 1 || (pending === max + 1 && data[data.length - 1] !== CR);
  return { lines, partial: pending, bad };
}

describe('lineFraming', () => {
  it('is named line', () => {
    expect(lineFraming().name).toBe('line');
  });

  it('returns lines without their ending, accepting both \\n and \\r\\n', () => {
    const framer = lineFraming().createFramer();
    expect(strs(drive(framer, [Buffer.from('one\ntwo\r\nthree\n')]))).toEqual(['one', 'two', 'three']);
    expect(framer.buffered).toBe(0);
  });

  it('returns undefined until a line ending arrives, and keeps the partial line buffered', () => {
    const framer = lineFraming().createFramer();
    framer.push(Buffer.from('hel'));
    expect(framer.next()).toBeUndefined();
    expect(framer.buffered).toBe(3);
    framer.push(Buffer.from('lo'));
    expect(framer.next()).toBeUndefined();
    expect(framer.buffered).toBe(5);
    framer.push(Buffer.from('\nwor'));
    expect(framer.next()?.toString()).toBe('hello');
    expect(framer.buffered).toBe(3);
    expect(framer.next()).toBeUndefined();
    framer.push(Buffer.from('ld\n'));
    expect(framer.next()?.toString()).toBe('world');
    expect(framer.next()).toBeUndefined();
    expect(framer.buffered).toBe(0);
  });

  it('counts complete lines not yet pulled in buffered', () => {
    const framer = lineFraming().createFramer();
    framer.push(Buffer.from('ab\ncd\nef'));
    expect(framer.buffered).toBe(8);
    expect(framer.next()?.toString()).toBe('ab');
    expect(framer.buffered).toBe(5);
    expect(framer.next()?.toString()).toBe('cd');
    expect(framer.buffered).toBe(2);
    expect(framer.next()).toBeUndefined();
    expect(framer.buffered).toBe(2);
  });

  it('returns empty lines as frames of length 0', () => {
    const framer = lineFraming().createFramer();
    const frames = drive(framer, [Buffer.from('\n\r\n\nx\n\n')]);
    expect(strs(frames)).toEqual(['', '', '', 'x', '']);
    expect(frames.map((f) => f.length)).toEqual([0, 0, 0, 1, 0]);
  });

  it('keeps a CR that is not followed by LF as part of the line', () => {
    expect(strs(drive(lineFraming().createFramer(), [Buffer.from('a\rb\n')]))).toEqual(['a\rb']);
    expect(strs(drive(lineFraming().createFramer(), [Buffer.from('\ra\n')]))).toEqual(['\ra']);
    // Only the CR right before the LF is part of the ending.
    expect(strs(drive(lineFraming().createFramer(), [Buffer.from('a\r\r\n')]))).toEqual(['a\r']);
    expect(strs(drive(lineFraming().createFramer(), [Buffer.from('\r\r\n\r\n')]))).toEqual(['\r', '']);
  });

  it('handles a CR at the end of a chunk whether or not the next chunk starts with LF', () => {
    expect(strs(drive(lineFraming().createFramer(), [Buffer.from('ab\r'), Buffer.from('\ncd\n')]))).toEqual([
      'ab',
      'cd',
    ]);
    expect(strs(drive(lineFraming().createFramer(), [Buffer.from('ab\r'), Buffer.from('cd\n')]))).toEqual(['ab\rcd']);
    expect(
      strs(drive(lineFraming().createFramer(), [Buffer.from('ab\r'), Buffer.alloc(0), Buffer.from('\n')])),
    ).toEqual(['ab']);
  });

  it('ignores empty chunks', () => {
    const framer = lineFraming().createFramer();
    framer.push(Buffer.alloc(0));
    expect(framer.next()).toBeUndefined();
    expect(framer.buffered).toBe(0);
    expect(strs(drive(framer, [Buffer.from('a'), Buffer.alloc(0), Buffer.from('b\n'), Buffer.alloc(0)]))).toEqual([
      'ab',
    ]);
  });

  it('returns frames that stay valid after later pushes', () => {
    const framer = lineFraming().createFramer();
    const out: Buffer[] = [];
    pushAndDrain(framer, Buffer.from('first\nsec'), out);
    pushAndDrain(framer, Buffer.from('ond\nthi'), out);
    pushAndDrain(framer, Buffer.from('rd\n'), out);
    expect(strs(out)).toEqual(['first', 'second', 'third']);
  });

  it('keeps framers of different connections independent', () => {
    const framing = lineFraming();
    const a = framing.createFramer();
    const b = framing.createFramer();
    a.push(Buffer.from('aaa'));
    expect(a.next()).toBeUndefined();
    b.push(Buffer.from('b\n'));
    expect(b.next()?.toString()).toBe('b');
    expect(a.buffered).toBe(3);
    a.push(Buffer.from('\n'));
    expect(a.next()?.toString()).toBe('aaa');
  });

  describe('maxLength', () => {
    it('accepts a line of exactly maxLength bytes, with either ending', () => {
      const framer = lineFraming({ maxLength: 10 }).createFramer();
      const frames = drive(framer, [Buffer.concat([repeat(10), Buffer.from('\n'), repeat(10, 'b'), Buffer.from('\r\n')])]);
      expect(strs(frames)).toEqual(['a'.repeat(10), 'b'.repeat(10)]);
    });

    it('rejects a complete line of maxLength + 1 bytes', () => {
      const framer = lineFraming({ maxLength: 10 }).createFramer();
      framer.push(Buffer.concat([repeat(11), Buffer.from('\n')]));
      expectTooLarge(() => framer.next(), 10);
    });

    it('rejects a complete CRLF line of maxLength + 1 bytes', () => {
      const framer = lineFraming({ maxLength: 10 }).createFramer();
      framer.push(Buffer.concat([repeat(11), Buffer.from('\r\n')]));
      expectTooLarge(() => framer.next(), 10);
    });

    it('returns the good lines before the long one, then fails', () => {
      const framer = lineFraming({ maxLength: 4 }).createFramer();
      framer.push(Buffer.from('ok\nfine\ntoolong\nnever\n'));
      expect(framer.next()?.toString()).toBe('ok');
      expect(framer.next()?.toString()).toBe('fine');
      expectTooLarge(() => framer.next(), 4);
    });

    it('fails as soon as maxLength + 1 bytes arrive without an ending, before any ending', () => {
      const framer = lineFraming({ maxLength: 10 }).createFramer();
      framer.push(repeat(10));
      expect(framer.next()).toBeUndefined();
      framer.push(repeat(1));
      expectTooLarge(() => framer.next(), 10);
    });

    it('fails at once on a single chunk far longer than maxLength', () => {
      const framer = lineFraming({ maxLength: 10 }).createFramer();
      framer.push(repeat(1000));
      expectTooLarge(() => framer.next(), 10);
    });

    it('fails on the byte that makes the partial line too long when fed one byte at a time', () => {
      const framer = lineFraming({ maxLength: 5 }).createFramer();
      for (let i = 0; i < 5; i++) {
        framer.push(repeat(1));
        expect(framer.next()).toBeUndefined();
      }
      framer.push(repeat(1));
      expectTooLarge(() => framer.next(), 5);
    });

    it('allows one byte of slack for a trailing CR that may start a CRLF', () => {
      const framer = lineFraming({ maxLength: 10 }).createFramer();
      framer.push(Buffer.concat([repeat(10), Buffer.from('\r')]));
      expect(framer.next()).toBeUndefined();
      expect(framer.buffered).toBe(11);
      framer.push(Buffer.from('\n'));
      expect(framer.next()?.toString()).toBe('a'.repeat(10));
      expect(framer.next()).toBeUndefined();
      expect(framer.buffered).toBe(0);
    });

    it('fails when the slack CR turns out not to start a CRLF', () => {
      const framer = lineFraming({ maxLength: 10 }).createFramer();
      framer.push(Buffer.concat([repeat(10), Buffer.from('\r')]));
      expect(framer.next()).toBeUndefined();
      framer.push(Buffer.from('b'));
      expectTooLarge(() => framer.next(), 10);
    });

    it('fails when the slack CR is followed by LF but the line is one byte too long', () => {
      const framer = lineFraming({ maxLength: 10 }).createFramer();
      framer.push(Buffer.concat([repeat(10), Buffer.from('\r\r')]));
      expectTooLarge(() => framer.next(), 10);
    });

    it('with maxLength 0 accepts only empty lines', () => {
      const framer = lineFraming({ maxLength: 0 }).createFramer();
      expect(strs(drive(framer, [Buffer.from('\n\r'), Buffer.from('\n')]))).toEqual(['', '']);
      framer.push(Buffer.from('x'));
      expectTooLarge(() => framer.next(), 0);
    });

    it('defaults to 65536 bytes', () => {
      const ok = lineFraming().createFramer();
      expect(drive(ok, [Buffer.concat([repeat(65536), Buffer.from('\r\n')])]).map((f) => f.length)).toEqual([65536]);

      const partial = lineFraming().createFramer();
      partial.push(repeat(65536));
      expect(partial.next()).toBeUndefined();
      partial.push(repeat(1));
      expectTooLarge(() => partial.next(), 65536);

      const complete = lineFraming().createFramer();
      complete.push(Buffer.concat([repeat(65537), Buffer.from('\n')]));
      expectTooLarge(() => complete.next(), 65536);
    });
  });

  describe('encode', () => {
    it('appends \\n by default', () => {
      expect(flat(lineFraming().encode('x')).toString()).toBe('x\n');
      expect(flat(lineFraming().encode('')).toString()).toBe('\n');
    });

    it('appends \\r\\n with eol: \\r\\n', () => {
      expect(flat(lineFraming({ eol: '\r\n' }).encode('x')).toString()).toBe('x\r\n');
    });

    it('encodes strings as UTF-8 and accepts bytes', () => {
      expect(flat(lineFraming().encode('é')).equals(Buffer.from([0xc3, 0xa9, 0x0a]))).toBe(true);
      expect(flat(lineFraming().encode(new Uint8Array([1, 2, 3]))).equals(Buffer.from([1, 2, 3, 0x0a]))).toBe(true);
    });

    it('round-trips through a framer', () => {
      const framing = lineFraming({ eol: '\r\n' });
      const bytes = Buffer.concat(['alpha', '', 'gamma'].map((s) => flat(framing.encode(s))));
      expect(strs(drive(framing.createFramer(), [bytes]))).toEqual(['alpha', '', 'gamma']);
    });
  });

  describe('properties', () => {
    it('returns exactly the lines sent, in order, however the stream is chunked', () => {
      const input = fc.integer({ min: 0, max: 200 }).chain((maxLength) =>
        fc.record({
          maxLength: fc.constant(maxLength),
          lines: fc.array(
            fc.record({
              content: fc.oneof(
                fc.array(contentByte, { maxLength }),
                fc.array(contentByte, { minLength: maxLength, maxLength }),
              ),
              crlf: fc.boolean(),
            }),
            { maxLength: 30 },
          ),
          chunking: chunkingArb,
        }),
      );
      fc.assert(
        fc.property(input, ({ maxLength, lines, chunking }) => {
          const contents = lines.map((l) => Buffer.from(l.content));
          const data = Buffer.concat(
            lines.map((l, i) => Buffer.concat([contents[i]!, Buffer.from(l.crlf ? '\r\n' : '\n')])),
          );
          const framer = lineFraming({ maxLength }).createFramer();
          const out: Buffer[] = [];
          let seen = 0;
          for (const piece of chunk(data, chunking)) {
            pushAndDrain(framer, piece, out);
            seen += piece.length;
            // Everything up to the last line ending seen was returned; the rest is buffered.
            expect(framer.buffered).toBe(lineModel(data.subarray(0, seen), maxLength).partial);
          }
          expect(out.length).toBe(contents.length);
          out.forEach((frame, i) => expect(frame.equals(contents[i]!)).toBe(true));
          expect(framer.buffered).toBe(0);
        }),
        { numRuns: 500 },
      );
    });

    it('fails exactly when the input proves a line too long, after returning every good line before it', () => {
      // Few distinct bytes so that CRs, LFs and long lines are all common.
      const input = fc.integer({ min: 0, max: 12 }).chain((maxLength) =>
        fc.record({
          maxLength: fc.constant(maxLength),
          data: fc.array(fc.constantFrom(0x61, 0x61, 0x61, 0x61, CR, LF), { maxLength: 120 }),
          chunking: chunkingArb,
        }),
      );
      fc.assert(
        fc.property(input, ({ maxLength, data: bytes, chunking }) => {
          const data = Buffer.from(bytes);
          const framer = lineFraming({ maxLength }).createFramer();
          const out: Buffer[] = [];
          let seen = 0;
          for (const piece of chunk(data, chunking)) {
            seen += piece.length;
            const model = lineModel(data.subarray(0, seen), maxLength);
            if (model.bad) {
              expectTooLarge(() => pushAndDrain(framer, piece, out), maxLength);
              expect(strs(out)).toEqual(strs(model.lines));
              return;
            }
            pushAndDrain(framer, piece, out);
            expect(strs(out)).toEqual(strs(model.lines));
            expect(framer.buffered).toBe(model.partial);
          }
        }),
        { numRuns: 1000 },
      );
    });

    it('never buffers more than maxLength + 1 bytes plus the last chunk pushed', () => {
      const input = fc.integer({ min: 0, max: 64 }).chain((maxLength) =>
        fc.record({
          maxLength: fc.constant(maxLength),
          data: fc.oneof(
            fc.array(fc.constantFrom(0x61, 0x61, 0x61, 0x61, 0x61, 0x61, CR, LF), { maxLength: 600 }),
            fc.array(contentByte, { maxLength: 600 }),
          ),
          chunking: chunkingArb,
        }),
      );
      fc.assert(
        fc.property(input, ({ maxLength, data: bytes, chunking }) => {
          const framer = lineFraming({ maxLength }).createFramer();
          try {
            for (const piece of chunk(Buffer.from(bytes), chunking)) {
              framer.push(piece);
              expect(framer.buffered).toBeLessThanOrEqual(maxLength + 1 + piece.length);
              for (let frame = framer.next(); frame !== undefined; frame = framer.next()) {
                expect(frame.length).toBeLessThanOrEqual(maxLength);
              }
              expect(framer.buffered).toBeLessThanOrEqual(maxLength + 1);
            }
          } catch (error) {
            if (!(error instanceof FrameTooLargeError)) throw error;
          }
        }),
        { numRuns: 500 },
      );
    });
  });
});
