import type { Framer } from './framer.js';

const EMPTY = Buffer.alloc(0);

/**
 * A read shorter than this, arriving while at least {@link KEPT_SMALL} pieces are held, is copied
 * into a block instead of being held as a piece of its own: a socket read held as it is costs
 * ~200 bytes of heap besides its own (measured on Node 20), so a peer trickling a frame a byte per
 * TCP segment would otherwise make the framer hold ~200 times the frame.
 */
const SMALL_READ = 1024;
/** How many pieces are held as they are, whatever their size, before small reads are copied. */
const KEPT_SMALL = 8;
/** The largest block small reads are copied into. */
const MAX_BLOCK = 64 * 1024;

/**
 * The byte keeping a framer that cuts frames out of a byte stream needs. The reads pushed are held
 * as a list of pieces, with their total, and are not copied when more arrive: a frame within one
 * piece is a view into it, and a frame spread over several is joined once, when a subclass takes
 * it whole. Small reads behind others are copied into blocks that grow with what is held (never
 * beyond what the frame being read can still need, {@link BufferingFramer.frameBound}), so the
 * pieces stay few. Every byte pushed is copied at most twice (`bytesCopied`), however a peer cuts
 * its frames. Subclasses look at the unread bytes with `buffered`, `byteAt`, `lastByte` and
 * `indexOf`, and cut a frame with `take`. @internal
 */
export abstract class BufferingFramer implements Framer {
  /** The pieces held, from `first`; the unread part of `pieces[first]` starts at `start`. */
  private pieces: Buffer[] = [];
  private first = 0;
  private start = 0;
  /** Unread bytes, in all pieces. */
  private held = 0;
  /** The block small reads are copied into, while the last piece is its first `blockUsed` bytes. */
  private block: Buffer | undefined;
  private blockUsed = 0;
  /** Where `indexOf` resumes: a piece, a position in it, and the unread bytes before it (searched). */
  private seekPiece = 0;
  private seekAt = 0;
  private seekBefore = 0;
  private copied = 0;

  get buffered(): number {
    return this.held;
  }

  /** Bytes copied so far (into blocks and to join frames): at most twice the bytes pushed. @internal */
  get bytesCopied(): number {
    return this.copied;
  }

  /** Pieces held now. @internal */
  get piecesHeld(): number {
    return this.pieces.length - this.first;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    const before = this.held;
    this.held += chunk.length;
    const count = this.pieces.length - this.first;
    if (count === 0) {
      this.pieces.push(chunk);
      this.start = 0;
      this.resetSeek();
      return;
    }
    if (chunk.length >= SMALL_READ || count < KEPT_SMALL) {
      this.pieces.push(chunk);
      this.block = undefined;
      return;
    }
    this.copied += chunk.length;
    if (this.block !== undefined && this.blockUsed + chunk.length <= this.block.length) {
      chunk.copy(this.block, this.blockUsed);
      this.blockUsed += chunk.length;
      this.pieces[this.pieces.length - 1] = this.block.subarray(0, this.blockUsed);
      return;
    }
    // A new block, as large as what is held (so blocks double while a frame grows), within bounds.
    const size = Math.max(chunk.length, Math.min(before, MAX_BLOCK, this.frameBound() - before));
    this.block = Buffer.allocUnsafe(size);
    chunk.copy(this.block, 0);
    this.blockUsed = chunk.length;
    this.pieces.push(this.block.subarray(0, this.blockUsed));
  }

  abstract next(): Buffer | undefined;

  /**
   * The most unread bytes the frame being read may take in all (header and line ending included):
   * a block for small reads is never made larger than that, so the framer holds no more than the
   * largest frame plus one read.
   */
  protected abstract frameBound(): number;

  /** The unread byte at `i` (`i` < `buffered`). */
  protected byteAt(i: number): number {
    let k = this.first;
    let at = this.start + i;
    let piece = this.pieces[k]!;
    while (at >= piece.length) {
      at -= piece.length;
      piece = this.pieces[++k]!;
    }
    return piece[at]!;
  }

  /** The last byte pushed (`buffered` > 0). */
  protected lastByte(): number {
    const last = this.pieces[this.pieces.length - 1]!;
    return last[last.length - 1]!;
  }

  /**
   * Where the first `byte` is among the unread bytes, or -1. A search resumes where the previous
   * one stopped, so each byte pushed is searched once until a frame is taken (a subclass searches
   * for one byte value only).
   */
  protected indexOf(byte: number): number {
    if (this.held === 0) return -1;
    let k = this.seekPiece;
    let at = this.seekAt;
    let before = this.seekBefore;
    for (;;) {
      const piece = this.pieces[k]!;
      const found = piece.indexOf(byte, at);
      if (found !== -1) {
        before += found - at;
        at = found;
        break;
      }
      before += piece.length - at;
      at = piece.length;
      if (k === this.pieces.length - 1) break;
      k++;
      at = 0;
    }
    this.seekPiece = k;
    this.seekAt = at;
    this.seekBefore = before;
    return before === this.held ? -1 : before;
  }

  /**
   * Forgets the first `n` unread bytes (0 < `n` ≤ `buffered`) and returns those from `from` to `to`
   * of them (the frame without its header or line ending): a view into a piece when the `n` bytes
   * lie in one, else a view into a join of exactly those bytes.
   */
  protected take(n: number, from: number, to: number): Buffer {
    const head = this.pieces[this.first]!;
    let frame: Buffer;
    if (this.start + n <= head.length) {
      frame = head.subarray(this.start + from, this.start + to);
      if (this.start + n === head.length) this.dropTo(this.first + 1, 0);
      else this.start += n;
    } else {
      const parts = [head.subarray(this.start)];
      let have = head.length - this.start;
      let k = this.first + 1;
      while (have + this.pieces[k]!.length < n) {
        parts.push(this.pieces[k]!);
        have += this.pieces[k]!.length;
        k++;
      }
      const last = this.pieces[k]!;
      const rest = n - have;
      parts.push(rest === last.length ? last : last.subarray(0, rest));
      frame = Buffer.concat(parts, n).subarray(from, to);
      this.copied += n;
      if (rest === last.length) this.dropTo(k + 1, 0);
      else this.dropTo(k, rest);
    }
    this.held -= n;
    this.resetSeek();
    return frame;
  }

  /** Forget every byte held (after a framing error). */
  protected clear(): void {
    this.pieces = [];
    this.first = 0;
    this.start = 0;
    this.held = 0;
    this.block = undefined;
    this.resetSeek();
  }

  /** The pieces before `k` are read; `pieces[k]` is read up to `start`. */
  private dropTo(k: number, start: number): void {
    for (let i = this.first; i < k; i++) this.pieces[i] = EMPTY;
    if (k === this.pieces.length) {
      this.pieces.length = 0;
      this.block = undefined;
      k = 0;
    } else if (k >= 32 && k * 2 >= this.pieces.length) {
      this.pieces.splice(0, k);
      k = 0;
    }
    this.first = k;
    this.start = start;
  }

  private resetSeek(): void {
    this.seekPiece = this.first;
    this.seekAt = this.start;
    this.seekBefore = 0;
  }
}
