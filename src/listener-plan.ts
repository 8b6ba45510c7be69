import type { AcceptorPoolOptions } from './acceptor-pool/acceptor-pool.js';
import { InvalidOptionError } from './errors.js';
import type { Framing } from './framing/framer.js';
import { resolveFraming } from './framing/index.js';
import type { ProxyHeaderSettings } from './acceptor-pool/proxy-waits.js';
import { AccessRules } from './limits/access-rules.js';
import { CidrSet } from './limits/cidr.js';
import { checkSourcePrefix } from './limits/source-key.js';
import type { RateLimit } from './limits/token-bucket.js';
import type { AdmissionPolicy, AlarmEvent, Distribution, ListenerOptions, Overflow, RestartStrategy, WorkerRestartOptions } from './options.js';
import type { Protocol } from './protocol.js';
import type { Transport } from './transport.js';
import { supportsReusePort } from './transports/reuse-port.js';
import { TcpTransport } from './transports/tcp.js';
import type { TcpTransportOptions } from './transports/tcp-options.js';
import { checkTicketKeys, sessionIdContextFor } from './transports/ticket-keys.js';
import { TlsTransport, type TlsTransportOptions } from './transports/tls.js';
import { autoWorkerCount, checkWorkers, defaultDistribution } from './workers/distribution.js';
import { MAX_TIMER_MS } from './timer-delay.js';

/**
 * A listener's options, checked once and completely, with every default filled in: what each part
 * of a listener needs, and how to build its transport. Built by {@link planListener} from what
 * `startListener` was given; nothing after it reads the user's options. @internal
 */
export interface ListenerPlan {
  readonly name: string;
  readonly protocol: Protocol<unknown>;
  readonly protocolOptions: unknown;
  readonly framing: Framing;
  /** The acceptor pool's settings. */
  readonly admission: AcceptorPoolOptions;
  /** The connections' settings. */
  readonly connections: ConnectionPlan;
  /** How long a graceful close may take, and the default drain timeout, ms. */
  readonly shutdownTimeout: number;
  /** Connections a drain asks to shut down per second. */
  readonly drainRate: number;
  readonly transport: TransportPlan;
  /** With `workers`: the worker pool; `undefined` for a single-process listener. */
  readonly workers: WorkerPlan | undefined;
  /** Alarms on the live connection count. */
  readonly alarms: readonly AlarmPlan[];
}

/** One alarm, checked. @internal */
export interface AlarmPlan {
  readonly name: string;
  readonly threshold: number;
  readonly cooldown: number;
  readonly callback: ((event: AlarmEvent) => void) | undefined;
}

/** What the connection supervisor and its connections need. @internal */
export interface ConnectionPlan {
  readonly shutdownTimeout: number;
  readonly idleTimeout: number;
  readonly maxSendBuffer: number;
  readonly restart: RestartStrategy;
  readonly maxRestarts: number;
  readonly period: number;
}

/** How to build a listener's transport, once, in the process that serves with it. @internal */
export interface TransportPlan {
  readonly name: string;
  readonly secure: boolean;
  /** Whether it is a transport object the user built (it cannot be rebuilt in worker processes). */
  readonly given: boolean;
  /**
   * Build the transport. `reusePort` and `port` are a `reuseport` worker's (its own socket on the
   * pool's port). With `front`, a TLS transport makes no secure context: it only accepts and reads
   * ClientHellos for a worker pool's primary, which never handshakes.
   */
  build(overrides?: { readonly reusePort?: boolean; readonly port?: number; readonly front?: boolean }): Transport;
}

