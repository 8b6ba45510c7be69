import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { flat } from '../support/chunking.js';
import { rawFraming } from '../../src/framing/raw.js';

describe('rawFraming', () => {
  it('is named raw', () => {
    expect(rawFraming().name).toBe('raw');
  });

  it('returns each pushed chunk as one frame, then undefined', () => {
    const framer = rawFraming().createFramer();
    expect(framer.next()).toBeUndefined();
    expect(framer.buffered).toBe(0);

    framer.push(Buffer.from('hello\nworld'));
    expect(framer.buffered).toBe(11);
    expect(framer.next()?.toString()).toBe('hello\nworld');
    expect(framer.buffered).toBe(0);
    expect(framer.next()).toBeUndefined();

    framer.push(Buffer.from([0, 0, 0, 1]));
    expect([...(framer.next() ?? [])]).toEqual([0, 0, 0, 1]);
    expect(framer.next()).toBeUndefined();
  });

  it('does not merge, split or alter chunks, whatever their content', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ minLength: 1, maxLength: 300 }), { maxLength: 20 }), (chunks) => {
        const framer = rawFraming().createFramer();
        const out: Buffer[] = [];
        for (const c of chunks) {
          framer.push(Buffer.from(c));
          expect(framer.buffered).toBe(c.length);
          for (let frame = framer.next(); frame !== undefined; frame = framer.next()) out.push(frame);
          expect(framer.buffered).toBe(0);
        }
        expect(out.length).toBe(chunks.length);
        out.forEach((frame, i) => expect(frame.equals(chunks[i]!)).toBe(true));
      }),
    );
  });

  it('encodes strings as UTF-8 and passes bytes through unchanged', () => {
    const framing = rawFraming();
    expect([...flat(framing.encode('é\n'))]).toEqual([0xc3, 0xa9, 0x0a]);
    expect([...flat(framing.encode(new Uint8Array([1, 2, 3])))]).toEqual([1, 2, 3]);
    expect(flat(framing.encode('')).length).toBe(0);
  });
});
