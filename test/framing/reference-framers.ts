import { FrameTooLargeError } from '../../src/errors.js';
import type { Framer } from '../../src/framing/framer.js';

/**
 * The line and length-prefixed framers as they were before pending bytes were kept as a list of
 * reads (one buffer, the unread rest copied into a new one at every push: quadratic when a large
 * frame trickles in). Kept verbatim as the reference the current framers must agree with, frame
 * for frame and error for error, however the input is cut; `copied` counts what they copied.
 */
abstract class ReferenceBufferingFramer implements Framer {
  protected buf: Buffer = Buffer.alloc(0);
  protected start = 0;
  /** Bytes copied by `Buffer.concat` so far. */
  copied = 0;

  get buffered(): number {
    return this.buf.length - this.start;
  }

  push(chunk: Buffer): void {
    const dropped = this.start;
    if (this.start >= this.buf.length) {
      this.buf = chunk;
    } else {
      const rest = this.buf.subarray(this.start);
      this.buf = Buffer.concat([rest, chunk], rest.length + chunk.length);
      this.copied += rest.length + chunk.length;
    }
    this.start = 0;
    this.shifted(dropped);
  }

  abstract next(): Buffer | undefined;

  protected shifted(_n: number): void {}

  protected consume(to: number): void {
    this.start = to;
    if (to >= this.buf.length) this.clear();
  }

  protected clear(): void {
    this.buf = Buffer.alloc(0);
    this.start = 0;
  }
}

const LF = 0x0a;
const CR = 0x0d;

export class ReferenceLineFramer extends ReferenceBufferingFramer {
  private scan = 0;

  constructor(private readonly maxLength: number) {
    super();
  }

  protected override shifted(n: number): void {
    this.scan -= n;
  }

  next(): Buffer | undefined {
    const buf = this.buf;
    const start = this.start;
    const lf = buf.indexOf(LF, this.scan);
    if (lf === -1) {
      this.scan = buf.length;
      const pending = buf.length - start;
      if (pending > this.maxLength + 1 || (pending === this.maxLength + 1 && buf[buf.length - 1] !== CR)) {
        this.fail(`${pending} bytes without a line ending`);
      }
      return undefined;
    }
    const end = lf > start && buf[lf - 1] === CR ? lf - 1 : lf;
    if (end - start > this.maxLength) this.fail(`line of ${end - start} bytes`);
    this.consume(lf + 1);
    this.scan = this.start;
    return buf.subarray(start, end);
  }

  private fail(detail: string): never {
    this.clear();
    this.scan = 0;
    throw new FrameTooLargeError(this.maxLength, detail);
  }
}

export class ReferenceLengthPrefixedFramer extends ReferenceBufferingFramer {
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
