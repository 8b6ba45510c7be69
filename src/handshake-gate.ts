import type { AcceptorPool, AcceptorPoolStats, HandshakeFailure, RejectReason } from './acceptor-pool.js';
import { CorralError } from './errors.js';
import { AUTO_HANDSHAKES, HandshakeWindow } from './handshake-window.js';
import type { ResolvedListenerOptions } from './options.js';
import type { AcceptedSocket, Transport, TransportConnection } from './transport.js';
import { WaitQueue } from './wait-queue.js';

/** Settings of a {@link HandshakeGate}: the listener's admission options. @internal */
export type HandshakeGateOptions = Pick<
  ResolvedListenerOptions,
  'maxConnections' | 'maxHandshakes' | 'handshakeTimeout' | 'maxWaiting' | 'waitTimeout' | 'admission' | 'adaptiveTarget'
>;

/** What the gate reports to its listener. @internal */
export interface HandshakeGateEvents {
  /** A handshake completed; the connection already counts against `maxConnections`. */
  handshaken(conn: TransportConnection, socket: AcceptedSocket, startedAt: number): void;
  handshakeFailed(socket: AcceptedSocket, kind: HandshakeFailure, error: Error): void;
  rejected(socket: AcceptedSocket, reason: RejectReason): void;
  /** Any gauge changed (for `waitForConnections`). */
  changed(): void;
  /**
   * Whether a `rejected`/`handshakeFailed` report would carry the peer's address; if so the gate
   * reads it at accept, while it can still be read.
   */
  wantsPeerAddress(): boolean;
  /**
   * The wait queue overflowed (`true`: a socket found it full) or has room again (`false`: down to
   * three quarters of `maxWaiting`, or with `maxWaiting` 0 a slot is free). Called on each edge only.
   */
  overflowed(full: boolean): void;
}

function isThenable<T>(v: unknown): v is PromiseLike<T> {
  return typeof v === 'object' && v !== null && typeof (v as PromiseLike<T>).then === 'function';
}

/**
 * The acceptor pool of one process: a bounded set of handshake slots in front of a bounded,
 * policy-ordered {@link WaitQueue} of paused sockets. @internal
 */
export class HandshakeGate implements AcceptorPool {
  private limit: number;
  private readonly fixedHandshakes: number | undefined;
  private readonly window: HandshakeWindow | undefined;
  private readonly queue: WaitQueue<AcceptedSocket>;
  private readonly inFlight = new Set<AcceptedSocket>();
  private idleWaiters: (() => void)[] = [];
  private expiryTimer: NodeJS.Timeout | undefined = undefined;
  private closed = false;
  /** A socket found the queue full, and it has not had room since. */
  private overflowing = false;
  private accepted = 0;
  private counted = 0;
  private readonly rejected: Record<RejectReason, number> = { queue_full: 0, wait_timeout: 0, shutdown: 0 };
  private readonly failures: Record<HandshakeFailure, number> = { timeout: 0, error: 0 };

  constructor(
    private readonly transport: Transport,
    private readonly options: HandshakeGateOptions,
    private readonly events: HandshakeGateEvents,
  ) {
    this.limit = options.maxConnections;
    if (options.maxHandshakes === 'auto') {
      this.window = new HandshakeWindow(AUTO_HANDSHAKES, () => this.slotsBound(), () => this.pump());
    } else {
      this.fixedHandshakes = options.maxHandshakes;
    }
    this.queue = new WaitQueue(options.maxWaiting, options.admission, options.adaptiveTarget);
  }

  get maxConnections(): number {
    return this.limit;
  }

  /** How many handshakes may run at once now (with `'auto'`, the current window). */
  get maxHandshakes(): number {
    return this.window ? this.window.size : this.fixedHandshakes!;
  }

  set maxConnections(n: number) {
    this.limit = n;
    this.pump();
  }

  get stats(): AcceptorPoolStats {
    return {
      accepted: this.accepted,
      handshaking: this.inFlight.size,
      waiting: this.queue.length,
      counted: this.counted,
      rejected: { ...this.rejected },
      handshakeFailures: { ...this.failures },
    };
  }

  admit(socket: AcceptedSocket): void {
    this.accepted++;
    // Read the peer address while the socket is open: a net.Socket remembers it once read, but
    // one destroyed before it was read reports undefined, and `reject`/`handshakeError` events
    // (emitted after the socket is closed) would lose it. It costs a getpeername(2) per accept, so
    // only when someone listens for those events.
    if (this.events.wantsPeerAddress()) {
      void socket.remoteAddress;
      void socket.remotePort;
    }
    if (this.closed) {
      this.reject(socket, 'shutdown');
      return;
    }
    const now = Date.now();
    if (this.queue.length === 0 && this.canStart()) {
      this.startHandshake(socket);
    } else if (this.queue.push(socket, now)) {
      if (this.window && this.slotsBound()) this.window.noteSaturated();
      this.armExpiry(now);
      this.events.changed();
    } else {
      this.reject(socket, 'queue_full');
      if (!this.overflowing) {
        this.overflowing = true;
        this.events.overflowed(true);
      }
    }
  }

