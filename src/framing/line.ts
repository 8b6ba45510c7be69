import { FrameTooLargeError } from '../errors.js';
import { BufferingFramer } from './buffering-framer.js';
import type { Framing, LineFramingOptions } from './framer.js';

const LF = 0x0a;
const CR = 0x0d;

class LineFramer extends BufferingFramer {
  /** Where the search for the next `\n` resumes (everything before it was searched). */
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
      // A trailing CR may still become part of a CRLF: allow one byte of slack for it.
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
