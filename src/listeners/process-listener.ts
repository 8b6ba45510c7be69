import { AcceptorPool } from '../acceptor-pool/acceptor-pool.js';
import { totalsOf } from '../workers/pool-info.js';
import type { Lease } from '../acceptor-pool/lease.js';
import type { Connection, ConnectionInfo } from '../connection.js';
import { connectionStorage } from '../current-connection.js';
import { CorralError } from '../errors.js';
import type { DrainResult, ListenerInfo, ListenerTotals, WorkerAnswer } from '../listener.js';
import type { AccessRule } from '../limits/access-rules.js';
import { checkAccessRules, checkCount, type ListenerPlan } from '../listener-plan.js';
import { parseProxyHeader } from '../proxy-header/parse.js';
import { handlerFactory } from '../protocol.js';
import { ConnectionSupervisor } from '../supervisor.js';
import type { SocketAddress, Transport, TransportListenHandlers, TransportServer } from '../transport.js';
import type { Distribution } from '../options.js';
import { ListenerShell } from './listener-shell.js';
import { emitSafely } from './listener-reporter.js';
import { timerDelay } from '../timer-delay.js';

/** How a listener that serves inside a worker process differs from a stand-alone one. @internal */
export interface WorkerPart {
  /** Connection ids start with it (the worker's index and generation), unique across the pool. */
  readonly idPrefix: string;
  /** How the pool shares the port. */
  readonly distribution: Distribution;
  /** Open the listening socket the distribution's way; `undefined` when sockets arrive from the primary. */
  readonly open?: (handlers: TransportListenHandlers) => Promise<TransportServer | undefined>;
  /** The pool's address, reported when this worker has no socket of its own. */
  readonly address?: SocketAddress;
  /** Handshakes, counted connections or counters changed (the worker reports its load). */
  readonly changed: () => void;
}

/** A `stop()` during a drain: its deadline, and when the last connection must be asked by. */
interface DrainCut {
  readonly deadline: number;
  readonly askBy: number;
}

/**
 * A listener whose acceptor pool and connections are in this process: a stand-alone listener
 * (role `single`), or a worker process's part of a worker pool (role `worker`). It wires the
 * transport to the {@link AcceptorPool} and the pool to the {@link ConnectionSupervisor}; the
 * shell does the rest. @internal
 */
export class ProcessListener extends ListenerShell {
  readonly role: 'single' | 'worker';
  private readonly pool: AcceptorPool;
  private readonly supervisor: ConnectionSupervisor;
  private protocolOptions: unknown;
  private opened = 0;
  /** Times the wait queue overflowed. */
  private overflows = 0;
  /** While a drain runs: the deadline its connections were given. */
  private drainDeadline: number | undefined = undefined;
  /** While a drain runs: bring its deadline forward (a `stop()` with a shorter one). */
  private shortenDrain: ((cut: DrainCut) => void) | undefined = undefined;
  /** The deadline of a `stop()` made during a drain, for a drain whose work has not begun yet. */
  private stopCut: DrainCut | undefined = undefined;

  constructor(
    private readonly plan: ListenerPlan,
    private readonly transport: Transport,
    private readonly worker?: WorkerPart,
  ) {
    super({
      name: plan.name,
      shutdownTimeout: plan.shutdownTimeout,
      drainRate: plan.drainRate,
      liveConnections: () => this.supervisor.size,
      openSocket: () => this.openSocket(),
      ...(worker?.address ? { address: worker.address } : {}),
      // In a pool, the primary watches the total.
      alarms: worker ? [] : plan.alarms,
      heldSockets: () => {
        const g = this.pool.stats;
        return g.silent + g.waiting + g.handshaking + this.supervisor.size;
      },
    });
    this.role = worker ? 'worker' : 'single';
    this.protocolOptions = plan.protocolOptions;
    const create = handlerFactory(plan.protocol);
    this.supervisor = new ConnectionSupervisor(
      {
        listenerName: plan.name,
        idPrefix: worker?.idPrefix ?? '',
        framing: plan.framing,
        ...plan.connections,
        createHandler: (conn) => create(conn, this.protocolOptions),
        context: worker ? connectionStorage : undefined,
      },
      {
        opened: (conn, handshakeMs) => {
          this.opened++;
          this.report.opened(() => conn.info(), conn.id, () => conn.remote, handshakeMs);
        },
        crashed: (conn, hook, error, restarted) => {
          this.report.crashed({ id: conn.id, hook, error, restarted });
          this.worker?.changed();
        },
        // Counted once the fresh handler takes over, maybe after the crash's report went out.
        restarted: () => this.worker?.changed(),
        closed: (conn, reason) => {
          this.report.closed(conn.id, reason, Date.now() - conn.openedAt);
          this.countsChanged();
        },
      },
    );
    this.pool = new AcceptorPool(transport, plan.admission, { kind: 'handshake' }, {
      handshaken: (transportConn, lease, startedAt, proxy) => {
        const conn = this.supervisor.start(transportConn, lease, startedAt, proxy);
        if (this.drainDeadline !== undefined) this.supervisor.shutdown(conn, this.drainDeadline);
      },
      handshakeFailed: (socket, kind, error) => {
        const { remoteAddress, remotePort } = this.pool.clientOf(socket);
        this.report.handshakeFailed({ kind, error, remoteAddress, remotePort });
      },
      rejected: (socket, reason, detail) => {
        const { remoteAddress, remotePort } = this.pool.clientOf(socket);
        this.report.rejected({ reason, remoteAddress, remotePort, ...(detail === undefined ? {} : { detail }) });
      },
      released: () => {},
      changed: () => {
        this.countsChanged();
        this.worker?.changed();
      },
      overflowed: (full) => this.onOverflow(full),
      wantsPeerAddress: () => this.report.wantsPeerAddress(),
    });
  }

