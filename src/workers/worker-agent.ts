import { connectionStorage } from '../connection-context.js';
import { CorralError } from '../errors.js';
import { Lease } from '../acceptor-pool/lease.js';
import { LocalListener } from '../local-listener.js';
import { type ListenerOptions, type ResolvedListenerOptions, resolveListenerOptions } from '../options.js';
import type { TransportListenHandlers } from '../transport.js';
import { type FromWorker, type ToWorker, WORKER_INDEX_ENV, type WorkerCommand, type WorkerConfig } from './ipc.js';


/** Minimum spacing of load reports to the primary, in ms. */
const LOAD_REPORT_MS = 20;

function send(message: FromWorker, handle?: object, sent?: () => void): void {
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
 * Join the primary's listener from inside a worker process: wait for the primary's configuration,
 * open the listening socket the way the distribution says, and serve commands over IPC. Returns
 * the worker's own listener (role `'worker'`).
 * @internal
 */
export async function startWorkerListener(userOptions: ListenerOptions<unknown>, first: ResolvedListenerOptions): Promise<LocalListener> {
  if (typeof process.send !== 'function') {
    throw new CorralError('CORRAL_LISTEN_FAILED', 'corral: this process is marked as a worker but has no IPC channel');
  }
  const index = Number(process.env[WORKER_INDEX_ENV] ?? '0');
  const name = first.name;

  // Handles are used the moment they arrive, never kept for later: after a suspend and resume the
  // primary binds a new socket, and a kept handle would hold the old one open (and listening).
  const handleWaiters: ((handle: object) => void)[] = [];
  let startHandle: object | undefined;
  let listener: LocalListener | undefined;
  const earlySockets: { raw: object; head: Buffer | undefined }[] = [];
  let startResolve!: (config: WorkerConfig) => void;
  const started = new Promise<WorkerConfig>((resolve) => {
    startResolve = resolve;
  });

  process.on('message', (message: ToWorker, handle?: object) => {
    switch (message.t) {
      case 'start':
        startHandle = handle;
        startResolve(message.config);
        break;
      case 'handle': {
        if (handle === undefined) break;
        const waiter = handleWaiters.shift();
        if (waiter) waiter(handle);
        else closeHandle(handle);
        break;
      }
      case 'socket': {
        if (handle === undefined) break;
        const head = message.head === undefined ? undefined : Buffer.from(message.head.buffer, message.head.byteOffset, message.head.byteLength);
        if (listener) adopt(listener, handle, head);
        else earlySockets.push({ raw: handle, head });
        break;
      }
      case 'cmd':
        void run(message.id, message.cmd);
        break;
    }
  });
  installCrashHandlers(name, index);
  // A worker without its primary would hold connections nobody supervises: leave with it.
  let stopped = false;
  process.on('disconnect', () => {
    if (!stopped) process.exit(0);
  });
  // Ctrl-C signals the whole process group: the primary decides how workers stop (drain, stop).
  process.on('SIGINT', ignoreSignal);
  process.on('SIGTERM', ignoreSignal);
  send({ t: 'hello', listener: name, pid: process.pid });
  const config = await started;

  // reuseport: each worker binds its own socket, so the transport is rebuilt with reusePort.
  let options = first;
  if (config.distribution === 'reuseport') {
    const to = (userOptions.transportOptions ?? {}) as Record<string, unknown>;
    // With port 0 the first worker picks the port; every later one joins it.
    const a = config.address;
    const port = a && (a.family === 'IPv4' || a.family === 'IPv6') ? { port: a.port } : {};
    options = resolveListenerOptions({ ...userOptions, transportOptions: { ...to, reusePort: true, ...port } } as ListenerOptions<unknown>);
  }
  const transport = options.transport;
  if (config.ticketKeys && transport.secure) transport.update?.({ ticketKeys: config.ticketKeys.map((k) => Buffer.from(k)) });

  const nextHandle = (): Promise<object> => {
    const h = startHandle;
    startHandle = undefined;
    if (h) return Promise.resolve(h);
    return new Promise((resolve) => {
      handleWaiters.push(resolve);
      send({ t: 'need-handle' });
    });
  };

  const open =
    config.distribution === 'shared'
      ? async (handlers: TransportListenHandlers) => {
          if (!transport.listenOnHandle) throw new CorralError('CORRAL_LISTEN_FAILED', `transport ${transport.name} cannot share a socket`);
          return transport.listenOnHandle(await nextHandle(), handlers);
        }
      : config.distribution === 'primary'
        ? async () => undefined
        : undefined;

  // Load reports and released slots are coalesced: at most one message per LOAD_REPORT_MS.
  let reportTimer: NodeJS.Timeout | undefined;
  let released = 0;
  let lastSent = '';
  const report = (): void => {
    reportTimer = undefined;
    if (!listener) return;
    if (released > 0) {
      send({ t: 'released', n: released });
      released = 0;
    }
    const load = listener.load();
    const message: FromWorker = { t: 'load', connections: load.connections, counted: load.counted, totals: load.totals };
    const key = JSON.stringify(message);
    if (key !== lastSent) {
      lastSent = key;
      send(message);
    }
  };
  const scheduleReport = (): void => {
    reportTimer ??= setTimeout(report, LOAD_REPORT_MS);
  };

  // With a shared socket, a worker at its share stops accepting and the backlog waits (Ranch's
  // sleeping acceptors); `userAccepting` is the primary's pause/resume of accepting.
  let userAccepting = config.accepting;
  let applying = Promise.resolve();
  const wantAccepting = (l: LocalListener): boolean => {
    const load = l.load();
    const full = config.distribution === 'shared' && load.counted + load.handshaking >= l.maxConnections;
    return userAccepting && !full;
  };
  let applyQueued = false;
  const applyAccepting = (): void => {
    if (!listener || applyQueued) return;
    const l = listener;
    if (wantAccepting(l) === !l.acceptingPaused) return;
    // Decide when the change runs, not when it is queued: earlier changes may still be under way.
    applyQueued = true;
    applying = applying
      .then(() => {
        applyQueued = false;
        return l.setAccepting(wantAccepting(l));
      })
      .catch(() => {});
  };

  listener = new LocalListener(options, `${index}.${config.generation}.`, {
    role: 'worker',
    distribution: config.distribution,
    ...(open ? { open } : {}),
    ...(config.address ? { address: config.address } : {}),
    changed: () => {
      scheduleReport();
      if (config.distribution === 'shared') applyAccepting();
    },
  });
  listener.maxConnections = config.maxConnections;
  if (config.protocolOptions) listener.setProtocolOptions(config.protocolOptions.value);
  if (!config.accepting) await listener.setAccepting(false);
  await listener.start({ suspended: config.suspended });
  // A start handle this worker did not listen on (paused, suspended) must not hold the socket open.
  if (startHandle) {
    closeHandle(startHandle);
    startHandle = undefined;
  }
  for (const { raw, head } of earlySockets.splice(0)) adopt(listener, raw, head);

  /** Serve a socket the primary passed; the primary holds its slot until this worker says it is done. */
  function adopt(l: LocalListener, raw: object, head: Buffer | undefined): void {
    l.adopt(
      raw,
      head,
      new Lease(() => {
        released++;
        scheduleReport();
      }),
    );
  }

  async function run(id: number, cmd: WorkerCommand): Promise<void> {
    const l = listener;
    try {
      if (!l) throw new Error('worker listener not started');
      const value = await execute(l, cmd);
      if (cmd.op !== 'stop') {
        send({ t: 'reply', id, ok: true, value });
        return;
      }
      if (reportTimer) clearTimeout(reportTimer);
      stopped = true;
      // Leave the way a Node process leaves: once nothing keeps it alive. The listener's 'stop'
      // event has run, so the application can close what it holds (a broker connection, say).
      // Whatever is still open after `shutdownTimeout` is cut by a hard exit.
      send({ t: 'reply', id, ok: true, value }, undefined, () => {
        if (process.connected) process.disconnect();
        // As long as a graceful close may take (shutdownTimeout), then the process goes regardless.
        setTimeout(() => process.exit(0), options.shutdownTimeout).unref();
      });
    } catch (err) {
      send({ t: 'reply', id, ok: false, error: describe(err) });
    }
  }

  async function execute(l: LocalListener, cmd: WorkerCommand): Promise<unknown> {
    switch (cmd.op) {
      case 'info':
        return l.snapshot();
      case 'connections':
        return l.connections();
      case 'setMaxConnections':
        l.maxConnections = cmd.n;
        applyAccepting();
        return null;
      case 'setProtocolOptions':
        l.setProtocolOptions(cmd.value);
        return null;
      case 'setTicketKeys':
        transport.update?.({ ticketKeys: cmd.keys.map((k) => Buffer.from(k)) });
        return null;
      case 'accepting':
        userAccepting = cmd.on;
        applyAccepting();
        await applying;
        return null;
      case 'suspend':
        await l.suspend();
        return null;
      case 'resume':
        // Listen once even when full (shared): the primary's new socket only reaches the LISTEN
        // state when some worker listens on it, and connects must wait in its backlog, not be refused.
        await l.setAccepting(true);
        await l.resume();
        applyAccepting();
        await applying;
        return null;
      case 'drain':
        return l.drain({ rate: cmd.rate, ...(cmd.timeout === undefined ? {} : { timeout: cmd.timeout }) });
      case 'stop':
        return l.stop({ rate: cmd.rate, ...(cmd.timeout === undefined ? {} : { timeout: cmd.timeout }) });
    }
  }

  send({ t: 'ready', address: listener.address });
  return listener;
}
