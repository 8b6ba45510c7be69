import { Lease } from '../acceptor-pool/lease.js';
import { connectionStorage } from '../current-connection.js';
import { CorralError, ListenError } from '../errors.js';
import { type ListenerPlan, type WorkerPlan, workerAdmission } from '../listener-plan.js';
import { ProcessListener } from '../listeners/process-listener.js';
import type { Transport, TransportListenHandlers, TransportServer } from '../transport.js';
import { type FromWorker, type ToWorker, WORKER_INDEX_ENV, type WorkerCommand, type WorkerConfig } from './ipc.js';

/** Minimum spacing of load reports to the primary, in ms. */
const LOAD_REPORT_MS = 20;

function send(message: FromWorker, handle?: object, sent?: () => void): void {
  // Cast: `process.send` takes Node's own handle types; the handles corral passes are those it received.
  if (process.connected) process.send!(message, handle as never, {}, sent ? () => sent() : undefined);
  else sent?.();
}

function ignoreSignal(): void {}

/** Release a raw listening handle received from the primary. */
function closeHandle(handle: object): void {
  try {
    (handle as { close?: () => void }).close?.();
  } catch {
    // already closed
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? (error.stack ?? error.message) : String(error);
}

/**
 * Log an uncaught error of a worker process, with the listener and connection it came from, and
 * exit so that the primary restarts the worker. Only this worker's connections are lost.
 */
function installCrashHandlers(listener: string, index: number): void {
  const die = (kind: string, error: unknown): void => {
    const ctx = connectionStorage.getStore();
    const record = {
      level: 'fatal',
      msg: `corral worker ${index} of listener ${listener}: ${kind}; restarting the worker`,
      listener,
      worker: index,
      pid: process.pid,
      connection: ctx?.connection ?? null,
      error: describe(error),
    };
    process.stderr.write(`${JSON.stringify(record)}\n`);
    send({ t: 'crash-report', message: record.msg + (ctx ? ` (connection ${ctx.connection})` : '') });
    process.exit(70);
  };
  process.on('uncaughtException', (err) => die('uncaught exception', err));
  process.on('unhandledRejection', (err) => die('unhandled rejection', err));
}

/**
 * A worker process's side of a worker pool: it says hello to the primary, waits for its
 * configuration, builds its transport once from its own plan, runs a {@link ProcessListener} (role
 * `worker`) that opens its socket the distribution's way, reports its load, and serves the
 * primary's commands over IPC. @internal
 */
export class PoolWorker {
  private readonly index = Number(process.env[WORKER_INDEX_ENV] ?? '0');
  private listener: ProcessListener | undefined = undefined;
  private transport: Transport | undefined = undefined;
  /**
   * Shared-socket handles are used the moment they arrive, never kept for later: after a suspend
   * and resume the primary binds a new socket, and a kept handle would hold the old one open.
   */
  private readonly handleWaiters: ((handle: object | undefined) => void)[] = [];
  private startHandle: object | undefined = undefined;
  /** Sockets the primary passed before the listener existed (distribution `primary`). */
  private readonly earlySockets: { id: number; raw: object; head: Buffer | undefined; proxy: Buffer | undefined }[] = [];
  /** Load reports and released slots are coalesced: at most one message per LOAD_REPORT_MS. */
  private reportTimer: NodeJS.Timeout | undefined = undefined;
  private released: number[] = [];
  private lastReport = '';
  /** The primary's pause/resume of accepting (`shared`: a worker at its share also stops accepting). */
  private userAccepting = true;
  private applying: Promise<void> = Promise.resolve();
  private applyQueued = false;
  private stopped = false;

  private constructor(
    private readonly plan: ListenerPlan,
    private readonly workers: WorkerPlan,
  ) {}

  /** Join the primary's listener from inside a worker process; resolves with this worker's listener. */
  static start(plan: ListenerPlan): Promise<ProcessListener> {
    if (typeof process.send !== 'function') {
      return Promise.reject(new CorralError('CORRAL_LISTEN_FAILED', 'corral: this process is marked as a worker but has no IPC channel'));
    }
    if (plan.workers === undefined) return Promise.reject(new CorralError('CORRAL_LISTEN_FAILED', `listener ${plan.name} has no workers`));
    return new PoolWorker(plan, plan.workers).run();
  }

  private async run(): Promise<ProcessListener> {
    const config = await this.join();
    const distribution = this.workers.distribution;
    // reuseport: this worker binds its own socket, on the pool's port once the first worker has one.
    const a = config.address;
    const port = distribution === 'reuseport' && a !== undefined && (a.family === 'IPv4' || a.family === 'IPv6') ? a.port : undefined;
    const transport = this.plan.transport.build(distribution === 'reuseport' ? { reusePort: true, ...(port === undefined ? {} : { port }) } : {});
    this.transport = transport;
    // One update, one secure context: the pool's own ticket keys (if it makes them), then what
    // updateTransport set since the pool started (merged by the primary; its keys win).
    const keys = config.ticketKeys ? { ticketKeys: config.ticketKeys.map((k) => Buffer.from(k)) } : {};
    const update: Record<string, unknown> = { ...keys, ...config.transportUpdate };
    if (Object.keys(update).length > 0) transport.update?.(update);
    this.userAccepting = config.accepting;
    // This worker's part of the pool's admission (rates, per-source rules; see workerAdmission).
    const plan = { ...this.plan, admission: workerAdmission(this.plan.admission, distribution, this.workers.count) };

    const listener = new ProcessListener(plan, transport, {
      idPrefix: `${this.index}.${config.generation}.`,
      distribution,
      ...(distribution === 'shared' ? { open: (handlers: TransportListenHandlers) => this.listenOnShared(handlers) } : {}),
      ...(distribution === 'primary' ? { open: async () => undefined } : {}),
      ...(config.address ? { address: config.address } : {}),
      changed: () => {
        this.scheduleReport();
        if (distribution === 'shared') this.applyAccepting();
      },
    });
    this.listener = listener;
    listener.maxConnections = config.maxConnections;
    if (config.protocolOptions) listener.setProtocolOptions(config.protocolOptions.value);
    if (config.access) await listener.setAccessRules(config.access);
    try {
      await listener.start({ suspended: config.suspended, paused: !config.accepting });
    } catch (err) {
      // Sent (and flushed) before the error ends this process: the primary's start rejects with it.
      if (err instanceof ListenError) {
        const failed: FromWorker = { t: 'listen-failed', address: err.address, syscallCode: err.syscallCode, message: err.cause instanceof Error ? err.cause.message : err.message };
        await new Promise<void>((resolve) => send(failed, undefined, resolve));
      }
      throw err;
    }
    // A start handle this worker did not listen on (paused, suspended) must not hold the socket open.
    if (this.startHandle) {
      closeHandle(this.startHandle);
      this.startHandle = undefined;
    }
    for (const { id, raw, head, proxy } of this.earlySockets.splice(0)) this.adopt(listener, id, raw, head, proxy);
    send({ t: 'ready', address: listener.address });
    return listener;
  }

  /** Listen to the primary, say hello, and wait for the configuration. */
  private join(): Promise<WorkerConfig> {
    const name = this.plan.name;
    let configured!: (config: WorkerConfig) => void;
    const started = new Promise<WorkerConfig>((resolve) => {
      configured = resolve;
    });
    process.on('message', (message: ToWorker, handle?: object) => {
      switch (message.t) {
        case 'start':
          this.startHandle = handle;
          configured(message.config);
          break;
        case 'handle': {
          // No handle: the primary has no socket to share now; the open waiting for it fails.
          const waiter = this.handleWaiters.shift();
          if (waiter) waiter(handle);
          else if (handle !== undefined) closeHandle(handle);
          break;
        }
        case 'socket': {
          if (handle === undefined) {
            // The socket was gone before it could be sent (its handle closed): its slot is free.
            this.release(message.id);
            break;
          }
          const head = message.head === undefined ? undefined : Buffer.from(message.head.buffer, message.head.byteOffset, message.head.byteLength);
          const proxy = message.proxy === undefined ? undefined : Buffer.from(message.proxy.buffer, message.proxy.byteOffset, message.proxy.byteLength);
          if (this.listener) this.adopt(this.listener, message.id, handle, head, proxy);
          else this.earlySockets.push({ id: message.id, raw: handle, head, proxy });
          break;
        }
        case 'cmd':
          void this.command(message.id, message.cmd);
          break;
      }
    });
    installCrashHandlers(name, this.index);
    // A worker without its primary would hold connections nobody supervises: leave with it.
    process.on('disconnect', () => {
      if (!this.stopped) process.exit(0);
    });
    // Ctrl-C signals the whole process group: the primary decides how workers stop (drain, stop).
    process.on('SIGINT', ignoreSignal);
    process.on('SIGTERM', ignoreSignal);
    send({ t: 'hello', listener: name, pid: process.pid });
    return started;
  }

  /** Distribution `shared`: listen on a copy of the primary's socket (the start handle, or a fresh one). */
  private async listenOnShared(handlers: TransportListenHandlers): Promise<TransportServer> {
    const transport = this.transport!;
    if (!transport.listenOnHandle) throw new CorralError('CORRAL_LISTEN_FAILED', `transport ${transport.name} cannot share a socket`);
    const handle = await this.nextHandle();
    if (handle === undefined) throw new CorralError('CORRAL_LISTEN_FAILED', 'the primary has no socket to share (it is draining or stopping)');
    return transport.listenOnHandle(handle, handlers);
  }

  private nextHandle(): Promise<object | undefined> {
    const h = this.startHandle;
    this.startHandle = undefined;
    if (h) return Promise.resolve(h);
    return new Promise((resolve) => {
      this.handleWaiters.push(resolve);
      send({ t: 'need-handle' });
    });
  }

  /** Serve a socket the primary passed; the primary holds its slot until this worker says it is done. */
  private adopt(listener: ProcessListener, id: number, raw: object, head: Buffer | undefined, proxy: Buffer | undefined): void {
    listener.adopt(
      raw,
      head,
      new Lease(() => this.release(id)),
      proxy,
    );
  }

  /** Socket `id` no longer holds its slot: tell the primary (coalesced with the next report). */
  private release(id: number): void {
    this.released.push(id);
    this.scheduleReport();
  }

  private scheduleReport(): void {
    this.reportTimer ??= setTimeout(() => this.report(), LOAD_REPORT_MS);
  }

  private reportNow(): void {
    clearTimeout(this.reportTimer);
    this.report();
  }

  private report(): void {
    this.reportTimer = undefined;
    const l = this.listener;
    if (!l) return;
    if (this.released.length > 0) {
      send({ t: 'released', ids: this.released });
      this.released = [];
    }
    const load = l.load();
    const message: FromWorker = { t: 'load', connections: load.connections, counted: load.counted, totals: load.totals };
    const key = JSON.stringify(message);
    if (key !== this.lastReport) {
      this.lastReport = key;
      send(message);
    }
  }

  /**
   * With a shared socket, a worker at its share of `maxConnections` stops accepting and the
   * backlog waits (Ranch's sleeping acceptors); it also stops while the primary paused accepting.
   */
  private wantAccepting(l: ProcessListener): boolean {
    const load = l.load();
    const full = this.workers.distribution === 'shared' && load.counted + load.handshaking >= l.maxConnections;
    return this.userAccepting && !full;
  }

  private applyAccepting(): void {
    const l = this.listener;
    if (!l || this.applyQueued) return;
    if (this.wantAccepting(l) === !l.acceptingPaused) return;
    // Decide when the change runs, not when it is queued: earlier changes may still be under way.
    this.applyQueued = true;
    this.applying = this.applying
      .then(() => {
        this.applyQueued = false;
        return l.setAccepting(this.wantAccepting(l));
      })
      .catch(() => {});
  }

  private async command(id: number, cmd: WorkerCommand): Promise<void> {
    const l = this.listener;
    try {
      if (!l) throw new Error('worker listener not started');
      // A drain or stop: report the load now, not up to LOAD_REPORT_MS later, so that the primary
      // knows what this worker held when it began, should it die before it answers.
      if (cmd.op === 'drain' || cmd.op === 'stop') this.reportNow();
      const value = await this.execute(l, cmd);
      if (cmd.op !== 'stop') {
        send({ t: 'reply', id, ok: true, value });
        return;
      }
      clearTimeout(this.reportTimer);
      this.stopped = true;
      // Leave the way a Node process leaves: once nothing keeps it alive. The listener's 'stop'
      // event has run, so the application can close what it holds (a broker connection, say).
      // Whatever is still open after `shutdownTimeout` is cut by a hard exit.
      send({ t: 'reply', id, ok: true, value }, undefined, () => {
        if (process.connected) process.disconnect();
        setTimeout(() => process.exit(0), this.plan.shutdownTimeout).unref();
      });
    } catch (err) {
      send({ t: 'reply', id, ok: false, error: describe(err) });
    }
  }

  private async execute(l: ProcessListener, cmd: WorkerCommand): Promise<unknown> {
    switch (cmd.op) {
      case 'info':
        return l.snapshot();
      case 'connections':
        return l.connections();
      case 'setMaxConnections':
        l.maxConnections = cmd.n;
        this.applyAccepting();
        return null;
      case 'setProtocolOptions':
        l.setProtocolOptions(cmd.value);
        return null;
      case 'ask':
        return l.answerHere(cmd.topic, cmd.payload);
      case 'setAccess':
        await l.setAccessRules(cmd.rules);
        return null;
      case 'updateTransport':
        await l.updateTransport(cmd.options);
        return null;
      case 'setTicketKeys':
        this.transport?.update?.({ ticketKeys: cmd.keys.map((k) => Buffer.from(k)) });
        return null;
      case 'accepting':
        this.userAccepting = cmd.on;
        this.applyAccepting();
        await this.applying;
        return null;
      case 'suspend':
        await l.suspend();
        return null;
      case 'resume':
        // Listen once even when full (shared): the primary's new socket only reaches the LISTEN
        // state when some worker listens on it, and connects must wait in its backlog, not be refused.
        await l.setAccepting(true);
        await l.resume();
        this.applyAccepting();
        await this.applying;
        return null;
      case 'drain':
        return l.drain({ rate: cmd.rate, ...(cmd.timeout === undefined ? {} : { timeout: cmd.timeout }) });
      case 'stop':
        return l.stop({ rate: cmd.rate, ...(cmd.timeout === undefined ? {} : { timeout: cmd.timeout }) });
    }
  }
}