/** A worker pool's plan. @internal */
export interface WorkerPlan {
  /** How many worker processes. */
  readonly count: number;
  readonly distribution: Distribution;
  readonly restarts: Required<WorkerRestartOptions>;
  /** The script each worker runs, with its arguments. */
  readonly script: string;
  readonly args: readonly string[];
  /**
   * Session-ticket keys: `given` in `transportOptions` (every worker has them from its own
   * options), `made` by the primary and sent to the workers, or `none` (not TLS).
   */
  readonly ticketKeys: 'given' | 'made' | 'none';
  /** With `made` keys: add a fresh key every this many ms (`0`: never). */
  readonly ticketKeyRotation: number;
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
  'proxyHeader',
  'proxyHeaderFrom',
  'proxyHeaderTimeout',
  'access',
  'connectionRate',
  'connectionRatePerSource',
  'maxConnectionsPerAddress',
  'alarms',
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
  if (!Number.isFinite(timeout) || timeout < 0 || timeout > MAX_TIMER_MS) {
    return new TypeError(`drain: timeout must be a number of ms from 0 to ${MAX_TIMER_MS}, got ${String(timeout)}`);
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
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > MAX_TIMER_MS) {
    throw new InvalidOptionError(name, `must be a number of milliseconds from ${min} to ${MAX_TIMER_MS}, got ${String(value)}`);
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

function planProxyHeader(o: Record<string, unknown>): ProxyHeaderSettings | undefined {
  const mode = o.proxyHeader;
  if (mode !== undefined && mode !== true && mode !== false && mode !== 'optional') {
    throw new InvalidOptionError('proxyHeader', `must be true, false or 'optional', got ${JSON.stringify(mode)}`);
  }
  const timeout = checkMs('proxyHeaderTimeout', o.proxyHeaderTimeout, 3000);
  if (mode === undefined || mode === false) {
    if (o.proxyHeaderFrom !== undefined) throw new InvalidOptionError('proxyHeaderFrom', 'needs proxyHeader: true or \'optional\'');
    return undefined;
  }
  const from = o.proxyHeaderFrom;
  if (!Array.isArray(from) || from.length === 0) {
    throw new InvalidOptionError(
      'proxyHeaderFrom',
      'is required with proxyHeader: list your load balancers (CIDRs or addresses, e.g. [\'10.0.0.0/8\']); a header from anyone else could claim any address',
    );
  }
  const trusted = CidrSet.parse(from as string[]);
  if (typeof trusted === 'string') throw new InvalidOptionError('proxyHeaderFrom', `has ${JSON.stringify(trusted)}, which is not an IPv4 or IPv6 address or CIDR block`);
  return { required: mode === true, trusted, timeout };
}

/** Check a `{ rate, burst }` option. */
function checkRateLimit(name: string, value: unknown): RateLimit | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'object' || value === null) throw new InvalidOptionError(name, 'must be an object { rate, burst }');
  const o = value as Record<string, unknown>;
  for (const key of Object.keys(o)) if (key !== 'rate' && key !== 'burst') throw new InvalidOptionError(`${name}.${key}`, 'is not a known option', 'CORRAL_UNKNOWN_OPTION');
  if (typeof o.rate !== 'number' || !Number.isFinite(o.rate) || o.rate <= 0) {
    throw new InvalidOptionError(`${name}.rate`, `must be a number > 0 (per second), got ${String(o.rate)}`);
  }
  const burst = o.burst ?? Math.max(1, Math.ceil(o.rate));
  if (typeof burst !== 'number' || !Number.isInteger(burst) || burst < 1) {
    throw new InvalidOptionError(`${name}.burst`, `must be an integer >= 1, got ${String(burst)}`);
  }
  return { rate: o.rate, burst };
}

/** Check the `access` rules. @internal */
export function checkAccessRules(value: unknown, name = 'access'): AccessRules | undefined {
  if (value === undefined) return undefined;
  const rules = AccessRules.parse(value);
  if (typeof rules === 'string') throw new InvalidOptionError(name, rules);
  return rules;
}

function planAlarms(value: unknown): AlarmPlan[] {
  if (value === undefined) return [];
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new InvalidOptionError('alarms', 'must be an object of named alarms { name: { threshold, cooldown?, callback? } }');
  return Object.entries(value as Record<string, unknown>).map(([name, a]) => {
    if (typeof a !== 'object' || a === null) throw new InvalidOptionError(`alarms.${name}`, 'must be an object { threshold, cooldown?, callback? }');
    const o = a as Record<string, unknown>;
    for (const key of Object.keys(o)) {
      if (!['threshold', 'cooldown', 'callback'].includes(key)) throw new InvalidOptionError(`alarms.${name}.${key}`, 'is not a known option', 'CORRAL_UNKNOWN_OPTION');
    }
    if (o.callback !== undefined && typeof o.callback !== 'function') throw new InvalidOptionError(`alarms.${name}.callback`, 'must be a function');
    if (o.threshold === undefined) throw new InvalidOptionError(`alarms.${name}.threshold`, 'is required');
    return {
      name,
      threshold: checkCount(`alarms.${name}.threshold`, o.threshold, 0, 1),
      cooldown: checkMs(`alarms.${name}.cooldown`, o.cooldown, 5000, 0),
      callback: o.callback as AlarmPlan['callback'],
    };
  });
}

