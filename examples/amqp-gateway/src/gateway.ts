import { type Connection, type Listener, type RateLimit, type SocketAddress, startListener } from 'corral';
import type { Logger } from 'pino';
import { AggregatorRegistry } from 'prom-client';
import type { Authenticate } from './auth.js';
import type { Broker } from './broker.js';
import { DeviceDirectory } from './device-directory.js';
import { DeviceSession, dispatchBrokerEvents, type SessionContext } from './device-session.js';
import type { GatewayMetrics } from './metrics.js';
import { UplinkBudget } from './uplink-budget.js';
import { type MetricsSnapshot, WorkerMetrics } from './worker-metrics.js';

/** Everything `startGateway` needs. Defaults are listed in docs/gateway.md. */
export interface GatewayOptions {
  /** This gateway node's id (`--node-id`): names its downlink queue, appears in welcome and headers. */
  readonly nodeId: string;
  readonly host: string;
  readonly port: number;
  /** PEM key and certificate for the device-facing TLS listener. */
  readonly tls: { readonly key: string; readonly cert: string };
  /** Decides which hellos open a session (default: HMAC tokens, see auth.ts). */
  readonly authenticate: Authenticate;
  /** Builds this process's broker (called once per process; with workers, once in each worker). */
  readonly broker: () => Broker;
  readonly logger: Logger;
  readonly metrics: GatewayMetrics;
  /** Longest line accepted from a device, in bytes. Default 65536. */
  readonly maxLineLength?: number;
  /** A device must send its hello within this many ms. Default 10000. */
  readonly helloTimeout?: number;
  /** A device silent for this long is closed (ms). Default 120000. */
  readonly idleTimeout?: number;
  /** Unconfirmed uplink messages per device before its socket is paused. Default 16. */
  readonly maxInflightPerDevice?: number;
  /** Commands sent to a device and not yet acknowledged, at most. Default 16. */
  readonly maxPendingCommands?: number;
  /** A command not acknowledged within this many ms is treated as undelivered. Default 30000. */
  readonly cmdAckTimeout?: number;
  /**
   * Uplink messages per second one device may send, and how many at once (a token bucket). Over
   * the rate, the gateway stops reading the device until its next token (backpressure; nothing is
   * refused). Default 100 per second, burst 200; `Infinity` turns it off.
   */
  readonly uplinkRate?: number;
  readonly uplinkBurst?: number;
  /** Uplink bytes this process holds unconfirmed, in total, before devices are paused. Default 64 MiB. */
  readonly maxBufferedBytes?: number;
  /**
   * Most devices the node holds (welcomed, or with a hello under way), over all its workers (each
   * worker holds at most its share); a hello beyond is refused with `overloaded`. Default 60000.
   */
  readonly maxConnections?: number;
  /**
   * Most device connections being set up at once on the node — in their TLS handshake or their
   * hello, until the welcome — over all its workers (corral's `maxConnections`: a welcomed
   * connection leaves corral's count with `removeFromCount`). Sockets beyond wait, paused, in
   * corral's wait queue, where waiting costs neither CPU nor broker work. In a stampede this keeps
   * the work under way — TLS handshakes here, binds and publishes at RabbitMQ, on the same cores —
   * to what finishes before the devices give up. Default 128. See docs/gateway.md, "Stampede".
   */
  readonly maxConnecting?: number;
  /**
   * Connects per second (and burst) a source address may make; beyond, a connect is closed at
   * accept (corral's `connectionRatePerSource`, counted `rate_limited`). Default none: devices
   * behind one NAT share an address. Without it, one address sending ClientHellos it never
   * follows up holds places of the set-up window for 5 s each (docs/gateway.md, "Stampede").
   */
  readonly connectionRatePerSource?: RateLimit;
  /** Run over this many worker processes (needs an AMQP broker). */
  readonly workers?: number;
  /**
   * Read a PROXY protocol header (v1/v2, e.g. HAProxy's `send-proxy-v2`) from these load balancers
   * (CIDRs or addresses), and only from them: devices are then known by their own addresses, in
   * `/devices`, the logs and every per-address rule; connections from anywhere else are refused.
   */
  readonly proxyHeaderFrom?: readonly string[];
  /** Closing rate on drain, connections per second (corral's drainRate). Default 500. */
  readonly drainRate?: number;
  /**
   * Commands waiting for a device behind its `maxPendingCommands`, at most; beyond, they are held
   * (`maxHeldCommands`). Default 64.
   */
  readonly maxQueuedCommands?: number;
  /**
   * Commands held for a device, unacknowledged at the broker, behind its queued ones, at most
   * (they move up, in order, as room frees); beyond, each waits 1 s and goes back to the broker.
   * Default 256. See docs/gateway.md, "Downlink delivery semantics".
   */
  readonly maxHeldCommands?: number;
  /**
   * How long a drain gives devices to settle their unconfirmed uplinks, and any graceful close its
   * flush (corral's shutdownTimeout), in ms; the drain takes this plus connections ÷ `drainRate`
   * seconds. Default 5000.
   */
  readonly shutdownTimeout?: number;
}

