import type { AsyncLocalStorage } from 'node:async_hooks';
import type { Duplex } from 'node:stream';
import type { Lease } from './acceptor-pool/lease.js';
import type { Connection, ConnectionInfo, ConnectionMetaValue, ConnectionProxy } from './connection.js';
import type { ConnectionContext } from './current-connection.js';
import { CorralError } from './errors.js';
import type { Framer, Framing } from './framing/framer.js';
import type { ProxyHeader } from './proxy-header/header.js';
import { HOOK_POLICIES, HookRunner } from './hook-runner.js';
import type { CloseReason, HandlerHook, ProtocolHandler } from './protocol.js';
import type { RestartIntensity } from './restart-intensity.js';
import type { SocketAddress, TlsInfo, TransportConnection } from './transport.js';
import { isThenable } from './is-thenable.js';

/**
 * A fresh handler to take over after a crash, and the `data` its creation left on the connection
 * (undefined unless its class constructor or factory set it). @internal
 */
export interface Restart {
  readonly handler: ProtocolHandler;
  readonly data: unknown;
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
   * transient restart), returns the fresh handler to restart with, or `undefined` (a factory or
   * constructor that throws then is counted and reported as a crash of its own).
   */
  crashed(conn: SupervisedConnection, hook: HandlerHook, error: unknown, restartable: boolean): Restart | undefined;
  /** The fresh handler `crashed` returned took over: count the restart. */
  restarted(conn: SupervisedConnection): void;
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
  private readonly proxyHeader: ProxyHeader | undefined;
  private proxyInfo: ConnectionProxy | undefined = undefined;
  /** Created by {@link SupervisedConnection.createFramer}, before the handler. */
  private framer!: Framer;
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
  /** Destroyed with bytes it had been asked to send still unsent (a drain does not count it graceful). @internal */
  unflushed = false;
  private closePromise: Promise<void> | undefined = undefined;
  private resolveClosed: (() => void) | undefined = undefined;

  constructor(
    private readonly owner: ConnectionOwner,
    id: string,
    transport: TransportConnection,
    /** Its slot of `maxConnections`, released when it closes or leaves the count. */
    private readonly lease: Lease,
    /** The PROXY header it began with. */
    proxyHeader: ProxyHeader | undefined,
  ) {
    this.proxyHeader = proxyHeader;
    this.id = id;
    this.listener = owner.listenerName;
    this.transport = transport;
    this.stream = transport.stream;
    this.tls = transport.tls;
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
    return (this.remoteAddress ??= clientOf(this.proxyHeader) ?? this.transport.remote);
  }

  get proxy(): ConnectionProxy | null {
    const header = this.proxyHeader;
    if (header === undefined) return null;
    return (this.proxyInfo ??= { header, peer: this.transport.remote });
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

  /**
   * Create this connection's framer. A custom framing's `createFramer` is user code: the supervisor
   * calls this where it contains a throw, never the constructor. @internal
   */
  createFramer(): void {
    this.framer = this.owner.framing.createFramer();
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
      proxyPeer: this.proxy?.peer ?? null,
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
    try {
      // A custom framer's push() is user code parsing the peer's bytes: a throw is a frame error
      // of this connection, as one from next() is, never an exception out of a 'data' event.
      this.framer.push(chunk);
    } catch (err) {
      this.frameError(err instanceof Error ? err : new Error(String(err)));
      return;
    }
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
        this.frameError(err instanceof Error ? err : new Error(String(err)));
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
    // Closed when it settles; if it crashed, once onCrash has answered (the crash closes it).
    this.hooks.run(
      'onFrameError',
      () => handler.onFrameError!(error, this),
      (ok) => {
        if (ok) void this.close();
      },
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
      (ok) => {
        if (ok) void this.close();
      },
    );
  }

  private crashed(hook: HandlerHook, error: unknown): void {
    const policy = HOOK_POLICIES[hook].crash;
    const restart = this.owner.crashed(this, hook, error, policy === 'restart' && !this.closing);
    if (policy === 'count') return;
    const handler = this.handler;
    if (handler.onCrash === undefined || this.answeringCrash || this.closing) {
      this.afterCrash(restart);
      return;
    }
    // Let the handler answer the crash (an error reply) before its connection closes or restarts,
    // within shutdownTimeout.
    this.answeringCrash = true;
    this.hooks.run(
      'onCrash',
      () => this.withinShutdownTimeout(handler.onCrash!(error, this, { hook, restarted: restart !== undefined })),
      () => {
        this.answeringCrash = false;
        this.afterCrash(restart);
      },
    );
  }

  /**
   * `onCrash`'s outcome, bounded by `shutdownTimeout`: a promise still pending then is abandoned —
   * it stops holding the queue, so the connection restarts or closes as if it had settled (a pending
   * hook would otherwise keep a restarted connection from reading, idling and closing, forever). A
   * rejection after that is still counted as a crash of `onCrash`.
   */
  private withinShutdownTimeout(answer: void | Promise<void>): void | Promise<void> {
    if (!isThenable(answer)) return answer;
    return new Promise<void>((resolve, reject) => {
      let abandoned = false;
      const timer = setTimeout(() => {
        abandoned = true;
        resolve();
      }, this.owner.shutdownTimeout);
      timer.unref();
      answer.then(
        () => {
          clearTimeout(timer);
          resolve();
        },
        (err: unknown) => {
          clearTimeout(timer);
          if (abandoned) this.crashed('onCrash', err);
          else reject(err);
        },
      );
    });
  }

  /** After a crash (and its answer): a fresh handler takes over, or the connection closes. */
  private afterCrash(restart: Restart | undefined): void {
    if (restart !== undefined && !this.closing) {
      this.restarts++;
      this.owner.restarted(this);
      // A fresh handler starts from fresh state, shared-object handlers included: `data` is what
      // its creation set (undefined unless its constructor or factory set it).
      this.data = restart.data;
      this.handler = restart.handler;
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

  /**
   * The connection could not start (a `connectionOpen` listener, `createFramer`, or the handler's
   * factory or constructor threw): close now, as a crash. Its slot is given back when the stream
   * closes, as for any connection. @internal
   */
  abortCrashed(): void {
    this.handler ??= {};
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
    this.lingerTimer = setTimeout(() => {
      this.noteUnflushed();
      this.stream.destroy();
    }, this.owner.shutdownTimeout);
    this.lingerTimer.unref();
  }

  destroy(error?: Error): void {
    if (this.finished) return;
    this.reason ??= error ? 'error' : 'local';
    this.closing = true;
    this.clearIdle();
    this.noteUnflushed();
    this.stream.destroy(error);
  }

  /** About to destroy the stream: were bytes it was asked to send still waiting? */
  private noteUnflushed(): void {
    if (this.stream.writableLength > 0) this.unflushed = true;
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

/** The client a PROXY header names, as a socket address; `undefined` if it names none. */
function clientOf(header: ProxyHeader | undefined): SocketAddress | undefined {
  if (header === undefined || header.command !== 'proxy') return undefined;
  switch (header.transport) {
    case 'tcp4':
    case 'udp4':
      return { family: 'IPv4', address: header.source.address, port: header.source.port };
    case 'tcp6':
    case 'udp6':
      return { family: 'IPv6', address: header.source.address, port: header.source.port };
    case 'unix':
    case 'unix-dgram':
      return { family: 'unix', path: header.source.path };
    default:
      return undefined;
  }
}