  get maxConnections(): number {
    return this.pool.maxConnections;
  }

  set maxConnections(n: number) {
    // `undefined` must not fall back to anything: a listener limit of undefined would serve nobody.
    this.pool.maxConnections = checkCount('maxConnections', n === undefined ? Number.NaN : n, 0, 1, true);
  }

  /**
   * Open the listening socket and accept. A worker restarted while its pool is suspended starts
   * `suspended` (its socket opens on `resume`); one started while the pool does not accept starts
   * `paused`. @internal
   */
  async start(options: { suspended?: boolean; paused?: boolean } = {}): Promise<void> {
    if (options.paused) await this.socket.hold('paused');
    if (options.suspended) return;
    await this.socket.release('suspended');
    this.started(this.transport.name);
  }

  private async openSocket(): Promise<TransportServer | undefined> {
    const handlers: TransportListenHandlers = {
      onSocket: (socket) => {
        this.pool.admit(socket);
        this.checkDescriptors();
      },
      onError: (err) => this.acceptFailed(err),
    };
    return this.worker?.open ? this.worker.open(handlers) : this.transport.listen(handlers);
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
    const refuse = this.plan.admission.overflow === 'refuse' && this.worker?.distribution !== 'primary';
    if (full && refuse && this.state === 'running' && !this.socket.isHeld('refusing')) {
      this.socket.hold('refusing').catch((err: unknown) => emitSafely(this, 'acceptError', err instanceof Error ? err : new Error(String(err))));
    } else if (!full && this.socket.isHeld('refusing')) {
      void this.socket.release('refusing', { retry: true });
    }
    if (this.listenerCount('queueFull') > 0) emitSafely(this, 'queueFull', full);
  }

  /**
   * Admit a raw socket another process accepted and holds a slot for (distribution `primary`), with
   * the bytes it read from it and the PROXY header it began with (`proxy`: the header's bytes, parsed
   * again here). `upstream` is released once, when the socket is done here. @internal
   */
  adopt(raw: object, head: Buffer | undefined, upstream: Lease, proxy: Buffer | undefined): void {
    const adopt = this.transport.adopt;
    if (adopt === undefined) throw new CorralError('CORRAL_LISTEN_FAILED', `transport ${this.transport.name} cannot adopt sockets`);
    const parsed = proxy === undefined ? undefined : parseProxyHeader(proxy);
    this.pool.admitDispatched(adopt.call(this.transport, raw), head, upstream, parsed?.status === 'complete' ? parsed.header : undefined);
  }

  /** A single listener asks itself (its one "worker" is this process); a worker cannot ask. */
  async askWorkers<T = unknown>(topic: string, payload?: unknown): Promise<WorkerAnswer<T>[]> {
    if (this.role === 'worker') throw new CorralError('CORRAL_UNSUPPORTED', `listener ${this.name}: askWorkers is asked from the primary, not in a worker`);
    try {
      return [{ index: 0, pid: process.pid, ok: true, value: (await this.answerHere(topic, payload)) as T }];
    } catch (err) {
      return [{ index: 0, pid: process.pid, ok: false, error: err instanceof Error ? err.message : String(err) }];
    }
  }

  async setAccessRules(rules: readonly AccessRule[]): Promise<void> {
    this.pool.setAccess(checkAccessRules(rules, 'rules'));
  }

  async updateTransport(options: Readonly<Record<string, unknown>>): Promise<void> {
    if (this.transport.update === undefined) {
      throw new CorralError('CORRAL_UNSUPPORTED', `transport ${this.transport.name} has no options to update`);
    }
    this.transport.update(options);
  }

  /** Counted connections plus handshakes, the live total, and the counters that only grow. @internal */
  load(): { counted: number; handshaking: number; connections: number; totals: ListenerTotals } {
    const g = this.pool.stats;
    return {
      counted: g.counted,
      handshaking: g.handshaking,
      connections: this.supervisor.size,
      totals: totalsOf(this.snapshot()),
    };
  }

  /**
   * Stop accepting without refusing: the listening socket is closed but, where another process
   * keeps a copy of it (workers with distribution `shared`), connects wait in the kernel backlog and
   * are served on {@link ProcessListener.resumeAccepting}. The status stays `running`. @internal
   */
  async pauseAccepting(): Promise<void> {
    if (this.role === 'single') {
      throw new CorralError(
        'CORRAL_UNSUPPORTED',
        `listener ${this.name}: pauseAccepting needs workers with distribution 'shared' or 'primary' (a single process cannot keep the backlog while not accepting; use suspend())`,
      );
    }
    await this.setAccepting(false);
  }

