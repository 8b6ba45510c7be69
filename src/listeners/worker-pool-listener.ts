import type { Connection, ConnectionInfo } from '../connection.js';
import { CorralError } from '../errors.js';
import type { DrainResult, ListenerInfo, WorkerAnswer, WorkerEvent } from '../listener.js';
import type { AccessRule } from '../limits/access-rules.js';
import { checkAccessRules, checkCount, type ListenerPlan, type WorkerPlan } from '../listener-plan.js';
import type { Distribution } from '../options.js';
import type { SharedListenHandle, Transport } from '../transport.js';
import { checkTicketKeys } from '../transports/ticket-keys.js';
import type { WorkerCommand, WorkerConfig } from '../workers/ipc.js';
import { maxTotals, poolInfo, sum, totalsOf, type WorkerReport } from '../workers/pool-info.js';
import { PrimaryDispatch } from '../workers/primary-dispatch.js';
import { RollingRestart } from '../workers/rolling-restart.js';
import { SharedTicketKeys } from '../workers/shared-ticket-keys.js';
import type { WorkerProcess } from '../workers/worker-process.js';
import { WorkerSupervisor } from '../workers/worker-supervisor.js';
import { ListenerShell } from './listener-shell.js';
import type { OpenSocket } from './listening-socket.js';
import { emitSafely } from './listener-reporter.js';

/** Extra time, beyond a worker's own exit grace (`shutdownTimeout`), before the primary kills it. */
const EXIT_MARGIN_MS = 2000;

/** How long `askWorkers` waits for each worker's answer by default, in ms. */
const ASK_TIMEOUT_MS = 5000;

/** How long `info()` waits for each worker's answer, in ms. */
const INFO_TIMEOUT_MS = 2000;

const NO_CONNECTIONS: ReadonlySet<Connection> = new Set();

/**
 * A worker pool's listener, in its primary process: the {@link ListenerShell} over worker
 * processes. It owns the pool's socket (distribution `shared`: one bound socket whose copies the
 * workers accept from; `primary`: the socket the primary accepts and dispatches from; `reuseport`:
 * none, every worker binds its own), the shared TLS session-ticket keys, and the worker
 * configuration; it spans the Listener API over the workers by IPC. Its parts: the
 * {@link WorkerSupervisor} (processes, restarts), {@link RollingRestart}, {@link PrimaryDispatch}
 * and {@link poolInfo}. @internal
 */
export class WorkerPoolListener extends ListenerShell {
  readonly role = 'primary' as const;
  readonly distribution: Distribution;
  private readonly workerPlan: WorkerPlan;
  private readonly workers: WorkerSupervisor;
  private readonly rolling: RollingRestart;
  /** The transport the primary binds with (`shared`, `primary`); it never handshakes. */
  private readonly front: Transport | undefined;
  private readonly dispatch: PrimaryDispatch | undefined;
  /** Distribution `shared`: the bound socket workers get copies of, while open. */
  private shared: SharedListenHandle | undefined = undefined;
  /** The keys the pool makes (and rotates), until `updateTransport` gives its own `ticketKeys`. */
  private ticketKeys: SharedTicketKeys | undefined;
  private limit: number;
  private protocolOptions: { value: unknown } | undefined = undefined;
  /** Accepting is not paused (`pauseAccepting`). */
  private accepting = true;
  private restarting: Promise<void> | undefined = undefined;
  /** Access rules set at run time (new workers start with them). */
  private access: readonly AccessRule[] | undefined = undefined;
  /**
   * Every `updateTransport` so far, merged into one object (later options win, as
   * `TlsTransport.update` merges them): a new worker applies it once.
   */
  private transportUpdate: Readonly<Record<string, unknown>> | undefined = undefined;
  /** workerReady events of the workers `start` waits for, emitted once `startListener` has resolved. */
  private readyDuringStart: WorkerEvent[] | undefined = [];

