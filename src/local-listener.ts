import { EventEmitter } from 'node:events';
import type { Connection, ConnectionInfo } from './connection.js';
import { connectionStorage } from './connection-context.js';
import { CountWaiters } from './count-waiters.js';
import { channels } from './diagnostics.js';
import { CorralError } from './errors.js';
import { AcceptorPool } from './acceptor-pool/acceptor-pool.js';
import type { Lease } from './acceptor-pool/lease.js';
import type {
  ConnectionCountOp,
  DrainResult,
  Listener,
  ListenerEvents,
  ListenerInfo,
  ListenerStatus,
  ListenerTotals,
} from './listener.js';
import { checkCount, checkDrainOptions, type ResolvedListenerOptions } from './options.js';
import { handlerFactory } from './protocol.js';
import type { Distribution } from './workers/distribution.js';
import { ConnectionSupervisor } from './supervisor.js';
import type { SocketAddress, TransportListenHandlers, TransportServer } from './transport.js';

/**
 * How a listener that runs inside a worker process differs from a stand-alone one. @internal
 */
export interface LocalListenerHooks {
  /** Which process role this listener plays. */
  readonly role: 'single' | 'worker';
  /** Open the listening socket (default: `transport.listen`). Return `undefined` when sockets arrive by other means. */
  open?(handlers: TransportListenHandlers): Promise<TransportServer | undefined>;
  /** How the pool shares the port (workers only). */
  readonly distribution?: Distribution;
  /** The address to report when `open` returns no server. */
  address?: SocketAddress;
  /** Handshakes or counted connections changed. */
  changed?(): void;
}

/**
 * A listener whose acceptor pool and connections all live in this process. @internal
 */
export class LocalListener extends EventEmitter<ListenerEvents> implements Listener {
  readonly name: string;
  private state: ListenerStatus = 'suspended';
  private server: TransportServer | undefined = undefined;
  private bound: SocketAddress | undefined = undefined;
  private readonly pool: AcceptorPool;
  private readonly supervisor: ConnectionSupervisor;
  private protocolOptions: unknown;
  private opened = 0;
  private readonly countWaiters: CountWaiters;
  private draining: Promise<DrainResult> | undefined = undefined;
  private stopping: Promise<DrainResult> | undefined = undefined;
  /** While a drain runs: the deadline its connections were given. */
  private drainDeadline: number | undefined = undefined;
  /** Bumped whenever the listening socket is closed, so an open still under way knows to discard its socket. */
  private socketEpoch = 0;
  /** Accepting was paused (`pauseAccepting`): the socket is closed but the status stays `running`. */
  private acceptPaused = false;
  /** `overflow: 'refuse'`: the wait queue overflowed and the socket is closed until it has room. */
  private refusing = false;
  /** Times the wait queue overflowed. */
  private overflows = 0;
  /** Retries reopening the socket after an overflow when the listen failed. */
  private reopenTimer: NodeJS.Timeout | undefined = undefined;
  /** Called once the listener has stopped (the registry frees the name). */
  onStopped: (() => void) | undefined = undefined;

