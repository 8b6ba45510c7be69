import { EventEmitter } from 'node:events';
import type { Connection, ConnectionInfo } from '../connection.js';
import { CorralError } from '../errors.js';
import type { AccessRule } from '../limits/access-rules.js';
import type {
  ConnectionCountOp,
  DrainResult,
  Listener,
  WorkerAnswer,
  ListenerEvents,
  ListenerInfo,
  ListenerRole,
  ListenerStatus,
} from '../listener.js';
import { type AlarmPlan, checkDrainOptions } from '../listener-plan.js';
import { ConnectionAlarms } from './connection-alarms.js';
import { DescriptorGuard } from './descriptor-guard.js';
import type { SocketAddress } from '../transport.js';
import { ConnectionCountWaits } from './connection-count-waits.js';
import { emitSafely, ListenerReporter } from './listener-reporter.js';
import { ListeningSocket, type OpenSocket } from './listening-socket.js';

/** What a {@link ListenerShell} is built with. @internal */
export interface ListenerShellOptions {
  readonly name: string;
  /** The default drain timeout, ms. */
  readonly shutdownTimeout: number;
  /** The default drain rate, connections per second. */
  readonly drainRate: number;
  /** The live connection count now (for `waitForConnections`). */
  readonly liveConnections: () => number;
  /** Open the listening socket; `undefined` when this process has none. */
  readonly openSocket: () => Promise<OpenSocket | undefined>;
  /** The address to report when this process has no socket of its own. */
  readonly address?: SocketAddress;
  /** Alarms on the live connection count (none in a pool's workers: the primary watches the total). */
  readonly alarms: readonly AlarmPlan[];
  /** Sockets this listener holds open in this process (silent, waiting, handshaking, connected). */
  readonly heldSockets: () => number;
}

/** First back-off after running out of file descriptors, ms; it doubles while it keeps happening. */
const DESCRIPTOR_BACKOFF_MIN_MS = 100;
/** Longest back-off, ms. */
const DESCRIPTOR_BACKOFF_MAX_MS = 5000;
/** Accepting this long without running out again starts the back-off over. */
const DESCRIPTOR_BACKOFF_RESET_MS = 30_000;

/**
 * What every listener has in common, whether its connections live in this process or in worker
 * processes: the status state machine (running, suspended, draining, stopped) and its guard, the
 * listening socket ({@link ListeningSocket}), `waitForConnections`, single-flight `drain` and
 * `stop` with their options checked once, and one {@link ListenerReporter} for events and
 * channels. A subclass says what suspending, draining and stopping do to its work, and how it
 * reports itself. So an option or an event added here exists for both kinds by construction.
 * @internal
 */
export abstract class ListenerShell extends EventEmitter<ListenerEvents> implements Listener {
  readonly name: string;
  abstract readonly role: ListenerRole;
  protected state: ListenerStatus = 'suspended';
  protected readonly socket: ListeningSocket;
  protected readonly counts: ConnectionCountWaits;
  protected readonly report: ListenerReporter;
  private readonly alarms: ConnectionAlarms;
  /** A `suspend()` under way (a `resume()` waits for it). */
  private suspending: Promise<void> | undefined = undefined;
  /** A `resume()` under way (a `suspend()` waits for it). */
  private resuming: Promise<void> | undefined = undefined;
  /** Times accepting ran out of file descriptors. */
  protected descriptorBackoffs = 0;
  private backoffMs = 0;
  private lastExhausted = 0;
  private backoffTimer: NodeJS.Timeout | undefined = undefined;
  private readonly descriptors = new DescriptorGuard();
  private draining: Promise<DrainResult> | undefined = undefined;
  private stopping: Promise<DrainResult> | undefined = undefined;
  /** Called once the listener has stopped (the registry frees the name). */
  onStopped: (() => void) | undefined = undefined;

  constructor(private readonly shell: ListenerShellOptions) {
    super();
    this.name = shell.name;
    this.report = new ListenerReporter(this, shell.name);
    this.counts = new ConnectionCountWaits(shell.name, shell.liveConnections);
    this.socket = new ListeningSocket(shell.openSocket, (err) => this.acceptFailed(err), shell.address);
    this.alarms = new ConnectionAlarms(shell.name, shell.alarms, (event) => emitSafely(this, 'alarm', event));
  }

  /** The live connection count may have changed: `waitForConnections` and the alarms look. */
  protected countsChanged(): void {
    this.counts.check();
    this.alarms.check(this.shell.liveConnections());
  }

  /**
   * Sockets were accepted: stop accepting before the process runs out of file descriptors (see
   * {@link DescriptorGuard}). Cheap unless the process is near its open-file limit.
   */
  protected checkDescriptors(): void {
    if (this.socket.isHeld('exhausted') || this.stopping) return;
    if (this.descriptors.exhausted(this.shell.heldSockets())) this.backOffForDescriptors();
  }

