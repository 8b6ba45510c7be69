import type { AsyncLocalStorage } from 'node:async_hooks';
import type { Duplex } from 'node:stream';
import type { ConnectionContext } from './connection-context.js';
import { CorralError } from './errors.js';
import type { Framer, Framing } from './framing/framer.js';
import type { Lease } from './acceptor-pool/lease.js';
import type { CloseReason, ProtocolHandler } from './protocol.js';
import type { RestartIntensity } from './restart-intensity.js';
import type { SocketAddress, TlsInfo, TransportConnection } from './transport.js';

/**
 * One live connection, as a protocol handler sees it. Handed to every {@link ProtocolHandler} hook.
 */
export interface Connection {
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
  /** A slot for the handler's own per-connection state (useful with a shared handler object). */
  data: unknown;
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
  readonly id: string;
  readonly listener: string;
  readonly local: SocketAddress;
  readonly remote: SocketAddress;
  readonly tls: { readonly protocol: string | null; readonly servername: string | null; readonly alpnProtocol: string | null } | null;
  readonly openedAt: number;
  readonly bytesRead: number;
  readonly bytesWritten: number;
  readonly counted: boolean;
  readonly restarts: number;
  readonly pid: number;
  /** A copy of {@link Connection.meta}. */
  readonly meta: Readonly<Record<string, ConnectionMetaValue>>;
}

/** Which hook was running when a handler crashed. */
export type HandlerHook = keyof ProtocolHandler;

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
  /** Called when a hook throws or rejects; returns a fresh handler to restart with, or `undefined`. */
  crashed(conn: SupervisedConnection, hook: HandlerHook, error: unknown): ProtocolHandler | undefined;
  /** Called once, after `onClose`, when the stream has closed. */
  closed(conn: SupervisedConnection, reason: CloseReason): void;
}

type Hook = (conn: Connection) => void | Promise<void>;

function isThenable(v: unknown): v is PromiseLike<void> {
  return typeof v === 'object' && v !== null && typeof (v as PromiseLike<void>).then === 'function';
}

