import { InvalidOptionError } from './errors.js';
import type { Framing, FramingOption } from './framing/framer.js';
import { resolveFraming } from './framing/index.js';
import type { Protocol } from './protocol.js';
import type { RestartStrategy } from './supervisor.js';
import type { Transport } from './transport.js';
import { TcpTransport, type TcpTransportOptions } from './transports/tcp.js';
import { TlsTransport, type TlsTransportOptions } from './transports/tls.js';
import type { Overflow } from './acceptor-pool/acceptor-pool.js';
import type { AdmissionPolicy } from './acceptor-pool/wait-queue.js';
import { checkSourcePrefix, type SourcePrefix } from './limits/source-key.js';
import { sessionIdContextFor } from './transports/ticket-keys.js';
import { checkWorkers, type Distribution } from './workers/distribution.js';


/**
 * Everything `startListener` accepts: the {@link ListenerSettings} and the protocol with its
 * options. Only `name` and `protocol` are required — and `protocolOptions` when the protocol's
 * class or factory takes options that cannot be `undefined`. `O` is the protocol's options type,
 * `State` its per-connection state (`Connection.data`); both are inferred from `protocol`.
 */
export type ListenerOptions<O = unknown, State = unknown> = ListenerSettings & ProtocolSettings<O, State>;

/**
 * The protocol and its options. `protocolOptions` is optional when the protocol takes none (or
 * accepts `undefined`), required otherwise: `startListener({ protocol: Greeter })` with a
 * `Greeter` whose constructor needs `{ greeting: string }` does not type-check.
 */
export type ProtocolSettings<O, State> = undefined extends O
  ? {
      /** The protocol handler: an object, a class, or a factory (see {@link Protocol}). */
      protocol: Protocol<O, State>;
      /** Passed to class constructors and factories; replace at run time with `setProtocolOptions`. */
      protocolOptions?: O;
    }
  : {
      /** The protocol handler: an object, a class, or a factory (see {@link Protocol}). */
      protocol: Protocol<O, State>;
      /** Passed to class constructors and factories; replace at run time with `setProtocolOptions`. */
      protocolOptions: O;
    };

/**
 * Every listener option but the protocol and its options. Only `name` is required; every default
 * is listed here and in the listeners guide.
 */
