import { type ChildProcess, fork } from 'node:child_process';
import type { Lease } from '../acceptor-pool/lease.js';
import { CorralError, ListenError } from '../errors.js';
import { RestartIntensity } from '../restart-intensity.js';
import type { ListenerTotals, WorkerInfo } from '../listener.js';
import type { SocketAddress } from '../transport.js';
import { type FromWorker, type ToWorker, WORKER_ENV, WORKER_INDEX_ENV, type WorkerCommand } from './ipc.js';
import { timerDelay } from '../timer-delay.js';

/** How long the primary waits for a worker to answer a command, in ms. */
const COMMAND_TIMEOUT_MS = 10_000;

/** What a worker process reports to the primary listener. @internal */
export interface WorkerProcessEvents {
  /** The worker said hello and needs its configuration (plus the shared handle, if any). */
  hello(w: WorkerProcess): void;
  ready(w: WorkerProcess, address: SocketAddress): void;
  needHandle(w: WorkerProcess): void;
  load(w: WorkerProcess): void;
  released(w: WorkerProcess, ids: readonly number[]): void;
  crashReport(w: WorkerProcess, message: string): void;
  /** The worker could not listen (`reuseport`: bind its own socket; `shared`: listen on the primary's handle). */
  listenFailed(w: WorkerProcess, error: ListenError): void;
  exit(w: WorkerProcess, code: number | null, signal: NodeJS.Signals | null): void;
}

/** How to start a worker process. @internal */
export interface WorkerLaunch {
  readonly listener: string;
  readonly script: string;
  readonly args: readonly string[];
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * One worker process of a pool, seen from the primary: the child process of a slot (restarted in
 * place after it dies), its reported load, the sockets it holds slots for, its IPC requests and
 * the restart history of the slot. @internal
 */
export class WorkerProcess {
  child: ChildProcess | undefined = undefined;
  status: WorkerInfo['status'] = 'starting';
  generation = 0;
  connections = 0;
  /** `connections` as last reported by the process that exited last (a drain it did not answer counts them). */
  connectionsAtExit = 0;
  /** The counters of the current process, as last reported. */
  totals: ListenerTotals | undefined = undefined;
  /**
   * Slots of `maxConnections` held for sockets the primary passed to this worker (distribution
   * `primary`), by the id the socket went with: the worker names the ids whose connections are
   * done, so each lease (and the per-source place it holds) is released for its own socket.
   */
  private readonly leases = new Map<number, Lease>();
  private lastSocketId = 0;
  restarts = 0;
  /** The pid of the most recent process, kept after it exits (for `workerExit`). */
  lastPid: number | undefined = undefined;
  readonly intensity: RestartIntensity;
  private nextRequest = 1;
  private readonly pending = new Map<number, Pending>();
  private readyWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private exitWaiters: (() => void)[] = [];

  constructor(
    readonly index: number,
    private readonly launch: WorkerLaunch,
    private events: WorkerProcessEvents,
    private readonly maxRestarts: number,
    private readonly period: number,
  ) {
    this.intensity = new RestartIntensity(maxRestarts, period);
  }

  /** A new slot for the same worker index (a rolling restart's replacement), reporting to `events`. */
  replacement(events: WorkerProcessEvents): WorkerProcess {
    const next = new WorkerProcess(this.index, this.launch, events, this.maxRestarts, this.period);
    next.generation = this.generation;
    return next;
  }

  /** Report to other handlers from now on (a replacement joins its slot). */
  reportTo(events: WorkerProcessEvents): void {
    this.events = events;
  }

