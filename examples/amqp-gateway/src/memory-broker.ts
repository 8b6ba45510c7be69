/**
 * The in-process broker (the CLI's embedded mode: no `--amqp-url`): the same routing as `AmqpBroker`, over a
 * {@link MemoryExchangeHub} instead of RabbitMQ.
 *
 * - `<p>.up` (topic) takes uplinks with routing key `<device>.<topic>`; an uplink no queue takes is
 *   refused as `unroutable`. Unless `retain` is 0, `<p>.up.embedded` is bound to `#` and keeps the
 *   last `retain` uplinks, so a gateway with no back end still accepts them; `<p>.events.embedded`
 *   keeps presence events the same way.
 * - `<p>.down` (direct, alternate `<p>.down.unrouted` → `<p>.down.offline`) takes commands with the
 *   device id as routing key. `attachDevice` binds the device to this node's queue
 *   `<p>.down.node.<node>` (counted: the binding goes with the last `detachDevice`), which this
 *   broker consumes and turns into `command` events. `detachDevice` with `park` binds the queue
 *   `<p>.down.offline.<device>` first (at most 1,000 commands, later ones refused); the device's
 *   next `attachDevice`, on any broker of the hub, emits what it holds, in order, and deletes it.
 * - `<p>.control` (fanout) carries takeover announcements to every broker on the hub, this one too.
 *
 * Simplifications, against RabbitMQ: nothing survives the process; a stopped node's queue is
 * dead-lettered back to `<p>.down` at once (RabbitMQ does it after the queue's message TTL).
 *
 * For tests, {@link MemoryBroker.holdConfirms} holds uplink confirms so a test can watch a gateway
 * with publishes outstanding.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import {
  type Broker,
  type BrokerEvents,
  type BrokerState,
  type Command,
  type CommandEvent,
  DEAD_LETTER_REASON_HEADER,
  type DeadLetterReason,
  type PresenceEvent,
  type PublishResult,
  type Takeover,
  type UplinkMessage,
} from './broker.js';
import { type HubMessage, MemoryExchangeHub } from './memory-exchange-hub.js';
import { OFFLINE_QUEUE_MAX_LENGTH, type Topology, topology } from './topology.js';

/** Options of a {@link MemoryBroker}. */
export interface MemoryBrokerOptions {
  /** The gateway node this broker serves: names its downlink queue. */
  readonly nodeId: string;
  /** Prefix of every name (default `devices`). */
  readonly prefix?: string;
  /** The hub to share with other brokers (default: one per process, `MemoryExchangeHub.default()`). */
  readonly hub?: MemoryExchangeHub;
  /**
   * How many uplinks `<p>.up.embedded` keeps (and presence events `<p>.events.embedded`), oldest
   * dropped first. 0: no such queues, so an uplink is accepted only if some other queue is bound
   * for it. Default 10000.
   */
  readonly retain?: number;
  /** Most commands `<p>.down.offline` keeps, oldest dropped first. Default 100000. */
  readonly offlineLimit?: number;
}

/** ConfirmHold's method the broker hands confirms to (module-local: not part of its API). */
const holdConfirm = Symbol('holdConfirm');

const OK: PublishResult = { ok: true };
const UNROUTABLE: PublishResult = { ok: false, reason: 'unroutable' };
const REJECTED: PublishResult = { ok: false, reason: 'rejected' };
const SHUTTING_DOWN: PublishResult = { ok: false, reason: 'shutting_down' };

/**
 * Held uplink confirms (see {@link MemoryBroker.holdConfirms}): the publishes were routed; their
 * promises settle, oldest first, when released.
 */
export class ConfirmHold {
  private readonly settles: (() => void)[] = [];
  private readonly waiters: { readonly n: number; readonly resolve: () => void }[] = [];
  private ended = false;

  /** Confirms held now. */
  get held(): number {
    return this.settles.length;
  }

