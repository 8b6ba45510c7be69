import type { Connection } from './connection.js';

/**
 * Why a connection ended, as given to {@link ProtocolHandler.onClose}.
 *
 * - `local`: the handler (or corral on its behalf, e.g. after `onIdle`) called `close()`.
 * - `remote`: the peer closed its side and the handler did not keep the connection half-open.
 * - `error`: a socket error (`ECONNRESET`, ...).
 * - `idle`: the idle timeout fired and the default `onIdle` closed the connection.
 * - `frame_error`: the input broke the framing (e.g. a frame over `maxLength`).
 * - `crash`: a hook threw or rejected and the handler was not restarted.
 * - `send_buffer_full`: the handler queued more than `maxSendBuffer` bytes the peer did not read.
 * - `shutdown`: the connection was closed by a drain or stop (gracefully or at the deadline).
 */
export type CloseReason =
  | 'local'
  | 'remote'
  | 'error'
  | 'idle'
  | 'frame_error'
  | 'crash'
  | 'send_buffer_full'
  | 'shutdown';

/** What {@link ProtocolHandler.onShutdown} is told about the drain under way. */
export interface ShutdownRequest {
  /** When the drain force-closes what is left (milliseconds since the epoch). */
  readonly deadline: number;
}

/**
 * The behaviour a protocol implements (Ranch's `ranch_protocol`, Thousand Island's `Handler`).
 *
 * ## The lifecycle of a connection
 *
 * 1. **Accepted.** The transport accepts a socket. With `clientFirst` (the default for TLS) corral
 *    reads the peer's first message (TLS: the ClientHello) before the socket takes any slot; a
 *    socket that stays silent too long, or breaks a per-source bound, is closed. Then, if the
 *    listener is at `maxConnections` or its handshake slots are taken, the socket waits in the
 *    listener's bounded wait queue. It leaves the queue when a slot frees (in the order the
 *    `admission` policy says), when its peer gives up, or is closed when it waited longer than
 *    `waitTimeout` or the queue overflowed (counted in `info().rejected`). See docs/limits.md.
 * 2. **Handshake.** The transport runs its handshake (TLS: ClientHello to Finished), bounded by
 *    `handshakeTimeout`. From here the socket counts against `maxConnections`. A failed or
 *    timed-out handshake closes the socket and is counted; no handler is created.
 * 3. **Ready.** A handler is created for the connection (see {@link Protocol}) and
 *    {@link ProtocolHandler.onReady} runs. Nothing is read until it returns (or its promise settles),
 *    so a greeting sent here always comes first.
 * 4. **Frames.** Bytes are split by the listener's `framing` and each frame goes to
 *    {@link ProtocolHandler.onFrame}, one at a time and in order. While a hook's promise is pending,
 *    reading from that connection is paused: a slow handler pushes back on its peer through TCP and
 *    never accumulates input. If the input breaks the framing (a frame over `maxLength`),
 *    {@link ProtocolHandler.onFrameError} runs, may send a last reply, and the connection closes
 *    after a bounded flush.
 * 5. **Quiet.** With an idle timeout set (listener `idleTimeout` or `connection.setIdleTimeout`),
 *    {@link ProtocolHandler.onIdle} runs when nothing was read or written for that long; by default the
 *    connection closes.
 * 6. **Peer closes.** When the peer ends its side, {@link ProtocolHandler.onRemoteClose} runs; by
 *    default the connection closes (after what was already sent is flushed).
 * 7. **Errors.** A socket error (reset, broken pipe) runs {@link ProtocolHandler.onError}; the
 *    connection is then closed whatever the hook does.
 * 8. **Drain.** When the listener drains or stops, {@link ProtocolHandler.onShutdown} runs once per
 *    connection; by default the connection closes at once. A handler may finish in-flight work and
 *    close later, but whatever is still open at the drain deadline is force-closed.
 * 9. **Closed.** {@link ProtocolHandler.onClose} runs exactly once, last, with the reason. Nothing
 *    else is called after it.
 *
 * Every hook is optional and may be `async`. A hook that throws or rejects is a **crash**: it is
 * counted in `info().handlerCrashes`, emitted as the listener's `handlerCrash` event and on the
 * `corral:handler:crash` diagnostics channel, and never escapes to the process. With
 * `restart: 'temporary'` (the default) the connection is then closed; with `restart: 'transient'`
 * a fresh handler is created for the same connection before the next frame (see the supervision
 * guide for when that is safe).
 *
 * ## Three small examples
 *
 * ```ts
 * // 1. A plain object, shared by every connection: a line echo.
 * const echo: ProtocolHandler = {
 *   onFrame(line, conn) { conn.sendFrame(line); },
 * };
 *
 * // 2. A class: one instance per connection, state in fields.
 * class Counter implements ProtocolHandler {
 *   private lines = 0;
 *   onReady(conn: Connection) { conn.sendFrame('hello'); }
 *   onFrame(_line: Buffer, conn: Connection) { conn.sendFrame(String(++this.lines)); }
 * }
 *
 * // 3. A factory with options, async work, and backpressure.
 * const store = (conn: Connection, opts: { db: Db }): ProtocolHandler => ({
 *   async onFrame(line) {
 *     await opts.db.put(line);            // reading pauses until this settles
 *     if (!conn.sendFrame('ok')) await conn.drained();
 *   },
 * });
 * ```
 */
