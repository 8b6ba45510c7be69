import { FrameTooLargeError } from '../errors.js';
import { BufferingFramer } from './buffering-framer.js';
import type { Framing, LengthPrefixedFramingOptions } from './framer.js';

class LengthPrefixedFramer extends BufferingFramer {
  constructor(
    private readonly headerSize: 2 | 4,
    private readonly maxLength: number,
  ) {
    super();
  }

  next(): Buffer | undefined {
    const buf = this.buf;
    const start = this.start;
    const available = buf.length - start;
    if (available < this.headerSize) return undefined;
    const length = this.headerSize === 2 ? buf.readUInt16BE(start) : buf.readUInt32BE(start);
    if (length > this.maxLength) {
      this.clear();
      throw new FrameTooLargeError(this.maxLength, `header announces ${length} bytes`);
    }
    if (available < this.headerSize + length) return undefined;
    const from = start + this.headerSize;
    this.consume(from + length);
    return buf.subarray(from, from + length);
  }
}

/**
 * Frames preceded by a big-endian unsigned length (u16 or u32). A header announcing more than
 * `maxLength` bytes is an error at once: nothing of that frame is buffered.
 */
export function lengthPrefixedFraming(options: LengthPrefixedFramingOptions = {}): Framing {
  const headerSize = options.headerSize ?? 4;
  const maxLength = options.maxLength ?? (headerSize === 2 ? 0xffff : 1024 * 1024);
  return {
    name: 'length-prefixed',
    createFramer: () => new LengthPrefixedFramer(headerSize, maxLength),
    encode: (payload) => {
      const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
      if (body.length > maxLength) {
        throw new FrameTooLargeError(maxLength, `outgoing payload of ${body.length} bytes`);
      }
      const header = Buffer.allocUnsafe(headerSize);
      if (headerSize === 2) header.writeUInt16BE(body.length, 0);
      else header.writeUInt32BE(body.length, 0);
      return [header, body];
    },
  };
}
