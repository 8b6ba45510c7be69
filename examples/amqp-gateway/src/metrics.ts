/**
 * The gateway's Prometheus metrics (prom-client), one registry per process. The device sessions
 * and the gateway report through the typed methods of {@link GatewayMetrics}; the admin API serves
 * `registry`. With workers, each process has its own registry.
 *
 * | metric | type | labels |
 * |---|---|---|
 * | `gateway_device_connections` | gauge | |
 * | `gateway_hellos_total` | counter | `outcome` |
 * | `gateway_device_errors_total` | counter | `code` (the error sent to the device before closing) |
 * | `gateway_uplink_published_total` | counter | |
 * | `gateway_uplink_acked_total` | counter | |
 * | `gateway_uplink_nacked_total` | counter | `reason` |
 * | `gateway_uplink_rate_limited_total` | counter | (uplink messages that waited for their device's rate) |
 * | `gateway_uplink_ack_seconds` | histogram | |
 * | `gateway_uplink_buffered_bytes` | gauge | |
 * | `gateway_downlink_delivered_total` | counter | |
 * | `gateway_downlink_acked_total` | counter | |
 * | `gateway_downlink_redelivered_total` | counter | `reason` |
 * | `gateway_downlink_expired_total` | counter | |
 * | `gateway_downlink_timed_out_total` | counter | |
 * | `gateway_downlink_dead_lettered_total` | counter | `reason` (`unencodable`, `too_large`, `invalid_id`) |
 * | `gateway_command_ack_seconds` | histogram | |
 * | `gateway_broker_state` | gauge | `state` (1 for the current state, 0 for the others) |
 * | `gateway_takeovers_total` | counter | `kind`: `closed` (an older session closed), `refused` (a hello lost) |
 * | `gateway_command_events_total` | counter | `event` (`cmd_ack`, `cmd_expired`), `outcome` (`published`, `failed`) |
 *
 * plus prom-client's default process metrics.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { BrokerState, DeadLetterReason } from './broker.js';
import type { ErrorCode } from './device-protocol.js';

/** How a hello ended. */
export type HelloOutcome = 'welcome' | 'unauthorized' | 'taken_over' | 'timeout' | 'broker_error' | 'closed' | 'full';

/** Why a command went back to the broker undelivered. */
export type RedeliveryReason = 'no_session' | 'queue_full' | 'ack_timeout' | 'disconnected';

/** A command outcome event (published to `<p>.events`). */
export type CommandEventKind = 'cmd_ack' | 'cmd_expired';

/** How a session ended another. */
export type TakeoverKind = 'closed' | 'refused';

/** The gateway's metrics: the registry, and one method per thing the gateway counts. */
export interface GatewayMetrics {
  readonly registry: Registry;
  /** A device session was welcomed. */
  deviceConnected(): void;
  /** A welcomed device session ended. */
  deviceDisconnected(): void;
  hello(outcome: HelloOutcome): void;
  /** An error line was sent to a device (and its connection closed). */
  deviceError(code: ErrorCode): void;
  uplinkPublished(): void;
  /** An uplink was confirmed and acknowledged to its device, `seconds` after it was read. */
  uplinkAcked(seconds: number): void;
  uplinkNacked(reason: string): void;
  /** Uplink bytes held unconfirmed by this process now. */
  uplinkBufferedBytes(bytes: number): void;
  /** An uplink message waited for its device's rate (`uplinkRate`). */
  uplinkRateLimited(): void;
  /** A command was written to its device. */
  downlinkDelivered(): void;
  /** A device acknowledged a command, `seconds` after it was written. */
  downlinkAcked(seconds: number): void;
  downlinkRedelivered(reason: RedeliveryReason): void;
  /** A command expired before it could be written, and was dropped. */
  downlinkExpired(): void;
  /** A command written to a device was not acknowledged in time. */
  downlinkTimedOut(): void;
  /** A command that can never be written was sent to `<p>.down.offline` instead (see `Command.deadLetter`). */
  downlinkDeadLettered(reason: DeadLetterReason): void;
  brokerState(state: BrokerState): void;
  takeover(kind: TakeoverKind): void;
  /** A command outcome event was confirmed by the broker (`published`) or not (`failed`). */
  commandEvent(event: CommandEventKind, outcome: 'published' | 'failed'): void;
}

/** Options of {@link createMetrics}. */
export interface MetricsOptions {
  /** Also collect prom-client's default process metrics (CPU, memory, event loop, GC). Default true. */
  readonly defaultMetrics?: boolean;
  /** Labels added to every metric (e.g. `{ node: 'gw-1' }`). */
  readonly labels?: Record<string, string>;
}