export interface ProtocolHandler {
  /** The connection is ready: the handshake is done and nothing has been read yet. */
  onReady?(conn: Connection): void | Promise<void>;
  /** One frame from the peer. The next frame is not delivered until this returns or settles. */
  onFrame?(frame: Buffer, conn: Connection): void | Promise<void>;
  /**
   * The input broke the framing (usually a `FrameTooLargeError`). The handler may send a last reply;
   * the connection then closes after a bounded flush. Default: close without a reply.
   */
  onFrameError?(error: Error, conn: Connection): void | Promise<void>;
  /** The peer ended its side. Default: close the connection. */
  onRemoteClose?(conn: Connection): void | Promise<void>;
  /** A socket error. The connection closes afterwards whatever this does. */
  onError?(error: Error, conn: Connection): void | Promise<void>;
  /** The idle timeout fired. Default: close the connection. */
  onIdle?(conn: Connection): void | Promise<void>;
  /** The listener is draining or stopping. Default: close the connection at once. */
  onShutdown?(conn: Connection, request: ShutdownRequest): void | Promise<void>;
  /** The connection is closed. Called exactly once, last. Errors here are counted, not rethrown. */
  onClose?(conn: Connection, reason: CloseReason): void | Promise<void>;
}

/** A class whose instances handle one connection each: `new MyHandler(conn, protocolOptions)`. */
export type ProtocolHandlerClass<O = unknown> = new (conn: Connection, options: O) => ProtocolHandler;

/** A function that returns the handler for one connection: `(conn, protocolOptions) => handler`. */
export type ProtocolHandlerFactory<O = unknown> = (conn: Connection, options: O) => ProtocolHandler;

/**
 * What the `protocol` listener option accepts:
 *
 * - a {@link ProtocolHandler} object, shared by every connection (keep per-connection state on
 *   `conn.data` or in a `WeakMap`);
 * - a class implementing {@link ProtocolHandler}, instantiated per connection;
 * - a factory function returning a handler per connection.
 *
 * Classes are told apart from factories by their source (`class ...`); a `function` used with
 * `new` must be wrapped in a factory.
 */
export type Protocol<O = unknown> = ProtocolHandler | ProtocolHandlerClass<O> | ProtocolHandlerFactory<O>;

/** Turns a {@link Protocol} into a per-connection handler constructor. @internal */
export function handlerFactory<O>(protocol: Protocol<O>): (conn: Connection, options: O) => ProtocolHandler {
  if (typeof protocol === 'object' && protocol !== null) return () => protocol;
  if (typeof protocol === 'function') {
    if (/^class[\s{]/.test(Function.prototype.toString.call(protocol))) {
      const Ctor = protocol as ProtocolHandlerClass<O>;
      return (conn, options) => new Ctor(conn, options);
    }
    return protocol as ProtocolHandlerFactory<O>;
  }
  throw new TypeError('protocol must be a ProtocolHandler object, class or factory');
}
