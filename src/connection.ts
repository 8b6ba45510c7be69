import type { AsyncLocalStorage } from 'node:async_hooks';
import type { Duplex } from 'node:stream';
import type { ConnectionContext } from './connection-context.js';
import { CorralError } from './errors.js';
import type { Framer, Framing } from './framing/framer.js';
import type { Lease } from './acceptor-pool/lease.js';
import { HOOK_POLICIES, HookRunner } from './hook-runner.js';
import type { CloseReason, HandlerHook, ProtocolHandler } from './protocol.js';
import type { RestartIntensity } from './restart-intensity.js';
import type { SocketAddress, TlsInfo, TransportConnection } from './transport.js';

/**
 * One live connection, as a protocol handler sees it. Handed to every {@link ProtocolHandler} hook.
 * `State` is the type of {@link Connection.data}, the handler's own per-connection state.
 */
export interface Connection<State = unknown> {
  /** Unique within the listener (and, with workers, across its processes). */
  readonly id: string;
  /** Name of the listener that accepted it. */
  readonly listener: string;
  /**
   * The local end. Read from the socket on first use and kept (a syscall that most connections
   * never need; Ranch's `sockname` is a call too). Once the socket has closed — in `onClose`,
   * whatever closed it — an address never read before can no longer be read and is
   * `{ family: 'unknown' }` (Node's `socket.localAddress` is `undefined` then). Read it in
   * `onReady` if `onClose` will want it.
   */
  readonly local: SocketAddress;
  /** The peer end; read on first use and kept, like `local` (Ranch's `peername`). */
  readonly remote: SocketAddress;
  /** TLS details (peer certificate, SNI servername, ALPN protocol), or `null` on plain transports. */
  readonly tls: TlsInfo | null;
  /** When the handshake completed (milliseconds since the epoch). */
  readonly openedAt: number;
  /** How many times a transient handler was restarted on this connection. */
  readonly restarts: number;
  /** Whether `close()` or `destroy()` has been called or the connection has ended. */
  readonly closed: boolean;
  /** Whether the connection still counts against `maxConnections`. */
  readonly counted: boolean;
  /** Bytes queued for the peer and not yet handed to the kernel. */
  readonly bufferedAmount: number;
  /** Whether the peer has ended its side (it sends no more; replies still reach it). */
  readonly peerEnded: boolean;
  /**
   * The handler's own per-connection state, `undefined` until the handler sets it (useful with a
   * shared handler object, typed through `ProtocolHandler<State>`). A transient restart starts
   * the fresh handler with `data` reset to `undefined`: state that survives a crash may be what
   * caused it.
   */
  data: State | undefined;
  /**
   * Small, serializable facts about the connection (a device id, a user name) that
   * `listener.connections()` reports, from every worker process. Keep it to a few entries.
   */
  readonly meta: Record<string, ConnectionMetaValue>;

  /**
   * Queue bytes for the peer. Returns `false` when the send buffer is over its high-water mark:
   * wait for {@link Connection.drained} before sending more. A handler that keeps sending past
   * `maxSendBuffer` gets its connection closed (reason `send_buffer_full`). Returns `false` and
   * drops the data once the connection is closed.
   */
  send(data: string | Uint8Array): boolean;
  /** Like {@link Connection.send}, wrapping `payload` with the listener's framing (`line` adds the line ending). */
  sendFrame(payload: string | Uint8Array): boolean;
  /** Resolves when the send buffer has drained (or the connection has closed). */
  drained(): Promise<void>;
  /**
   * Close gracefully: stop delivering frames, flush what was sent, end the stream. The socket is
   * destroyed if the flush takes longer than the listener's `shutdownTimeout`. Resolves once closed.
   * Sends after this return `false`.
   */
  close(): Promise<void>;
  /** Close at once, dropping anything unsent. */
  destroy(error?: Error): void;
  /** Stop reading from the peer (TCP pushes back). */
  pause(): void;
  /** Resume reading after {@link Connection.pause}. */
  resume(): void;
  /**
   * Set the idle timeout in milliseconds (`0` turns it off). By default any byte read or sent
   * restarts it; with `{ resetOn: 'read' }` only bytes from the peer do ("a peer silent for `ms`"),
   * so a connection the handler keeps writing to still times out when the peer has gone quiet.
   */
  setIdleTimeout(ms: number, options?: { resetOn?: 'io' | 'read' }): void;
  /** Turn TCP keep-alive on or off, where the transport has it. */
  setKeepAlive(enable: boolean, initialDelayMs?: number): void;
  /** Turn Nagle's algorithm off (`true`) or on, where the transport has it. */
  setNoDelay(noDelay?: boolean): void;
  /**
   * Stop counting this connection against `maxConnections` (Ranch's `remove_connection`), e.g. for
   * a long-lived, mostly idle subscription that should not block new clients. Idempotent.
   */
  removeFromCount(): void;
}