/** `uplinkRate`: messages per second, at least 0.001 (a wait stays under 1,000 s), or Infinity. */
function checkedUplinkRate(rate: number): number {
  if (rate === Infinity || (Number.isFinite(rate) && rate >= 0.001)) return rate;
  throw new RangeError(`gateway: uplinkRate must be >= 0.001 messages per second, or Infinity; got ${rate}`);
}

/** `uplinkBurst`: a whole number of messages, at least 1. */
function checkedUplinkBurst(burst: number): number {
  if (Number.isSafeInteger(burst) && burst >= 1) return burst;
  throw new RangeError(`gateway: uplinkBurst must be a whole number >= 1; got ${burst}`);
}

/** What a device connection looks like from the admin API. */
export interface DeviceInfo {
  readonly device: string;
  readonly session: string;
  readonly connection: string;
  readonly remote: string;
  readonly connectedAt: string;
  readonly pid: number;
}

/** `Gateway.devices()` on a node whose workers did not all answer in time (the admin API answers 503). */
export class DevicesUnknown extends Error {
  constructor(readonly workers: readonly number[]) {
    super(`worker${workers.length === 1 ? '' : 's'} ${workers.join(', ')} did not answer within ${ASK_TIMEOUT_MS} ms: ${workers.length === 1 ? 'its' : 'their'} devices are unknown`);
    this.name = 'DevicesUnknown';
  }
}

/** One process's part of {@link NodeHealth}. */
export interface ProcessHealth {
  /** `primary`, `single`, or the worker's index. */
  readonly process: string;
  readonly pid: number | undefined;
  /** Its broker connection's state, or `unanswered` (a worker that did not answer in time). */
  readonly broker: Broker['state'] | 'unanswered';
}

/** What `/healthz` reports. */
export interface NodeHealth {
  readonly ok: boolean;
  readonly draining: boolean;
  readonly processes: readonly ProcessHealth[];
}

/** The topics the primary asks its workers (`listener.askWorkers`). */
const ASK_METRICS = 'gateway:metrics';
const ASK_BROKER_STATE = 'gateway:broker-state';
const ASK_DEVICES = 'gateway:devices';
/** How long the admin API waits for a worker's answer, ms: it answers quickly or without that worker. */
const ASK_TIMEOUT_MS = 1000;

/** Whether a broker in this state serves (a blocked one blocks every node alike: no reason to leave the balancer). */
function brokerServes(state: Broker['state'] | 'unanswered'): boolean {
  return state === 'connected' || state === 'blocked';
}

/** A running gateway node (in the primary, or in a single process). */
export interface Gateway {
  readonly nodeId: string;
  readonly listener: Listener;
  /** This process's broker (in a primary with workers: the primary's own, used by the admin API). */
  readonly broker: Broker;
  /** The devices' line bound, in bytes (`GatewayOptions.maxLineLength`): a `cmd` line over it is dead-lettered `too_large`. */
  readonly maxLineLength: number;
  /**
   * Devices connected to this node (all workers). Rejects with {@link DevicesUnknown} when a worker
   * does not answer within 1 s: a list without its devices would look complete.
   */
  devices(): Promise<DeviceInfo[]>;
  /** Whether the node serves devices (false once draining, or while the broker is down). */
  healthy(): boolean;
  /**
   * The node's health over every process: this process's broker and, with workers, each worker's
   * (asked over corral's IPC channel). `ok` when the node is not draining, its listener runs, and
   * every process that answered can publish and consume (broker `connected`, or `blocked`, which
   * blocks every node alike).
   */
  health(): Promise<NodeHealth>;
  /**
   * The node's metrics over every process: with workers, each worker's registry (asked over
   * corral's IPC channel) and this process's, aggregated as prom-client's AggregatorRegistry does
   * (counters and gauges summed); otherwise this process's registry.
   */
  metricsText(): Promise<string>;
  /**
   * SIGTERM: stop accepting, close devices at `drainRate`, let outstanding confirms finish, close
   * the broker. Resolves when done.
   */
  drain(): Promise<void>;
}

