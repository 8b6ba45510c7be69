import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Connection, ConnectionInfo } from '../connection.js';
import { channels } from '../diagnostics.js';
import { CorralError, InvalidOptionError } from '../errors.js';
import { AcceptorPool } from '../acceptor-pool/acceptor-pool.js';
import type {
  ConnectionCountOp,
  DrainResult,
  Listener,
  ListenerEvents,
  ListenerInfo,
  ListenerStatus,
  ListenerTotals,
  WorkerEvent,
} from '../listener.js';
import { CountWaiters } from '../count-waiters.js';
import { checkCount, checkDrainOptions, type ListenerOptions, type ResolvedListenerOptions } from '../options.js';
import type { AcceptedSocket, SharedListenHandle, SocketAddress, Transport, TransportServer } from '../transport.js';
import { supportsReusePort } from '../transports/tcp.js';
import { autoWorkerCount, type Distribution, defaultDistribution } from './distribution.js';
import type { WorkerConfig, WorkerInfo } from './ipc.js';
import { WorkerProcess } from './worker-process.js';

/** How long a rolling restart waits for a new worker to accept. */
const REPLACEMENT_READY_MS = 60_000;

/** Extra time, beyond a worker's own exit grace (`shutdownTimeout`), before the primary kills it. */
const EXIT_MARGIN_MS = 2000;

const NO_CONNECTIONS: ReadonlySet<Connection> = new Set();

/** Counters of nothing yet. */
const NO_TOTALS: ListenerTotals = {
  accepted: 0,
  opened: 0,
  closed: 0,
  gaveUp: 0,
  overflows: 0,
  rejected: { queue_full: 0, wait_timeout: 0, shutdown: 0, silent_timeout: 0, source_limit: 0, silent_limit: 0, malformed: 0 },
  handshakeFailures: { timeout: 0, stalled: 0, error: 0 },
  handlerCrashes: 0,
  handlerRestarts: 0,
};