  constructor(
    private readonly options: ResolvedListenerOptions,
    idPrefix = '',
    private readonly hooks: LocalListenerHooks = { role: 'single' },
  ) {
    super();
    this.name = options.name;
    this.countWaiters = new CountWaiters(options.name, () => this.supervisor.size);
    this.protocolOptions = options.protocolOptions;
    const create = handlerFactory(options.protocol);
    this.supervisor = new ConnectionSupervisor(
      {
        listenerName: options.name,
        idPrefix,
        framing: options.framing,
        shutdownTimeout: options.shutdownTimeout,
        idleTimeout: options.idleTimeout,
        maxSendBuffer: options.maxSendBuffer,
        restart: options.restart,
        maxRestarts: options.maxRestarts,
        period: options.period,
        createHandler: (conn) => create(conn, this.protocolOptions),
        context: hooks.role === 'worker' ? connectionStorage : undefined,
      },
      {
        opened: (conn, handshakeMs) => {
          this.opened++;
          if (this.listenerCount('connectionOpen') > 0) this.emit('connectionOpen', conn.info());
          if (channels.connectionOpen.hasSubscribers) {
            channels.connectionOpen.publish({ listener: this.name, id: conn.id, remote: conn.remote, handshakeMs });
          }
        },
        crashed: (conn, hook, error, restarted) => {
          if (channels.handlerCrash.hasSubscribers) {
            channels.handlerCrash.publish({ listener: this.name, id: conn.id, hook, error, restarted });
          }
          this.emit('handlerCrash', { id: conn.id, hook, error, restarted });
          this.hooks.changed?.();
        },
        closed: (conn, reason) => {
          if (channels.connectionClose.hasSubscribers) {
            channels.connectionClose.publish({ listener: this.name, id: conn.id, reason, durationMs: Date.now() - conn.openedAt });
          }
          if (this.listenerCount('connectionClose') > 0) this.emit('connectionClose', conn.id, reason);
          this.countWaiters.check();
        },
      },
    );
    this.pool = new AcceptorPool(
      options.transport,
      options,
      { kind: 'handshake' },
      {
        handshaken: (transportConn, lease, startedAt) => {
          const conn = this.supervisor.start(transportConn, lease, startedAt);
          if (this.drainDeadline !== undefined) this.supervisor.shutdown(conn, this.drainDeadline);
        },
        handshakeFailed: (socket, kind, error) => {
          const event = { kind, error, remoteAddress: socket.remoteAddress, remotePort: socket.remotePort };
          if (channels.handshakeError.hasSubscribers) channels.handshakeError.publish({ listener: this.name, ...event });
          this.emit('handshakeError', event);
        },
        rejected: (socket, reason) => {
          const event = { reason, remoteAddress: socket.remoteAddress, remotePort: socket.remotePort };
          if (channels.overloadReject.hasSubscribers) channels.overloadReject.publish({ listener: this.name, ...event });
          if (this.listenerCount('reject') > 0) this.emit('reject', event);
        },
        released: () => {},
        changed: () => {
          this.countWaiters.check();
          this.hooks.changed?.();
        },
        overflowed: (full) => this.onOverflow(full),
        wantsPeerAddress: () =>
          this.listenerCount('reject') > 0 ||
          this.listenerCount('handshakeError') > 0 ||
          channels.overloadReject.hasSubscribers ||
          channels.handshakeError.hasSubscribers,
      },
    );
  }

  /** `'single'` for a stand-alone listener, `'worker'` inside a worker process. */
  get role(): 'single' | 'worker' {
    return this.hooks.role;
  }

  get status(): ListenerStatus {
    return this.state;
  }

  get address(): SocketAddress {
    if (this.bound === undefined) throw new CorralError('CORRAL_LISTENER_STOPPED', `listener ${this.name} has no address yet`);
    return this.bound;
  }

  get port(): number | undefined {
    const a = this.bound;
    return a !== undefined && (a.family === 'IPv4' || a.family === 'IPv6') ? a.port : undefined;
  }

  get maxConnections(): number {
    return this.pool.maxConnections;
  }

  set maxConnections(n: number) {
    // `undefined` must not fall back to anything: a listener limit of undefined would serve nobody.
    this.pool.maxConnections = checkCount('maxConnections', n === undefined ? Number.NaN : n, 0, 1, true);
  }

  /** Open the listening socket. @internal */
  async start(options: { suspended?: boolean } = {}): Promise<void> {
    if (options.suspended) {
      // A worker restarted while its pool is suspended: resume() opens the socket.
      this.bound ??= this.hooks.address;
      this.state = 'suspended';
    } else if (this.acceptPaused) {
      this.bound ??= this.hooks.address;
      this.state = 'running';
    } else {
      await this.openSocket();
      this.state = 'running';
    }
    if (channels.listenerStart.hasSubscribers) {
      channels.listenerStart.publish({ listener: this.name, transport: this.options.transport.name, address: this.address });
    }
  }

