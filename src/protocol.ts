import type { Connection } from './connection.js';

/**
 * Why a connection ended, as given to {@link ProtocolHandler.onClose}.
 *
 * - `local`: the handler (or corral on its behalf, e.g. after `onIdle`) called `close()`.
 * - `remote`: the peer ended its side; every frame before its end was handled, then the
 *   connection closed (after `onRemoteClose`, if any).
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
  /**
   * When the drain force-closes what is left (milliseconds since the epoch). A `stop()` with a
   * sooner deadline during the drain brings it forward without telling a handler asked already.
   */
  readonly deadline: number;
}

/** Which hook was running when a handler crashed. */
export type HandlerHook = keyof ProtocolHandler;

/** What {@link ProtocolHandler.onCrash} is told about the crash it answers. */
export interface CrashInfo {
  /** The hook that threw or rejected. */
  readonly hook: HandlerHook;
  /**
   * Whether a fresh handler takes over the connection afterwards (`restart: 'transient'`): it does
   * once this hook settles, unless the connection is closing by then (closed by this hook, its peer
   * gone, a drain) — then it closes, and `handlerRestarts` does not count it.
   */
  readonly restarted: boolean;
}

/**
 * The behaviour a protocol implements (Ranch's `ranch_protocol`, Thousand Island's `Handler`).
 * `State` types {@link Connection.data}, the handler's per-connection state.
 *
 * This comment is the contract of a connection's life; the guides link here.
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
 * 3. **Ready.** The `connectionOpen` event fires and `corral:connection:open` is published; a
 *    handler is created for the connection (see {@link Protocol}) and {@link ProtocolHandler.onReady}
 *    runs. Nothing is read until it returns (or its promise settles), so a greeting sent here always
 *    comes first. A throw before `onReady` — from a `connectionOpen` listener, a custom framing's
 *    `createFramer`, or the handler's class or factory — is a crash of `onReady` that nothing
 *    restarts: counted and reported as in step 9, and the connection closes at once (reason
 *    `crash`), giving back its slot.
 * 4. **One queue, in order.** What happens to a connection is handled one event at a time, in the
 *    order it happened: each frame (bytes split by the listener's `framing`) goes to
 *    {@link ProtocolHandler.onFrame}, then the next. While a hook's promise is pending, nothing else
 *    is delivered and reading pauses: a slow handler pushes back on its peer through TCP and never
 *    piles up input. Replies sent with `send`/`sendFrame` are written in the order they are sent.
 * 5. **Peer ends its side.** The peer's end of stream is an event in the same queue: every frame
 *    read before it is handled first, each hook awaited. Then {@link ProtocolHandler.onRemoteClose}
 *    runs (replies still reach the peer), and the connection closes when it settles — at the latest
 *    `shutdownTimeout` after it started, so a hook that never settles cannot leak the connection.
 *    Without the hook the connection closes at once, after flushing what was sent. A pipelined
 *    client that writes N requests and half-closes gets N replies. (A partial frame left at the
 *    end — a last line without its line ending — is not delivered.)
 * 6. **Bad input.** If the input breaks the framing (a frame over `maxLength`),
 *    {@link ProtocolHandler.onFrameError} runs, may send a last reply, and the connection closes
 *    after a bounded flush.
 * 7. **Quiet.** With an idle timeout set (listener `idleTimeout` or `connection.setIdleTimeout`),
 *    {@link ProtocolHandler.onIdle} runs when nothing was read or written for that long and no
 *    hook is at work; by default the connection closes.
 * 8. **Drain.** When the listener drains or stops, the request waits for the hook in flight (its
 *    replies are sent), then goes ahead of frames not yet delivered:
 *    {@link ProtocolHandler.onShutdown} runs once; by default the connection closes gracefully
 *    (what was sent is flushed). A handler may finish other work and close later, but whatever is
 *    still open at the drain deadline is force-closed and counted as `forced`, never as graceful.
 * 9. **Crash.** A hook that throws or rejects is a crash: counted in `info().handlerCrashes`,
 *    emitted as the listener's `handlerCrash` event and on `corral:handler:crash`, never thrown
 *    into the process. {@link ProtocolHandler.onCrash} may answer it (an error reply) within
 *    `shutdownTimeout`; a crash inside `onCrash` is counted and never answered again. Then, with
 *    `restart: 'transient'`, a crash in `onReady`, `onFrame` or `onIdle` starts a fresh handler on
 *    the same connection (`conn.data` reset, `conn.restarts` incremented, `onReady` again; the frame
 *    being handled is dropped); otherwise the connection closes. A class or factory that throws while
 *    making the fresh handler is a second crash (of `onReady`, counted and reported, `restarted`
 *    false) and the connection closes. Crashes in `onError` and `onClose` are only counted.
 * 10. **Errors.** A socket error (reset, broken pipe) runs {@link ProtocolHandler.onError}; the
 *    connection is then closed whatever the hook does; what was not sent is lost.
 * 11. **Closed.** {@link ProtocolHandler.onClose} runs exactly once, last, with the reason; its slot
 *    of `maxConnections` is given back; `connectionClose` fires and `corral:connection:close` is
 *    published. Nothing else is called after it.
 *
 * Every hook is optional and may be `async`.
 *
 * ## Three small examples
 *
 * ```ts
 * // 1. A plain object, shared by every connection: a line echo. Per-connection state is typed.
 * const echo: ProtocolHandler<{ lines: number }> = {
 *   onReady(conn) { conn.data = { lines: 0 }; },
 *   onFrame(line, conn) { conn.data!.lines++; conn.sendFrame(line); },
 * };
 *
 * // 2. A class: one instance per connection, state in fields.
 * class Counter implements ProtocolHandler {
 *   private lines = 0;
 *   onReady(conn: Connection) { conn.sendFrame('hello'); }
 *   onFrame(_line: Buffer, conn: Connection) { conn.sendFrame(String(++this.lines)); }
 * }
 *
 * // 3. A factory with options, async work, backpressure, and an error reply on a crash.
 * const store = (conn: Connection, opts: { db: Db }): ProtocolHandler => ({
 *   async onFrame(line) {
 *     await opts.db.put(line);            // nothing else is delivered until this settles
 *     if (!conn.sendFrame('ok')) await conn.drained();
 *   },
 *   onCrash() { conn.sendFrame('error: internal'); },
 * });
 * ```
 */