/** The sum of several listeners' totals. */
function addTotals(list: readonly ListenerTotals[]): ListenerTotals {
  return {
    accepted: sum(list.map((t) => t.accepted)),
    opened: sum(list.map((t) => t.opened)),
    closed: sum(list.map((t) => t.closed)),
    gaveUp: sum(list.map((t) => t.gaveUp)),
    overflows: sum(list.map((t) => t.overflows)),
    rejected: addCounts(list.map((t) => t.rejected)),
    handshakeFailures: addCounts(list.map((t) => t.handshakeFailures)),
    handlerCrashes: sum(list.map((t) => t.handlerCrashes)),
    handlerRestarts: sum(list.map((t) => t.handlerRestarts)),
  };
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

function addCounts<K extends string>(list: Readonly<Record<K, number>>[]): Record<K, number> {
  const out = {} as Record<K, number>;
  for (const r of list) for (const k of Object.keys(r) as K[]) out[k] = (out[k] ?? 0) + r[k];
  return out;
}


/**
 * The listener in the primary process of a worker pool: it owns the shared socket (or accepts and
 * dispatches, with distribution `primary`), supervises the worker processes with restart
 * intensity and backoff, and spans the Listener API over them by IPC. @internal
 */
export class PrimaryListener extends EventEmitter<ListenerEvents> implements Listener {
  readonly name: string;
  readonly role = 'primary' as const;
  readonly distribution: Distribution;
  private state: ListenerStatus = 'suspended';
  private readonly slots: WorkerProcess[] = [];
  private readonly transport: Transport;
  private shared: SharedListenHandle | undefined = undefined;
  private server: TransportServer | undefined = undefined;
  /** Distribution `primary`: the primary's acceptor pool, whose last step passes sockets to workers. */
  private pool: AcceptorPool | undefined = undefined;
  /** Times the primary's own wait queue (distribution 'primary') overflowed. */
  private poolOverflows = 0;
  private bound: SocketAddress | undefined = undefined;
  private limit: number;
  private protocolOptions: { value: unknown } | undefined = undefined;
  /** Session-ticket keys made here and shared by every worker: the current one first, then the one before. */
  private ticketKeys: Buffer[] | undefined = undefined;
  private rotationTimer: NodeJS.Timeout | undefined = undefined;
  private accepting = true;
  private stopping: Promise<DrainResult> | undefined = undefined;
  private restarting: Promise<void> | undefined = undefined;
  /** A rolling restart's new worker, until it joins its slot. */
  private starting: WorkerProcess | undefined = undefined;
  private fatalError: Error | undefined = undefined;
  private readonly countWaiters: CountWaiters;
  private restartTimers = new Set<NodeJS.Timeout>();
  /** Totals of worker processes that exited (their last report). */
  private retired: ListenerTotals = NO_TOTALS;
  /** workerReady events of the workers `start` waits for, emitted once `startListener` has resolved. */
  private readyDuringStart: WorkerEvent[] | undefined = [];
  onStopped: (() => void) | undefined = undefined;
  /** The user set `transportOptions.ticketKeys`: workers share those; nothing is generated or rotated. */
  private readonly userTicketKeys: boolean;

  constructor(
    private readonly options: ResolvedListenerOptions,
    userOptions: ListenerOptions<unknown>,
  ) {
    super();
    this.name = options.name;
    this.countWaiters = new CountWaiters(options.name, () => this.liveConnections());
    this.transport = options.transport;
    this.limit = options.maxConnections;
    this.userTicketKeys = (userOptions.transportOptions as { ticketKeys?: unknown } | undefined)?.ticketKeys !== undefined;
    if (typeof userOptions.transport === 'object') {
      throw new InvalidOptionError('transport', "must be 'tcp' or 'tls' with workers: a transport object lives in one process and cannot be rebuilt in the workers");
    }
    const unix = (userOptions.transportOptions as { path?: unknown } | undefined)?.path !== undefined;
    this.distribution = options.distribution ?? defaultDistribution(unix);
    if (this.distribution === 'reuseport' && !supportsReusePort()) {
      throw new InvalidOptionError('distribution', `'reuseport' needs Node >= 22.12 on Linux (this is ${process.version} on ${process.platform})`);
    }
    if (this.distribution === 'shared' && !this.transport.createSharedHandle) {
      throw new InvalidOptionError('distribution', `'shared' needs a transport that can share its socket; ${this.transport.name} cannot`);
    }
    if (this.distribution === 'primary' && !this.transport.detach) {
      throw new InvalidOptionError('distribution', `'primary' needs a transport that can pass sockets; ${this.transport.name} cannot`);
    }
    const script = options.workerScript ?? process.argv[1];
    if (script === undefined) throw new InvalidOptionError('workerScript', 'is needed: this process has no entry script to re-run in workers');
    const count = options.workers === 'auto' ? autoWorkerCount(options.maxConnections, options.maxWaiting) : (options.workers ?? 1);
    const launch = { listener: options.name, script, args: options.workerArgs ?? process.argv.slice(2) };
    const r = options.workerRestarts;
    for (let i = 0; i < count; i++) {
      this.slots.push(
        new WorkerProcess(
          i,
          launch,
          {
            hello: (w) => this.configure(w),
            ready: (w, address) => {
              this.bound ??= address;
              this.updateDispatchLimit();
              // During start, nobody can listen yet (startListener has not resolved): those
              // workerReady events are emitted right after it has.
              if (this.readyDuringStart !== undefined) this.readyDuringStart.push({ index: w.index, pid: w.pid });
              else this.emit('workerReady', { index: w.index, pid: w.pid });
            },
            needHandle: (w) => {
              if (this.shared) w.post({ t: 'handle' }, this.shared.handle);
            },
            load: () => this.countWaiters.check(),
            released: (w, n) => w.releaseLeases(n),
            crashReport: (w, message) => this.emit('workerCrash', { index: w.index, pid: w.pid, message }),
            exit: (w, code, signal) => this.onExit(w, code, signal),
          },
          r.maxRestarts,
          r.period,
        ),
      );
    }
  }

  get status(): ListenerStatus {
    return this.state;
  }

  get address(): SocketAddress {
    if (!this.bound) throw new CorralError('CORRAL_LISTENER_STOPPED', `listener ${this.name} has no address yet`);
    return this.bound;
  }

  get port(): number | undefined {
    const a = this.bound;
    return a && (a.family === 'IPv4' || a.family === 'IPv6') ? a.port : undefined;
  }

  /** How long a stopped worker may take to exit before it is killed. */
  private get exitGrace(): number {
    return this.options.shutdownTimeout + EXIT_MARGIN_MS;
  }

  /** Number of worker slots. */
  get workerCount(): number {
    return this.slots.length;
  }

  get maxConnections(): number {
    return this.limit;
  }

  set maxConnections(n: number) {
    this.limit = checkCount('maxConnections', n === undefined ? Number.NaN : n, 0, 1, true);
    this.updateDispatchLimit();
    for (const w of this.slots) if (w.status === 'ready') void w.request({ op: 'setMaxConnections', n: this.quota() }).catch(() => {});
  }

  /**
   * Distribution primary: hand sockets over only while accepting and some worker is ready;
   * otherwise they wait, unread, in the primary's queue (bounded by maxWaiting and waitTimeout).
   */
  private updateDispatchLimit(): void {
    if (!this.pool) return;
    const ready = this.slots.some((w) => w.status === 'ready');
    this.pool.maxConnections = this.accepting && ready ? this.limit : 0;
  }

  /** Each worker's share of `maxConnections` (distribution `primary` enforces the total itself). */
  private quota(): number {
    if (this.distribution === 'primary' || !Number.isFinite(this.limit)) return Infinity;
    return Math.max(1, Math.ceil(this.limit / this.slots.length));
  }

  private config(w: WorkerProcess): WorkerConfig {
    return {
      index: w.index,
      generation: w.generation,
      distribution: this.distribution,
      maxConnections: this.quota(),
      ticketKeys: this.ticketKeys,
      ...(this.protocolOptions ? { protocolOptions: this.protocolOptions } : {}),
      accepting: this.accepting,
      suspended: this.state === 'suspended' || this.state === 'draining',
      address: this.bound,
    };
  }

  private configure(w: WorkerProcess): void {
    w.post({ t: 'start', config: this.config(w) }, this.distribution === 'shared' ? this.shared?.handle : undefined);
  }

  /** Bind, start every worker and wait until all accept. @internal */
  async start(): Promise<void> {
    const secure = this.transport.secure;
    const userKeys = this.userTicketKeys;
    if (secure && !userKeys) this.ticketKeys = [randomBytes(48)];
    await this.openSocket();
    this.state = 'running';
    try {
      if (this.distribution === 'reuseport' && !this.bound) {
        // With port 0, the first worker picks the port; the others join it.
        const [first, ...rest] = this.slots;
        first!.spawn();
        await first!.whenReady();
        for (const w of rest) w.spawn();
        await Promise.all(rest.map((w) => w.whenReady()));
      } else {
        for (const w of this.slots) w.spawn();
        await Promise.all(this.slots.map((w) => w.whenReady()));
      }
    } catch (err) {
      await this.stop({ timeout: 0 }).catch(() => {});
      throw err;
    }
    if (secure && this.options.ticketKeyRotation > 0 && !userKeys) {
      this.rotationTimer = setInterval(() => this.rotateTicketKeys(), this.options.ticketKeyRotation);
      this.rotationTimer.unref();
    }
    if (channels.listenerStart.hasSubscribers) {
      channels.listenerStart.publish({ listener: this.name, transport: this.transport.name, address: this.address });
    }
    const ready = this.readyDuringStart ?? [];
    this.readyDuringStart = undefined;
    // After startListener's caller has its listener (and could attach listeners): a macrotask later.
    setImmediate(() => {
      for (const event of ready) this.emit('workerReady', event);
    });
  }

  /**
   * Give every worker a fresh session-ticket key for new tickets; tickets made under the key before
   * it still resume (and are renewed under the new key) until the next rotation.
   */
  rotateTicketKeys(): void {
    this.ticketKeys = [randomBytes(48), ...(this.ticketKeys ?? []).slice(0, 1)];
    for (const w of this.slots) void w.request({ op: 'setTicketKeys', keys: this.ticketKeys }).catch(() => {});
  }

  private async openSocket(): Promise<void> {
    if (this.distribution === 'shared') {
      this.shared = await this.transport.createSharedHandle!();
      this.bound = this.shared.address;
    } else if (this.distribution === 'primary') {
      this.pool ??= this.dispatchPool();
      const pool = this.pool;
      this.server = await this.transport.listen({
        onSocket: (socket) => pool.admit(socket),
        onError: (err) => this.emit('acceptError', err),
      });
      this.bound = this.server.address();
    }
  }

  private async closeSocket(): Promise<void> {
    this.shared?.close();
    this.shared = undefined;
    const server = this.server;
    this.server = undefined;
    if (server) await server.close();
  }

  /**
   * Distribution `primary`: the primary's own acceptor pool. It reads each socket's first message
   * (for TLS the ClientHello; silent sockets hold no slot here either), then passes the socket, with
   * what it read, to the ready worker with the fewest connections, with a lease on its slot of
   * `maxConnections` that the worker gives back when the connection is done (or that is released
   * when the worker dies) — so `maxConnections` holds exactly over all workers.
   */
  private dispatchPool(): AcceptorPool {
    const transport = this.transport;
    const pool = new AcceptorPool(
      transport,
      this.options,
      {
        kind: 'dispatch',
        dispatch: (socket: AcceptedSocket, head, lease) => {
          // The ready worker with the fewest connections; one whose process just went is skipped.
          const ready = this.slots.filter((w) => w.status === 'ready' && w.child !== undefined).sort((a, b) => a.leaseCount - b.leaseCount);
          const raw = transport.detach!(socket);
          for (const w of ready) {
            if (!w.post({ t: 'socket', head }, raw)) continue;
            w.hold(lease);
            return true;
          }
          throw new CorralError('CORRAL_HANDSHAKE_FAILED', 'no worker is ready to take the connection');
        },
      },
      {
        handshaken: () => {},
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
        changed: () => {},
        wantsPeerAddress: () =>
          this.listenerCount('reject') > 0 ||
          this.listenerCount('handshakeError') > 0 ||
          channels.overloadReject.hasSubscribers ||
          channels.handshakeError.hasSubscribers,
        // Distribution 'primary': the primary's own socket is not closed on overflow (the wait queue
        // here is the whole pool's); overflowing sockets are closed as with overflow: 'close'.
        overflowed: (full) => {
          if (full) this.poolOverflows++;
        },
      },
    );
    return pool;
  }

  private onExit(w: WorkerProcess, code: number | null, signal: NodeJS.Signals | null): void {
    // Its connections are gone: release what it held against maxConnections, and keep its counts.
    w.releaseLeases(Infinity);
    w.connections = 0;
    if (w.totals) this.retired = addTotals([this.retired, w.totals]);
    w.totals = undefined;
    this.countWaiters.check();
    const how = signal ? `signal ${signal}` : `exit code ${code}`;
    this.updateDispatchLimit();
    this.emit('workerExit', { index: w.index, pid: w.lastPid, code, signal });
    if (w.status === 'retiring' || w.status === 'stopped' || this.stopping) {
      w.status = 'stopped';
      return;
    }
    if (!w.intensity.tryRestart()) {
      w.status = 'stopped';
      const r = this.options.workerRestarts;
      this.fatal(
        new CorralError(
          'CORRAL_WORKERS_FAILED',
          `corral: listener ${this.name}: worker ${w.index} died (${how}) more than ${r.maxRestarts} times within ${r.period} ms; stopping the listener instead of restarting it again`,
        ),
      );
      return;
    }
    w.restarts++;
    const r = this.options.workerRestarts;
    const delay = Math.min(r.maxDelay, r.initialDelay * 2 ** Math.max(0, w.intensity.recent - 1));
    w.status = 'restarting';
    const timer = setTimeout(() => {
      this.restartTimers.delete(timer);
      if (!this.stopping) w.spawn();
    }, delay);
    this.restartTimers.add(timer);
  }

  private fatal(error: Error): void {
    if (this.fatalError) return;
    this.fatalError = error;
    for (const w of this.slots) w.failReady(error);
    if (this.listenerCount('fatal') > 0) this.emit('fatal', error);
    else {
      process.stderr.write(`${error.message}\n`);
      process.exitCode = 1;
    }
    void this.stop({ timeout: 0 }).catch(() => {});
  }

  /** Run a command on every live worker and collect the answers (a worker that fails is left out). */
  private async broadcast<T>(cmd: Parameters<WorkerProcess['request']>[0], timeout?: number): Promise<T[]> {
    const live = this.slots.filter((w) => w.child !== undefined);
    const settled = await Promise.allSettled(live.map((w) => w.request<T>(cmd, timeout)));
    return settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  }

  async suspend(): Promise<void> {
    this.assertNotStopped('suspend');
    if (this.state !== 'running') return;
    this.state = 'suspended';
    await this.broadcast({ op: 'suspend' });
    await this.closeSocket();
    this.emit('suspend');
  }

  async resume(): Promise<void> {
    this.assertNotStopped('resume');
    if (this.state === 'running') return;
    await this.openSocket();
    this.state = 'running';
    await this.broadcast({ op: 'resume' });
    this.emit('resume');
  }

  /**
   * Stop accepting without refusing: with distribution `shared`, workers close their copies of the
   * socket and connects wait in the kernel backlog (up to `backlog`); with `primary`, accepted
   * sockets wait, paused, in the primary's wait queue; `reuseport` cannot do this (it would reset
   * queued connects) and rejects.
   */
  async pauseAccepting(): Promise<void> {
    if (this.distribution === 'reuseport') {
      throw new CorralError('CORRAL_UNSUPPORTED', "pauseAccepting needs distribution 'shared' or 'primary' (reuseport would reset queued connects)");
    }
    this.accepting = false;
    this.updateDispatchLimit();
    await this.broadcast({ op: 'accepting', on: false });
  }

  /** Accept again after {@link PrimaryListener.pauseAccepting}. */
  async resumeAccepting(): Promise<void> {
    this.accepting = true;
    this.updateDispatchLimit();
    await this.broadcast({ op: 'accepting', on: true });
  }

  setProtocolOptions(options: unknown): void {
    this.protocolOptions = { value: options };
    for (const w of this.slots) void w.request({ op: 'setProtocolOptions', value: options }).catch(() => {});
  }

  async info(): Promise<ListenerInfo> {
    const answers = await Promise.all(
      this.slots.map(async (w) => ({ w, info: w.child ? await w.request<ListenerInfo>({ op: 'info' }, 2000).catch(() => undefined) : undefined })),
    );
    const infos = answers.flatMap((a) => (a.info ? [a.info] : []));
    const g = this.pool?.stats;
    // Totals: exited workers' (kept at their exit), each live worker's (its answer, or else its
    // last report), and the primary's own pool's (distribution primary).
    const totals = addTotals([
      this.retired,
      ...answers.flatMap(({ w, info }) => (info ? [info] : w.totals ? [w.totals] : [])),
      ...(g ? [{ ...NO_TOTALS, rejected: g.rejected, handshakeFailures: g.handshakeFailures, gaveUp: g.gaveUp, overflows: this.poolOverflows }] : []),
    ]);
    const workers: WorkerInfo[] = answers.map(({ w, info }) => ({
      index: w.index,
      pid: w.pid,
      status: w.status,
      connections: info?.connections ?? w.connections,
      restarts: w.restarts,
      listener: info,
    }));
    return {
      name: this.name,
      status: this.state,
      transport: this.transport.name,
      address: this.address,
      role: 'primary',
      distribution: this.distribution,
      maxConnections: this.limit,
      maxHandshakes: this.options.maxHandshakes,
      admission: this.options.admission,
      refusing: infos.some((i) => i.refusing),
      overflows: totals.overflows,
      // Distribution primary: the primary's pool holds every slot (its leases cover the workers' handshakes).
      active: g ? g.counted : sum(infos.map((i) => i.active)),
      connections: sum(infos.map((i) => i.connections)),
      silent: sum(infos.map((i) => i.silent)) + (g?.silent ?? 0),
      handshaking: sum(infos.map((i) => i.handshaking)),
      waiting: sum(infos.map((i) => i.waiting)) + (g?.waiting ?? 0),
      // Distribution primary: the workers count the sockets passed to them again; the primary's
      // own count is the one of sockets accepted.
      accepted: g ? g.accepted : totals.accepted,
      gaveUp: totals.gaveUp,
      opened: totals.opened,
      closed: totals.closed,
      rejected: totals.rejected,
      handshakeFailures: totals.handshakeFailures,
      handlerCrashes: totals.handlerCrashes,
      handlerRestarts: totals.handlerRestarts,
      workers,
    };
  }

  async connections(): Promise<ConnectionInfo[]> {
    return (await this.broadcast<ConnectionInfo[]>({ op: 'connections' })).flat();
  }

  /** The primary holds no connections: they live in the workers. */
  localConnections(): ReadonlySet<Connection> {
    return NO_CONNECTIONS;
  }

  /** Live connections over all workers, as last reported (reports are at most ~20 ms old). */
  private liveConnections(): number {
    return sum(this.slots.map((w) => w.connections));
  }

  waitForConnections(op: ConnectionCountOp, n: number, options: { timeout?: number } = {}): Promise<void> {
    return this.countWaiters.wait(op, n, options.timeout);
  }

  async drain(options: { timeout?: number; rate?: number } = {}): Promise<DrainResult> {
    this.assertNotStopped('drain');
    const invalid = checkDrainOptions(options, this.options.shutdownTimeout);
    if (invalid instanceof TypeError) throw invalid;
    const began = Date.now();
    if (this.state === 'running') await this.suspend();
    this.state = 'draining';
    // Sockets waiting in the primary's own queue (distribution primary) are never served now.
    this.pool?.rejectWaiting();
    const results = await this.broadcast<DrainResult>(
      { op: 'drain', timeout: options.timeout, rate: this.workerDrainRate(options.rate) },
      this.drainBudget(options.timeout, this.workerDrainRate(options.rate)),
    );
    this.state = 'suspended';
    return this.merge(results, began);
  }

  /** Each worker's share of `drainRate` when all drain at once, so the pool closes at `drainRate` in total. */
  private workerDrainRate(total = this.options.drainRate): number {
    const live = Math.max(1, this.slots.filter((w) => w.child !== undefined).length);
    return total / live;
  }

  /** Longest a worker's drain may take: its timeout plus the pacing of its share of connections. */
  private drainBudget(timeout: number | undefined, rate = this.workerDrainRate()): number {
    const t = timeout ?? this.options.shutdownTimeout;
    const per = Math.max(0, ...this.slots.map((w) => w.connections));
    const pacing = Number.isFinite(rate) ? (per / rate) * 1000 : 0;
    return t + pacing + this.exitGrace;
  }

  private merge(results: DrainResult[], began: number): DrainResult {
    return {
      connections: sum(results.map((r) => r.connections)),
      closedGracefully: sum(results.map((r) => r.closedGracefully)),
      forced: sum(results.map((r) => r.forced)),
      abandoned: sum(results.map((r) => r.abandoned)) + (this.pool?.stats.waiting ?? 0),
      durationMs: Date.now() - began,
    };
  }

  stop(options: { timeout?: number; rate?: number } = {}): Promise<DrainResult> {
    if (this.stopping) return this.stopping;
    const invalid = checkDrainOptions(options, this.options.shutdownTimeout);
    if (invalid instanceof TypeError) return Promise.reject(invalid);
    this.stopping = this.runStop(options);
    return this.stopping;
  }

  private async runStop(options: { timeout?: number; rate?: number }): Promise<DrainResult> {
    const began = Date.now();
    for (const t of this.restartTimers) clearTimeout(t);
    this.restartTimers.clear();
    if (this.rotationTimer) clearInterval(this.rotationTimer);
    this.state = 'draining';
    this.pool?.close();
    await this.closeSocket();
    // A worker starting for a rolling restart is not in a slot yet: it goes too.
    const starting = this.starting;
    starting?.kill();
    const rate = this.workerDrainRate(options.rate);
    const budget = this.drainBudget(options.timeout, rate);
    const live = this.slots.filter((w) => w.child !== undefined);
    for (const w of live) w.status = 'stopped';
    const settled = await Promise.allSettled(live.map((w) => w.request<DrainResult>({ op: 'stop', timeout: options.timeout, rate }, budget)));
    await starting?.whenExited();
    const results = settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    // Every worker leaves by itself after answering; kill what has not within the grace period.
    await Promise.all(
      live.map(async (w) => {
        const timer = setTimeout(() => w.kill(), this.exitGrace);
        await w.whenExited();
        clearTimeout(timer);
      }),
    );
    for (const w of this.slots) w.status = 'stopped';
    this.state = 'stopped';
    this.countWaiters.stop();
    this.onStopped?.();
    if (channels.listenerStop.hasSubscribers) channels.listenerStop.publish({ listener: this.name });
    this.emit('stop');
    return this.merge(results, began);
  }

  /**
   * Replace every worker, one at a time: start the new process, wait until it accepts, then drain
   * the old one at `drainRate` and wait for it to exit. With distribution `shared` or `primary`, no
   * connect is refused meanwhile.
   */
  restartWorkers(): Promise<void> {
    this.assertNotStopped('restartWorkers');
    this.restarting ??= this.runRestart().finally(() => {
      this.restarting = undefined;
    });
    return this.restarting;
  }

  private async runRestart(): Promise<void> {
    for (let i = 0; i < this.slots.length; i++) {
      if (this.stopping) return;
      const old = this.slots[i]!;
      const fresh = await this.startReplacement(old);
      if (fresh === undefined) return; // the listener is stopping
      this.slots[i] = fresh;
      fresh.reportTo(old.handlers);
      old.status = 'retiring';
      this.updateDispatchLimit();
      if (old.child) {
        // The retiring worker drains alone, so it may use the whole drainRate.
        const rate = this.options.drainRate;
        await old.request<DrainResult>({ op: 'stop', timeout: undefined, rate }, this.drainBudget(undefined, rate)).catch(() => undefined);
        const timer = setTimeout(() => old.kill(), this.exitGrace);
        await old.whenExited();
        clearTimeout(timer);
      }
      // Connections the old worker still counted (distribution primary) were released on its exit.
      this.countWaiters.check();
    }
  }

  /**
   * Start the replacement of `old` and wait until it accepts. A replacement that exits or does not
   * get ready in time fails the rolling restart and is killed; the old worker keeps serving.
   */
  private async startReplacement(old: WorkerProcess): Promise<WorkerProcess | undefined> {
    let failed: ((e: Error) => void) | undefined;
    const failure = new Promise<never>((_, reject) => {
      failed = reject;
    });
    const fresh = old.replacement({
      ...old.handlers,
      // Until it joins its slot, an exit is a failed deploy, not a crash to restart.
      exit: (_w, code, signal) => failed?.(new CorralError('CORRAL_WORKERS_FAILED', `corral: listener ${this.name}: the new worker ${old.index} exited (${signal ? `signal ${signal}` : `exit code ${code}`}) before it was ready; the old worker keeps serving`)),
    });
    this.starting = fresh;
    const timer = setTimeout(
      () => failed?.(new CorralError('CORRAL_WORKERS_FAILED', `corral: listener ${this.name}: the new worker ${old.index} was not ready within ${REPLACEMENT_READY_MS} ms; the old worker keeps serving`)),
      REPLACEMENT_READY_MS,
    );
    try {
      fresh.spawn();
      await Promise.race([fresh.whenReady(), failure]);
    } catch (err) {
      fresh.kill();
      await fresh.whenExited();
      throw err;
    } finally {
      clearTimeout(timer);
      failed = undefined;
      this.starting = undefined;
    }
    if (this.stopping) {
      fresh.kill();
      await fresh.whenExited();
      return undefined;
    }
    return fresh;
  }

  private assertNotStopped(what: string): void {
    if (this.state === 'stopped' || this.stopping) {
      throw new CorralError('CORRAL_LISTENER_STOPPED', `cannot ${what}: listener ${this.name} is stopped`);
    }
  }
}