  private async openSocket(): Promise<void> {
    const handlers: TransportListenHandlers = {
      onSocket: (socket) => this.pool.admit(socket),
      onError: (err) => this.emit('acceptError', err),
    };
    const open = this.hooks.open;
    const epoch = this.socketEpoch;
    const server = open ? await open(handlers) : await this.options.transport.listen(handlers);
    if (epoch !== this.socketEpoch) {
      // Suspended, drained or stopped while the socket was being opened: do not keep it.
      await server?.close();
      return;
    }
    this.server = server;
    this.bound = this.server?.address() ?? this.hooks.address ?? this.bound;
  }

  /**
   * The wait queue overflowed or has room again. With `overflow: 'refuse'`, close the listening
   * socket on overflow — the kernel then refuses connects (or, for a worker on a shared socket,
   * holds them in the backlog) instead of corral accepting and closing each — and reopen it once
   * the queue has room, unless something else (suspend, drain, pauseAccepting) keeps it closed.
   */
  private onOverflow(full: boolean): void {
    if (full) this.overflows++;
    // Distribution 'primary': this worker has no socket of its own; the primary's queue overflows
    // as with 'close'.
    const refuse = this.options.overflow === 'refuse' && this.hooks.distribution !== 'primary';
    if (full && refuse && this.state === 'running' && !this.refusing) {
      this.refusing = true;
      this.closeSocket().catch((err: unknown) => this.emit('acceptError', err instanceof Error ? err : new Error(String(err))));
    } else if (!full && this.refusing) {
      this.refusing = false;
      this.reopenAfterOverflow();
    }
    if (this.listenerCount('queueFull') > 0) this.emit('queueFull', full);
  }

  private reopenAfterOverflow(): void {
    if (this.state !== 'running' || this.acceptPaused || this.refusing || this.server !== undefined) return;
    this.openSocket().catch((err: unknown) => {
      // The port may have been taken meanwhile: say so, and try again while it still matters.
      this.emit('acceptError', err instanceof Error ? err : new Error(String(err)));
      clearTimeout(this.reopenTimer);
      this.reopenTimer = setTimeout(() => this.reopenAfterOverflow(), 1000);
    });
  }

  /**
   * Admit a raw socket another process accepted and holds a slot for (distribution `primary`), with
   * the bytes it read from it. `upstream` is released once, when the socket is done here. @internal
   */
  adopt(raw: object, head: Buffer | undefined, upstream: Lease): void {
    const adopt = this.options.transport.adopt;
    if (adopt === undefined) throw new CorralError('CORRAL_LISTEN_FAILED', `transport ${this.options.transport.name} cannot adopt sockets`);
    this.pool.admitDispatched(adopt.call(this.options.transport, raw), head, upstream);
  }

  /** Counted connections plus handshakes, the live total, and the counters that only grow. @internal */
  load(): { counted: number; handshaking: number; connections: number; totals: ListenerTotals } {
    const g = this.pool.stats;
    const s = this.supervisor.stats;
    return {
      counted: g.counted,
      handshaking: g.handshaking,
      connections: this.supervisor.size,
      totals: {
        accepted: g.accepted,
        opened: this.opened,
        closed: s.closed,
        gaveUp: g.gaveUp,
        overflows: this.overflows,
        rejected: g.rejected,
        handshakeFailures: g.handshakeFailures,
        handlerCrashes: s.handlerCrashes,
        handlerRestarts: s.handlerRestarts,
      },
    };
  }