/**
 * Start a gateway node: this process's broker (started first), then the corral listener
 * `gateway-<nodeId>` (TLS, line framing) whose connections are {@link DeviceSession}s sharing one
 * {@link SessionContext}. With `workers`, the entry script runs again in each worker process and
 * calls this there too: each worker builds its own broker and serves devices; the primary
 * (`listener.role === 'primary'`) keeps a broker for the admin API and serves no device itself.
 * Rejects (with the broker stopped) if the broker cannot start or the port cannot be bound.
 */
export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  const { nodeId, logger, metrics } = options;
  const maxLineLength = options.maxLineLength ?? 65_536;
  // Checked before anything starts: a bad value would otherwise fail every device's first message.
  const uplinkRate = checkedUplinkRate(options.uplinkRate ?? 100);
  const uplinkBurst = checkedUplinkBurst(options.uplinkBurst ?? 200);
  const maxConnecting = options.maxConnecting ?? 128;
  if (!Number.isInteger(maxConnecting) || maxConnecting < 1) throw new RangeError(`gateway: maxConnecting must be a whole number >= 1; got ${maxConnecting}`);
  const shutdownTimeout = options.shutdownTimeout ?? 5000;
  const broker = options.broker();
  // An embedded broker per worker process would route nothing between them.
  if (options.workers !== undefined && broker.mode === 'embedded') {
    throw new Error('gateway: workers need a shared broker (amqp); the embedded broker lives in one process');
  }
  const onState = (state: Broker['state']): void => {
    metrics.brokerState(state);
    logger.info({ state }, 'broker state');
  };
  metrics.brokerState(broker.state);
  broker.on('state', onState);
  try {
    await broker.start();
  } catch (err) {
    broker.off('state', onState);
    await broker.stop().catch(() => {});
    throw err;
  }

  const context: SessionContext = {
    nodeId,
    broker,
    authenticate: options.authenticate,
    logger,
    metrics,
    limits: {
      helloTimeout: options.helloTimeout ?? 10_000,
      idleTimeout: options.idleTimeout ?? 120_000,
      maxInflightPerDevice: options.maxInflightPerDevice ?? 16,
      maxPendingCommands: options.maxPendingCommands ?? 16,
      maxQueuedCommands: options.maxQueuedCommands ?? 64,
      maxHeldCommands: options.maxHeldCommands ?? 256,
      cmdAckTimeout: options.cmdAckTimeout ?? 30_000,
      maxDevices: Math.ceil((options.maxConnections ?? 60_000) / Math.max(1, options.workers ?? 1)),
      uplinkRate,
      uplinkBurst,
      maxLineLength,
    },
    directory: new DeviceDirectory({ stampRetention: Math.max(60_000, 2 * (options.helloTimeout ?? 10_000)) }),
    devices: { held: 0 },
    budget: new UplinkBudget(options.maxBufferedBytes ?? 64 * 1024 * 1024, (bytes) => metrics.uplinkBufferedBytes(bytes)),
    settling: new Set(),
  };
  const stopDispatch = dispatchBrokerEvents(context);

  let listener: Listener;
  try {
    listener = await startListener({
      name: `gateway-${nodeId}`,
      transport: 'tls',
      transportOptions: { host: options.host, port: options.port, key: options.tls.key, cert: options.tls.cert, noDelay: true },
      framing: { type: 'line', maxLength: maxLineLength },
      protocol: (conn: Connection) => new DeviceSession(conn, context),
      maxConnections: maxConnecting,
      drainRate: options.drainRate ?? 500,
      // The set-up window (docs/gateway.md, "Stampede"). Otherwise corral's admission defaults
      // stand: a device's socket holds no slot until its ClientHello is in, a started handshake
      // has 5 s (waitTimeout is 5 s too), and a session whose hello is over 1 s late leaves the
      // window, so silent peers cannot keep real devices out (docs/gateway.md, "Stampede").
      shutdownTimeout,
      ...(options.proxyHeaderFrom === undefined ? {} : { proxyHeader: true, proxyHeaderFrom: options.proxyHeaderFrom }),
      ...(options.connectionRatePerSource === undefined ? {} : { connectionRatePerSource: options.connectionRatePerSource }),
      ...(options.workers === undefined ? {} : { workers: options.workers }),
    });
  } catch (err) {
    stopDispatch();
    broker.off('state', onState);
    await broker.stop();
    throw err;
  }
  listener.on('handlerCrash', ({ id, hook, error }) => logger.error({ err: error, connection: id, hook }, 'device handler crashed'));
  // What the primary's admin API asks every process (a single process asks itself).
  listener.answer(ASK_METRICS, () => metrics.registry.getMetricsAsJSON());
  listener.answer(ASK_BROKER_STATE, () => broker.state);
  listener.answer(ASK_DEVICES, () => ownDevices());

  /** The devices this process holds (welcomed sessions, not taken over). */
  async function ownDevices(): Promise<DeviceInfo[]> {
    const devices: DeviceInfo[] = [];
    for (const c of await listener.connections()) {
      const { device, session } = c.meta;
      if (typeof device !== 'string' || typeof session !== 'string') continue;
      devices.push({ device, session, connection: c.id, remote: formatAddress(c.remote), connectedAt: new Date(c.openedAt).toISOString(), pid: c.pid });
    }
    return devices;
  }
  if (listener.role === 'worker') {
    // The primary drains the pool; each worker's listener stops here. Let its detaches, command
    // hand-backs and confirms finish, then close the broker, so the worker exits cleanly (corral
    // waits for that, up to its exit grace) instead of cutting them off.
    listener.once('stop', () => {
      void settled(context.settling, shutdownTimeout)
        .then(() => broker.stop())
        .catch((err: unknown) => logger.warn({ err }, 'broker stop after drain failed'))
        .finally(() => stopDispatch());
    });
  }

  let draining: Promise<void> | undefined;
  const workerMetrics = new WorkerMetrics();
  return {
    nodeId,
    listener,
    broker,
    maxLineLength,
    async devices() {
      if (listener.role !== 'primary') return ownDevices();
      const answers = await listener.askWorkers<DeviceInfo[]>(ASK_DEVICES, undefined, { timeout: ASK_TIMEOUT_MS });
      const unanswered = answers.filter((a) => !a.ok).map((a) => a.index);
      if (unanswered.length > 0) throw new DevicesUnknown(unanswered);
      return answers.flatMap((a) => (a.ok ? a.value : []));
    },
    healthy() {
      return draining === undefined && listener.status === 'running' && brokerServes(broker.state);
    },
    async health() {
      const own: ProcessHealth = { process: listener.role === 'primary' ? 'primary' : 'single', pid: process.pid, broker: broker.state };
      const processes: ProcessHealth[] = [own];
      if (listener.role === 'primary') {
        for (const a of await listener.askWorkers<Broker['state']>(ASK_BROKER_STATE, undefined, { timeout: ASK_TIMEOUT_MS })) {
          processes.push({ process: String(a.index), pid: a.pid, broker: a.ok ? a.value : 'unanswered' });
        }
      }
      // A worker that did not answer (restarting, say) holds no devices: the others decide.
      const answered = processes.filter((p) => p.broker !== 'unanswered');
      const ok = draining === undefined && listener.status === 'running' && answered.every((p) => brokerServes(p.broker));
      return { ok, draining: draining !== undefined, processes };
    },
    async metricsText() {
      if (listener.role !== 'primary') return metrics.registry.metrics();
      const answers = await listener.askWorkers<MetricsSnapshot>(ASK_METRICS, undefined, { timeout: ASK_TIMEOUT_MS });
      return AggregatorRegistry.aggregate([await metrics.registry.getMetricsAsJSON(), ...(await workerMetrics.merge(answers))]).metrics();
    },
    drain() {
      draining ??= (async () => {
        try {
          const result = await listener.stop();
          logger.info({ ...result }, 'devices drained');
          // Sessions that closed may still be detaching and giving commands back: let them finish.
          await settled(context.settling, shutdownTimeout);
        } finally {
          await broker.stop();
          stopDispatch();
          broker.off('state', onState);
        }
      })();
      return draining;
    },
  };
}

/** Wait for the work in `tasks` (including work added meanwhile), at most `ms`. */
async function settled(tasks: Set<Promise<void>>, ms: number): Promise<void> {
  let late = false;
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      late = true;
      resolve();
    }, ms);
  });
  while (tasks.size > 0 && !late) await Promise.race([Promise.allSettled([...tasks]), deadline]);
  clearTimeout(timer);
}

function formatAddress(a: SocketAddress): string {
  switch (a.family) {
    case 'IPv4':
      return `${a.address}:${a.port}`;
    case 'IPv6':
      return `[${a.address}]:${a.port}`;
    case 'unix':
      return a.path;
    case 'memory':
      return a.address;
    default:
      return 'unknown';
  }
}
