/**
 * Splits a byte stream into frames and encodes outgoing frames, for one connection.
 *
 * The core pushes each chunk it reads and then pulls frames one at a time with {@link Framer.next},
 * handing each to the protocol handler before pulling the next. A framer holds at most one
 * incomplete frame (bounded by its `maxLength`) plus the rest of the last chunk pushed.
 */
export interface Framer {
  /** Append bytes read from the peer. Called only after {@link Framer.next} returned `undefined`. */
  push(chunk: Buffer): void;
  /**
   * The next complete frame, or `undefined` when more bytes are needed. Throws a
   * `FrameTooLargeError` (or another `CorralError`) when the input breaks the framing; the
   * framer is unusable afterwards.
   */
  next(): Buffer | undefined;
  /** Bytes held that have not been returned as frames yet. */
  readonly buffered: number;
}

/**
 * A framing: a name plus a factory of per-connection {@link Framer}s and an encoder for
 * outgoing frames (used by `Connection.sendFrame`). Implement this to plug in your own.
 */
export interface Framing {
  /** A short name for logs and `info()`, e.g. `'line'`. */
  readonly name: string;
  /** A fresh framer for a new connection. */
  createFramer(): Framer;
  /** Wrap one outgoing payload as a frame (for `line`: append the line ending). */
  encode(payload: string | Uint8Array): Uint8Array | readonly Uint8Array[];
}

/** Options of the ready-made `line` framing. */
export interface LineFramingOptions {
  /** Longest line accepted, in bytes, without its ending. Default 65536. */
  maxLength?: number;
  /** Line ending appended by `sendFrame`. Input accepts both `\n` and `\r\n`. Default `'\n'`. */
  eol?: '\n' | '\r\n';
}

/** Options of the ready-made `length-prefixed` framing. */
export interface LengthPrefixedFramingOptions {
  /** Size of the big-endian length header: 2 (u16) or 4 (u32) bytes. Default 4. */
  headerSize?: 2 | 4;
  /** Largest payload accepted, in bytes. Default 65535 for a 2-byte header, 1 MiB for 4. */
  maxLength?: number;
}

/**
 * What the `framing` listener option accepts: a ready-made framing by name, with options, or any
 * {@link Framing}.
 */
export type FramingOption =
  | 'raw'
  | 'line'
  | 'length-prefixed'
  | ({
      /** The ready-made `line` framing, with the options beside `type`. */
      type: 'line';
    } & LineFramingOptions)
  | ({
      /** The ready-made `length-prefixed` framing, with the options beside `type`. */
      type: 'length-prefixed';
    } & LengthPrefixedFramingOptions)
  | Framing;