  /**
   * Stop accepting without refusing: the listening socket is closed but, where another process
   * keeps a copy of it (workers with distribution `shared`), connects wait in the kernel backlog and
   * are served on {@link LocalListener.resumeAccepting}. The status stays `running`. @internal
   */
  async pauseAccepting(): Promise<void> {
    if (this.hooks.role === 'single') {
      throw new CorralError(
        'CORRAL_UNSUPPORTED',
        `listener ${this.name}: pauseAccepting needs workers with distribution 'shared' or 'primary' (a single process cannot keep the backlog while not accepting; use suspend())`,
      );
    }
    await this.setAccepting(false);
  }

  /** Accept again after {@link LocalListener.pauseAccepting}. */
  async resumeAccepting(): Promise<void> {
    await this.setAccepting(true);
  }

  /** Rolling restarts need workers. */
  restartWorkers(): Promise<void> {
    return Promise.reject(new CorralError('CORRAL_UNSUPPORTED', `listener ${this.name} has no workers to restart`));
  }

  /** Close or reopen the listening socket without changing the status. @internal */
  async setAccepting(on: boolean): Promise<void> {
    if (on) {
      if (!this.acceptPaused) return;
      this.acceptPaused = false;
      if (this.state === 'running' && this.server === undefined && !this.refusing) await this.openSocket();
      return;
    }
    if (this.acceptPaused) return;
    this.acceptPaused = true;
    await this.closeSocket();
  }


  /** Whether accepting is paused. @internal */
  get acceptingPaused(): boolean {
    return this.acceptPaused;
  }

  private async closeSocket(): Promise<void> {
    this.socketEpoch++;
    clearTimeout(this.reopenTimer);
    this.reopenTimer = undefined;
    const server = this.server;
    this.server = undefined;
    if (server) await server.close();
  }

  async suspend(): Promise<void> {
    this.assertNotStopped('suspend');
    if (this.state !== 'running') return;
    this.state = 'suspended';
    await this.closeSocket();
    this.emit('suspend');
  }

  async resume(): Promise<void> {
    this.assertNotStopped('resume');
    if (this.state === 'running') return;
    if (this.draining) await this.draining;
    if (this.server === undefined && !this.acceptPaused && !this.refusing) await this.openSocket();
    this.state = 'running';
    this.emit('resume');
  }

  setProtocolOptions(options: unknown): void {
    this.protocolOptions = options;
  }

  info(): Promise<ListenerInfo> {
    return Promise.resolve(this.snapshot());
  }

  /** The same as `info()`, synchronously. @internal */
  snapshot(): ListenerInfo {
    const g = this.pool.stats;
    const s = this.supervisor.stats;
    return {
      name: this.name,
      status: this.state,
      role: this.hooks.role,
      distribution: this.hooks.distribution ?? null,
      transport: this.options.transport.name,
      address: this.address,
      maxConnections: this.pool.maxConnections,
      maxHandshakes: this.options.maxHandshakes,
      admission: this.options.admission,
      refusing: this.refusing,
      overflows: this.overflows,
      active: g.counted + g.handshaking,
      connections: this.supervisor.size,
      silent: g.silent,
      handshaking: g.handshaking,
      waiting: g.waiting,
      accepted: g.accepted,
      gaveUp: g.gaveUp,
      opened: this.opened,
      closed: s.closed,
      rejected: g.rejected,
      handshakeFailures: g.handshakeFailures,
      handlerCrashes: s.handlerCrashes,
      handlerRestarts: s.handlerRestarts,
      workers: [],
    };
  }

  connections(): Promise<ConnectionInfo[]> {
    return Promise.resolve(Array.from(this.supervisor.all(), (c) => c.info()));
  }

  localConnections(): ReadonlySet<Connection> {
    return this.supervisor.connections;
  }

  waitForConnections(op: ConnectionCountOp, n: number, options: { timeout?: number } = {}): Promise<void> {
    return this.countWaiters.wait(op, n, options.timeout);
  }