  constructor(private readonly plan: ListenerPlan) {
    super({
      name: plan.name,
      shutdownTimeout: plan.shutdownTimeout,
      drainRate: plan.drainRate,
      liveConnections: () => this.workers.connections,
      openSocket: () => this.openSocket(),
      alarms: plan.alarms,
      // Distribution primary: the sockets waiting in the primary (passed ones leave it).
      heldSockets: () => {
        const g = this.dispatch?.stats.stats;
        return g === undefined ? 0 : g.silent + g.waiting + g.handshaking;
      },
    });
    if (plan.workers === undefined) throw new CorralError('CORRAL_LISTEN_FAILED', `listener ${plan.name} has no workers`);
    this.workerPlan = plan.workers;
    this.distribution = plan.workers.distribution;
    this.limit = plan.admission.maxConnections;
    this.ticketKeys = plan.workers.ticketKeys === 'made' ? new SharedTicketKeys() : undefined;
    this.front = this.distribution === 'reuseport' ? undefined : plan.transport.build({ front: true });
    if (this.distribution === 'shared' && this.front?.createSharedHandle === undefined) {
      throw new CorralError('CORRAL_UNSUPPORTED', `distribution 'shared' needs a transport that can share its socket; ${plan.transport.name} cannot`);
    }
    this.workers = new WorkerSupervisor(plan.name, plan.workers, {
      hello: (w) => this.configure(w),
      ready: (w, address) => this.onReady(w, address),
      needHandle: (w) => {
        // Always answered: without a handle (the primary closed its socket: it drains or stops),
        // the worker's open fails instead of waiting for ever — a stop waits for an open under way.
        w.post({ t: 'handle' }, this.shared?.handle);
      },
      load: () => this.countsChanged(),
      crashReport: (w, message) => emitSafely(this, 'workerCrash', { index: w.index, pid: w.pid, message }),
      exited: (w, code, signal) => {
        this.countsChanged();
        this.updateDispatchLimit();
        emitSafely(this, 'workerExit', { index: w.index, pid: w.lastPid, code, signal });
      },
      fatal: (error) => this.fatal(error),
    });
    this.dispatch =
      this.distribution === 'primary' && this.front ? new PrimaryDispatch(this.front, plan.admission, () => this.workers.ready(), this.report, () => this.updateDispatchLimit()) : undefined;
    this.rolling = new RollingRestart(this.workers, {
      listener: plan.name,
      drainRate: plan.drainRate,
      drainBudget: (rate) => this.drainBudget(plan.shutdownTimeout, rate),
      exitGrace: this.exitGrace,
      stopping: () => this.status === 'stopped' || this.stopRequested,
      swapped: () => this.updateDispatchLimit(),
      retired: () => this.countsChanged(),
    });
  }

  /** How long a stopped worker may take to exit before it is killed. */
  private get exitGrace(): number {
    return this.plan.shutdownTimeout + EXIT_MARGIN_MS;
  }

  /** Number of worker slots. */
  get workerCount(): number {
    return this.workers.count;
  }

  get maxConnections(): number {
    return this.limit;
  }

  set maxConnections(n: number) {
    this.limit = checkCount('maxConnections', n === undefined ? Number.NaN : n, 0, 1, true);
    this.updateDispatchLimit();
    for (const w of this.workers.live()) if (w.status === 'ready') void w.request({ op: 'setMaxConnections', n: this.quota() }).catch(() => {});
  }

  /** Bind, start every worker and wait until all accept. @internal */
  async start(): Promise<void> {
    await this.socket.release('suspended');
    this.state = 'running';
    try {
      // reuseport on port 0: the first worker picks the port; the others join it.
      await this.workers.start(this.distribution === 'reuseport' && this.socket.address === undefined);
    } catch (err) {
      await this.stop({ timeout: 0 }).catch(() => {});
      throw err;
    }
    this.ticketKeys?.start(this.workerPlan.ticketKeyRotation, (keys) => {
      for (const w of this.workers.live()) void w.request({ op: 'setTicketKeys', keys }).catch(() => {});
    });
    this.started(this.plan.transport.name);
    const ready = this.readyDuringStart ?? [];
    this.readyDuringStart = undefined;
    // After startListener's caller has its listener (and could attach listeners): a macrotask later.
    setImmediate(() => {
      for (const event of ready) emitSafely(this, 'workerReady', event);
    });
  }

  private async openSocket(): Promise<OpenSocket | undefined> {
    if (this.dispatch) return this.dispatch.listen((err) => this.acceptFailed(err), () => this.checkDescriptors());
    if (this.distribution === 'reuseport') {
      // The workers bind the port, each with SO_REUSEPORT, which would join another process's such
      // socket on it: at start and at every resume, no other socket may hold it (on the port the
      // pool has, once a worker picked it, or the one asked for).
      const port = this.port;
      await this.plan.transport.build({ front: true, ...(port === undefined ? {} : { port }) }).claimPort?.();
      return undefined;
    }
    const create = this.front?.createSharedHandle;
    if (this.distribution !== 'shared' || create === undefined) return undefined;
    const shared = await create.call(this.front);
    this.shared = shared;
    return {
      address: () => shared.address,
      close: async () => {
        if (this.shared === shared) this.shared = undefined;
        shared.close();
      },
    };
  }

  private onReady(w: WorkerProcess, address: WorkerConfig['address']): void {
    if (address !== undefined) this.socket.learnAddress(address);
    this.updateDispatchLimit();
    // During start, nobody can listen yet (startListener has not resolved): those workerReady
    // events are emitted right after it has.
    const event = { index: w.index, pid: w.pid };
    if (this.readyDuringStart !== undefined) this.readyDuringStart.push(event);
    else emitSafely(this, 'workerReady', event);
  }