export interface ListenerSettings {
  /** Unique name of the listener in this process (Ranch's `Ref`). */
  name: string;
  /** `'tcp'` (default), `'tls'`, or any object implementing {@link Transport}. */
  transport?: 'tcp' | 'tls' | Transport;
  /** Options of the `'tcp'` or `'tls'` transport. Not allowed with a transport object. */
  transportOptions?: TcpTransportOptions | TlsTransportOptions;
  /** How bytes are split into frames for `onFrame`. Default `'raw'` (one frame per chunk read). */
  framing?: FramingOption;
  /**
   * Most connections at once, counting handshakes in progress. Sockets beyond it wait, paused.
   * `Infinity` for no limit. Default 1024 (as Ranch).
   */
  maxConnections?: number;
  /**
   * Most transport handshakes in progress at once, per listener and process: handshakes that have
   * started (for TLS: the ClientHello was handed to OpenSSL, which answered it) and wait for their
   * peer. A bound on memory, not on CPU (see `handshakeBatch` for that): a handshake waiting for a
   * far-away peer costs no CPU. When every slot is taken and a ClientHello waits, the handshake that
   * has waited longest for its peer is closed if that is over a fifth of `handshakeTimeout`
   * (`handshakeFailures.stalled`). Default 1024. See docs/limits.md.
   */
  maxHandshakes?: number;
  /**
   * Most handshakes started in one turn of the event loop, per listener. Starting a TLS handshake
   * whose ClientHello has arrived is its CPU-heavy step (about half a millisecond here), so this
   * bounds how long the loop is away from the I/O of live connections and of handshakes finishing.
   * Default 8.
   */
  handshakeBatch?: number;
  /** Longest a transport handshake may take once started, in ms, before the socket is closed. Default 5000. */
  handshakeTimeout?: number;
  /**
   * Admit a socket only once its peer has sent its first message (TLS: the complete first record,
   * the ClientHello). Until then the socket is *silent*: corral reads it, but it holds no slot and
   * counts against none of `maxHandshakes`, `maxConnections` or `maxWaiting`, so peers that connect
   * and say nothing cannot keep real clients out. Default: `true` for TLS (a TLS client always
   * speaks first), `false` for TCP and Unix sockets (with a protocol in which the server speaks
   * first, a client-first listener would wait for ever: turn it on only when your clients speak
   * first).
   */
  clientFirst?: boolean;
  /** Longest a socket may stay silent (see `clientFirst`), in ms, before it is closed. Default 10000. */
  silentTimeout?: number;
  /**
   * Most silent sockets per listener and process; over it, the one silent longest is closed
   * (`rejected.silent_limit`). Default 8192.
   */
  maxSilent?: number;
  /**
   * Most silent sockets from one source (one IPv4 address, one IPv6 /64: see `sourcePrefix`), per
   * listener and process; over it, that source's oldest silent socket is closed
   * (`rejected.source_limit`). A source needs about its connect rate times the time its clients
   * take to send their first message: 1,024 covers 3,400 connects a second from behind one NAT at
   * 300 ms, or a busy load client. `Infinity` for none. Default 1024.
   */
  maxSilentPerSource?: number;
  /** How peer addresses are grouped into sources for per-source bounds. Default `{ ipv4: 32, ipv6: 64 }`. */
  sourcePrefix?: Partial<SourcePrefix>;
  /**
   * Most sockets whose first message has arrived waiting for a handshake slot, per listener and
   * process; what happens to one more is `overflow`'s choice. Default 16384: a burst of devices
   * that the server can still serve within their deadline (8,000 at once, ~1,600 handshakes a
   * second, a 5 s deadline) must not overflow it. Each waiting socket holds a file descriptor.
   */
  maxWaiting?: number;
  /** Longest a socket may wait for a slot, in ms, before it is closed. Default 5000. */
  waitTimeout?: number;
  /** Order in which waiting sockets are served. Default `'adaptive'`. */
  admission?: AdmissionPolicy;
  /** With `admission: 'adaptive'`: the queueing delay, in ms, past which newest-first applies. Default 100. */
  adaptiveTarget?: number;
  /**
   * What happens to connects while the wait queue is full. `'refuse'` (default): the listening socket
   * is closed at the first socket that finds the queue full and reopened once the queue is down to
   * three quarters of `maxWaiting` (or, with `maxWaiting: 0`, once a slot is free); meanwhile the
   * kernel refuses connects before a TLS byte is spent on either side — or, for a worker sharing
   * the primary's socket (`distribution: 'shared'`), they wait in the backlog. `'close'`: every
   * such socket is accepted and closed (`rejected.queue_full`). `'drop-oldest'`: the socket that
   * has waited longest is closed (`rejected.queue_full`) to make room for the new one, which is the
   * one a newest-first queue serves next. See docs/limits.md.
   */
  overflow?: Overflow;
  /**
   * How long a graceful close may take, in ms: the drain deadline of `stop()` and the flush bound of
   * `close()` and of framing errors. Default 5000.
   */
  shutdownTimeout?: number;
  /**
   * How many connections per second a drain asks to shut down (with jitter), so that a deploy does
   * not make every client reconnect at once. The drain deadline is `timeout` plus n ÷ `drainRate`.
   * Applies to `drain`, `stop` and rolling restarts of workers. `Infinity`: all at once. Default 1000.
   */
  drainRate?: number;
  /** Idle timeout of every connection, in ms (`0`: none). Handlers can change it per connection. Default 0. */
  idleTimeout?: number;
  /** Most bytes queued for one peer before its connection is closed (`send_buffer_full`). Default 1 MiB. */
  maxSendBuffer?: number;
  /** What a handler crash does to its connection. Default `'temporary'`. */
  restart?: RestartStrategy;
  /** With `restart: 'transient'`: restarts allowed within `period` ms on one connection. Default 3. */
  maxRestarts?: number;
  /** With `restart: 'transient'`: the restart-intensity window in ms. Default 5000. */
  period?: number;
  /**
   * Run the listener over this many worker processes (`'auto'`: enough for the cores and for
   * `maxConnections` under the open-file limit). The entry script is re-run in each worker, where
   * the same `startListener` call joins the primary's listener. Default: no workers.
   */
  workers?: number | 'auto';
  /** How workers share the port. Default `'reuseport'` where supported (Node >= 22.12, Linux), else `'shared'`. */
  distribution?: Distribution;
  /** Supervision of worker processes: OTP restart intensity and restart backoff. */
  workerRestarts?: WorkerRestartOptions;
  /**
   * With workers and TLS, when `transportOptions.ticketKeys` is not given: every this many ms, give
   * new tickets a fresh key (`0`: never). Tickets made under the key before it still resume, and are
   * renewed under the new one, until the next rotation; older ones get a full handshake. Default 0.
   */
  ticketKeyRotation?: number;
  /** The script workers run. Default: this process's entry script (`process.argv[1]`). */
  workerScript?: string;
  /** Arguments for the worker script. Default: this process's (`process.argv.slice(2)`). */
  workerArgs?: string[];
}