/** A value in {@link Connection.meta}. */
export type ConnectionMetaValue = string | number | boolean | null;

/**
 * A snapshot of one connection, as `listener.connections()` returns it.
 */
export interface ConnectionInfo {
  /** The connection's id: unique within the listener, across its worker processes too. */
  readonly id: string;
  /** Name of the listener that accepted it. */
  readonly listener: string;
  /** The local end ({@link Connection.local}); `{ family: 'unknown' }` if never read before the socket closed. */
  readonly local: SocketAddress;
  /** The peer end ({@link Connection.remote}); `{ family: 'unknown' }` if never read before the socket closed. */
  readonly remote: SocketAddress;
  /** What the TLS handshake negotiated, or `null` on plain transports. A subset of {@link TlsInfo}. */
  readonly tls: {
    /** Negotiated protocol version, e.g. `'TLSv1.3'`. */
    readonly protocol: string | null;
    /** The SNI server name the client asked for, or `null` if it sent none. */
    readonly servername: string | null;
    /** The ALPN protocol agreed on, or `null` if none was. */
    readonly alpnProtocol: string | null;
  } | null;
  /** When the handshake completed, in milliseconds since the epoch. */
  readonly openedAt: number;
  /** Bytes received from the peer and passed to the framing so far (the plaintext, for TLS). */
  readonly bytesRead: number;
  /**
   * Bytes queued for the peer with `send`/`sendFrame` so far (the plaintext, for TLS), whether or
   * not they have reached the kernel yet. Sends refused once the connection closed are not counted.
   */
  readonly bytesWritten: number;
  /** Whether the connection still counts against `maxConnections` (`false` after `removeFromCount()`). */
  readonly counted: boolean;
  /** How many times a transient handler was restarted on this connection. */
  readonly restarts: number;
  /** The id of the process that holds the connection (a worker's, for a worker pool). */
  readonly pid: number;
  /** A copy of {@link Connection.meta}. */
  readonly meta: Readonly<Record<string, ConnectionMetaValue>>;
}

/**
 * What a connection needs from the supervisor that owns it. @internal
 */
export interface ConnectionOwner {
  readonly listenerName: string;
  readonly framing: Framing;
  readonly shutdownTimeout: number;
  readonly maxSendBuffer: number;
  /** When set, every hook runs inside this storage with the connection's context. */
  readonly context: AsyncLocalStorage<ConnectionContext> | undefined;
  /**
   * A hook threw or rejected: count and report it. With `restartable` (the hook's policy allows a
   * transient restart), returns a fresh handler to restart with, or `undefined`.
   */
  crashed(conn: SupervisedConnection, hook: HandlerHook, error: unknown, restartable: boolean): ProtocolHandler | undefined;
  /** Called once, after `onClose`, when the stream has closed. */
  closed(conn: SupervisedConnection, reason: CloseReason): void;
}

