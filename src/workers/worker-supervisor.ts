import { CorralError } from '../errors.js';
import type { DrainResult, ListenerTotals } from '../listener.js';
import type { WorkerPlan } from '../listener-plan.js';
import type { SocketAddress } from '../transport.js';
import type { WorkerCommand } from './ipc.js';
import { addTotals, NO_TOTALS } from './pool-info.js';
import { WorkerProcess, type WorkerProcessEvents } from './worker-process.js';
import { timerDelay } from '../timer-delay.js';

/** What the worker supervisor tells its listener. @internal */
export interface WorkerSupervisorEvents {
  /** A worker said hello and needs its configuration. */
  hello(w: WorkerProcess): void;
  /** A worker accepts (or, with distribution `primary`, takes sockets). */
  ready(w: WorkerProcess, address: SocketAddress): void;
  /** A worker needs a copy of the shared listening socket (distribution `shared`). */
  needHandle(w: WorkerProcess): void;
  /** A worker reported its load. */
  load(w: WorkerProcess): void;
  /** A worker logged an uncaught error before exiting. */
  crashReport(w: WorkerProcess, message: string): void;
  /** A worker process exited (its leases are released and its totals kept already). */
  exited(w: WorkerProcess, code: number | null, signal: NodeJS.Signals | null): void;
  /** A slot's worker died too often: the pool gives up. */
  fatal(error: Error): void;
}

/**
 * The supervision of a worker pool's processes (Ranch's `ranch_conns_sup` one level up): a fixed
 * number of slots, each holding the current process of one worker; a worker that dies is
 * restarted after a backoff (`workerRestarts.initialDelay`, doubling up to `maxDelay`) unless its
 * slot has died more than `maxRestarts` times within `period`, which is fatal for the pool. A
 * rolling restart swaps a slot's process for a new one ({@link WorkerSupervisor.swap}); the old one
 * is kept, `retiring`, until it has exited. The counters of exited processes are kept, so the
 * pool's totals never go backwards. @internal
 */
export class WorkerSupervisor {
  private readonly slots: WorkerProcess[] = [];
  /** Workers swapped out of their slot by a rolling restart, until they exit. */
  private readonly retiring = new Set<WorkerProcess>();
  private readonly restartTimers = new Set<NodeJS.Timeout>();
  private stopping = false;
  private failed = false;
  /** Until every slot's first process is ready. */
  private starting = true;
  private retiredTotals: ListenerTotals = NO_TOTALS;
  /** How every worker process reports here. */
  readonly processEvents: WorkerProcessEvents;

  constructor(
    private readonly listener: string,
    private readonly plan: WorkerPlan,
    private readonly events: WorkerSupervisorEvents,
  ) {
    this.processEvents = {
      hello: (w) => events.hello(w),
      ready: (w, address) => events.ready(w, address),
      needHandle: (w) => events.needHandle(w),
      load: (w) => events.load(w),
      released: (w, ids) => w.releaseLeases(ids),
      crashReport: (w, message) => events.crashReport(w, message),
      // At start, a worker that cannot listen (reuseport: the port is taken; restarting would fail
      // the same way) fails the pool's start with its ListenError; later it dies and is restarted
      // as any crash.
      listenFailed: (_w, error) => {
        if (this.starting) this.fail(error);
      },
      exit: (w, code, signal) => this.onExit(w, code, signal),
    };
    const launch = { listener, script: plan.script, args: plan.args };
    for (let i = 0; i < plan.count; i++) {
      this.slots.push(new WorkerProcess(i, launch, this.processEvents, plan.restarts.maxRestarts, plan.restarts.period));
    }
  }

  /** Number of slots. */
  get count(): number {
    return this.slots.length;
  }

  /** The slot's current worker. */
  at(index: number): WorkerProcess {
    return this.slots[index]!;
  }