/** How the primary supervises worker processes. */
export interface WorkerRestartOptions {
  /** Restarts allowed within `period` ms; one more stops the listener with a fatal error. Default 5. */
  maxRestarts?: number;
  /** The restart-intensity window, in ms. Default 60000. */
  period?: number;
  /** Delay before the first restart, doubled for each further restart in the window. Default 100 ms. */
  initialDelay?: number;
  /** Longest restart delay, in ms. Default 5000. */
  maxDelay?: number;
}

/** Options after validation, with every default filled in. @internal */
export interface ResolvedListenerOptions {
  name: string;
  transport: Transport;
  protocol: Protocol<unknown>;
  protocolOptions: unknown;
  framing: Framing;
  maxConnections: number;
  maxHandshakes: number;
  handshakeBatch: number;
  handshakeTimeout: number;
  clientFirst: boolean;
  silentTimeout: number;
  maxSilent: number;
  maxSilentPerSource: number;
  sourcePrefix: SourcePrefix;
  maxWaiting: number;
  waitTimeout: number;
  admission: AdmissionPolicy;
  adaptiveTarget: number;
  overflow: Overflow;
  shutdownTimeout: number;
  drainRate: number;
  idleTimeout: number;
  maxSendBuffer: number;
  restart: RestartStrategy;
  maxRestarts: number;
  period: number;
  workers: number | 'auto' | undefined;
  distribution: Distribution | undefined;
  workerRestarts: Required<WorkerRestartOptions>;
  ticketKeyRotation: number;
  workerScript: string | undefined;
  workerArgs: string[] | undefined;
}

const KNOWN = new Set<string>([
  'name',
  'transport',
  'transportOptions',
  'protocol',
  'protocolOptions',
  'framing',
  'maxConnections',
  'maxHandshakes',
  'handshakeBatch',
  'handshakeTimeout',
  'clientFirst',
  'silentTimeout',
  'maxSilent',
  'maxSilentPerSource',
  'sourcePrefix',
  'maxWaiting',
  'waitTimeout',
  'admission',
  'adaptiveTarget',
  'overflow',
  'shutdownTimeout',
  'drainRate',
  'idleTimeout',
  'maxSendBuffer',
  'restart',
  'maxRestarts',
  'period',
  'workers',
  'distribution',
  'workerRestarts',
  'ticketKeyRotation',
  'workerScript',
  'workerArgs',
]);

/** Check a count: an integer >= `min`, or `Infinity` where allowed. @internal */
export function checkCount(name: string, value: unknown, fallback: number, min: number, infinite = false): number {
  if (value === undefined) return fallback;
  if (infinite && value === Infinity) return Infinity;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    throw new InvalidOptionError(name, `must be an integer >= ${min}${infinite ? ' or Infinity' : ''}, got ${String(value)}`);
  }
  return value;
}

/**
 * Check the options of `drain`/`stop`: returns the drain timeout (`timeout`, default
 * `shutdownTimeout`), or a `TypeError` naming what is wrong. @internal
 */