  /** Resolves once at least `n` confirms are held. */
  waitFor(n: number): Promise<void> {
    if (this.settles.length >= n) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ n, resolve }));
  }

  /** Settle the `n` oldest held confirms (all by default); later publishes are still held. */
  release(n = Infinity): void {
    for (let i = 0; i < n && this.settles.length > 0; i++) this.settles.shift()!();
  }

  /** Settle every held confirm and stop holding. */
  end(): void {
    this.ended = true;
    this.release();
  }

  /** Hold one confirm, or settle it at once if the hold has ended. */
  [holdConfirm](settle: () => void): void {
    if (this.ended) {
      settle();
      return;
    }
    this.settles.push(settle);
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const w = this.waiters[i]!;
      if (this.settles.length >= w.n) {
        this.waiters.splice(i, 1);
        w.resolve();
      }
    }
  }
}

/** A command delivered from this node's queue, settled once. */
class MemoryCommand implements Command {
  readonly id: string;
  readonly device: string;
  readonly body: unknown;
  readonly expiresAt: number | undefined;
  settled = false;

  constructor(
    readonly message: HubMessage,
    private readonly settle: (command: MemoryCommand) => boolean,
    private readonly republish: (message: HubMessage, deadLetter?: DeadLetterReason) => void,
  ) {
    // A command published without an id gets one now, which its redeliveries keep (as AmqpBroker).
    this.id = message.messageId ?? randomUUID();
    this.device = message.routingKey;
    this.body = message.body;
    this.expiresAt = message.expiresAt;
  }

  ack(): void {
    this.settle(this);
  }

  redeliver(): void {
    if (this.settle(this)) this.republish({ ...this.message, messageId: this.id });
  }

  deadLetter(reason: DeadLetterReason): void {
    if (this.settle(this)) this.republish({ ...this.message, messageId: this.id }, reason);
  }

  drop(): void {
    this.settle(this);
  }
}

let instances = 0;

/** The in-process {@link Broker}: same routing as the AMQP one, for running without RabbitMQ and for tests. */
export class MemoryBroker extends EventEmitter<BrokerEvents> implements Broker {
  readonly mode = 'embedded' as const;
  readonly nodeId: string;
  readonly hub: MemoryExchangeHub;
  readonly topology: Topology;
  /** This node's downlink queue. */
  readonly nodeQueue: string;
  /** The queue keeping the last uplinks when nobody else takes them (unless `retain` is 0). */
  readonly embeddedUplinkQueue: string;
  /** The queue keeping the last presence events (unless `retain` is 0). */
  readonly embeddedEventQueue: string;
  private current: BrokerState = 'connecting';
  private readonly retain: number;
  private readonly offlineLimit: number;
  private readonly controlQueue: string;
  private readonly attached = new Map<string, number>();
  private readonly unsettled = new Set<MemoryCommand>();
  private readonly cancels: (() => void)[] = [];
  private hold: ConfirmHold | undefined = undefined;
  private started: Promise<void> | undefined = undefined;
  private markStarted: () => void = () => {};
  private readonly ready: Promise<void>;

  constructor(options: MemoryBrokerOptions) {
    super();
    this.nodeId = options.nodeId;
    this.hub = options.hub ?? MemoryExchangeHub.default();
    this.topology = topology(options.prefix);
    this.retain = options.retain ?? 10_000;
    this.offlineLimit = options.offlineLimit ?? 100_000;
    this.nodeQueue = this.topology.nodeQueue(this.nodeId);
    this.embeddedUplinkQueue = `${this.topology.up}.embedded`;
    this.embeddedEventQueue = `${this.topology.events}.embedded`;
    this.controlQueue = `${this.topology.control}.${this.nodeId}.${process.pid}.${++instances}`;
    this.ready = new Promise((resolve) => (this.markStarted = resolve));
  }

  get state(): BrokerState {
    return this.current;
  }