  /** Every worker the pool has: the slots' and the retiring ones, in slot order. */
  all(): WorkerProcess[] {
    return [...this.slots, ...this.retiring].sort((a, b) => a.index - b.index);
  }

  /** Workers with a process. */
  live(): WorkerProcess[] {
    return this.all().filter((w) => w.child !== undefined);
  }

  /** Slots whose worker is ready and still has its process, fewest held sockets first. */
  ready(): WorkerProcess[] {
    return this.slots.filter(serving).sort((a, b) => a.leaseCount - b.leaseCount);
  }

  /** Whether some slot's worker is ready and still has its process. */
  get anyReady(): boolean {
    return this.slots.some(serving);
  }

  /** Live connections over every worker, as last reported. */
  get connections(): number {
    let n = 0;
    for (const w of this.slots) n += w.connections;
    for (const w of this.retiring) n += w.connections;
    return n;
  }

  /** Most live connections of one worker, as last reported. */
  get mostConnections(): number {
    return Math.max(0, ...this.all().map((w) => w.connections));
  }

  /** The counters of worker processes that exited. */
  get retired(): ListenerTotals {
    return this.retiredTotals;
  }

  /**
   * Start every slot's process and wait until all are ready. With `firstBinds` (distribution
   * `reuseport` on port 0) the first worker picks the port and the others start after it.
   */
  async start(firstBinds: boolean): Promise<void> {
    try {
      if (firstBinds) {
        const [first, ...rest] = this.slots;
        first!.spawn();
        await first!.whenReady();
        for (const w of rest) w.spawn();
        await Promise.all(rest.map((w) => w.whenReady()));
        return;
      }
      for (const w of this.slots) w.spawn();
      await Promise.all(this.slots.map((w) => w.whenReady()));
    } finally {
      this.starting = false;
    }
  }

  /** Run a command on every live worker and collect the answers (a worker that fails is left out). */
  async broadcast<T>(cmd: WorkerCommand, timeout?: number): Promise<T[]> {
    const settled = await Promise.allSettled(this.live().map((w) => w.request<T>(cmd, timeout)));
    return settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  }

  /**
   * Run a `drain` on every live worker and collect their results. A worker that does not answer
   * (it died meanwhile, or ran out of `timeout`) still counts: the connections it last reported
   * (a worker reports at once when a drain begins) were cut, not drained.
   */
  drain(cmd: WorkerCommand, timeout: number): Promise<DrainResult[]> {
    return Promise.all(this.live().map((w) => drainOf(w, cmd, timeout)));
  }

  /** Put `fresh` (a ready replacement) in its slot; the worker it replaces retires. */
  swap(fresh: WorkerProcess): WorkerProcess {
    const old = this.slots[fresh.index]!;
    this.slots[fresh.index] = fresh;
    fresh.reportTo(this.processEvents);
    old.status = 'retiring';
    if (old.child !== undefined) this.retiring.add(old);
    else old.status = 'stopped';
    return old;
  }

  /**
   * Stop every worker: send each `cmd` (a `stop`) with `budget` ms to answer, then wait for each
   * to exit, killing those still there after `exitGrace` ms. Returns the answers.
   */
  async stop(cmd: WorkerCommand, budget: number, exitGrace: number): Promise<DrainResult[]> {
    this.stopping = true;
    for (const t of this.restartTimers) clearTimeout(t);
    this.restartTimers.clear();
    // A worker still starting (first start, or a replacement for one that died) serves nothing
    // and holds no socket: it is ended at once, not asked (it may not listen to commands yet, and
    // would otherwise be killed only after `budget` and `exitGrace`).
    const [starting, live] = partition(this.live(), (w) => w.status === 'starting' || w.status === 'restarting');
    for (const w of this.all()) w.status = 'stopped';
    for (const w of starting) w.kill();
    const results = await Promise.all(live.map((w) => drainOf(w, cmd, budget)));
    // Every worker leaves by itself after answering; kill what has not within the grace period.
    await Promise.all([...live.map((w) => exitWithin(w, exitGrace)), ...starting.map((w) => w.whenExited())]);
    for (const w of this.slots) w.status = 'stopped';
    return results;
  }