export function checkDrainOptions(options: { timeout?: number; rate?: number }, shutdownTimeout: number): number | TypeError {
  const timeout = options.timeout ?? shutdownTimeout;
  if (!Number.isFinite(timeout) || timeout < 0 || timeout > 2 ** 31 - 1) {
    return new TypeError(`drain: timeout must be a number of ms from 0 to ${2 ** 31 - 1}, got ${String(timeout)}`);
  }
  if (options.rate !== undefined && (typeof options.rate !== 'number' || Number.isNaN(options.rate) || options.rate <= 0)) {
    return new TypeError(`drain: rate must be a number > 0 (per second) or Infinity, got ${String(options.rate)}`);
  }
  return timeout;
}

function checkBoolean(name: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw new InvalidOptionError(name, `must be true or false, got ${String(value)}`);
  return value;
}

function checkMs(name: string, value: unknown, fallback: number, min = 1): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > 2 ** 31 - 1) {
    throw new InvalidOptionError(name, `must be a number of milliseconds from ${min} to ${2 ** 31 - 1}, got ${String(value)}`);
  }
  return value;
}

function checkRate(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || Number.isNaN(value) || value <= 0) {
    throw new InvalidOptionError(name, `must be a number > 0 (per second) or Infinity, got ${String(value)}`);
  }
  return value;
}

function checkOptionalString(name: string, value: unknown): string | undefined {
  if (value !== undefined && (typeof value !== 'string' || value === '')) throw new InvalidOptionError(name, 'must be a non-empty string');
  return value as string | undefined;
}

function checkStringArray(name: string, value: unknown): string[] | undefined {
  if (value !== undefined && (!Array.isArray(value) || value.some((v) => typeof v !== 'string'))) {
    throw new InvalidOptionError(name, 'must be an array of strings');
  }
  return value as string[] | undefined;
}

function resolveWorkerRestarts(value: unknown): Required<WorkerRestartOptions> {
  if (value !== undefined && (typeof value !== 'object' || value === null)) throw new InvalidOptionError('workerRestarts', 'must be an object');
  const o = (value ?? {}) as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!['maxRestarts', 'period', 'initialDelay', 'maxDelay'].includes(key)) {
      throw new InvalidOptionError(`workerRestarts.${key}`, 'is not a known option', 'CORRAL_UNKNOWN_OPTION');
    }
  }
  return {
    maxRestarts: checkCount('workerRestarts.maxRestarts', o.maxRestarts, 5, 0),
    period: checkMs('workerRestarts.period', o.period, 60_000),
    initialDelay: checkMs('workerRestarts.initialDelay', o.initialDelay, 100, 0),
    maxDelay: checkMs('workerRestarts.maxDelay', o.maxDelay, 5000, 0),
  };
}

function checkEnum<T extends string>(name: string, value: unknown, allowed: readonly T[], fallback: T): T {
  if (value === undefined) return fallback;
  if (!allowed.includes(value as T)) {
    throw new InvalidOptionError(name, `must be one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${JSON.stringify(value)}`);
  }
  return value as T;
}

function resolveTransport(transport: unknown, transportOptions: unknown, name: string): Transport {
  if (transport === undefined || transport === 'tcp' || transport === 'tls') {
    if (transportOptions !== undefined && (typeof transportOptions !== 'object' || transportOptions === null)) {
      throw new InvalidOptionError('transportOptions', 'must be an object');
    }
    const o = (transportOptions ?? {}) as TlsTransportOptions;
    return transport === 'tls' ? new TlsTransport({ sessionIdContext: sessionIdContextFor(name), ...o }) : new TcpTransport(o);
  }
  if (typeof transport === 'object' && transport !== null) {
    const t = transport as Partial<Transport>;
    if (typeof t.listen !== 'function' || typeof t.handshake !== 'function' || typeof t.name !== 'string') {
      throw new InvalidOptionError('transport', 'must be \'tcp\', \'tls\', or an object with name, listen() and handshake()');
    }
    if (transportOptions !== undefined) {
      throw new InvalidOptionError('transportOptions', 'cannot be given with a transport object; configure the object instead');
    }
    return transport as Transport;
  }
  throw new InvalidOptionError('transport', `must be 'tcp', 'tls' or a Transport object, got ${JSON.stringify(transport)}`);
}