export interface ProtocolHandler<State = unknown> {
  /** The connection is ready: the handshake is done and nothing has been read yet. */
  onReady?(conn: Connection<State>): void | Promise<void>;
  /** One frame from the peer. Nothing else is delivered until this returns or settles. */
  onFrame?(frame: Buffer, conn: Connection<State>): void | Promise<void>;
  /**
   * The input broke the framing (usually a `FrameTooLargeError`). The handler may send a last reply;
   * the connection then closes after a bounded flush. Default: close without a reply.
   */
  onFrameError?(error: Error, conn: Connection<State>): void | Promise<void>;
  /**
   * The peer ended its side, and every frame it sent before is handled. Replies still reach it.
   * The connection closes when this settles, at the latest `shutdownTimeout` later. Default: close.
   */
  onRemoteClose?(conn: Connection<State>): void | Promise<void>;
  /** A socket error. The connection closes afterwards whatever this does. */
  onError?(error: Error, conn: Connection<State>): void | Promise<void>;
  /** The idle timeout fired (no hook at work). Default: close the connection. */
  onIdle?(conn: Connection<State>): void | Promise<void>;
  /**
   * The listener is draining or stopping; the hook in flight has settled. Default: close the
   * connection gracefully at once. Whatever is open at `request.deadline` is force-closed.
   */
  onShutdown?(conn: Connection<State>, request: ShutdownRequest): void | Promise<void>;
  /**
   * A hook crashed (threw or rejected): answer it before the connection closes or restarts, e.g.
   * with an error reply. Bounded by `shutdownTimeout`: if its promise is still pending then, corral
   * stops waiting for it — the connection closes or restarts as if it had settled, and the pending
   * promise no longer holds back reading, idling or closing (what it sends later mixes with the
   * fresh handler's replies, or is dropped once the connection is closing). A crash in here, even
   * after the bound, is counted, never answered.
   */
  onCrash?(error: unknown, conn: Connection<State>, crash: CrashInfo): void | Promise<void>;
  /** The connection is closed. Called exactly once, last. Errors here are counted, not rethrown. */
  onClose?(conn: Connection<State>, reason: CloseReason): void | Promise<void>;
}

/** A class whose instances handle one connection each: `new MyHandler(conn, protocolOptions)`. */
export type ProtocolHandlerClass<O = unknown, State = unknown> = new (conn: Connection<State>, options: O) => ProtocolHandler<State>;

/** A function that returns the handler for one connection: `(conn, protocolOptions) => handler`. */
export type ProtocolHandlerFactory<O = unknown, State = unknown> = (conn: Connection<State>, options: O) => ProtocolHandler<State>;

/**
 * What the `protocol` listener option accepts:
 *
 * - a {@link ProtocolHandler} object, shared by every connection (keep per-connection state on
 *   `conn.data`, typed by `ProtocolHandler<State>`, or in a `WeakMap`);
 * - a class implementing {@link ProtocolHandler}, instantiated per connection;
 * - a factory function returning a handler per connection.
 *
 * Classes are told apart from factories by their source (`class ...`); a `function` used with
 * `new` must be wrapped in a factory.
 */
export type Protocol<O = unknown, State = unknown> = ProtocolHandler<State> | ProtocolHandlerClass<O, State> | ProtocolHandlerFactory<O, State>;

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
