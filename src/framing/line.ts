import { FrameTooLargeError } from '../errors.js';
import { BufferingFramer } from './buffering-framer.js';
import type { Framing, LineFramingOptions } from './framer.js';

const LF = 0x0a;
const CR = 0x0d;

class LineFramer extends BufferingFramer {
  constructor(private readonly maxLength: number) {
    super();
  }

  next(): Buffer | undefined {
    const lf = this.indexOf(LF);
    if (lf === -1) {
      // A trailing CR may still become part of a CRLF: allow one byte of slack for it.
      const pending = this.buffered;
      if (pending > this.maxLength + 1 || (pending === this.maxLength + 1 && this.lastByte() !== CR)) {
        this.fail(`${pending} bytes without a line ending`);
      }
      return undefined;
    }
    const end = lf > 0 && this.byteAt(lf - 1) === CR ? lf - 1 : lf;
    if (end > this.maxLength) this.fail(`line of ${end} bytes`);
    return this.take(lf + 1, 0, end);
  }

  protected frameBound(): number {
    return this.maxLength + 2; // the line, CR, LF
  }

  private fail(detail: string): never {
    this.clear();
    throw new FrameTooLargeError(this.maxLength, detail);
  }
}

/**
 * Newline-delimited frames. Accepts `\n` and `\r\n`; frames are the line without its ending.
 * A line longer than `maxLength` bytes is an error as soon as that many bytes arrive without an
 * ending, so a peer cannot make the framer buffer more than `maxLength` + one chunk.
 */
export function lineFraming(options: LineFramingOptions = {}): Framing {
  const maxLength = options.maxLength ?? 65536;
  const eol = Buffer.from(options.eol ?? '\n');
  return {
    name: 'line',
    createFramer: () => new LineFramer(maxLength),
    encode: (payload) => [typeof payload === 'string' ? Buffer.from(payload) : payload, eol],
  };
}