  /**
   * Distribution primary: hand sockets over only while accepting and some worker is ready;
   * otherwise they wait, unread, in the primary's queue (bounded by maxWaiting and waitTimeout).
   */
  private updateDispatchLimit(): void {
    if (this.dispatch) this.dispatch.limit = this.accepting && this.workers.anyReady ? this.limit : 0;
  }

  /** Each worker's share of `maxConnections` (distribution `primary` enforces the total itself). */
  private quota(): number {
    if (this.distribution === 'primary' || !Number.isFinite(this.limit)) return Infinity;
    return Math.max(1, Math.ceil(this.limit / this.workers.count));
  }

  private configure(w: WorkerProcess): void {
    const config: WorkerConfig = {
      index: w.index,
      generation: w.generation,
      maxConnections: this.quota(),
      ticketKeys: this.ticketKeys?.keys,
      ...(this.protocolOptions ? { protocolOptions: this.protocolOptions } : {}),
      accepting: this.accepting,
      suspended: this.status === 'suspended' || this.status === 'draining',
      address: this.socket.address,
      access: this.access,
      transportUpdate: this.transportUpdate,
    };
    w.post({ t: 'start', config }, this.distribution === 'shared' ? this.shared?.handle : undefined);
  }

  private fatal(error: Error): void {
    if (this.listenerCount('fatal') > 0) emitSafely(this, 'fatal', error);
    else {
      process.stderr.write(`${error.message}\n`);
      process.exitCode = 1;
    }
    void this.stop({ timeout: 0 }).catch(() => {});
  }

  protected override async suspendWork(): Promise<void> {
    await this.workers.broadcast({ op: 'suspend' });
  }

  protected override async resumeWork(): Promise<void> {
    await this.workers.broadcast({ op: 'resume' });
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
    await this.workers.broadcast({ op: 'accepting', on: false });
  }

  /** Accept again after {@link WorkerPoolListener.pauseAccepting}. */
  async resumeAccepting(): Promise<void> {
    this.accepting = true;
    this.updateDispatchLimit();
    await this.workers.broadcast({ op: 'accepting', on: true });
  }

  setProtocolOptions(options: unknown): void {
    this.protocolOptions = { value: options };
    for (const w of this.workers.live()) void w.request({ op: 'setProtocolOptions', value: options }).catch(() => {});
  }

  async askWorkers<T = unknown>(topic: string, payload?: unknown, options: { timeout?: number } = {}): Promise<WorkerAnswer<T>[]> {
    const timeout = options.timeout ?? ASK_TIMEOUT_MS;
    if (typeof topic !== 'string') throw new TypeError('askWorkers: topic must be a string');
    // Every worker with a process, a retiring one included: its devices are still connected. Not
    // one whose channel has closed: a worker disconnects once its listener has stopped, to exit.
    return Promise.all(
      this.workers
        .live()
        .filter((w) => w.connected)
        .map(async (w): Promise<WorkerAnswer<T>> => {
          try {
            return { index: w.index, pid: w.pid, ok: true, value: await w.request<T>({ op: 'ask', topic, payload }, timeout) };
          } catch (err) {
            return { index: w.index, pid: w.pid, ok: false, error: err instanceof Error ? err.message : String(err) };
          }
        }),
    );
  }

  async setAccessRules(rules: readonly AccessRule[]): Promise<void> {
    const checked = checkAccessRules(rules, 'rules');
    this.access = [...rules];
    // Distribution primary: the primary alone applies them; otherwise every worker does.
    if (this.dispatch) this.dispatch.setAccess(checked);
    else await this.everyWorker({ op: 'setAccess', rules: this.access }, 'setAccessRules');
  }

  /**
   * See {@link Listener.updateTransport}. `ticketKeys` among the options replace the keys the pool
   * made for good: their rotation stops, and every worker, restarted ones included, uses the
   * given keys.
   */
  async updateTransport(options: Readonly<Record<string, unknown>>): Promise<void> {
    // Checked here first, on a transport of the pool's own options (a front one makes no secure
    // context but the one update builds): nothing changes if they are bad.
    const check = this.plan.transport.build({ front: true });
    if (check.update === undefined) throw new CorralError('CORRAL_UNSUPPORTED', `transport ${check.name} has no options to update`);
    // A copy of the keys: the caller may wipe its buffers, and workers started later need them.
    const ticketKeys = checkTicketKeys(options.ticketKeys);
    const merged = { ...this.transportUpdate, ...options, ...(ticketKeys === undefined ? {} : { ticketKeys }) };
    check.update(merged);
    this.transportUpdate = merged;
    if (ticketKeys !== undefined) {
      // Given keys take over from the pool's own: a rotation must not overwrite them later.
      this.ticketKeys?.stop();
      this.ticketKeys = undefined;
    }
    await this.everyWorker({ op: 'updateTransport', options }, 'updateTransport');
  }