/**
 * The connection implementation: one ordered queue of what happens to a connection — its frames,
 * its peer's end, a drain's request — handled one at a time through the {@link HookRunner};
 * backpressure, the idle timer and the bounded close. See `ProtocolHandler` for the contract.
 * @internal
 */
export class SupervisedConnection implements Connection {
  readonly id: string;
  readonly listener: string;
  readonly tls: TlsInfo | null;
  readonly openedAt = Date.now();
  data: unknown = undefined;
  private metaRecord: Record<string, ConnectionMetaValue> | undefined = undefined;
  restarts = 0;
  /** Restart-intensity window, created on the first restart. */
  intensity: RestartIntensity | undefined = undefined;
  handler!: ProtocolHandler;

  private readonly stream: Duplex;
  /** Addresses, read from the socket on first use (a syscall each, which most connections never need). */
  private localAddress: SocketAddress | undefined = undefined;
  private remoteAddress: SocketAddress | undefined = undefined;
  private readonly framer: Framer;
  private readonly transport: TransportConnection;
  private readonly hooks: HookRunner;
  private bytesIn = 0;
  private bytesOut = 0;
  /** The handler asked to stop reading. */
  private userPaused = false;
  /** close()/destroy() was called or the stream closed: no more events, no more sends. */
  private closing = false;
  private finished = false;
  private reason: CloseReason | undefined = undefined;
  /** The peer ended its side; its end is handled after every frame read before it. */
  private ended = false;
  private endHandled = false;
  /** A drain asked this connection to shut down; handled once no hook is pending, before further frames. */
  private shutdownDue = false;
  private shutdownRequested = false;
  private shutdownDeadline = 0;
  /** `onCrash` is answering a crash (it never answers its own). */
  private answeringCrash = false;
  private idleMs = 0;
  /** Only bytes read restart the idle timer (`setIdleTimeout(ms, { resetOn: 'read' })`). */
  private idleOnReadOnly = false;
  private idleTimer: NodeJS.Timeout | undefined = undefined;
  /** Bounds a graceful close's flush, and a half-open connection's `onRemoteClose`. */
  private lingerTimer: NodeJS.Timeout | undefined = undefined;
  private closePromise: Promise<void> | undefined = undefined;
  private resolveClosed: (() => void) | undefined = undefined;

  constructor(
    private readonly owner: ConnectionOwner,
    id: string,
    transport: TransportConnection,
    /** Its slot of `maxConnections`, released when it closes or leaves the count. */
    private readonly lease: Lease,
  ) {
    this.id = id;
    this.listener = owner.listenerName;
    this.transport = transport;
    this.stream = transport.stream;
    this.tls = transport.tls;
    this.framer = owner.framing.createFramer();
    this.hooks = new HookRunner(
      (hook, error) => this.crashed(hook, error),
      () => this.pump(),
    );
    const s = this.stream;
    const als = owner.context;
    if (als === undefined) {
      s.on('data', (chunk: Buffer) => this.onData(chunk));
      s.on('end', () => this.onEnd());
      s.on('error', (err: Error) => this.onStreamError(err));
      s.on('close', () => this.onStreamClose());
    } else {
      const store: ConnectionContext = { listener: this.listener, connection: id };
      s.on('data', (chunk: Buffer) => als.run(store, () => this.onData(chunk)));
      s.on('end', () => als.run(store, () => this.onEnd()));
      s.on('error', (err: Error) => als.run(store, () => this.onStreamError(err)));
      s.on('close', () => als.run(store, () => this.onStreamClose()));
    }
    s.on('drain', () => this.touch());
  }

  /** Run `fn` in this connection's context (when contexts are on). @internal */
  inContext(fn: () => void): void {
    const als = this.owner.context;
    if (als === undefined) fn();
    else als.run({ listener: this.listener, connection: this.id }, fn);
  }

  get local(): SocketAddress {
    return (this.localAddress ??= this.transport.local);
  }

  get remote(): SocketAddress {
    return (this.remoteAddress ??= this.transport.remote);
  }

  get closed(): boolean {
    return this.closing;
  }