  private onExit(w: WorkerProcess, code: number | null, signal: NodeJS.Signals | null): void {
    w.connections = 0;
    // A process that is gone holds no connection: those it had open when it died (SIGKILL, a crash)
    // closed with it, and count as closed, so that opened − closed stays the live count.
    if (w.totals) this.retiredTotals = addTotals([this.retiredTotals, { ...w.totals, closed: Math.max(w.totals.closed, w.totals.opened) }]);
    w.totals = undefined;
    const wasRetiring = this.retiring.delete(w);
    if (wasRetiring || w.status === 'retiring' || w.status === 'stopped' || this.stopping) w.status = 'stopped';
    // Its process is gone (`child` is cleared): `exited` lets the listener stop handing sockets over
    // if no other worker is ready, before the slots this worker held are released — each release
    // serves a waiting socket, which must wait for a worker rather than fail for want of one.
    this.events.exited(w, code, signal);
    w.releaseAllLeases();
    if (w.status === 'stopped') return;
    const r = this.plan.restarts;
    if (!w.intensity.tryRestart()) {
      w.status = 'stopped';
      const how = signal ? `signal ${signal}` : `exit code ${code}`;
      this.fail(
        new CorralError(
          'CORRAL_WORKERS_FAILED',
          `corral: listener ${this.listener}: worker ${w.index} died (${how}) more than ${r.maxRestarts} times within ${r.period} ms; stopping the listener instead of restarting it again`,
        ),
      );
      return;
    }
    w.restarts++;
    const delay = Math.min(r.maxDelay, r.initialDelay * 2 ** Math.max(0, w.intensity.recent - 1));
    w.status = 'restarting';
    const timer = setTimeout(() => {
      this.restartTimers.delete(timer);
      // Not if a rolling restart put a fresh worker in its slot meanwhile (`swap`): this one would
      // start outside the pool, where stop() never reaches it.
      if (!this.stopping && this.slots[w.index] === w && w.status === 'restarting') w.spawn();
    }, delay);
    this.restartTimers.add(timer);
  }

  private fail(error: Error): void {
    if (this.failed) return;
    this.failed = true;
    for (const w of this.slots) w.failReady(error);
    // During start the error is the start's own rejection (the caller has no listener to watch yet).
    if (!this.starting) this.events.fatal(error);
  }
}

/** A worker that is ready and still has its process (its exit may not have been seen yet). */
function serving(w: WorkerProcess): boolean {
  return w.status === 'ready' && w.child !== undefined;
}

/** Wait for `w` to exit, killing it if it is still there after `grace` ms. @internal */
export async function exitWithin(w: WorkerProcess, grace: number): Promise<void> {
  const timer = setTimeout(() => w.kill(), timerDelay(grace));
  await w.whenExited();
  clearTimeout(timer);
}

/**
 * A worker's answer to a drain or stop `cmd`. If it gives none (it died, or its time ran out), the
 * connections it last reported count, all of them forced: of a process that exited, what it
 * reported last (its slot is restarted with none).
 */
async function drainOf(w: WorkerProcess, cmd: WorkerCommand, timeout: number): Promise<DrainResult> {
  try {
    return await w.request<DrainResult>(cmd, timeout);
  } catch {
    const held = w.child === undefined ? w.connectionsAtExit : w.connections;
    return { connections: held, closedGracefully: 0, forced: held, abandoned: 0, durationMs: 0 };
  }
}

function partition<T>(items: readonly T[], test: (item: T) => boolean): [T[], T[]] {
  const yes: T[] = [];
  const no: T[] = [];
  for (const item of items) (test(item) ? yes : no).push(item);
  return [yes, no];
}