  /** Run a command on every live worker; reject naming the workers that failed it. */
  private async everyWorker(cmd: WorkerCommand, what: string): Promise<void> {
    const live = this.workers.live();
    const settled = await Promise.allSettled(live.map((w) => w.request(cmd)));
    const failed = settled.flatMap((r, i) => (r.status === 'rejected' ? [`worker ${live[i]!.index}: ${(r.reason as Error).message}`] : []));
    if (failed.length > 0) throw new CorralError('CORRAL_WORKERS_FAILED', `${what} failed in ${failed.length} of ${live.length} workers (they keep what they had): ${failed.join('; ')}`);
  }

  async info(): Promise<ListenerInfo> {
    const asked = await Promise.all(
      this.workers.all().map(async (w) => {
        const child = w.child;
        const info = child ? await w.request<ListenerInfo>({ op: 'info' }, INFO_TIMEOUT_MS).catch(() => undefined) : undefined;
        // Kept in its totals (each counter only grows, so the larger of answer and last load
        // report), so that a worker dying now cannot take back counts this info() shows: this runs
        // before any exit is seen.
        if (info && w.child === child) w.totals = maxTotals(w.totals, totalsOf(info));
        return { w, child, info };
      }),
    );
    const answers = asked.map(({ w, child, info }): WorkerReport => {
      // Exited while others answered: its totals are in `retired` already, not to be counted twice.
      const exited = child !== undefined && w.child !== child;
      return {
        worker: { index: w.index, pid: w.pid, status: w.status, connections: w.connections, restarts: w.restarts },
        info: exited ? undefined : info,
        reported: exited ? undefined : w.totals,
      };
    });
    const base = {
      name: this.name,
      status: this.status,
      role: this.role,
      distribution: this.distribution,
      transport: this.plan.transport.name,
      address: this.address,
      maxConnections: this.limit,
      maxHandshakes: this.plan.admission.maxHandshakes,
      admission: this.plan.admission.admission,
    };
    return poolInfo(base, answers, this.workers.retired, this.dispatch?.stats, this.descriptorBackoffs);
  }

  async connections(): Promise<ConnectionInfo[]> {
    return (await this.workers.broadcast<ConnectionInfo[]>({ op: 'connections' })).flat();
  }

  /** The primary holds no connections: they live in the workers. */
  localConnections(): ReadonlySet<Connection> {
    return NO_CONNECTIONS;
  }

  /**
   * Replace every worker, one at a time (see {@link RollingRestart}). With distribution `shared` or
   * `primary`, no connect is refused meanwhile.
   */
  restartWorkers(): Promise<void> {
    this.assertNotStopped('restartWorkers');
    this.restarting ??= this.rolling.run().finally(() => {
      this.restarting = undefined;
    });
    return this.restarting;
  }

  /** Each worker's share of the drain rate when all drain at once, so the pool closes at `rate` in total. */
  private workerDrainRate(rate: number): number {
    return rate / Math.max(1, this.workers.live().length);
  }

  /** Longest a worker's drain may take: its timeout plus the pacing of its share of connections. */
  private drainBudget(timeout: number, rate: number): number {
    const pacing = Number.isFinite(rate) ? (this.workers.mostConnections / rate) * 1000 : 0;
    return timeout + pacing + this.exitGrace;
  }

  protected async drainWork(timeout: number, rate: number, began: number): Promise<DrainResult> {
    // Sockets waiting in the primary's own queue (distribution primary) are never served now.
    const abandoned = this.dispatch?.rejectWaiting() ?? 0;
    const share = this.workerDrainRate(rate);
    const results = await this.workers.drain({ op: 'drain', timeout, rate: share }, this.drainBudget(timeout, share));
    return merge(results, abandoned, began);
  }

  protected async stopWork(timeout: number, rate: number, began: number): Promise<DrainResult> {
    this.ticketKeys?.stop();
    const abandoned = this.dispatch?.rejectWaiting() ?? 0;
    this.dispatch?.close();
    await this.socket.closeForGood();
    // A worker starting for a rolling restart is not in a slot yet: it goes too.
    await this.rolling.abort();
    const share = this.workerDrainRate(rate);
    const results = await this.workers.stop({ op: 'stop', timeout, rate: share }, this.drainBudget(timeout, share), this.exitGrace);
    return merge(results, abandoned, began);
  }
}

function merge(results: readonly DrainResult[], abandoned: number, began: number): DrainResult {
  return {
    connections: sum(results.map((r) => r.connections)),
    closedGracefully: sum(results.map((r) => r.closedGracefully)),
    forced: sum(results.map((r) => r.forced)),
    abandoned: sum(results.map((r) => r.abandoned)) + abandoned,
    durationMs: Date.now() - began,
  };
}