/**
 * The connection implementation: the read loop, backpressure, idle timer and bounded close. @internal
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
  private bytesIn = 0;
  private bytesOut = 0;
  /** A hook's promise is pending: frames wait. */
  private busy = false;
  /** The handler asked to stop reading. */
  private userPaused = false;
  /** close()/destroy() was called or the stream ended: no more frames, no more sends. */
  private closing = false;
  private finished = false;
  private reason: CloseReason | undefined = undefined;
  private idleMs = 0;
  /** Only bytes read restart the idle timer (`setIdleTimeout(ms, { resetOn: 'read' })`). */
  private idleOnReadOnly = false;
  private idleTimer: NodeJS.Timeout | undefined = undefined;
  private lingerTimer: NodeJS.Timeout | undefined = undefined;
  private closePromise: Promise<void> | undefined = undefined;
  private resolveClosed: (() => void) | undefined = undefined;
  private shutdownRequested = false;

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
    this.runHook('onReady', handler.onReady);
    if (!this.busy) this.pump();
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

  // ---- reading -------------------------------------------------------------------------------

  pause(): void {
    this.userPaused = true;
    this.stream.pause();
  }

  resume(): void {
    this.userPaused = false;
    if (!this.busy && !this.closing) this.pump();
  }

  private onData(chunk: Buffer): void {
    if (this.closing) return; // draining input while closing: discard
    this.bytesIn += chunk.length;
    if (this.idleTimer) this.idleTimer.refresh();
    this.framer.push(chunk);
    this.pump();
  }

  /**
   * Deliver buffered frames one at a time until the framer needs more bytes, a hook goes async,
   * or the handler paused; then set the stream's flow to match.
   */
  private pump(): void {
    const framer = this.framer;
    while (!this.busy && !this.closing && !this.userPaused) {
      let frame: Buffer | undefined;
      try {
        frame = framer.next();
      } catch (err) {
        this.frameError(err as Error);
        return;
      }
      if (frame === undefined) break;
      const onFrame = this.handler.onFrame;
      if (onFrame === undefined) continue;
      let ret: void | Promise<void>;
      try {
        ret = onFrame.call(this.handler, frame, this);
      } catch (err) {
        this.crash('onFrame', err);
        continue;
      }
      if (isThenable(ret)) this.await(ret, 'onFrame');
    }
    if (this.closing) return;
    if (this.busy || this.userPaused) this.stream.pause();
    else this.stream.resume();
  }

  private await(ret: PromiseLike<void>, hook: HandlerHook): void {
    this.busy = true;
    this.stream.pause();
    ret.then(
      () => {
        this.busy = false;
        if (!this.closing) this.pump();
      },
      (err: unknown) => {
        this.busy = false;
        this.crash(hook, err);
        if (!this.closing) this.pump();
      },
    );
  }

  /** Run a lifecycle hook with crash containment; async hooks hold the frame queue. */
  private runHook(name: HandlerHook, hook: Hook | undefined): void {
    if (hook === undefined) return;
    let ret: void | Promise<void>;
    try {
      ret = hook.call(this.handler, this);
    } catch (err) {
      this.crash(name, err);
      return;
    }
    if (isThenable(ret)) this.await(ret, name);
  }

  private crash(hook: HandlerHook, error: unknown): void {
    const fresh = this.owner.crashed(this, hook, error);
    if (fresh !== undefined && !this.closing) {
      this.restarts++;
      // A fresh handler starts from fresh state, shared-object handlers included.
      this.data = undefined;
      this.handler = fresh;
      this.runHook('onReady', fresh.onReady);
      return;
    }
    this.reason ??= 'crash';
    void this.close();
  }

  private frameError(error: Error): void {
    this.reason ??= 'frame_error';
    const hook = this.handler.onFrameError;
    if (hook === undefined) {
      void this.close();
      return;
    }
    let ret: void | Promise<void>;
    try {
      ret = hook.call(this.handler, error, this);
    } catch (err) {
      this.owner.crashed(this, 'onFrameError', err);
      void this.close();
      return;
    }
    if (isThenable(ret)) {
      this.stream.pause();
      this.busy = true;
      ret.then(
        () => void this.close(),
        (err: unknown) => {
          this.owner.crashed(this, 'onFrameError', err);
          void this.close();
        },
      );
    } else {
      void this.close();
    }
  }

  private onEnd(): void {
    if (this.closing) return;
    this.reason ??= 'remote';
    const hook = this.handler.onRemoteClose;
    if (hook === undefined) {
      void this.close();
      return;
    }
    this.runHook('onRemoteClose', hook);
  }

  private onStreamError(err: Error): void {
    if (this.finished) return;
    this.reason ??= 'error';
    const hook = this.handler.onError;
    if (hook !== undefined) {
      try {
        const ret = hook.call(this.handler, err, this);
        if (isThenable(ret)) ret.then(undefined, (e: unknown) => this.owner.crashed(this, 'onError', e));
      } catch (e) {
        this.owner.crashed(this, 'onError', e);
      }
    }
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
      this.idleTimer = setTimeout(() => this.onIdle(), ms);
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
    const hook = this.handler.onIdle;
    if (hook === undefined) {
      this.reason ??= 'idle';
      void this.close();
      return;
    }
    // Re-arm so a handler that keeps the connection open is told again after another period.
    if (this.idleMs > 0) this.setIdleTimeout(this.idleMs);
    this.runHook('onIdle', hook);
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

  /** The listener is draining: run `onShutdown` once (default: close). @internal */
  requestShutdown(deadline: number): void {
    if (this.closing || this.shutdownRequested) return;
    this.shutdownRequested = true;
    const hook = this.handler.onShutdown;
    if (hook === undefined) {
      this.reason ??= 'shutdown';
      void this.close();
      return;
    }
    let ret: void | Promise<void>;
    try {
      ret = hook.call(this.handler, this, { deadline });
    } catch (err) {
      this.owner.crashed(this, 'onShutdown', err);
      this.reason ??= 'shutdown';
      void this.close();
      return;
    }
    if (isThenable(ret)) {
      ret.then(undefined, (err: unknown) => {
        this.owner.crashed(this, 'onShutdown', err);
        this.reason ??= 'shutdown';
        void this.close();
      });
    }
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
    this.reason ??= 'local';
    this.closing = true;
    this.clearIdle();
    const s = this.stream;
    // Keep reading (and discarding) so the peer's FIN is seen; bound the whole flush.
    s.resume();
    s.end();
    this.lingerTimer = setTimeout(() => s.destroy(), this.owner.shutdownTimeout);
    this.lingerTimer.unref();
    return this.closePromise;
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
    const hook = this.handler?.onClose;
    if (hook !== undefined) {
      try {
        const ret = hook.call(this.handler, this, reason);
        if (isThenable(ret)) ret.then(undefined, (e: unknown) => this.owner.crashed(this, 'onClose', e));
      } catch (e) {
        this.owner.crashed(this, 'onClose', e);
      }
    }
    this.lease.release();
    this.owner.closed(this, reason);
    this.resolveClosed?.();
  }
}