  /** Accept again after {@link ProcessListener.pauseAccepting}. */
  async resumeAccepting(): Promise<void> {
    await this.setAccepting(true);
  }

  /** Rolling restarts need workers. */
  restartWorkers(): Promise<void> {
    return Promise.reject(new CorralError('CORRAL_UNSUPPORTED', `listener ${this.name} has no workers to restart`));
  }

  /** Close or reopen the listening socket without changing the status. @internal */
  async setAccepting(on: boolean): Promise<void> {
    if (on) await this.socket.release('paused');
    else await this.socket.hold('paused');
  }

  /** Whether accepting is paused. @internal */
  get acceptingPaused(): boolean {
    return this.socket.isHeld('paused');
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
      role: this.role,
      distribution: this.worker?.distribution ?? null,
      transport: this.transport.name,
      address: this.address,
      maxConnections: this.pool.maxConnections,
      maxHandshakes: this.plan.admission.maxHandshakes,
      admission: this.plan.admission.admission,
      refusing: this.socket.isHeld('refusing'),
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
      descriptorBackoffs: this.descriptorBackoffs,
      workers: [],
    };
  }

  connections(): Promise<ConnectionInfo[]> {
    return Promise.resolve(Array.from(this.supervisor.all(), (c) => c.info()));
  }

  localConnections(): ReadonlySet<Connection> {
    return this.supervisor.connections;
  }

  protected async drainWork(timeout: number, rate: number, began: number): Promise<DrainResult> {
    // Silent and waiting sockets were never served: close them. Handshakes under way finish, and
    // what they open is asked to shut down at once (see `handshaken`): no client is cut mid-handshake.
    const before = this.pool.stats;
    this.pool.rejectWaiting();
    let abandoned = this.pool.stats.rejected.shutdown - before.rejected.shutdown;
    const openedBefore = this.opened;
    const unflushedBefore = this.supervisor.unflushedCloses;
    const live = this.supervisor.size;
    // The deadline allows for the pacing: the last connection is asked n/rate seconds in.
    let deadline = began + timeout + (Number.isFinite(rate) ? Math.ceil((live / rate) * 1000) : 0);
    this.drainDeadline = deadline;
    const pacing = this.supervisor.requestShutdownPaced(rate, deadline);
    let timer: NodeJS.Timeout | undefined;
    let arm: (() => void) | undefined;
    this.shortenDrain = ({ deadline: sooner, askBy }: DrainCut): void => {
      if (sooner >= deadline) return;
      deadline = sooner;
      this.drainDeadline = sooner;
      // Those the pacing has not asked yet are asked by `askBy`, faster if need be, and told the
      // new deadline; those asked already keep the one they were told (documented).
      pacing.hurry(askBy, sooner);
      arm?.();
    };
    if (this.stopCut !== undefined) this.shortenDrain(this.stopCut);
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
        arm = (): void => {
          clearTimeout(timer);
          const left = deadline - Date.now();
          if (left <= 0) resolve(true);
          else timer = setTimeout(arm!, timerDelay(left));
        };
        arm();
      }),
    ]);
    this.shortenDrain = undefined;
    clearTimeout(timer);
    pacing.stop();
    // Closed before the deadline but destroyed with replies unsent (the linger bound, an error, a
    // full send buffer): not graceful either.
    let forced = this.supervisor.unflushedCloses - unflushedBefore;
    if (timedOut) {
      forced += this.supervisor.size;
      // Handshakes still running at the deadline are cut: clients never served, as the waiting were.
      abandoned += this.pool.stats.handshaking;
      this.pool.clear();
      this.supervisor.forceCloseAll();
      // The handshakes `clear` cut fail once their sockets have closed (a later turn): counted and
      // reported before stop() resolves, as everything else it ended.
      await Promise.all([this.supervisor.whenEmpty(), this.pool.whenNoHandshakes()]);
    }
    this.drainDeadline = undefined;
    const connections = live + (this.opened - openedBefore);
    return { connections, closedGracefully: connections - forced, forced, abandoned, durationMs: Date.now() - began };
  }

  protected async stopWork(timeout: number, rate: number, began: number): Promise<DrainResult> {
    const drain = this.drainInProgress;
    // A stop during a drain keeps its own deadline if that is sooner (a SIGTERM's grace period).
    if (drain !== undefined) {
      const askBy = began + (Number.isFinite(rate) ? Math.ceil((this.supervisor.size / rate) * 1000) : 0);
      const cut = { deadline: askBy + timeout, askBy };
      // The drain may not have begun its work yet (both wait to close the socket first).
      this.stopCut = cut;
      this.shortenDrain?.(cut);
    }
    const result = await (drain ?? this.drainWork(timeout, rate, began));
    this.pool.close();
    await this.socket.closeForGood();
    return result;
  }
}