function planTransport(transport: unknown, transportOptions: unknown, name: string): TransportPlan {
  if (transport === undefined || transport === 'tcp' || transport === 'tls') {
    if (transportOptions !== undefined && (typeof transportOptions !== 'object' || transportOptions === null)) {
      throw new InvalidOptionError('transportOptions', 'must be an object');
    }
    const o = (transportOptions ?? {}) as TlsTransportOptions;
    const secure = transport === 'tls';
    // Checked now, whoever builds it later; a TLS context is made only where handshakes run.
    // Ticket keys are copied: the caller may zero its buffers once the listener has started, and
    // a worker pool builds transports from these options again (updateTransport's check).
    const ticketKeys = secure ? checkTicketKeys(o.ticketKeys) : undefined;
    const tlsOptions: TlsTransportOptions = {
      ...o,
      sessionIdContext: o.sessionIdContext ?? sessionIdContextFor(name),
      ...(ticketKeys === undefined ? {} : { ticketKeys }),
    };
    if (secure) new TlsTransport(tlsOptions, { front: true });
    else new TcpTransport(o);
    return {
      name: secure ? 'tls' : 'tcp',
      secure,
      given: false,
      build: (overrides = {}) => {
        const port = overrides.port !== undefined ? { port: overrides.port } : {};
        const reusePort = overrides.reusePort ? { reusePort: true } : {};
        return secure
          ? new TlsTransport({ ...tlsOptions, ...reusePort, ...port }, { front: overrides.front === true })
          : new TcpTransport({ ...(o as TcpTransportOptions), ...reusePort, ...port });
      },
    };
  }
  if (typeof transport === 'object' && transport !== null) {
    const t = transport as Partial<Transport>;
    if (typeof t.listen !== 'function' || typeof t.handshake !== 'function' || typeof t.name !== 'string') {
      throw new InvalidOptionError('transport', "must be 'tcp', 'tls', or an object with name, listen() and handshake()");
    }
    if (transportOptions !== undefined) {
      throw new InvalidOptionError('transportOptions', 'cannot be given with a transport object; configure the object instead');
    }
    const given = transport as Transport;
    // A TlsTransport object gets this listener's session id context, as `transport: 'tls'` does.
    if (given instanceof TlsTransport) given.useListenerName(name);
    return { name: given.name, secure: given.secure, given: true, build: () => given };
  }
  throw new InvalidOptionError('transport', `must be 'tcp', 'tls' or a Transport object, got ${JSON.stringify(transport)}`);
}

/** The worker pool's plan: the distribution and what it needs, the worker count, the ticket-key policy. */
function planWorkers(o: Record<string, unknown>, transport: TransportPlan, maxConnections: number, maxWaiting: number): WorkerPlan | undefined {
  const workers = checkWorkers(o.workers);
  const restarts = resolveWorkerRestarts(o.workerRestarts);
  const ticketKeyRotation = checkMs('ticketKeyRotation', o.ticketKeyRotation, 0, 0);
  const script = checkOptionalString('workerScript', o.workerScript);
  const args = checkStringArray('workerArgs', o.workerArgs);
  const asked = o.distribution === undefined ? undefined : checkEnum<Distribution>('distribution', o.distribution, ['reuseport', 'shared', 'primary'], 'shared');
  if (workers === undefined) return undefined;
  if (transport.given) {
    throw new InvalidOptionError('transport', "must be 'tcp' or 'tls' with workers: a transport object lives in one process and cannot be rebuilt in the workers");
  }
  const transportOptions = (o.transportOptions ?? {}) as TlsTransportOptions;
  const distribution = asked ?? defaultDistribution(transportOptions.path !== undefined);
  if (distribution === 'reuseport' && !supportsReusePort()) {
    throw new InvalidOptionError('distribution', `'reuseport' needs Node >= 22.12 on Linux (this is ${process.version} on ${process.platform})`);
  }
  if (distribution === 'reuseport' && transportOptions.path !== undefined) {
    throw new InvalidOptionError('distribution', "'reuseport' needs a TCP port, not a Unix socket path");
  }
  const entry = script ?? process.argv[1];
  if (entry === undefined) throw new InvalidOptionError('workerScript', 'is needed: this process has no entry script to re-run in workers');
  return {
    count: workers === 'auto' ? autoWorkerCount(maxConnections, maxWaiting) : workers,
    distribution,
    restarts,
    script: entry,
    args: args ?? process.argv.slice(2),
    ticketKeys: !transport.secure ? 'none' : transportOptions.ticketKeys !== undefined ? 'given' : 'made',
    ticketKeyRotation,
  };
}

