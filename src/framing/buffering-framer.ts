import type { Framer } from './framer.js';

const EMPTY = Buffer.alloc(0);

/**
 * The byte keeping a framer that cuts frames out of a byte stream needs: one buffer of what was
 * read and an offset of what was already returned. A chunk pushed onto an empty framer is kept as
 * it is (no copy); a frame is a view into the buffer; only the unread tail is copied when more bytes
 * arrive. Subclasses find frames in `buf` from `start`. @internal
 */
export abstract class BufferingFramer implements Framer {
  protected buf: Buffer = EMPTY;
  /** Start of the unread part of `buf`. */
  protected start = 0;

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
    }
    this.start = 0;
    this.shifted(dropped);
  }

  abstract next(): Buffer | undefined;

  /** `push` dropped the first `n` bytes of `buf`: offsets a subclass keeps into it move by `n`. */
  protected shifted(_n: number): void {}

  /** Everything before `to` has been returned; the buffer is let go once all of it has. */
  protected consume(to: number): void {
    this.start = to;
    if (to >= this.buf.length) this.clear();
  }

  /** Forget every byte held (after a framing error, or once all are consumed). */
  protected clear(): void {
    this.buf = EMPTY;
    this.start = 0;
  }
}
