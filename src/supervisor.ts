import { type ConnectionOwner, type Restart, SupervisedConnection } from './supervised-connection.js';
import type { HandlerHook } from './protocol.js';
import type { AsyncLocalStorage } from 'node:async_hooks';
import type { Lease } from './acceptor-pool/lease.js';
import type { ConnectionContext } from './current-connection.js';
import type { Framing } from './framing/framer.js';
import type { CloseReason, ProtocolHandler } from './protocol.js';
import { RestartIntensity } from './restart-intensity.js';
import type { ProxyHeader } from './proxy-header/header.js';
import type { TransportConnection } from './transport.js';
import type { RestartStrategy } from './options.js';
import { timerDelay } from './timer-delay.js';


/** Settings of a {@link ConnectionSupervisor}. @internal */
export interface SupervisorOptions {
  listenerName: string;
  idPrefix: string;
  framing: Framing;
  shutdownTimeout: number;
  idleTimeout: number;
  maxSendBuffer: number;
  restart: RestartStrategy;
  maxRestarts: number;
  period: number;
  createHandler: (conn: SupervisedConnection) => ProtocolHandler;
  /** Run hooks inside this storage (worker processes), so uncaught errors name their connection. */
  context?: AsyncLocalStorage<ConnectionContext> | undefined;
}

/** What the supervisor reports to its listener. @internal */
export interface SupervisorEvents {
  /** A connection opened, before its handler is created: `handshakeMs` is how long its handshake took. */
  opened(conn: SupervisedConnection, handshakeMs: number): void;
  crashed(conn: SupervisedConnection, hook: HandlerHook, error: unknown, restarted: boolean): void;
  /** A fresh handler took over a connection after a crash (`handlerRestarts` counted it). */
  restarted(conn: SupervisedConnection): void;
  closed(conn: SupervisedConnection, reason: CloseReason): void;
}


/** A drain's paced shutdown requests, under way. @internal */
export interface PacedShutdown {
  /** Ask no more. */
  stop(): void;
  /**
   * The drain's deadline moved to `sooner` (a `stop()` with a shorter one): ask those not asked yet
   * by `by` at the latest — faster than the pace, if that would not — telling them `sooner`.
   */
  hurry(by: number, sooner: number): void;
}

/**
 * The connection supervisor (Ranch's `ranch_conns_sup`): starts a handler per connection,
 * contains its crashes, applies the restart strategy, and shuts connections down on drain. @internal
 */
export class ConnectionSupervisor implements ConnectionOwner {
  readonly listenerName: string;
  readonly framing: Framing;
  readonly shutdownTimeout: number;
  readonly maxSendBuffer: number;
  readonly context: AsyncLocalStorage<ConnectionContext> | undefined;
  /** Live connections, in the order they opened (a Set is safe to iterate while it changes). */
  private readonly live = new Set<SupervisedConnection>();
  private nextId = 1;
  private crashes = 0;
  /** Connections destroyed with bytes still unsent, since the start (a drain counts them forced). */
  unflushedCloses = 0;
  private restarts = 0;
  private closedTotal = 0;
  private emptyWaiters: (() => void)[] = [];

  constructor(
    private readonly options: SupervisorOptions,
    private readonly events: SupervisorEvents,
  ) {
    this.listenerName = options.listenerName;
    this.framing = options.framing;
    this.shutdownTimeout = options.shutdownTimeout;
    this.maxSendBuffer = options.maxSendBuffer;
    this.context = options.context;
  }

  /** Live connections (counted or not). */
  get size(): number {
    return this.live.size;
  }

  get stats(): { readonly handlerCrashes: number; readonly handlerRestarts: number; readonly closed: number } {
    return { handlerCrashes: this.crashes, handlerRestarts: this.restarts, closed: this.closedTotal };
  }

  /** Every live connection, as a live view: safe to iterate while connections open and close. */
  get connections(): ReadonlySet<SupervisedConnection> {
    return this.live;
  }

  /** Every live connection. */
  all(): IterableIterator<SupervisedConnection> {
    return this.live.values();
  }

  /**
   * Start a handler on a handshaken connection that holds `lease`; its handshake began at
   * `handshakeStartedAt`. User code runs here — `connectionOpen` listeners, a custom framing's
   * `createFramer`, the handler's class or factory — and a throw from any of it is contained: a
   * crash of `onReady` with nothing to restart (see {@link ConnectionSupervisor.startFailed}).
   */
  start(transport: TransportConnection, lease: Lease, handshakeStartedAt: number, proxy?: ProxyHeader): SupervisedConnection {
    const conn = new SupervisedConnection(this, this.options.idPrefix + String(this.nextId++), transport, lease, proxy);
    this.live.add(conn);
    try {
      this.events.opened(conn, Date.now() - handshakeStartedAt);
    } catch (err) {
      this.startFailed(conn, err);
      return conn;
    }
    conn.inContext(() => {
      let handler: ProtocolHandler;
      try {
        conn.createFramer();
        handler = this.options.createHandler(conn);
      } catch (err) {
        this.startFailed(conn, err);
        return;
      }
      conn.start(handler, this.options.idleTimeout);
    });
    return conn;
  }