  /**
   * An error of the listening socket, reported as `acceptError`; out of file descriptors
   * (`EMFILE`, `ENFILE`), the listener also backs off.
   */
  protected acceptFailed(error: Error): void {
    emitSafely(this, 'acceptError', error);
    const code = (error as NodeJS.ErrnoException).code;
    if ((code === 'EMFILE' || code === 'ENFILE') && !this.socket.isHeld('exhausted') && !this.stopping) this.backOffForDescriptors();
  }

  /**
   * Out of file descriptors, or about to be: stop accepting for a back-off (100 ms, doubling to 5 s
   * while it keeps happening), then accept again once descriptors are free. While the socket is
   * closed new connects are refused (or, where another process keeps the socket, wait in its
   * backlog) instead of being accepted and closed; live connections are untouched.
   */
  private backOffForDescriptors(): void {
    const now = Date.now();
    this.backoffMs = now - this.lastExhausted > DESCRIPTOR_BACKOFF_RESET_MS ? DESCRIPTOR_BACKOFF_MIN_MS : Math.min(DESCRIPTOR_BACKOFF_MAX_MS, this.backoffMs * 2);
    this.lastExhausted = now;
    this.descriptorBackoffs++;
    void this.socket.hold('exhausted').then(() => this.retryAfterBackoff());
  }

  /** After the back-off, reopen — once descriptors are free again; until then, back off again. */
  private retryAfterBackoff(): void {
    clearTimeout(this.backoffTimer);
    this.backoffTimer = setTimeout(() => {
      this.backoffTimer = undefined;
      if (this.stopping) return;
      if (this.descriptors.exhausted(this.shell.heldSockets(), true)) {
        this.backoffMs = Math.min(DESCRIPTOR_BACKOFF_MAX_MS, this.backoffMs * 2);
        this.lastExhausted = Date.now();
        this.retryAfterBackoff();
        return;
      }
      void this.socket.release('exhausted', { retry: true });
    }, this.backoffMs);
    this.backoffTimer.unref();
  }

  get status(): ListenerStatus {
    return this.state;
  }

  get address(): SocketAddress {
    const a = this.socket.address;
    if (a === undefined) throw new CorralError('CORRAL_LISTENER_STOPPED', `listener ${this.name} has no address yet`);
    return a;
  }

  get port(): number | undefined {
    const a = this.socket.address;
    return a !== undefined && (a.family === 'IPv4' || a.family === 'IPv6') ? a.port : undefined;
  }

  abstract get maxConnections(): number;
  abstract set maxConnections(n: number);
  abstract info(): Promise<ListenerInfo>;
  abstract connections(): Promise<ConnectionInfo[]>;
  abstract localConnections(): ReadonlySet<Connection>;
  abstract pauseAccepting(): Promise<void>;
  abstract resumeAccepting(): Promise<void>;
  abstract restartWorkers(): Promise<void>;
  abstract setProtocolOptions(options: unknown): void;
  abstract setAccessRules(rules: readonly AccessRule[]): Promise<void>;
  abstract askWorkers<T = unknown>(topic: string, payload?: unknown, options?: { timeout?: number }): Promise<WorkerAnswer<T>[]>;

  /** The application's answers to the primary's questions, by topic. */
  private readonly answers = new Map<string, (payload: unknown) => unknown>();

  answer(topic: string, answer: (payload: unknown) => unknown): void {
    if (typeof topic !== 'string' || typeof answer !== 'function') throw new TypeError('answer(topic, fn): a string and a function');
    this.answers.set(topic, answer);
  }

  /** Answer a question of the primary's here (in a worker, or a single listener asking itself). @internal */
  async answerHere(topic: string, payload: unknown): Promise<unknown> {
    const answer = this.answers.get(topic);
    if (answer === undefined) throw new CorralError('CORRAL_UNSUPPORTED', `no answer for ${JSON.stringify(topic)} in this process (listener.answer)`);
    return answer(payload);
  }
  abstract updateTransport(options: Readonly<Record<string, unknown>>): Promise<void>;

  /** What suspending does to the work beyond this process's socket (a pool's workers). */
  protected async suspendWork(): Promise<void> {}
  /** What resuming does beyond this process's socket. */
  protected async resumeWork(): Promise<void> {}
  /** Drain the connections (the socket is closed and `suspend` emitted already). */
  protected abstract drainWork(timeout: number, rate: number, began: number): Promise<DrainResult>;
  /** Stop the connections and release what the listener holds (called once; the socket is closed). */
  protected abstract stopWork(timeout: number, rate: number, began: number): Promise<DrainResult>;

  /** The listener accepts: its status is `running` and `corral:listener:start` is published. @internal */
  protected started(transport: string): void {
    this.state = 'running';
    this.report.started(transport, this.address);
  }