  drain(options: { timeout?: number; rate?: number } = {}): Promise<DrainResult> {
    try {
      this.assertNotStopped('drain');
    } catch (err) {
      return Promise.reject(err);
    }
    return this.drainOnce(options);
  }

  private drainOnce(options: { timeout?: number; rate?: number }): Promise<DrainResult> {
    const timeout = checkDrainOptions(options, this.options.shutdownTimeout);
    if (timeout instanceof TypeError) return Promise.reject(timeout);
    this.draining ??= this.runDrain(timeout, options.rate ?? this.options.drainRate).finally(() => {
      this.draining = undefined;
      this.drainDeadline = undefined;
    });
    return this.draining;
  }

  private async runDrain(timeout: number, rate: number): Promise<DrainResult> {
    const began = Date.now();
    const wasRunning = this.state === 'running';
    this.state = 'draining';
    await this.closeSocket();
    if (wasRunning) this.emit('suspend');
    // Waiting sockets were never served: close them. Handshakes under way finish, and what they
    // open is asked to shut down at once (see `handshaken`), so no client is cut mid-handshake.
    const before = this.pool.stats;
    this.pool.rejectWaiting();
    const abandoned = this.pool.stats.rejected.shutdown - before.rejected.shutdown;
    const openedBefore = this.opened;
    const live = this.supervisor.size;
    // The deadline allows for the pacing: the last connection is asked n/rate seconds in.
    const deadline = began + timeout + (Number.isFinite(rate) ? Math.ceil((live / rate) * 1000) : 0);
    this.drainDeadline = deadline;
    const stopPacing = this.supervisor.requestShutdownPaced(rate, deadline);
    let timer: NodeJS.Timeout | undefined;
    const settled = async (): Promise<false> => {
      for (;;) {
        await this.supervisor.whenEmpty();
        if (this.pool.stats.handshaking === 0) return false;
        await this.pool.whenNoHandshakes();
      }
    };
    const timedOut = await Promise.race([
      settled(),
      new Promise<boolean>((resolve) => {
        // Re-arm until Date.now() reaches the deadline handlers were told (ShutdownRequest.deadline):
        // a timer measured on the loop's clock can fire a little early by Date.now().
        const arm = (): void => {
          const left = deadline - Date.now();
          if (left <= 0) resolve(true);
          else timer = setTimeout(arm, Math.min(left, 2 ** 31 - 1));
        };
        arm();
      }),
    ]);
    clearTimeout(timer);
    stopPacing();
    let forced = 0;
    if (timedOut) {
      forced = this.supervisor.size;
      this.pool.clear();
      this.supervisor.forceCloseAll();
      await this.supervisor.whenEmpty();
    }
    this.drainDeadline = undefined;
    if (this.state === 'draining') this.state = 'suspended';
    const connections = live + (this.opened - openedBefore);
    return { connections, closedGracefully: connections - forced, forced, abandoned, durationMs: Date.now() - began };
  }

  stop(options: { timeout?: number; rate?: number } = {}): Promise<DrainResult> {
    if (this.stopping) return this.stopping;
    // A bad timeout must not leave `stopping` set: the listener would be wedged, running but unstoppable.
    const invalid = checkDrainOptions(options, this.options.shutdownTimeout);
    if (invalid instanceof TypeError) return Promise.reject(invalid);
    this.stopping = (async () => {
      const result = await this.drainOnce(options);
      this.pool.close();
      this.state = 'stopped';
      this.countWaiters.stop();
      this.onStopped?.();
      if (channels.listenerStop.hasSubscribers) channels.listenerStop.publish({ listener: this.name });
      this.emit('stop');
      return result;
    })();
    return this.stopping;
  }

  private assertNotStopped(what: string): void {
    if (this.state === 'stopped' || this.stopping) {
      throw new CorralError('CORRAL_LISTENER_STOPPED', `cannot ${what}: listener ${this.name} is stopped`);
    }
  }
}