  /** The handlers this slot reports to. */
  get handlers(): WorkerProcessEvents {
    return this.events;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Whether the current process can be sent messages: it runs and its channel is open. */
  get connected(): boolean {
    return this.child?.connected === true;
  }

  /** Start (or restart) the slot's process. */
  spawn(): void {
    this.generation++;
    this.status = this.generation === 1 ? 'starting' : 'restarting';
    this.connections = 0;
    this.releaseAllLeases();
    const child = fork(this.launch.script, [...this.launch.args], {
      env: { ...process.env, [WORKER_ENV]: this.launch.listener, [WORKER_INDEX_ENV]: String(this.index) },
      execArgv: process.execArgv,
      serialization: 'advanced',
      stdio: 'inherit',
    });
    this.child = child;
    this.lastPid = child.pid;
    child.on('message', (message: FromWorker) => this.onMessage(child, message));
    // A fork that failed (EMFILE, EAGAIN) has no pid and may never emit 'exit': treat it as one.
    child.on('error', () => {
      if (child.pid === undefined) exited(null, null);
    });
    child.on('exit', (code, signal) => exited(code, signal));
    const exited = (code: number | null, signal: NodeJS.Signals | null): void => {
      if (this.child !== child) return;
      this.child = undefined;
      this.connectionsAtExit = this.connections;
      for (const [, p] of this.pending) {
        clearTimeout(p.timer);
        p.reject(new CorralError('CORRAL_LISTENER_STOPPED', `worker ${this.index} exited`));
      }
      this.pending.clear();
      for (const w of this.exitWaiters.splice(0)) w();
      this.events.exit(this, code, signal);
    };
  }

  private onMessage(child: ChildProcess, message: FromWorker): void {
    if (this.child !== child) return;
    switch (message.t) {
      case 'hello':
        this.events.hello(this);
        break;
      case 'ready':
        this.status = 'ready';
        for (const w of this.readyWaiters.splice(0)) w.resolve();
        this.events.ready(this, message.address);
        break;
      case 'need-handle':
        this.events.needHandle(this);
        break;
      case 'load':
        this.connections = message.connections;
        this.totals = message.totals;
        this.events.load(this);
        break;
      case 'released':
        this.events.released(this, message.ids);
        break;
      case 'crash-report':
        this.events.crashReport(this, message.message);
        break;
      case 'listen-failed':
        this.events.listenFailed(this, new ListenError(message.address, Object.assign(new Error(message.message), { code: message.syscallCode })));
        break;
      case 'reply': {
        const p = this.pending.get(message.id);
        if (!p) break;
        this.pending.delete(message.id);
        clearTimeout(p.timer);
        if (message.ok) p.resolve(message.value);
        else p.reject(new Error(`worker ${this.index}: ${message.error}`));
        break;
      }
    }
  }

  /** Sockets passed to this worker that still hold a slot (distribution `primary`). */
  get leaseCount(): number {
    return this.leases.size;
  }

  /** The id the next socket passed to this worker goes with (unique for the slot's lifetime). */
  nextSocketId(): number {
    return ++this.lastSocketId;
  }

  /** Hold the lease of socket `id`, just passed to this worker. */
  hold(id: number, lease: Lease): void {
    this.leases.set(id, lease);
  }

  /** The worker is done with these sockets: release their leases (ids not held are ignored). */
  releaseLeases(ids: readonly number[]): void {
    for (const id of ids) {
      const lease = this.leases.get(id);
      if (lease === undefined) continue;
      this.leases.delete(id);
      lease.release();
    }
  }

  /** Release every lease this worker holds (its process exited, or a new one starts). */
  releaseAllLeases(): void {
    const all = [...this.leases.values()];
    this.leases.clear();
    for (const lease of all) lease.release();
  }

  /** Send a message (with an optional handle or socket) to the current process. Returns false if it is gone. */
  post(message: ToWorker, handle?: object): boolean {
    const child = this.child;
    if (!child || !this.connected) return false;
    try {
      child.send(message, handle as never, { keepOpen: message.t === 'start' || message.t === 'handle' }, () => {});
      return true;
    } catch {
      return false;
    }
  }

  /** Run a command in the worker and resolve with its answer. */
  request<T>(cmd: WorkerCommand, timeout = COMMAND_TIMEOUT_MS): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const id = this.nextRequest++;
      // A drain paced over months has a budget past Node's longest timer.
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new CorralError('CORRAL_WAIT_TIMEOUT', `worker ${this.index} did not answer ${cmd.op} within ${timeout} ms`));
      }, timerDelay(timeout));
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      if (!this.post({ t: 'cmd', id, cmd })) {
        this.pending.delete(id);
        clearTimeout(timer);
        reject(new CorralError('CORRAL_LISTENER_STOPPED', `worker ${this.index} is not running`));
      }
    });
  }

  /** Resolves when the current process is ready; rejects if it exits first. */
  whenReady(): Promise<void> {
    if (this.status === 'ready') return Promise.resolve();
    return new Promise((resolve, reject) => this.readyWaiters.push({ resolve, reject }));
  }

  /** Fail everyone waiting for readiness (the slot gave up). */
  failReady(error: Error): void {
    for (const w of this.readyWaiters.splice(0)) w.reject(error);
  }

  /** Resolves once the current process has exited (at once if there is none). */
  whenExited(): Promise<void> {
    if (!this.child) return Promise.resolve();
    return new Promise((resolve) => this.exitWaiters.push(resolve));
  }

  /** Kill the current process (SIGKILL) if it is still there. */
  kill(): void {
    this.child?.kill('SIGKILL');
  }
}
