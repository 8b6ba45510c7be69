import { EventEmitter } from 'node:events';
import type { Connection, ConnectionInfo } from '../connection.js';
import { CorralError } from '../errors.js';
import type {
  ConnectionCountOp,
  DrainResult,
  Listener,
  ListenerEvents,
  ListenerInfo,
  ListenerRole,
  ListenerStatus,
} from '../listener.js';
import { checkDrainOptions } from '../listener-plan.js';
import type { SocketAddress } from '../transport.js';
import { ConnectionCountWaits } from './connection-count-waits.js';
import { ListenerReporter } from './listener-reporter.js';
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
}

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
  private draining: Promise<DrainResult> | undefined = undefined;
  private stopping: Promise<DrainResult> | undefined = undefined;
  /** Called once the listener has stopped (the registry frees the name). */
  onStopped: (() => void) | undefined = undefined;

  constructor(private readonly shell: ListenerShellOptions) {
    super();
    this.name = shell.name;
    this.report = new ListenerReporter(this, shell.name);
    this.counts = new ConnectionCountWaits(shell.name, shell.liveConnections);
    this.socket = new ListeningSocket(shell.openSocket, (err) => this.emit('acceptError', err), shell.address);
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
    if (this.state !== 'running') return;
    this.state = 'suspended';
    await this.suspendWork();
    await this.socket.hold('suspended');
    this.emit('suspend');
  }

  async resume(): Promise<void> {
    this.assertNotStopped('resume');
    if (this.state === 'running') return;
    if (this.draining) await this.draining;
    await this.socket.release('suspended');
    this.state = 'running';
    await this.resumeWork();
    this.emit('resume');
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
    if (wasRunning) this.emit('suspend');
  }

  protected assertNotStopped(what: string): void {
    if (this.state === 'stopped' || this.stopping) {
      throw new CorralError('CORRAL_LISTENER_STOPPED', `cannot ${what}: listener ${this.name} is stopped`);
    }
  }
}