  /** Declare the topology on the hub and start consuming this node's queue and the control fanout. */
  start(): Promise<void> {
    this.started ??= Promise.resolve().then(() => {
      if (this.current === 'closed') throw new Error('memory broker: stopped');
      const t = this.topology;
      const hub = this.hub;
      hub.declareExchange(t.up, 'topic');
      hub.declareExchange(t.downUnrouted, 'fanout');
      hub.declareExchange(t.down, 'direct', { alternate: t.downUnrouted });
      hub.declareExchange(t.events, 'topic');
      hub.declareExchange(t.control, 'fanout');
      hub.declareQueue(t.downOffline, { maxLength: this.offlineLimit });
      hub.bindQueue(t.downOffline, t.downUnrouted, '');
      if (this.retain > 0) {
        hub.declareQueue(this.embeddedUplinkQueue, { maxLength: this.retain });
        hub.bindQueue(this.embeddedUplinkQueue, t.up, '#');
        hub.declareQueue(this.embeddedEventQueue, { maxLength: this.retain });
        hub.bindQueue(this.embeddedEventQueue, t.events, '#');
      }
      hub.declareQueue(this.nodeQueue);
      hub.declareQueue(this.controlQueue);
      hub.bindQueue(this.controlQueue, t.control, '');
      this.cancels.push(
        hub.consume(this.nodeQueue, (m) => this.onCommand(m)),
        hub.consume(this.controlQueue, (m) => this.onControl(m)),
      );
      this.setState('connected');
      this.markStarted();
    });
    return this.started;
  }

  async publishUplink(message: UplinkMessage): Promise<PublishResult> {
    await this.ready;
    if (this.current === 'closed') return SHUTTING_DOWN;
    const routed = this.hub.publish(this.topology.up, `${message.device}.${message.topic}`, {
      body: message.body,
      messageId: message.id,
      headers: { 'device-id': message.device, 'message-id': message.id, 'node-id': this.nodeId },
    });
    // As RabbitMQ: nacked if any queue refused it (full), returned if none took it.
    const result = routed.rejected > 0 ? REJECTED : routed.taken > 0 ? OK : UNROUTABLE;
    const hold = this.hold;
    if (hold === undefined) return result;
    return new Promise((resolve) => hold[holdConfirm](() => resolve(result)));
  }

  async publishPresence(event: PresenceEvent): Promise<void> {
    await this.ready;
    if (this.current === 'closed') return;
    this.hub.publish(this.topology.events, `${event.device}.${event.event}`, {
      body: { ...event },
      headers: { 'device-id': event.device, 'node-id': this.nodeId },
    });
  }

  async publishCommandEvent(event: CommandEvent): Promise<void> {
    await this.ready;
    if (this.current === 'closed') throw new Error('memory broker: stopped');
    const routed = this.hub.publish(this.topology.events, `${event.device}.${event.event}`, {
      body: { ...event },
      messageId: event.command,
      headers: { 'device-id': event.device, 'node-id': this.nodeId },
    });
    // As AmqpBroker: refused by a full queue is not published (not mandatory: no queue is fine).
    if (routed.rejected > 0) throw new Error(`${event.event} of command ${event.command} for ${event.device} was not published (rejected)`);
  }

  async attachDevice(device: string): Promise<void> {
    await this.ready;
    if (this.current === 'closed') return;
    const n = this.attached.get(device) ?? 0;
    this.attached.set(device, n + 1);
    if (n > 0) return;
    this.hub.bindQueue(this.nodeQueue, this.topology.down, device);
    // Catch up a parked device: its offline queue's commands, in order, now — before anything its
    // node queue delivers (delivery from a hub queue is asynchronous) — then the queue goes.
    const offline = this.topology.offlineQueue(device);
    if (!this.hub.hasQueue(offline)) return;
    this.hub.unbindQueue(offline, this.topology.down, device);
    const backlog = this.hub.read(offline);
    this.hub.deleteQueue(offline);
    for (const m of backlog) this.onCommand(m);
  }

  async detachDevice(device: string, options: { readonly park?: boolean } = {}): Promise<void> {
    await this.ready;
    if (this.current === 'closed') return;
    const n = this.attached.get(device) ?? 0;
    if (n <= 1) {
      this.attached.delete(device);
      if (options.park === true) {
        // Bind the device's offline queue before the node binding goes: no command is unroutable.
        // (No `x-expires` here: the queue lives as long as the process.)
        const offline = this.topology.offlineQueue(device);
        this.hub.declareQueue(offline, { maxLength: OFFLINE_QUEUE_MAX_LENGTH, overflow: 'reject-publish' });
        this.hub.bindQueue(offline, this.topology.down, device);
      }
      this.hub.unbindQueue(this.nodeQueue, this.topology.down, device);
    } else {
      this.attached.set(device, n - 1);
    }
  }