  get counted(): boolean {
    return !this.lease.released;
  }

  get peerEnded(): boolean {
    return this.ended;
  }

  get meta(): Record<string, ConnectionMetaValue> {
    // Created on first use: most connections never carry any.
    return (this.metaRecord ??= {});
  }

  get bufferedAmount(): number {
    return this.stream.writableLength;
  }

  /** Start the handler: `onReady`, then reading. @internal */
  start(handler: ProtocolHandler, idleTimeout: number): void {
    this.handler = handler;
    if (idleTimeout > 0) this.setIdleTimeout(idleTimeout);
    this.runReady();
    this.pump();
  }

  info(): ConnectionInfo {
    const t = this.tls;
    return {
      id: this.id,
      listener: this.listener,
      local: this.local,
      remote: this.remote,
      tls: t ? { protocol: t.protocol, servername: t.servername, alpnProtocol: t.alpnProtocol } : null,
      openedAt: this.openedAt,
      bytesRead: this.bytesIn,
      bytesWritten: this.bytesOut,
      counted: this.counted,
      restarts: this.restarts,
      pid: process.pid,
      meta: this.metaRecord ? { ...this.metaRecord } : {},
    };
  }

  // ---- sending -------------------------------------------------------------------------------

  send(data: string | Uint8Array): boolean {
    if (this.closing) return false;
    this.bytesOut += typeof data === 'string' ? Buffer.byteLength(data) : data.byteLength;
    const ok = this.stream.write(data);
    if (this.idleTimer && !this.idleOnReadOnly) this.idleTimer.refresh();
    if (!ok && this.stream.writableLength > this.owner.maxSendBuffer) this.overflow();
    return ok && !this.closing;
  }

  sendFrame(payload: string | Uint8Array): boolean {
    if (this.closing) return false;
    const encoded = this.owner.framing.encode(payload);
    if (encoded instanceof Uint8Array) return this.send(encoded);
    if (encoded.length === 1) return this.send(encoded[0]!);
    // Several pieces: write them as one chunk when small, to keep one syscall per frame.
    let total = 0;
    for (const part of encoded) total += part.byteLength;
    return this.send(Buffer.concat(encoded as Uint8Array[], total));
  }