/** Check `startListener`'s options and plan the listener. Throws {@link InvalidOptionError}. @internal */
export function planListener(options: ListenerOptions<unknown>): ListenerPlan {
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
  const maxWaiting = checkCount('maxWaiting', o.maxWaiting, 16_384, 0);
  const framing = resolveFraming(o.framing);
  const transport = planTransport(o.transport, o.transportOptions, o.name);
  const built = transport.given ? transport.build() : undefined;
  const clientFirst = checkBoolean('clientFirst', o.clientFirst, built ? (built.clientFirst ?? false) : transport.secure);
  if (clientFirst && built !== undefined && (built.readFirstBytes === undefined || built.unread === undefined)) {
    throw new InvalidOptionError('clientFirst', `needs a transport that can read a socket's first bytes; ${transport.name} cannot`);
  }
  const sourcePrefix = checkSourcePrefix(o.sourcePrefix);
  if (typeof sourcePrefix === 'string') throw new InvalidOptionError('sourcePrefix', sourcePrefix);
  const shutdownTimeout = checkMs('shutdownTimeout', o.shutdownTimeout, 5000, 0);
  const proxyHeader = planProxyHeader(o);
  if (proxyHeader !== undefined && built !== undefined && (built.readFirstBytes === undefined || built.unread === undefined)) {
    throw new InvalidOptionError('proxyHeader', `needs a transport that can read a socket's first bytes; ${transport.name} cannot`);
  }
  return {
    name: o.name,
    protocol: o.protocol,
    protocolOptions: o.protocolOptions,
    framing,
    admission: {
      maxConnections,
      maxHandshakes: checkCount('maxHandshakes', o.maxHandshakes, 8192, 1),
      handshakeBatch: checkCount('handshakeBatch', o.handshakeBatch, 8, 1),
      handshakeTimeout: checkMs('handshakeTimeout', o.handshakeTimeout, 5000),
      clientFirst,
      silentTimeout: checkMs('silentTimeout', o.silentTimeout, 10_000),
      maxSilent: checkCount('maxSilent', o.maxSilent, 8192, 1, true),
      maxSilentPerSource: checkCount('maxSilentPerSource', o.maxSilentPerSource, 1024, 1, true),
      sourcePrefix,
      maxWaiting,
      waitTimeout: checkMs('waitTimeout', o.waitTimeout, 5000),
      admission: checkEnum<AdmissionPolicy>('admission', o.admission, ['fifo', 'lifo', 'adaptive'], 'adaptive'),
      adaptiveTarget: checkMs('adaptiveTarget', o.adaptiveTarget, 100, 0),
      overflow: checkEnum<Overflow>('overflow', o.overflow, ['refuse', 'close', 'drop-oldest'], 'refuse'),
      proxyHeader,
      access: checkAccessRules(o.access),
      connectionRate: checkRateLimit('connectionRate', o.connectionRate),
      connectionRatePerSource: checkRateLimit('connectionRatePerSource', o.connectionRatePerSource),
      maxConnectionsPerAddress: checkCount('maxConnectionsPerAddress', o.maxConnectionsPerAddress, Infinity, 1, true),
    },
    connections: {
      shutdownTimeout,
      idleTimeout: checkMs('idleTimeout', o.idleTimeout, 0, 0),
      maxSendBuffer: checkCount('maxSendBuffer', o.maxSendBuffer, 1024 * 1024, 1),
      restart: checkEnum<RestartStrategy>('restart', o.restart, ['temporary', 'transient'], 'temporary'),
      maxRestarts: checkCount('maxRestarts', o.maxRestarts, 3, 0),
      period: checkMs('period', o.period, 5000),
    },
    shutdownTimeout,
    drainRate: checkRate('drainRate', o.drainRate, 1000),
    transport,
    workers: planWorkers(o, transport, maxConnections, maxWaiting),
    alarms: planAlarms(o.alarms),
  };
}

/**
 * What one worker of a pool applies of the pool's admission plan. With distribution `primary` the
 * primary applies the rate and every per-source rule once, exactly, for the pool; a worker admits
 * what it is passed. With `shared` and `reuseport` each worker accepts on its own: it applies its
 * share of `connectionRate` (as of `maxConnections`), and the per-source numbers
 * (`connectionRatePerSource`, `maxConnectionsPerAddress`) whole — the kernel may send one source's
 * connects to any worker, and a share would refuse a client under its limit; a source can so get
 * up to the number of workers times its limit. @internal
 */
export function workerAdmission(admission: AcceptorPoolOptions, distribution: Distribution, workers: number): AcceptorPoolOptions {
  if (distribution === 'primary') {
    return { ...admission, proxyHeader: undefined, access: undefined, connectionRate: undefined, connectionRatePerSource: undefined, maxConnectionsPerAddress: Infinity };
  }
  const rate = admission.connectionRate;
  return {
    ...admission,
    connectionRate: rate === undefined ? undefined : { rate: rate.rate / workers, burst: Math.max(1, Math.ceil(rate.burst / workers)) },
  };
}