  async announceTakeover(takeover: Takeover): Promise<void> {
    await this.ready;
    if (this.current === 'closed') return;
    const { device, node, session, at, seq } = takeover;
    this.hub.publish(this.topology.control, '', { body: { device, node, session, at, seq } });
  }

  async publishCommand(device: string, body: unknown, options: { id?: string; expirationMs?: number } = {}): Promise<{ id: string }> {
    await this.ready;
    if (this.current === 'closed') throw new Error('memory broker: stopped');
    const id = options.id ?? randomUUID();
    const routed = this.hub.publish(this.topology.down, device, {
      body,
      messageId: id,
      expiresAt: options.expirationMs === undefined ? undefined : Date.now() + options.expirationMs,
      headers: { 'device-id': device },
    });
    // As AmqpBroker: a full offline queue (1,000 commands, reject-publish) refuses it.
    if (routed.rejected > 0) throw new Error(`command ${id} for ${device} was not published (rejected)`);
    return { id };
  }

  /**
   * Stop: settle held confirms, stop consuming, remove this node's bindings, and send what is in
   * (or was delivered from and not settled) its queue back to `<p>.down`, where it follows its
   * device or lands in the offline queue.
   */
  async stop(): Promise<void> {
    if (this.current === 'closed') return;
    this.hold?.end();
    this.hold = undefined;
    for (const cancel of this.cancels.splice(0)) cancel();
    this.hub.deleteQueue(this.controlQueue);
    this.hub.unbindAll(this.nodeQueue, this.topology.down);
    this.attached.clear();
    this.setState('closed');
    const stranded = [...[...this.unsettled].map((c) => ({ ...c.message, messageId: c.id })), ...this.hub.read(this.nodeQueue)];
    for (const c of this.unsettled) c.settled = true;
    this.unsettled.clear();
    for (const m of stranded) this.republish(m);
    this.markStarted(); // anything still waiting for a start that never came sees `closed`
  }

  // ---- for tests and the embedded back end ----------------------------------------------------

  /** Bind a queue (declared if need be) to one of the hub's exchanges. */
  bindQueue(queue: string, exchange: string, pattern: string): void {
    this.hub.bindQueue(queue, exchange, pattern);
  }

  /** Take every message waiting in a queue. */
  read(queue: string): HubMessage[] {
    return this.hub.read(queue);
  }

  /**
   * Hold uplink confirms from now on: publishes are still routed, but their promises wait until the
   * hold releases them (and the hold ends at the latest when the broker stops).
   */
  holdConfirms(): ConfirmHold {
    this.hold?.end();
    const hold = new ConfirmHold();
    this.hold = hold;
    return hold;
  }

  // ---- internals ---------------------------------------------------------------------------------

  /** Settle a command once; `false` if it already was. */
  private readonly settle = (command: MemoryCommand): boolean => {
    if (command.settled) return false;
    command.settled = true;
    this.unsettled.delete(command);
    return true;
  };

  /** Publish a command again to `<p>.down` (dead-lettered: to `<p>.down.unrouted`), unless it expired. */
  private readonly republish = (m: HubMessage, deadLetter?: DeadLetterReason): void => {
    if (m.expiresAt !== undefined && m.expiresAt <= Date.now()) return;
    this.hub.publish(deadLetter === undefined ? this.topology.down : this.topology.downUnrouted, m.routingKey, {
      body: m.body,
      headers: deadLetter === undefined ? m.headers : { ...m.headers, [DEAD_LETTER_REASON_HEADER]: deadLetter },
      messageId: m.messageId,
      expiresAt: m.expiresAt,
    });
  };

  private onCommand(m: HubMessage): void {
    const command = new MemoryCommand(m, this.settle, this.republish);
    this.unsettled.add(command);
    this.emit('command', command);
  }

  private onControl(m: HubMessage): void {
    const t = m.body as Takeover;
    this.emit('takeover', { device: t.device, node: t.node, session: t.session, at: t.at, seq: t.seq });
  }

  private setState(state: BrokerState): void {
    if (state === this.current) return;
    this.current = state;
    this.emit('state', state);
  }
}