  drained(): Promise<void> {
    const s = this.stream;
    if (this.finished || !s.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        s.off('drain', done);
        s.off('close', done);
        resolve();
      };
      s.on('drain', done);
      s.on('close', done);
    });
  }

  private overflow(): void {
    this.reason ??= 'send_buffer_full';
    this.destroy(
      new CorralError(
        'CORRAL_SEND_BUFFER_FULL',
        `connection ${this.id}: more than ${this.owner.maxSendBuffer} bytes queued for a peer that does not read`,
      ),
    );
  }

  // ---- the queue -----------------------------------------------------------------------------

  pause(): void {
    this.userPaused = true;
    this.stream.pause();
  }

  resume(): void {
    this.userPaused = false;
    this.pump();
  }

  private onData(chunk: Buffer): void {
    if (this.closing) return; // draining input while closing: discard
    this.bytesIn += chunk.length;
    if (this.idleTimer) this.idleTimer.refresh();
    this.framer.push(chunk);
    this.pump();
  }

  private onEnd(): void {
    if (this.closing) return;
    this.ended = true;
    this.pump();
  }

  /**
   * Handle what is due, one event at a time, while no holding hook is pending: a drain's request
   * first, then frames in order, then the peer's end once no frame is left before it. Then set the
   * stream's flow to match.
   */
  private pump(): void {
    while (!this.hooks.holding && !this.finished) {
      if (this.shutdownDue) {
        this.shutdownDue = false;
        this.runShutdown();
        continue;
      }
      if (this.closing || this.userPaused) break;
      let frame: Buffer | undefined;
      try {
        frame = this.framer.next();
      } catch (err) {
        this.frameError(err as Error);
        continue;
      }
      if (frame !== undefined) {
        const handler = this.handler;
        if (handler.onFrame !== undefined) this.hooks.run('onFrame', () => handler.onFrame!(frame, this));
        continue;
      }
      if (this.ended && !this.endHandled) {
        this.endHandled = true;
        this.runRemoteClose();
        continue;
      }
      break;
    }
    if (this.closing || this.finished) return;
    if (this.hooks.holding || this.userPaused) this.stream.pause();
    else this.stream.resume();
  }

  private runReady(): void {
    const handler = this.handler;
    if (handler.onReady !== undefined) this.hooks.run('onReady', () => handler.onReady!(this));
  }

  private frameError(error: Error): void {
    this.reason ??= 'frame_error';
    const handler = this.handler;
    if (handler.onFrameError === undefined) {
      void this.close();
      return;
    }
    this.hooks.run(
      'onFrameError',
      () => handler.onFrameError!(error, this),
      () => void this.close(),
    );
  }

  /**
   * The peer ended its side and every frame before its end is handled: `onRemoteClose`, then the
   * connection closes when it settles — at the latest `shutdownTimeout` later.
   */
  private runRemoteClose(): void {
    this.reason ??= 'remote';
    const handler = this.handler;
    if (handler.onRemoteClose === undefined) {
      void this.close();
      return;
    }
    this.armLinger();
    this.hooks.run(
      'onRemoteClose',
      () => handler.onRemoteClose!(this),
      () => void this.close(),
    );
  }

  private crashed(hook: HandlerHook, error: unknown): void {
    const policy = HOOK_POLICIES[hook].crash;
    const fresh = this.owner.crashed(this, hook, error, policy === 'restart' && !this.closing);
    if (policy === 'count') return;
    const handler = this.handler;
    if (handler.onCrash === undefined || this.answeringCrash || this.closing) {
      this.afterCrash(fresh);
      return;
    }
    // Let the handler answer the crash (an error reply) before its connection closes or restarts,
    // within shutdownTimeout.
    this.answeringCrash = true;
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      this.answeringCrash = false;
      this.afterCrash(fresh);
    };
    const timer = setTimeout(finish, this.owner.shutdownTimeout);
    timer.unref();
    this.hooks.run('onCrash', () => handler.onCrash!(error, this, { hook, restarted: fresh !== undefined }), finish);
  }

  /** After a crash (and its answer): a fresh handler takes over, or the connection closes. */
  private afterCrash(fresh: ProtocolHandler | undefined): void {
    if (fresh !== undefined && !this.closing) {
      this.restarts++;
      // A fresh handler starts from fresh state, shared-object handlers included.
      this.data = undefined;
      this.handler = fresh;
      this.runReady();
      this.pump();
      return;
    }
    this.reason ??= 'crash';
    void this.close();
  }

  private onStreamError(err: Error): void {
    if (this.finished) return;
    this.reason ??= 'error';
    const handler = this.handler;
    if (handler !== undefined && handler.onError !== undefined) this.hooks.run('onError', () => handler.onError!(err, this));
    this.destroy();
  }

  // ---- idle ----------------------------------------------------------------------------------

  setIdleTimeout(ms: number, options: { resetOn?: 'io' | 'read' } = {}): void {
    if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`idle timeout must be a finite number >= 0, got ${ms}`);
    if (options.resetOn !== undefined && options.resetOn !== 'io' && options.resetOn !== 'read') {
      throw new RangeError(`idle timeout resetOn must be 'io' or 'read', got ${String(options.resetOn)}`);
    }
    this.idleMs = ms;
    if (options.resetOn !== undefined) this.idleOnReadOnly = options.resetOn === 'read';
    if (this.idleTimer) {
      clearTimeout(this.idleTimer);
      this.idleTimer = undefined;
    }
    if (ms > 0 && !this.closing) {
      this.idleTimer = setTimeout(() => this.inContext(() => this.onIdle()), ms);
      this.idleTimer.unref();
    }
  }

  /** The send buffer drained: counts as activity unless only reads reset the idle timer. */
  private touch(): void {
    if (this.idleTimer && !this.idleOnReadOnly) this.idleTimer.refresh();
  }

  private onIdle(): void {
    this.idleTimer = undefined;
    if (this.closing) return;
    // Re-arm so a handler that keeps the connection open is told again after another period.
    if (this.idleMs > 0) this.setIdleTimeout(this.idleMs);
    // A hook at work (waiting on its own I/O) is not idleness.
    if (this.hooks.holding) return;
    const handler = this.handler;
    if (handler.onIdle === undefined) {
      this.reason ??= 'idle';
      void this.close();
      return;
    }
    this.hooks.run('onIdle', () => handler.onIdle!(this));
  }

  setKeepAlive(enable: boolean, initialDelayMs?: number): void {
    this.transport.setKeepAlive?.(enable, initialDelayMs);
  }

  setNoDelay(noDelay = true): void {
    this.transport.setNoDelay?.(noDelay);
  }

  // ---- counting and shutdown -----------------------------------------------------------------

  removeFromCount(): void {
    this.lease.release();
  }

  /**
   * The listener is draining: once no hook is pending (its replies are sent), and before any
   * frame not yet delivered, run `onShutdown` (default: close). @internal
   */
  requestShutdown(deadline: number): void {
    if (this.closing || this.shutdownRequested) return;
    this.shutdownRequested = true;
    this.shutdownDeadline = deadline;
    this.shutdownDue = true;
    this.pump();
  }

  private runShutdown(): void {
    const handler = this.handler;
    if (handler.onShutdown === undefined) {
      this.reason ??= 'shutdown';
      void this.close();
      return;
    }
    this.hooks.run('onShutdown', () => handler.onShutdown!(this, { deadline: this.shutdownDeadline }));
  }

  /** The handler could not be created (factory or constructor threw): close now, as a crash. @internal */
  abortCrashed(): void {
    this.reason ??= 'crash';
    this.destroy();
  }

  /** The drain deadline passed: close now. @internal */
  forceClose(): void {
    this.reason ??= 'shutdown';
    this.destroy();
  }

  close(): Promise<void> {
    if (this.closePromise) return this.closePromise;
    this.closePromise = new Promise<void>((resolve) => {
      this.resolveClosed = resolve;
    });
    if (this.finished) {
      this.resolveClosed?.();
      return this.closePromise;
    }
    this.reason ??= this.shutdownRequested ? 'shutdown' : 'local';
    this.closing = true;
    this.clearIdle();
    const s = this.stream;
    // Keep reading (and discarding) so the peer's FIN is seen; bound the whole flush.
    s.resume();
    s.end();
    this.armLinger();
    return this.closePromise;
  }

  /** Destroy the stream if it has not closed within `shutdownTimeout` (from the first call). */
  private armLinger(): void {
    if (this.lingerTimer !== undefined) return;
    this.lingerTimer = setTimeout(() => this.stream.destroy(), this.owner.shutdownTimeout);
    this.lingerTimer.unref();
  }

  destroy(error?: Error): void {
    if (this.finished) return;
    this.reason ??= error ? 'error' : 'local';
    this.closing = true;
    this.clearIdle();
    this.stream.destroy(error);
  }

  private clearIdle(): void {
    if (this.idleTimer) {
      clearTimeout(this.idleTimer);
      this.idleTimer = undefined;
    }
  }

  private onStreamClose(): void {
    if (this.finished) return;
    this.finished = true;
    this.closing = true;
    this.clearIdle();
    if (this.lingerTimer) clearTimeout(this.lingerTimer);
    const reason = this.reason ?? 'remote';
    const handler = this.handler;
    if (handler !== undefined && handler.onClose !== undefined) this.hooks.run('onClose', () => handler.onClose!(this, reason));
    this.lease.release();
    this.owner.closed(this, reason);
    this.resolveClosed?.();
  }
}