  async suspend(): Promise<void> {
    this.assertNotStopped('suspend');
    // A resume still reopening the socket finishes first, so that this suspend is not lost.
    if (this.resuming) await this.resuming.catch(() => {});
    this.assertNotStopped('suspend');
    if (this.state !== 'running') return;
    this.state = 'suspended';
    const work = (async () => {
      await this.suspendWork();
      await this.socket.hold('suspended');
      emitSafely(this, 'suspend');
    })();
    this.suspending = work;
    try {
      await work;
    } finally {
      if (this.suspending === work) this.suspending = undefined;
    }
  }

  /**
   * Reopen the socket and accept again; during a drain, once the drain has ended. A resume that
   * loses to a `stop()` — called before the drain it waits for ends, or while it reopens — rejects
   * with `CORRAL_LISTENER_STOPPED`, as a resume after `stop()` does: it never releases the hold the
   * stop put on the socket, never sets the status back to `running`, and emits no `resume`. A
   * resume overtaken by a `drain()` while it reopens has no effect: the drain wins.
   */
  async resume(): Promise<void> {
    const work = this.resumeNow();
    this.resuming = work;
    try {
      await work;
    } finally {
      if (this.resuming === work) this.resuming = undefined;
    }
  }

  private async resumeNow(): Promise<void> {
    this.assertNotStopped('resume');
    // A suspend still closing the socket finishes first: resuming under it would leave the
    // listener `running` with its socket closed.
    if (this.suspending) await this.suspending.catch(() => {});
    this.assertNotStopped('resume');
    if (this.state === 'running') return;
    if (this.draining) await this.draining;
    // The socket's `suspended` hold is the stop's now: releasing it would reopen a stopping listener.
    this.assertNotStopped('resume');
    await this.socket.release('suspended');
    this.assertNotStopped('resume');
    // A drain began while the socket reopened: it holds the socket closed again, and wins.
    if (this.state === 'draining' || this.socket.isHeld('suspended')) return;
    this.state = 'running';
    await this.resumeWork();
    this.assertNotStopped('resume');
    emitSafely(this, 'resume');
  }

  waitForConnections(op: ConnectionCountOp, n: number, options: { timeout?: number } = {}): Promise<void> {
    return this.counts.wait(op, n, options.timeout);
  }

  drain(options: { timeout?: number; rate?: number } = {}): Promise<DrainResult> {
    try {
      this.assertNotStopped('drain');
    } catch (err) {
      return Promise.reject(err);
    }
    const timeout = checkDrainOptions(options, this.shell.shutdownTimeout);
    if (timeout instanceof TypeError) return Promise.reject(timeout);
    this.draining ??= this.runDrain(timeout, options.rate ?? this.shell.drainRate).finally(() => {
      this.draining = undefined;
    });
    return this.draining;
  }

  stop(options: { timeout?: number; rate?: number } = {}): Promise<DrainResult> {
    if (this.stopping) return this.stopping;
    // A bad timeout must not leave `stopping` set: the listener would be wedged, running but unstoppable.
    const timeout = checkDrainOptions(options, this.shell.shutdownTimeout);
    if (timeout instanceof TypeError) return Promise.reject(timeout);
    const rate = options.rate ?? this.shell.drainRate;
    this.stopping = (async () => {
      const began = Date.now();
      await this.quiesce();
      clearTimeout(this.backoffTimer);
      const result = await this.stopWork(timeout, rate, began);
      this.state = 'stopped';
      this.counts.stop();
      this.onStopped?.();
      this.report.stopped();
      return result;
    })();
    return this.stopping;
  }

  /** Whether `stop` has been called. @internal */
  protected get stopRequested(): boolean {
    return this.stopping !== undefined;
  }

  /** A drain in progress, if any (a stop waits for it). @internal */
  protected get drainInProgress(): Promise<DrainResult> | undefined {
    return this.draining;
  }

  private async runDrain(timeout: number, rate: number): Promise<DrainResult> {
    const began = Date.now();
    await this.quiesce();
    const result = await this.drainWork(timeout, rate, began);
    if (this.state === 'draining') this.state = 'suspended';
    return result;
  }

  /** Stop accepting for a drain or stop: status `draining`, the socket closed, `suspend` if it was running. */
  private async quiesce(): Promise<void> {
    const wasRunning = this.state === 'running';
    this.state = 'draining';
    await this.socket.hold('suspended');
    if (wasRunning) emitSafely(this, 'suspend');
  }

  protected assertNotStopped(what: string): void {
    if (this.state === 'stopped' || this.stopping) {
      throw new CorralError('CORRAL_LISTENER_STOPPED', `cannot ${what}: listener ${this.name} is stopped`);
    }
  }
}
