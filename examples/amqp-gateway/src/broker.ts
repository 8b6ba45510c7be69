/**
 * What the gateway needs from a message broker. Two implementations: `AmqpBroker` (RabbitMQ over
 * AMQP 0-9-1, with amqplib) and `MemoryBroker` (in-process, same routing, for running without a
 * broker and for tests). The device sessions only ever talk to this interface.
 */
import type { EventEmitter } from 'node:events';

/** An uplink message from a device, as published to `<prefix>.up`. */
export interface UplinkMessage {
  readonly device: string;
  /** The device's message id (unique per device). */
  readonly id: string;
  readonly topic: string;
  readonly body: unknown;
}

/** The outcome of an uplink publish. `ok` means a queue holds the message (confirmed and routed). */
export type PublishResult = { readonly ok: true } | { readonly ok: false; readonly reason: 'unroutable' | 'rejected' | 'shutting_down' };

/** A downlink command delivered to this node for one of its devices. */
export interface Command {
  /**
   * The command's message id (AMQP `messageId`). A command published without one gets one at its
   * first delivery here, which every redelivery by the gateway keeps (`redeliver` publishes it
   * with that `messageId`).
   */
  readonly id: string;
  readonly device: string;
  readonly body: unknown;
  /** When the command expires (ms since the epoch), from the AMQP `expiration`, if any. */
  readonly expiresAt: number | undefined;
  /** The device acknowledged it: acknowledge the delivery to the broker. */
  ack(): void;
  /**
   * It was not delivered (device gone, ack timeout): publish it again to `<prefix>.down` so it
   * follows the device (or lands in the offline queue), then settle this delivery.
   */
  redeliver(): void;
  /** It expired before delivery: settle it without delivering. */
  drop(): void;
  /**
   * It can never be written to a device (its body cannot be encoded as a line): settle it by
   * publishing it to `<p>.down.unrouted`, so it lands in `<p>.down.offline` (where a back end finds
   * the commands the gateway could not deliver), with the header `gateway-dead-letter-reason`.
   * Never sent to the device again.
   */
  deadLetter(reason: DeadLetterReason): void;
}

/**
 * Why a command was dead-lettered (see {@link Command.deadLetter}): `unencodable`, its body cannot
 * be written as a line; `too_large`, its line is longer than the device protocol allows
 * (`maxLineLength`, 64 KiB); `invalid_id`, its id is not one a device can acknowledge (`MESSAGE_ID`).
 */
export type DeadLetterReason = 'unencodable' | 'too_large' | 'invalid_id';

/** Header naming why a command was dead-lettered to `<p>.down.offline` by the gateway. */
export const DEAD_LETTER_REASON_HEADER = 'gateway-dead-letter-reason';

/**
 * A presence event published to `<prefix>.events`, routing key `<device>.<event>`. For one device,
 * `seq` orders the events of every node (see docs/gateway.md, "Events"): the device's state is the
 * event with the highest `seq`.
 */
export interface PresenceEvent {
  readonly device: string;
  readonly event: 'connected' | 'disconnected';
  readonly node: string;
  /** The session id (the one the welcome gave the device). */
  readonly session: string;
  /**
   * The device's presence sequence number: a session's `connected` has its seq, its
   * `disconnected` that seq + 1; a later session of the device gets a higher one.
   */
  readonly seq: number;
  /** ISO 8601 time (informative: order by `seq`). */
  readonly at: string;
}

/**
 * A command outcome published to `<prefix>.events`, routing key `<device>.<event>`: the device
 * acknowledged the command (`cmd_ack`), or the command expired before it could be delivered and
 * was dropped (`cmd_expired`).
 */
export interface CommandEvent {
  readonly device: string;
  /** The command id. */
  readonly command: string;
  readonly event: 'cmd_ack' | 'cmd_expired';
  readonly node: string;
  /** The session that had the command, or `null` (an expired command no session of this node held). */
  readonly session: string | null;
  /** ISO 8601 time. */
  readonly at: string;
}

/** A session takeover announcement between gateway nodes. */
export interface Takeover {
  readonly device: string;
  readonly node: string;
  readonly session: string;
  /** When the winning hello was received (ms since epoch); later wins, ties broken by session id. */
  readonly at: number;
  /**
   * The session's presence seq. A session may be announced again with a higher seq (a node that
   * knew a higher seq of the device corrects it); the session then adopts it.
   */
  readonly seq: number;
}

/** Broker states, for `/healthz` and metrics. */
export type BrokerState = 'connecting' | 'connected' | 'reconnecting' | 'blocked' | 'closed';

export interface BrokerEvents {
  /** The broker's state changed. */
  state: [state: BrokerState];
  /** A command arrived for a device of this node. */
  command: [command: Command];
  /** Another session of a device was announced somewhere (this node's own announcements included). */
  takeover: [takeover: Takeover];
}

/** The broker behind a gateway node. */
export interface Broker extends EventEmitter<BrokerEvents> {
  /** `amqp` for RabbitMQ, `embedded` for the in-process broker. */
  readonly mode: 'amqp' | 'embedded';
  readonly state: BrokerState;
  /**
   * Connect and declare the topology. Resolves once connected; if the first connect fails, rejects
   * (or, for an `AmqpBroker` with `keepTryingAtStart`, resolves `reconnecting` and keeps trying).
   */
  start(): Promise<void>;
  /**
   * Publish an uplink message: persistent, mandatory, with headers `device-id`, `message-id`,
   * `node-id`. Resolves once the broker confirmed it (`ok`) or refused/returned it. While the broker
   * is unreachable or blocked, the promise waits (and the message is republished after a reconnect
   * if it was not confirmed).
   */
  publishUplink(message: UplinkMessage): Promise<PublishResult>;
  /** Publish a presence event (best effort, confirmed). */
  publishPresence(event: PresenceEvent): Promise<void>;
  /**
   * Publish a command outcome event, persistent. Resolves once the broker confirmed it; while the
   * broker is unreachable it waits (like an uplink); rejects if it was refused or the broker stops.
   * The session settles the command's delivery only after this resolves, so the event is
   * published at least once.
   */
  publishCommandEvent(event: CommandEvent): Promise<void>;
  /**
   * Route downlink for `device` to this node. Resolves once the binding is in place and the
   * device's parked commands (see `detachDevice`), if any, were emitted as `command` events, in
   * publish order, before any command that reached this node's queue for it meanwhile.
   */
  attachDevice(device: string): Promise<void>;
  /**
   * Stop routing downlink for `device` to this node. With `park` (its session ended and it has
   * no newer one anywhere), commands for it are kept from then on in its own offline queue
   * `<p>.down.offline.<device>` (bound before the node binding goes, so none is unroutable in
   * between), which its next `attachDevice`, on any node, delivers and deletes.
   */
  detachDevice(device: string, options?: { readonly park?: boolean }): Promise<void>;
  /** Tell every node (this one too) that `device` now has a new session. */
  announceTakeover(takeover: Takeover): Promise<void>;
  /** Publish a command to `<prefix>.down` for a device (the admin API's `POST /devices/:id/commands`). */
  publishCommand(device: string, body: unknown, options?: { id?: string; expirationMs?: number }): Promise<{ id: string }>;
  /** Stop consuming; wait for outstanding confirms (bounded); close. */
  stop(): Promise<void>;
}