  /**
   * A connection could not start: close it at once (its stream is destroyed; its lease is released
   * when the stream closes, as for every connection), then count and report a crash of `onReady`.
   * Closing first keeps the slot from leaking even if a `handlerCrash` listener throws.
   */
  private startFailed(conn: SupervisedConnection, error: unknown): void {
    conn.abortCrashed();
    this.crashes++;
    this.events.crashed(conn, 'onReady', error, false);
  }

  crashed(conn: SupervisedConnection, hook: HandlerHook, error: unknown, restartable: boolean): Restart | undefined {
    this.crashes++;
    let restart: Restart | undefined;
    let createFailed: { error: unknown } | undefined;
    if (this.options.restart === 'transient' && restartable) {
      conn.intensity ??= new RestartIntensity(this.options.maxRestarts, this.options.period);
      if (conn.intensity.tryRestart()) {
        // Made now, taking over after onCrash: it is made with `data` undefined, and what it sets
        // there is kept for it, while the crashed handler's onCrash still sees the old `data`.
        const crashedData = conn.data;
        conn.data = undefined;
        try {
          restart = { handler: this.options.createHandler(conn), data: conn.data };
        } catch (err) {
          createFailed = { error: err };
        } finally {
          conn.data = crashedData;
        }
      }
    }
    this.events.crashed(conn, hook, error, restart !== undefined);
    if (createFailed !== undefined) {
      // The fresh handler could not be created: a second crash, of the onReady it never reached,
      // with nothing to restart; the connection closes (after onCrash answers the first).
      this.crashes++;
      this.events.crashed(conn, 'onReady', createFailed.error, false);
    }
    return restart;
  }

  /**
   * Counted when the fresh handler takes over, not when it is made: a connection that closes while
   * its `onCrash` answers (the handler closed it, its peer left, a drain) is not restarted.
   */
  restarted(conn: SupervisedConnection): void {
    this.restarts++;
    this.events.restarted(conn);
  }

  closed(conn: SupervisedConnection, reason: CloseReason): void {
    this.live.delete(conn);
    if (conn.unflushed) this.unflushedCloses++;
    this.closedTotal++;
    this.events.closed(conn, reason);
    if (this.live.size === 0 && this.emptyWaiters.length > 0) {
      const waiters = this.emptyWaiters;
      this.emptyWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** Ask every live connection to shut down (runs `onShutdown`, default close). */
  requestShutdown(deadline: number): void {
    for (const conn of [...this.live.values()]) conn.inContext(() => conn.requestShutdown(deadline));
  }

  /**
   * Ask live connections to shut down at about `rate` per second, in random order and with
   * jittered spacing, so their clients do not all reconnect at the same moment. Returns what stops
   * the pacing or hurries it ({@link PacedShutdown}). With `rate` Infinity, asks all at once.
   */
  requestShutdownPaced(rate: number, deadline: number): PacedShutdown {
    if (!Number.isFinite(rate)) {
      this.requestShutdown(deadline);
      return { stop: () => {}, hurry: () => {} };
    }
    const pending = [...this.live.values()];
    for (let i = pending.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [pending[i], pending[j]] = [pending[j]!, pending[i]!];
    }
    let began = Date.now();
    let base = 0;
    let done = 0;
    let timer: NodeJS.Timeout | undefined;
    const askUpTo = (due: number): void => {
      while (done < due) this.shutdown(pending[done++]!, deadline);
    };
    const tick = (): void => {
      askUpTo(Math.min(pending.length, base + (Math.ceil(((Date.now() - began) / 1000) * rate) || 1)));
      // Ticks of ~10 ms (or one connection's worth, if slower), each jittered by ±50%; at most
      // Node's longest timer (a rate of one connection in months asks for longer).
      if (done < pending.length) timer = setTimeout(tick, timerDelay(Math.max(10, 1000 / rate) * (0.5 + Math.random())));
    };
    tick();
    return {
      stop: () => clearTimeout(timer),
      hurry: (by, sooner) => {
        deadline = Math.min(deadline, sooner);
        const left = pending.length - done;
        if (left === 0) return;
        const window = (by - Date.now()) / 1000;
        const needed = window <= 0 ? Infinity : left / window;
        if (needed <= rate) return; // at its pace, the rest are asked by then anyway
        clearTimeout(timer);
        rate = needed;
        began = Date.now();
        base = done;
        if (Number.isFinite(rate)) tick();
        else askUpTo(pending.length);
      },
    };
  }

  /** Ask one connection to shut down (it opened while a drain was under way). */
  shutdown(conn: SupervisedConnection, deadline: number): void {
    conn.inContext(() => conn.requestShutdown(deadline));
  }

  /** Close every live connection at once. */
  forceCloseAll(): void {
    for (const conn of [...this.live.values()]) conn.forceClose();
  }

  /** Resolves when no connection is left. */
  whenEmpty(): Promise<void> {
    if (this.live.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.emptyWaiters.push(resolve));
  }
}
