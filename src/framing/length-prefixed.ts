import { FrameTooLargeError } from '../errors.js';
import { BufferingFramer } from './buffering-framer.js';
import type { Framing, LengthPrefixedFramingOptions } from './framer.js';

class LengthPrefixedFramer extends BufferingFramer {
  /** The length announced by the header of the frame being read, once that header is complete; else -1. */
  private length = -1;

  constructor(
    private readonly headerSize: 2 | 4,
    private readonly maxLength: number,
  ) {
    super();
  }

  next(): Buffer | undefined {
    if (this.length === -1) {
      if (this.buffered < this.headerSize) return undefined;
      let length = 0;
      for (let i = 0; i < this.headerSize; i++) length = length * 256 + this.byteAt(i);
      if (length > this.maxLength) {
        this.clear();
        throw new FrameTooLargeError(this.maxLength, `header announces ${length} bytes`);
      }
      this.length = length;
    }
    if (this.buffered < this.headerSize + this.length) return undefined;
    const frame = this.take(this.headerSize + this.length, this.headerSize, this.headerSize + this.length);
    this.length = -1;
    return frame;
  }

  protected frameBound(): number {
    return this.headerSize + (this.length === -1 ? this.maxLength : this.length);
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