  release(): void {
    this.counted--;
    this.pump();
    this.events.changed();
  }

  close(): void {
    this.closed = true;
    this.window?.stop();
    this.clear();
  }

  /** Close every waiting socket (rejected as `shutdown`) and abort running handshakes; keep admitting. */
  clear(): void {
    this.rejectWaiting();
    for (const socket of [...this.inFlight]) socket.destroy();
  }

  /** Close every waiting socket (rejected as `shutdown`); let running handshakes finish. */
  rejectWaiting(): void {
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    this.expiryTimer = undefined;
    for (const socket of this.queue.clear()) this.reject(socket, 'shutdown');
    this.checkRoom();
  }

  /** Resolves once no handshake is running. */
  whenNoHandshakes(): Promise<void> {
    if (this.inFlight.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private settleIdleWaiters(): void {
    if (this.inFlight.size > 0 || this.idleWaiters.length === 0) return;
    for (const w of this.idleWaiters.splice(0)) w();
  }

  private canStart(): boolean {
    const h = this.inFlight.size;
    return h < this.maxHandshakes && h + this.counted < this.limit;
  }

  /** Sockets wait because every handshake slot is taken (not because of `maxConnections`). */
  private slotsBound(): boolean {
    return this.queue.length > 0 && this.inFlight.size >= this.maxHandshakes && this.inFlight.size + this.counted < this.limit;
  }

  /** Serve waiting sockets while slots are free. */
  private pump(): void {
    if (!this.closed && this.queue.length > 0) {
      const now = Date.now();
      let served = false;
      while (this.queue.length > 0 && this.canStart()) {
        this.startHandshake(this.queue.take(now)!);
        served = true;
      }
      if (this.window && this.slotsBound()) this.window.noteSaturated();
      if (served) this.events.changed();
    }
    this.checkRoom();
  }

  /** After an overflow: report once the queue has room again. */
  private checkRoom(): void {
    if (!this.overflowing) return;
    const max = this.options.maxWaiting;
    const room = this.closed || (max > 0 ? this.queue.length <= Math.floor((max * 3) / 4) : this.canStart());
    if (!room) return;
    this.overflowing = false;
    this.events.overflowed(false);
  }

  private startHandshake(socket: AcceptedSocket): void {
    const startedAt = Date.now();
    this.inFlight.add(socket);
    let result: Promise<TransportConnection> | TransportConnection;
    try {
      result = this.transport.handshake(socket);
    } catch (err) {
      this.failed(socket, 'error', err, undefined);
      return;
    }
    if (!isThenable<TransportConnection>(result)) {
      this.succeeded(socket, result, startedAt, undefined);
      return;
    }
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      socket.destroy();
    }, this.options.handshakeTimeout);
    result.then(
      (conn) => this.succeeded(socket, conn, startedAt, timer),
      (err: unknown) => this.failed(socket, timedOut ? 'timeout' : 'error', err, timer),
    );
  }

  private succeeded(socket: AcceptedSocket, conn: TransportConnection, startedAt: number, timer: NodeJS.Timeout | undefined): void {
    if (timer) clearTimeout(timer);
    if (!this.inFlight.delete(socket)) {
      // Aborted by close() while the handshake was finishing.
      conn.stream.destroy();
      return;
    }
    this.counted++;
    this.window?.noteCompleted();
    this.events.handshaken(conn, socket, startedAt);
    this.settleIdleWaiters();
    this.pump();
    this.events.changed();
  }

  private failed(socket: AcceptedSocket, kind: HandshakeFailure, err: unknown, timer: NodeJS.Timeout | undefined): void {
    if (timer) clearTimeout(timer);
    this.inFlight.delete(socket);
    socket.destroy();
    this.failures[kind]++;
    this.settleIdleWaiters();
    const error =
      kind === 'timeout'
        ? new CorralError('CORRAL_HANDSHAKE_TIMEOUT', `handshake did not complete within ${this.options.handshakeTimeout} ms`, { cause: err })
        : err instanceof Error
          ? err
          : new CorralError('CORRAL_HANDSHAKE_FAILED', `handshake failed: ${String(err)}`);
    this.events.handshakeFailed(socket, kind, error);
    this.pump();
    this.events.changed();
  }

  private reject(socket: AcceptedSocket, reason: RejectReason): void {
    socket.destroy();
    this.rejected[reason]++;
    this.events.rejected(socket, reason);
  }

  private armExpiry(now: number): void {
    if (this.expiryTimer !== undefined) return;
    const oldest = this.queue.oldestSince;
    if (oldest === undefined) return;
    this.expiryTimer = setTimeout(() => this.expire(), Math.max(0, oldest + this.options.waitTimeout - now));
    this.expiryTimer.unref();
  }

  private expire(): void {
    this.expiryTimer = undefined;
    const now = Date.now();
    const expired = this.queue.expire(now - this.options.waitTimeout);
    for (const socket of expired) this.reject(socket, 'wait_timeout');
    if (expired.length > 0) this.events.changed();
    this.checkRoom();
    this.armExpiry(now);
  }
}