const BROKER_STATES: readonly BrokerState[] = ['connecting', 'connected', 'reconnecting', 'blocked', 'closed'];
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** Create this process's metrics in a registry of their own. */
export function createMetrics(options: MetricsOptions = {}): GatewayMetrics {
  const registry = new Registry();
  if (options.labels) registry.setDefaultLabels(options.labels);
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry });
  const registers = [registry];

  const connections = new Gauge({ name: 'gateway_device_connections', help: 'Device sessions welcomed and open', registers });
  const hellos = new Counter({ name: 'gateway_hellos_total', help: 'Hellos, by outcome', labelNames: ['outcome'], registers });
  const errors = new Counter({
    name: 'gateway_device_errors_total',
    help: 'Error lines sent to devices before closing them, by code',
    labelNames: ['code'],
    registers,
  });
  const published = new Counter({ name: 'gateway_uplink_published_total', help: 'Uplink messages published to the broker', registers });
  const acked = new Counter({ name: 'gateway_uplink_acked_total', help: 'Uplink messages confirmed and acknowledged to the device', registers });
  const rateLimited = new Counter({
    name: 'gateway_uplink_rate_limited_total',
    help: "Uplink messages that waited for their device's rate (uplinkRate): the device was not read meanwhile",
    registers,
  });
  const nacked = new Counter({ name: 'gateway_uplink_nacked_total', help: 'Uplink messages refused, by reason', labelNames: ['reason'], registers });
  const ackLatency = new Histogram({
    name: 'gateway_uplink_ack_seconds',
    help: 'From reading an uplink line to acknowledging it',
    buckets: LATENCY_BUCKETS,
    registers,
  });
  const buffered = new Gauge({ name: 'gateway_uplink_buffered_bytes', help: 'Uplink bytes held unconfirmed by this process', registers });
  const delivered = new Counter({ name: 'gateway_downlink_delivered_total', help: 'Commands written to devices', registers });
  const cmdAcked = new Counter({ name: 'gateway_downlink_acked_total', help: 'Commands acknowledged by devices', registers });
  const redelivered = new Counter({
    name: 'gateway_downlink_redelivered_total',
    help: 'Commands given back to the broker undelivered, by reason',
    labelNames: ['reason'],
    registers,
  });
  const expired = new Counter({ name: 'gateway_downlink_expired_total', help: 'Commands dropped because they expired', registers });
  const timedOut = new Counter({ name: 'gateway_downlink_timed_out_total', help: 'Commands not acknowledged in time', registers });
  const deadLettered = new Counter({
    name: 'gateway_downlink_dead_lettered_total',
    help: 'Commands that can never be written to a device (unencodable, too_large, invalid_id), sent to <p>.down.offline instead, by reason',
    labelNames: ['reason'],
    registers,
  });
  const cmdLatency = new Histogram({
    name: 'gateway_command_ack_seconds',
    help: 'From writing a command to its acknowledgement',
    buckets: LATENCY_BUCKETS,
    registers,
  });
  const brokerState = new Gauge({ name: 'gateway_broker_state', help: 'Processes whose broker is in this state (1 = current in a single process; summed over workers)', labelNames: ['state'], registers });
  const takeovers = new Counter({ name: 'gateway_takeovers_total', help: 'Session takeovers, by kind', labelNames: ['kind'], registers });
  const commandEvents = new Counter({
    name: 'gateway_command_events_total',
    help: 'Command outcome events (cmd_ack, cmd_expired) published to the events exchange, by outcome',
    labelNames: ['event', 'outcome'],
    registers,
  });

  for (const state of BROKER_STATES) brokerState.set({ state }, 0);

  return {
    registry,
    deviceConnected: () => connections.inc(),
    deviceDisconnected: () => connections.dec(),
    hello: (outcome) => hellos.inc({ outcome }),
    deviceError: (code) => errors.inc({ code }),
    uplinkPublished: () => published.inc(),
    uplinkAcked: (seconds) => {
      acked.inc();
      ackLatency.observe(seconds);
    },
    uplinkNacked: (reason) => nacked.inc({ reason }),
    uplinkBufferedBytes: (bytes) => buffered.set(bytes),
    uplinkRateLimited: () => rateLimited.inc(),
    downlinkDelivered: () => delivered.inc(),
    downlinkAcked: (seconds) => {
      cmdAcked.inc();
      cmdLatency.observe(seconds);
    },
    downlinkRedelivered: (reason) => redelivered.inc({ reason }),
    downlinkExpired: () => expired.inc(),
    downlinkTimedOut: () => timedOut.inc(),
    downlinkDeadLettered: (reason) => deadLettered.inc({ reason }),
    brokerState: (state) => {
      for (const s of BROKER_STATES) brokerState.set({ state: s }, s === state ? 1 : 0);
    },
    takeover: (kind) => takeovers.inc({ kind }),
    commandEvent: (event, outcome) => commandEvents.inc({ event, outcome }),
  };
}
