/**
 * Names of everything the gateway declares on the broker. Every name takes a prefix (default
 * `devices`), so test files, tenants or environments can share one broker without sharing names.
 *
 * | name | type | purpose |
 * |---|---|---|
 * | `<p>.up` | topic exchange | uplink: routing key `<device>.<topic>`; the back end binds its queues |
 * | `<p>.down` | direct exchange, alternate exchange `<p>.down.unrouted` | downlink: routing key = device id |
 * | `<p>.down.unrouted` | fanout exchange | takes downlink no node queue is bound for |
 * | `<p>.down.offline` | durable queue, bound to `<p>.down.unrouted` | commands for devices connected nowhere and not parked (never welcomed, or left by a crashed process and not back within the grace) |
 * | `<p>.down.offline.<device>` | durable queue per parked device, bound to `<p>.down` with the device id; `x-expires` 7 days, `x-max-length` 1000, `x-overflow` reject-publish | commands for a device whose last session ended, delivered (in order) at its next connect, on any node |
 * | `<p>.down.node.<node>.<slot>` | durable queue per gateway process slot (`0`, or the worker index), bound per device connected to that process; a command left in it 30 s is dead-lettered to `<p>.down.unrouted` | downlink for that process's devices |
 * | `<p>.events` | topic exchange | events: routing key `<device>.connected` / `<device>.disconnected` (presence), `<device>.cmd_ack` / `<device>.cmd_expired` (command outcomes) |
 * | `<p>.control` | fanout exchange | session takeover announcements between gateway nodes |
 * | `<p>.control.<node>.<pid>.<n>` | exclusive, auto-delete queue (a fresh one per connection) | one gateway process's control inbox |
 */
export interface Topology {
  readonly prefix: string;
  readonly up: string;
  readonly down: string;
  readonly downUnrouted: string;
  readonly downOffline: string;
  /** The queue that keeps the commands of a parked device (one whose last session ended) until it connects again. */
  offlineQueue(device: string): string;
  readonly events: string;
  readonly control: string;
  /**
   * The downlink queue of one gateway process slot: `0` for a single process, the worker index
   * with `--workers`. One per process, not per node, so each worker binds and unbinds only the
   * devices it holds; named by slot, not pid, so a restarted process takes over its queue (and the
   * commands stranded in it) instead of leaving it behind.
   */
  nodeQueue(node: string, slot?: string): string;
}

/** The topology for a prefix (default `devices`). */
export function topology(prefix = 'devices'): Topology {
  return {
    prefix,
    up: `${prefix}.up`,
    down: `${prefix}.down`,
    downUnrouted: `${prefix}.down.unrouted`,
    downOffline: `${prefix}.down.offline`,
    offlineQueue: (device) => `${prefix}.down.offline.${device}`,
    events: `${prefix}.events`,
    control: `${prefix}.control`,
    nodeQueue: (node, slot = '0') => `${prefix}.down.node.${node}.${slot}`,
  };
}

/**
 * How long a command may sit, undelivered, in a node queue before it is dead-lettered to
 * `<p>.down.unrouted` and so to the offline queue. Bounds how long commands stay stranded in the
 * queue of a process that crashed and did not come back. (Dead-lettering back to `<p>.down` would
 * route them into the same queue again, through its stale bindings, and RabbitMQ drops such
 * dead-letter cycles.) Node queues do not expire: an expiring queue drops what it holds.
 */
export const NODE_QUEUE_MESSAGE_TTL_MS = 30_000;

/**
 * The arguments of a per-device offline queue (`<p>.down.offline.<device>`). Changing any of them
 * makes RabbitMQ refuse (406) the declaration of a queue that exists with the old ones: see
 * docs/gateway.md, "Upgrading".
 *
 * - `x-expires`: the queue (and what it holds) is deleted after 7 days unused — a device away
 *   longer loses its pending commands, and a device that never comes back leaves nothing behind.
 * - `x-max-length` 1000 with `x-overflow` `reject-publish`: a device that accumulates more than
 *   1,000 commands while away gets no more, and a publisher with confirms is told (a `nack`);
 *   nothing already accepted is dropped silently (which `drop-head` would do).
 */
export const OFFLINE_QUEUE_EXPIRES_MS = 7 * 24 * 3600 * 1000;
export const OFFLINE_QUEUE_MAX_LENGTH = 1000;
export const OFFLINE_QUEUE_ARGUMENTS: Readonly<Record<string, number | string>> = Object.freeze({
  'x-expires': OFFLINE_QUEUE_EXPIRES_MS,
  'x-max-length': OFFLINE_QUEUE_MAX_LENGTH,
  'x-overflow': 'reject-publish',
});