/** Validate `startListener` options and fill in defaults. Throws {@link InvalidOptionError}. @internal */
export function resolveListenerOptions(options: ListenerOptions<unknown>): ResolvedListenerOptions {
  if (options === null || typeof options !== 'object') throw new InvalidOptionError('options', 'must be an object');
  for (const key of Object.keys(options)) {
    if (!KNOWN.has(key)) throw new InvalidOptionError(key, 'is not a known option', 'CORRAL_UNKNOWN_OPTION');
  }
  const o = options as ListenerOptions<unknown> & Record<string, unknown>;
  if (typeof o.name !== 'string' || o.name === '') throw new InvalidOptionError('name', 'must be a non-empty string');
  const p = o.protocol as unknown;
  if (p === undefined || p === null || (typeof p !== 'object' && typeof p !== 'function')) {
    throw new InvalidOptionError('protocol', 'is required: a ProtocolHandler object, class or factory');
  }
  const maxConnections = checkCount('maxConnections', o.maxConnections, 1024, 1, true);
  const framing = resolveFraming(o.framing);
  const transport = resolveTransport(o.transport, o.transportOptions, o.name);
  const clientFirst = checkBoolean('clientFirst', o.clientFirst, transport.clientFirst ?? false);
  if (clientFirst && (transport.readFirstBytes === undefined || transport.unread === undefined)) {
    throw new InvalidOptionError('clientFirst', `needs a transport that can read a socket's first bytes; ${transport.name} cannot`);
  }
  const sourcePrefix = checkSourcePrefix(o.sourcePrefix);
  if (typeof sourcePrefix === 'string') throw new InvalidOptionError('sourcePrefix', sourcePrefix);
  return {
    name: o.name,
    transport,
    protocol: o.protocol,
    protocolOptions: o.protocolOptions,
    framing,
    maxConnections,
    maxHandshakes: checkCount('maxHandshakes', o.maxHandshakes, 1024, 1),
    handshakeBatch: checkCount('handshakeBatch', o.handshakeBatch, 8, 1),
    handshakeTimeout: checkMs('handshakeTimeout', o.handshakeTimeout, 5000),
    clientFirst,
    silentTimeout: checkMs('silentTimeout', o.silentTimeout, 10_000),
    maxSilent: checkCount('maxSilent', o.maxSilent, 8192, 1, true),
    maxSilentPerSource: checkCount('maxSilentPerSource', o.maxSilentPerSource, 1024, 1, true),
    sourcePrefix,
    maxWaiting: checkCount('maxWaiting', o.maxWaiting, 16_384, 0),
    waitTimeout: checkMs('waitTimeout', o.waitTimeout, 5000),
    admission: checkEnum('admission', o.admission, ['fifo', 'lifo', 'adaptive'], 'adaptive'),
    adaptiveTarget: checkMs('adaptiveTarget', o.adaptiveTarget, 100, 0),
    overflow: checkEnum<Overflow>('overflow', o.overflow, ['refuse', 'close', 'drop-oldest'], 'refuse'),
    shutdownTimeout: checkMs('shutdownTimeout', o.shutdownTimeout, 5000, 0),
    drainRate: checkRate('drainRate', o.drainRate, 1000),
    idleTimeout: checkMs('idleTimeout', o.idleTimeout, 0, 0),
    maxSendBuffer: checkCount('maxSendBuffer', o.maxSendBuffer, 1024 * 1024, 1),
    restart: checkEnum('restart', o.restart, ['temporary', 'transient'], 'temporary'),
    maxRestarts: checkCount('maxRestarts', o.maxRestarts, 3, 0),
    period: checkMs('period', o.period, 5000),
    workers: checkWorkers(o.workers),
    distribution: o.distribution === undefined ? undefined : checkEnum<Distribution>('distribution', o.distribution, ['reuseport', 'shared', 'primary'], 'shared'),
    workerRestarts: resolveWorkerRestarts(o.workerRestarts),
    ticketKeyRotation: checkMs('ticketKeyRotation', o.ticketKeyRotation, 0, 0),
    workerScript: checkOptionalString('workerScript', o.workerScript),
    workerArgs: checkStringArray('workerArgs', o.workerArgs),
  };
}
