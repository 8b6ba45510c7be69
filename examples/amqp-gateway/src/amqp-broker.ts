/**
 * The RabbitMQ broker: {@link Broker} over AMQP 0-9-1 with amqplib.
 *
 * Lifecycle of the link to RabbitMQ (one "link" = the three connections below):
 *
 * 1. Open three connections: a **publisher** (one confirm channel: uplink, presence and command
 *    events, commands, redeliveries), a **control** publisher (one confirm channel: takeover
 *    announcements and where/here on the control exchange, so a hello's announcement is not queued
 *    behind the uplink backlog — in the publisher's socket and in RabbitMQ's flow control of that
 *    connection — which held hellos for as long as an uplink's ack, ~2 s, under a burst) and a
 *    **consumer** (an admin channel for declares and binds, and an inbox channel consuming this
 *    node's queue and this process's control queue). RabbitMQ blocks only connections that
 *    publish, so a memory or disk alarm never stalls downlink acks or binds.
 * 2. Declare the topology (idempotent, see topology.ts).
 * 3. Consume the node queue (manual ack, `prefetch`) and a fresh control queue (no ack).
 * 4. State `connected` (or `blocked`): the node can publish and consume again, and `/healthz`
 *    follows at once; from here on publishes flow again, the ones held meanwhile first (not
 *    before: sent ahead of the consumers, they delayed RabbitMQ's answers to them by up to 1.3 s
 *    right after a restart). Devices attached and detached from here on are bound and unbound directly.
 * 5. In the background: unbind devices detached while the link was down, bind every attached
 *    device again (a big node spends a few seconds on this; commands for a device not bound yet
 *    meanwhile go to `<p>.down.offline`, as they did while the link was down).
 *
 * If any connection or channel closes, everything published and not yet confirmed goes
 * back to the front of the outbox, every connection is closed, and the link is opened again from
 * step 1 after an exponential backoff with jitter: 100 ms × 2ⁿ capped at 500 ms, times a random
 * factor in [0.5, 1) — so a broker that is back is noticed within 500 ms, at the cost of 2 to 4
 * refused TCP connects per second per process while it is down.
 *
 * Uplink guarantees: a publish resolves `ok` only after RabbitMQ confirmed it and did not return
 * it; until then it is kept and republished on every new link (at-least-once, so the back end may
 * see duplicates — they carry the same `publish-id` header). While the broker is unreachable or
 * blocks either publishing connection, publishes wait in the outbox.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { connect, IllegalOperationError } from 'amqplib';
import Denque from 'denque';
import type { Channel, ChannelModel, ConfirmChannel, ConsumeMessage, GetMessage, Message, Options } from 'amqplib';
import { pino, type Logger } from 'pino';
import type {
  Broker,
  BrokerEvents,
  BrokerState,
  Command,
  CommandEvent,
  DeadLetterReason,
  PresenceEvent,
  PublishResult,
  Takeover,
  UplinkMessage,
} from './broker.js';
import { DEAD_LETTER_REASON_HEADER } from './broker.js';
import { StrayCommands } from './stray-commands.js';
import { NODE_QUEUE_MESSAGE_TTL_MS, OFFLINE_QUEUE_ARGUMENTS, topology, type Topology } from './topology.js';

/** Options of {@link AmqpBroker}. */
export interface AmqpBrokerOptions {
  /** `amqp://` or `amqps://` URL of RabbitMQ. */
  readonly url: string;
  /** This gateway node's id: names its downlink queue and goes into the `node-id` header. */
  readonly nodeId: string;
  /** Prefix of every exchange and queue name (default `devices`). */
  readonly prefix?: string;
  /** Where connection events go (default: nowhere). */
  readonly logger?: Logger;
  /** Unacknowledged commands RabbitMQ may hand this node at once. Default 1000. */
  readonly prefetch?: number;
  /**
   * This process's slot on its node: names its downlink queue `<p>.down.node.<node>.<slot>`.
   * `'0'` for a single process (the default), the worker index with `--workers`. A restarted
   * process takes over the queue of its slot.
   */
  readonly slot?: string;
  /**
   * Reconnect backoff: first delay and cap, in ms (defaults 100 and 500), times a random factor in
   * [0.5, 1). The cap bounds how long a broker that is back goes unnoticed.
   */
  readonly reconnect?: { readonly initialDelay?: number; readonly maxDelay?: number };
  /** How long `stop()` waits for outstanding confirms, in ms. Default 5000. */
  readonly stopTimeout?: number;
  /**
   * How long a command stranded by a process that died (delivered here, through a binding that
   * process left on this slot's queue, for a device this process does not hold) waits for its
   * device to come back, in ms, before it is sent on to `<p>.down` as it is (and from there to
   * wherever the device is bound, or to `<p>.down.offline`). See {@link StrayCommands}. Default
   * 30000.
   */
  readonly strayGrace?: number;
  /**
   * If the first connect fails, `start()` resolves anyway: the broker is `reconnecting` and keeps
   * trying, as after losing a link (hellos are answered `overloaded` meanwhile, `/healthz` is 503).
   * The CLI sets it in `--workers` worker processes: a worker corral (re)starts during an outage
   * must not exit (corral gives up on a worker that keeps failing, and the node stops). Default
   * false: `start()` rejects, so a node started with no broker fails fast.
   */
  readonly keepTryingAtStart?: boolean;
}

/**
 * Header carrying a per-publish id, unique across processes. It is how a returned (unroutable)
 * message is matched to its publish; republished copies keep it, so the back end can drop the
 * duplicates at-least-once delivery produces.
 */
export const PUBLISH_ID_HEADER = 'publish-id';

/**
 * Header set on commands by `publishCommand` and `redeliver`: when the command was published (ms
 * since the epoch). A command's `expiresAt` is `published-at + expiration`; without the header
 * (a command published by someone else) it is counted from when this node received it.
 */
export const PUBLISHED_AT_HEADER = 'published-at';

type Outcome = 'ok' | 'unroutable' | 'rejected' | 'shutting_down';

/** A publish that RabbitMQ has not confirmed yet (queued, or sent and unconfirmed). */
interface Outgoing {
  readonly publishId: string;
  readonly exchange: string;
  readonly routingKey: string;
  readonly content: Buffer;
  readonly options: Options.Publish;
  /** RabbitMQ returned it (mandatory, no queue took it); its confirm follows. */
  returned: boolean;
  /** Bumped on every send, so confirms of an earlier send are ignored. */
  attempt: number;
  readonly settle: (outcome: Outcome) => void;
}

interface Attachment {
  refs: number;
  bound: Promise<void>;
}

const OK: PublishResult = Object.freeze({ ok: true });
const REFUSED = {
  unroutable: Object.freeze({ ok: false, reason: 'unroutable' }),
  rejected: Object.freeze({ ok: false, reason: 'rejected' }),
  shutting_down: Object.freeze({ ok: false, reason: 'shutting_down' }),
} as const satisfies Record<Exclude<Outcome, 'ok'>, PublishResult>;

/** Default of {@link AmqpBrokerOptions.strayGrace}, in ms. */
export const DEFAULT_STRAY_GRACE_MS = 30_000;
/**
 * How long a device detached here counts as this process's own (see `recentlyDetached`): a
 * command can reach the node queue just before the unbind and be delivered after it, at most the
 * node queue's message TTL later.
 */
const RECENTLY_DETACHED_MS = 2 * NODE_QUEUE_MESSAGE_TTL_MS;
/** Default cap of the reconnect backoff, in ms. */
export const DEFAULT_MAX_DELAY_MS = 500;
/**
 * How long after parking a device at a restore (a park postponed by an outage) a `here` answer
 * (the device bound on another process) takes the park back (see `parkedAtRestore`).
 */
const UNPARK_WINDOW_MS = 10_000;
/** Binds and unbinds issued to RabbitMQ at once while restoring a link. */
const RESTORE_BATCH = 1000;
/** How long closing a connection may take before its socket is destroyed. */
const CLOSE_TIMEOUT_MS = 2000;
/** Control queues opened by this process (they are exclusive, so each link gets a fresh one). */
let controlQueueCount = 0;

/** RabbitMQ as the gateway's broker. See the module comment for the link lifecycle. */
export class AmqpBroker extends EventEmitter<BrokerEvents> implements Broker {
  readonly mode = 'amqp' as const;
  readonly nodeId: string;
  readonly topology: Topology;

  private readonly url: string;
  private readonly log: Logger;
  private readonly prefetch: number;
  private readonly initialDelay: number;
  private readonly maxDelay: number;
  private readonly stopTimeout: number;
  private readonly keepTryingAtStart: boolean;
  private readonly nodeQueue: string;
  private readonly instance = randomUUID();
  private publishCount = 0;

  private currentState: BrokerState = 'closed';
  private starting: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;
  private stopped = false;
  /** The link in use (set once its topology is declared; publishes go through it once it is ready). */
  private link: Link | undefined;
  /** A link being opened. */
  private opening: { link: Link; done: Promise<unknown> } | undefined;
  /** Every link not closed yet (the current one, one being opened, lost ones still closing). */
  private readonly links = new Set<Link>();
  private supervisor: Promise<void> | undefined;
  private backoff: { timer: NodeJS.Timeout; wake: () => void } | undefined;

  /**
   * Publishes waiting to be sent, in order. A deque, not an array: a burst of uplinks queues
   * ~10⁵ publishes here, and `Array.prototype.shift` copies the rest of an array that large at every
   * call (measured: 24 µs per shift at 20,000 entries, 96 µs at 160,000; a CPU profile of the
   * gateway under the uplink benchmark put 24% of its time there).
   */
  private outbox = new Denque<Outgoing>();
  /** Publishes sent on the current link and not confirmed yet, in order of sending. */
  private readonly inflight = new Map<string, Outgoing>();
  private readonly idleWaiters = new Set<() => void>();

  private readonly attached = new Map<string, Attachment>();
  private readonly strayUnbinding = new Set<string>();
  /** Commands stranded by a process that died, held for their devices to come back. */
  private readonly strays: StrayCommands<{ readonly link: Link; readonly message: ConsumeMessage }>;
  /** The stray binding removal under way per device (a release waits for it). */
  private readonly strayUnbinds = new Map<string, Promise<void>>();
  /**
   * Devices this process detached in the last {@link RECENTLY_DETACHED_MS} (ms since the epoch, in
   * detach order): a delivery for one of them is this process's own leftover, not a crashed
   * predecessor's, and is sent on at once instead of held.
   */
  private readonly recentlyDetached = new Map<string, number>();
  /** Devices detached while no link was ready: unbound when the next one is. */
  private readonly unbindLater = new Set<string>();
  /** Of those, the ones to park (their offline queue declared and bound first). */
  private readonly parkLater = new Set<string>();
  /**
   * Devices parked by a restore (a park postponed by an outage), and when: their session ended
   * during the outage, and meanwhile the device may have connected to another process or node,
   * whose takeover announcement this process missed (its control queue went with its link). So the
   * restore asks every process where the device is (`{"where"}`); a `{"here"}` within
   * {@link UNPARK_WINDOW_MS} takes the park back (see `unpark`). Without it, the offline queue
   * nobody consumes would keep a copy of every later command for the device (up to 1,000, then
   * RabbitMQ refuses them) and replay them, stale, at its next connect.
   */
  private readonly parkedAtRestore = new Map<string, number>();
  /**
   * Devices whose parked commands are being caught up: deliveries from the node queue for them
   * wait here, and are emitted after the backlog.
   */
  private readonly catchingUp = new Map<string, { readonly link: Link; readonly message: ConsumeMessage }[]>();
  /**
   * Devices being unbound (and maybe parked) right now, by `detachDevice` or a restore, and on
   * which link: an attach on the same link waits for it (one on a later link does not: what the
   * lost link had under way is done again by the restore, or not at all).
   */
  private readonly detaching = new Map<string, { readonly link: Link; readonly settled: Promise<void> }>();
  /**
   * Devices with a catch-up not finished (commands read from their offline queue and not all
   * settled): a lost link puts those back in the queue, so restoring the bindings catches these
   * devices up again. Only these: a probe per attached device at every reconnect would slow the
   * restore (measured through the tests' TCP proxy: 3,000 devices restored in 8 s instead of 0.7 s).
   */
  private readonly catchUpOpen = new Set<string>();
  /** The catch-up running per device, so two (an attach and a restore) never interleave. */
  private readonly catchUps = new Map<string, Promise<void>>();
  /**
   * Per device whose caught-up offline queue waits for its commands to be settled before it is
   * deleted: whether the device was parked again meanwhile (its queue declared and bound anew).
   * Such a queue is kept: deleting it, empty while its commands are on their way back to it, would
   * leave the device connected nowhere and its commands unroutable.
   */
  private readonly finishing = new Map<string, { parked: boolean }>();
  private readyWaiters: { resolve: (link: Link) => void; reject: (err: Error) => void }[] = [];

  constructor(options: AmqpBrokerOptions) {
    super();
    this.url = options.url;
    this.nodeId = options.nodeId;
    this.topology = topology(options.prefix);
    this.nodeQueue = this.topology.nodeQueue(options.nodeId, options.slot ?? '0');
    this.log = (options.logger ?? pino({ enabled: false })).child({ broker: 'amqp', node: options.nodeId });
    this.prefetch = options.prefetch ?? 1000;
    this.initialDelay = options.reconnect?.initialDelay ?? 100;
    this.maxDelay = options.reconnect?.maxDelay ?? DEFAULT_MAX_DELAY_MS;
    this.stopTimeout = options.stopTimeout ?? 5000;
    this.keepTryingAtStart = options.keepTryingAtStart ?? false;
    this.strays = new StrayCommands({
      graceMs: options.strayGrace ?? DEFAULT_STRAY_GRACE_MS,
      // Held commands stay unacknowledged: leave at least half the prefetch to the devices held here
      // (prefetch 0 is unlimited).
      max: this.prefetch === 0 ? 500 : Math.floor(this.prefetch / 2),
      onExpired: (device, held) => {
        this.log.info({ device, commands: held.length }, 'stray commands: their device did not come back within the grace; sent on');
        void this.watchPresence(held[0]!.link, device, false);
        this.releaseStrays(device, held);
      },
    });
  }

  get state(): BrokerState {
    return this.currentState;
  }

  /**
   * Open the first link. Rejects (and the broker is `closed`) if it cannot be opened — unless
   * `keepTryingAtStart`: then it resolves, `reconnecting`, and the link is opened in the background.
   */
  start(): Promise<void> {
    if (this.stopped) return Promise.reject(new Error('the broker was stopped'));
    this.starting ??= (async () => {
      this.setState('connecting');
      let link: Link;
      try {
        link = await this.attempt();
      } catch (err) {
        if (this.keepTryingAtStart && !this.stopped) {
          this.log.warn({ err }, 'cannot reach RabbitMQ at start; reconnecting in the background');
          this.setState('reconnecting');
          this.supervisor = this.supervise(undefined, 1);
          return;
        }
        this.stopped = true;
        this.failReadyWaiters();
        this.setState('closed');
        throw err;
      }
      this.supervisor = this.supervise(link);
    })();
    return this.starting;
  }

  publishUplink(message: UplinkMessage): Promise<PublishResult> {
    if (this.stopped) return Promise.resolve(REFUSED.shutting_down);
    const publishId = this.nextPublishId();
    const outcome = this.enqueue(publishId, this.topology.up, `${message.device}.${message.topic}`, json(message.body), {
      persistent: true,
      mandatory: true,
      contentType: 'application/json',
      messageId: message.id,
      timestamp: Math.floor(Date.now() / 1000),
      headers: {
        'device-id': message.device,
        'message-id': message.id,
        'node-id': this.nodeId,
        [PUBLISH_ID_HEADER]: publishId,
      },
    });
    return outcome.then((o) => (o === 'ok' ? OK : REFUSED[o]));
  }

  async publishPresence(event: PresenceEvent): Promise<void> {
    if (this.stopped) return;
    // Presence is best effort: during an outage it is dropped, not queued (every hello and close
    // would otherwise add an entry that waits for RabbitMQ, without bound).
    if (!this.available) {
      this.log.debug({ device: event.device, event: event.event }, 'presence event dropped: RabbitMQ unavailable');
      return;
    }
    const outcome = await this.enqueue(this.nextPublishId(), this.topology.events, `${event.device}.${event.event}`, json(event), {
      persistent: true,
      contentType: 'application/json',
      headers: { 'device-id': event.device, 'node-id': this.nodeId },
    });
    if (outcome !== 'ok') this.log.warn({ device: event.device, event: event.event, outcome }, 'presence event not published');
  }

  async publishCommandEvent(event: CommandEvent): Promise<void> {
    // Not dropped during an outage, unlike presence: it waits in the outbox, as uplinks do. What
    // waits is bounded: the session settles the command's delivery only once this is confirmed,
    // and RabbitMQ hands this node at most `prefetch` unsettled commands.
    const outcome = await this.enqueue(this.nextPublishId(), this.topology.events, `${event.device}.${event.event}`, json(event), {
      persistent: true,
      contentType: 'application/json',
      messageId: event.command,
      timestamp: Math.floor(Date.now() / 1000),
      headers: { 'device-id': event.device, 'node-id': this.nodeId },
    });
    if (outcome !== 'ok') throw new Error(`${event.event} of command ${event.command} for ${event.device} was not published (${outcome})`);
  }

  /** Connected to RabbitMQ and not blocked: control-plane publishes can complete now. */
  private get available(): boolean {
    return this.link?.ready === true && !this.link.blocked;
  }

  async publishCommand(device: string, body: unknown, options: { id?: string; expirationMs?: number } = {}): Promise<{ id: string }> {
    const id = options.id ?? randomUUID();
    if (this.stopped) throw new Error('the broker is shutting down');
    if (!this.available) throw new Error(`RabbitMQ is unavailable: command for ${device} not published`);
    const now = Date.now();
    const publish: Options.Publish = {
      persistent: true,
      contentType: 'application/json',
      messageId: id,
      timestamp: Math.floor(now / 1000),
      headers: { [PUBLISHED_AT_HEADER]: now },
    };
    if (options.expirationMs !== undefined) publish.expiration = String(Math.max(0, Math.round(options.expirationMs)));
    const outcome = await this.enqueue(this.nextPublishId(), this.topology.down, device, json(body), publish);
    if (outcome !== 'ok') throw new Error(`command ${id} for ${device} was not published (${outcome})`);
    return { id };
  }

  async announceTakeover(takeover: Takeover): Promise<void> {
    if (this.stopped) throw new Error('the broker is shutting down');
    // Fail at once during an outage: the hello answers `overloaded` and the device retries later,
    // instead of each retry leaving an announcement (and its session) queued without bound.
    if (!this.available) throw new Error(`RabbitMQ is unavailable: takeover of ${takeover.device} not announced`);
    // On the control connection, not through the outbox: a hello waits for this confirm, and
    // behind a burst of uplinks the outbox's confirms take seconds. Lost with its link before the
    // confirm, it is announced again on the next link, as the outbox would (RabbitMQ may have
    // routed it already: an announcement taken twice changes nothing).
    for (let link = this.link!; ; ) {
      try {
        await link.publishControl(this.topology.control, json(takeover));
        return;
      } catch (err) {
        if (!link.lost || this.stopped) throw new Error(`takeover of ${takeover.device} was not announced (${asError(err).message})`);
      }
      link = await this.whenReady();
    }
  }

  /**
   * Bind the device's routing key to this node's queue. Counted: each call needs its own
   * `detachDevice`. Resolves once RabbitMQ confirmed the binding (on the next link if there is
   * none now); rejects only if the broker stops first.
   */
  attachDevice(device: string): Promise<void> {
    if (this.stopped) return Promise.reject(new Error('the broker is shutting down'));
    const existing = this.attached.get(device);
    if (existing) {
      existing.refs += 1;
      return existing.bound;
    }
    const attachment: Attachment = { refs: 1, bound: Promise.resolve() };
    this.attached.set(device, attachment);
    this.unbindLater.delete(device);
    this.parkLater.delete(device);
    this.parkedAtRestore.delete(device);
    attachment.bound = this.bind(device, attachment);
    return attachment.bound;
  }

  /**
   * Drop one attachment; when none is left, unbind (now, or once a link is ready again). With
   * `park`, first declare the device's offline queue and bind it to `<p>.down` (see
   * {@link Broker.detachDevice}).
   */
  async detachDevice(device: string, options: { readonly park?: boolean } = {}): Promise<void> {
    const attachment = this.attached.get(device);
    if (!attachment) return;
    attachment.refs -= 1;
    if (attachment.refs > 0) return;
    this.attached.delete(device);
    this.noteDetached(device);
    this.catchUpOpen.delete(device);
    const link = this.link;
    if (this.stopped) return;
    const park = options.park === true;
    this.parkedAtRestore.delete(device);
    if (!link?.ready) {
      this.unbindLater.add(device);
      if (park) this.parkLater.add(device);
      return;
    }
    if (park) {
      const finishing = this.finishing.get(device);
      if (finishing) finishing.parked = true;
    }
    const unbinding = this.detachingNow(link, device, this.unbindStale(link, device, park));
    try {
      await unbinding;
    } catch (err) {
      if (!this.attached.has(device)) {
        this.unbindLater.add(device);
        if (park) this.parkLater.add(device);
      }
      link.fail(asError(err));
    }
  }

  /** Note `unbinding` as the device's detach under way (see `detaching`) until it settles. */
  private detachingNow(link: Link, device: string, unbinding: Promise<void>): Promise<void> {
    const entry = { link, settled: unbinding.catch(() => undefined) };
    this.detaching.set(device, entry);
    void entry.settled.then(() => {
      if (this.detaching.get(device) === entry) this.detaching.delete(device);
    });
    return unbinding;
  }

  /** Remember that `device` was detached here now (and forget those detached long ago). */
  private noteDetached(device: string): void {
    const now = Date.now();
    this.recentlyDetached.delete(device);
    this.recentlyDetached.set(device, now);
    for (const [d, at] of this.recentlyDetached) {
      if (now - at < RECENTLY_DETACHED_MS) break;
      this.recentlyDetached.delete(d);
    }
  }

  /**
   * Cancel the consumers, wait up to `stopTimeout` for everything queued to be confirmed, settle
   * what is left as `shutting_down`, close every connection (their sockets closed too).
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.stopped = true;
      if (this.backoff) {
        clearTimeout(this.backoff.timer);
        this.backoff.wake();
      }
      if (this.opening) {
        this.opening.link.fail(new Error('the broker is stopping'));
        await this.opening?.done.catch(() => undefined);
      }
      await this.starting?.catch(() => undefined);
      const link = this.link;
      if (link && !link.lost) {
        await Promise.allSettled(link.consumerTags.map((tag) => link.inbox.cancel(tag)));
        // Held strays are sent on now, not left to the queue (where their time in it may be over,
        // which dead-letters them to <p>.down.offline).
        for (const device of this.strays.devices()) {
          const held = this.takeStrays(device).filter((h) => h.link === link);
          if (held.length > 0) this.releaseStrays(device, held);
        }
        await this.idle(this.stopTimeout);
      }
      this.failReadyWaiters();
      this.strays.forget(() => true); // left only if the link was lost: RabbitMQ requeued them
      const left = [...this.inflight.values(), ...this.outbox.toArray()];
      this.inflight.clear();
      this.outbox.clear();
      for (const out of left) out.settle('shutting_down');
      link?.fail(new Error('the broker stopped'));
      await link?.restoring;
      await this.supervisor;
      await Promise.all([...this.links].map((l) => l.close()));
      this.setState('closed');
    })();
    return this.stopping;
  }

  // --- the link --------------------------------------------------------------------------------

  /**
   * After the first link: wait for it to be lost, back off, open another; until stopped. Without a
   * first link (`keepTryingAtStart`), open one first, after `failures` failures so far.
   */
  private async supervise(first: Link | undefined, failures = 0): Promise<void> {
    let link: Link | undefined = first;
    while (!this.stopped) {
      if (link) {
        const reason = await link.gone;
        link = undefined;
        failures = 0;
        if (this.stopped) break;
        this.log.warn({ err: reason }, 'lost the connection to RabbitMQ; reconnecting');
        this.setState('reconnecting');
      }
      const base = Math.min(this.maxDelay, this.initialDelay * 2 ** failures);
      await this.sleep(base / 2 + (Math.random() * base) / 2);
      if (this.stopped) break;
      try {
        link = await this.attempt();
        this.log.info({ failures }, 'reconnected to RabbitMQ');
      } catch (err) {
        failures += 1;
        this.log.warn({ err, failures }, 'reconnect to RabbitMQ failed');
      }
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = (): void => {
        this.backoff = undefined;
        resolve();
      };
      this.backoff = { timer: setTimeout(wake, ms), wake };
    });
  }

  /** Open a link and bring it to ready (lifecycle steps 1–5). On failure the link is closed. */
  private attempt(): Promise<Link> {
    const link = new Link(this.url, this.nodeId, this.log, {
      lost: (l) => this.onLinkLost(l),
      flow: (l) => this.onFlow(l),
    });
    this.links.add(link);
    const done = (async () => {
      try {
        await link.open();
        this.watchPublisher(link);
        await this.declareTopology(link.admin);
        link.check(this.stopped);
        this.link = link;
        // Consumers first, then the uplinks held meanwhile: with the backlog sent first (2,000 in
        // flight per process), RabbitMQ answered the few set-up calls of the consumer connection
        // 0.1–1.3 s late, right after a restart, and the process was `connected` (`/healthz` 200)
        // only then. Consuming costs the backlog a few round trips. (Nothing is sent before the
        // link is ready, not even a publish made meanwhile: see `pump`.)
        await this.startConsumers(link);
        link.check(this.stopped);
        // Publishing and consuming work again: say so now, not after every binding is restored.
        link.ready = true;
        this.setState(link.blocked ? 'blocked' : 'connected');
        const waiters = this.readyWaiters;
        this.readyWaiters = [];
        for (const w of waiters) w.resolve(link);
        link.restoring = this.restoreBindings(link).catch((err: unknown) => link.fail(asError(err)));
        // Last: a publish that fails the link here is an ordinary loss of a ready link.
        this.pump();
        return link;
      } catch (err) {
        link.fail(asError(err));
        await link.close();
        throw err;
      }
    })();
    this.opening = { link, done };
    void done.then(
      () => this.clearOpening(link),
      () => this.clearOpening(link),
    );
    return done;
  }

  private clearOpening(link: Link): void {
    if (this.opening?.link === link) this.opening = undefined;
  }

  /** A connection or a channel of `link` closed: stop using it, requeue what it had in flight. */
  private onLinkLost(link: Link): void {
    void link.close().then(() => this.links.delete(link));
    // Their deliveries go back to the queue with the link, and come again on the next one.
    this.strays.forget((held) => held.link === link);
    if (this.link !== link) return;
    this.link = undefined;
    if (this.inflight.size > 0) {
      this.outbox = new Denque([...this.inflight.values(), ...this.outbox.toArray()]);
      this.inflight.clear();
    }
    this.wakeIdle();
  }

  /** RabbitMQ blocked or unblocked a publishing connection of `link` (publisher or control). */
  private onFlow(link: Link): void {
    if (this.link !== link) return;
    // A link not ready yet looks at `blocked` when it becomes ready.
    if (link.ready) this.setState(link.blocked ? 'blocked' : 'connected');
    this.pump();
  }

  private watchPublisher(link: Link): void {
    link.confirm.on('return', (message: Message) => {
      const id: unknown = message.properties.headers?.[PUBLISH_ID_HEADER];
      const out = typeof id === 'string' ? this.inflight.get(id) : undefined;
      if (out) out.returned = true;
    });
    link.confirm.on('drain', () => {
      link.writable = true;
      this.pump();
    });
  }

  private async declareTopology(ch: Channel): Promise<void> {
    const t = this.topology;
    await ch.assertExchange(t.up, 'topic', { durable: true });
    await ch.assertExchange(t.downUnrouted, 'fanout', { durable: true });
    await ch.assertExchange(t.down, 'direct', { durable: true, alternateExchange: t.downUnrouted });
    await ch.assertExchange(t.events, 'topic', { durable: true });
    await ch.assertExchange(t.control, 'fanout', { durable: true });
    await ch.assertQueue(t.downOffline, { durable: true });
    await ch.bindQueue(t.downOffline, t.downUnrouted, '');
    await ch.assertQueue(this.nodeQueue, {
      durable: true,
      arguments: {
        'x-message-ttl': NODE_QUEUE_MESSAGE_TTL_MS,
        'x-dead-letter-exchange': t.downUnrouted,
      },
    });
  }

  /**
   * Unbind the devices detached while there was no ready link, bind every attached device again.
   * Runs once the link is ready, while devices attach and detach directly: each bind or unbind is
   * issued only if it is still due when its batch starts, on the device's own binding channel (a
   * park on its parking channel, noted as a detach under way that a later attach waits for), so it
   * cannot overtake a later bind or unbind of that device.
   */
  private async restoreBindings(link: Link): Promise<void> {
    await this.forEachBatch([...this.unbindLater], (d) => {
      if (this.attached.has(d) || link.lost) return undefined;
      // A park postponed by the outage: the device may have a newer session elsewhere by now (see
      // `parkedAtRestore`). Park it (its commands are kept meanwhile), then ask where it is.
      const park = this.parkLater.has(d);
      const restored = this.unbindStale(link, d, park).then(() => {
        if (!park || this.attached.has(d) || link !== this.link || !this.available) return;
        const now = Date.now();
        // Entries past the window are of no use: drop them (oldest first, in insertion order), so
        // that devices parked at a restore and never seen again do not stay for good.
        for (const [old, at] of this.parkedAtRestore) {
          if (now - at <= UNPARK_WINDOW_MS) break;
          this.parkedAtRestore.delete(old);
        }
        this.parkedAtRestore.delete(d);
        this.parkedAtRestore.set(d, now);
        this.whereabouts(link, { where: d });
      });
      return this.detachingNow(link, d, restored);
    });
    // Bound again; a device whose catch-up the lost link cut short (its commands went back to its
    // unbound offline queue) is caught up again.
    await this.forEachBatch([...this.attached.keys()], (d) => {
      if (!this.attached.has(d) || link.lost) return undefined;
      return this.catchUpOpen.has(d) ? this.bindAndCatchUp(link, d) : link.binder(d).bindQueue(this.nodeQueue, this.topology.down, d);
    });
  }

  /** Unbind a device left bound to this slot's queue by an earlier process (once per device at a time). */
  private async unbindStray(link: Link, device: string): Promise<void> {
    if (this.strayUnbinding.has(device)) return;
    this.strayUnbinding.add(device);
    try {
      await link.binder(device).unbindQueue(this.nodeQueue, this.topology.down, device);
    } catch (err) {
      this.log.warn({ err, device }, 'could not remove a stray binding');
    } finally {
      this.strayUnbinding.delete(device);
    }
  }

  /**
   * Unbind a device from this node's queue; with `park`, declare and bind its offline queue first
   * (bind before unbind: no moment where a command for it is unroutable).
   *
   * The declare and bind run on a parking channel, the unbind on the device's binding channel
   * (after any bind of the device issued earlier there). Between the declare and the bind, a
   * catch-up elsewhere — usually a newer session of the device on another worker or node — may
   * delete the new, empty queue with its `queue.delete if-empty` probe, and the bind is then
   * refused `404 NOT_FOUND`, which closes the channel it ran on. On the binding channel, where
   * parks ran before, that failed the whole link: every hello under way on this process answered
   * `overloaded` and every device was bound again (599 refused hellos in one far-away stampede
   * with a set-up window of 1,024). Now the park is tried again (at most 3 times in all; a newer
   * session is handled as in any other race, see `unparkIfOvertaken` in device-session.ts), and
   * only a third 404 gives it up, with a warning; other refusals, see `park`. A later attach of
   * the device here waits for all this (see `detaching`).
   */
  private async unbindStale(link: Link, device: string, park = false): Promise<void> {
    if (park) await this.park(link, device);
    await link.binder(device).unbindQueue(this.nodeQueue, this.topology.down, device);
    if (!this.attached.has(device)) {
      this.unbindLater.delete(device);
      this.parkLater.delete(device);
    }
  }

  /**
   * Declare and bind the device's offline queue (see `unbindStale`). Refusals are the device's
   * own, never the link's: a 404 (the queue deleted between declare and bind) parks again, 3
   * times in all; a 406 (the queue exists with other arguments — declared by another version, or
   * by an operator) binds the queue as it is, with a warning; any other refusal gives the park up
   * with a warning (the device's commands then go to `<p>.down.offline`, as for a device never
   * parked). Failing the link for them would fail it again at every restore, for ever.
   */
  private async park(link: Link, device: string): Promise<void> {
    const queue = this.topology.offlineQueue(device);
    const down = this.topology.down;
    for (let attempt = 1; ; attempt++) {
      try {
        try {
          await link.declareOffline(device, queue, down);
        } catch (err) {
          if (replyCode(err) !== 406 || link.lost) throw err;
          await link.bindOffline(device, queue, down);
          this.log.warn({ device, queue, err }, 'the offline queue exists with other arguments than this gateway declares: bound as it is');
        }
        return;
      } catch (err) {
        const code = replyCode(err);
        if (code === undefined || link.lost) throw err;
        if (code !== 404) {
          this.log.warn({ device, queue, err }, 'park refused by RabbitMQ: given up, the device\'s commands go to the unrouted path');
          return;
        }
        if (attempt >= 3) {
          this.log.warn({ device, queue }, 'park given up: the offline queue was deleted between its declare and its bind 3 times');
          return;
        }
        this.log.debug({ device, queue }, 'park overtaken: the offline queue was deleted between its declare and its bind; parking again');
      }
    }
  }

  /**
   * Bind the device to this node's queue, then deliver what its offline queue holds, if it has
   * one. Deliveries from the node queue for the device meanwhile are held and emitted after the
   * backlog, so the backlog comes first, in publish order.
   */
  private async bindAndCatchUp(link: Link, device: string): Promise<void> {
    const previous = this.catchUps.get(device);
    if (previous) await previous.catch(() => undefined);
    const held: { link: Link; message: ConsumeMessage }[] = [];
    this.catchingUp.set(device, held);
    const run = (async () => {
      try {
        // A detach of the device under way on this link first: its park runs on a parking channel
        // before its unbind, so the binding channel's order alone no longer keeps it from
        // overtaking this bind.
        const detaching = this.detaching.get(device);
        if (detaching !== undefined && detaching.link === link && !link.lost) await detaching.settled;
        await link.binder(device).bindQueue(this.nodeQueue, this.topology.down, device);
        // Commands stranded here for this device by a process that died come first: they are
        // older than its parked backlog (it was parked after that process died, if at all) and
        // than anything the node queue delivers from now on.
        if (this.attached.has(device) && link === this.link) for (const h of this.takeStrays(device)) if (h.link === link) this.emitCommand(link, h.message, link.inbox);
        await this.catchUp(link, device);
      } finally {
        if (this.catchingUp.get(device) === held) this.catchingUp.delete(device);
        for (const h of held) this.onCommand(h.link, h.message);
      }
    })();
    this.catchUps.set(device, run);
    try {
      await run;
    } finally {
      if (this.catchUps.get(device) === run) this.catchUps.delete(device);
    }
  }

  /**
   * One round trip for a device that has nothing waiting: `queue.delete if-empty` of its offline
   * queue (RabbitMQ answers delete-ok for an absent queue, and deletes an empty one). Refused (406)
   * means it holds commands: on a channel of its own, unbind it from `<p>.down`, `basic.get` until
   * empty, emit each as a command (settled on that channel), and delete the queue once every one
   * is settled. A failure here is logged, not fatal to the link: what was not acknowledged stays
   * in the queue for the device's next connect.
   */
  private async catchUp(link: Link, device: string): Promise<void> {
    const queue = this.topology.offlineQueue(device);
    let empty: boolean;
    try {
      empty = await link.probeEmpty(device, queue);
    } catch (err) {
      // Refused otherwise than 406 (say 403, no permission to delete; 405, an exclusive queue of
      // that name): the device's own refusal, not the link's — failing the link for it would fail
      // it again at every restore. Its commands, if any, stay where they are.
      if (replyCode(err) === undefined || link.lost || this.stopped) throw err;
      this.log.warn({ err, device, queue }, 'probing the offline queue of a device was refused; its commands, if any, stay there');
      this.catchUpOpen.delete(device);
      return;
    }
    if (empty) {
      this.catchUpOpen.delete(device);
      return;
    }
    this.catchUpOpen.add(device);
    let ch: Channel | undefined;
    try {
      ch = await link.openDisposable();
      await ch.unbindQueue(queue, this.topology.down, device);
      const backlog: GetMessage[] = [];
      for (;;) {
        const message = await ch.get(queue, { noAck: false });
        if (message === false) break;
        backlog.push(message);
      }
      this.log.debug({ device, commands: backlog.length }, 'caught up a parked device');
      const channel = ch;
      let left = backlog.length;
      const finishing = { parked: false };
      this.finishing.set(device, finishing);
      const finish = (): void => {
        if (this.finishing.get(device) === finishing) this.finishing.delete(device);
        void finishCatchUp(channel, queue, !finishing.parked).then((deleted) => {
          if (deleted && !link.lost) this.catchUpOpen.delete(device);
        });
      };
      const settled = (): void => {
        left -= 1;
        if (left === 0) finish();
      };
      if (backlog.length === 0) finish();
      for (const message of backlog) this.emitCommand(link, message, channel, settled);
    } catch (err) {
      if (link.lost || this.stopped) throw err;
      this.log.warn({ err, device }, 'catching up a parked device failed; its commands wait for its next connect');
      if (ch) void ch.close().catch(() => undefined);
    }
  }

  private async forEachBatch(devices: string[], op: (device: string) => Promise<unknown> | undefined): Promise<void> {
    for (let i = 0; i < devices.length; i += RESTORE_BATCH) {
      await Promise.all(devices.slice(i, i + RESTORE_BATCH).map(op));
    }
  }

  private async startConsumers(link: Link): Promise<void> {
    controlQueueCount += 1;
    const control = `${this.topology.control}.${this.nodeId}.${process.pid}.${controlQueueCount}`;
    // The control queue exists before the first command is consumed: a stray command watches its
    // device's presence through it.
    await settleAll([
      link.inbox.prefetch(this.prefetch),
      (async () => {
        await link.admin.assertQueue(control, { exclusive: true, autoDelete: true, durable: false });
        await link.admin.bindQueue(control, this.topology.control, '');
        link.controlQueue = control;
      })(),
    ]);
    const [commands, takeovers] = await Promise.all([
      link.inbox.consume(this.nodeQueue, (m) => this.onCommand(link, m), { noAck: false }),
      link.inbox.consume(control, (m) => this.onControl(link, m), { noAck: true }),
    ]);
    link.consumerTags.push(commands.consumerTag, takeovers.consumerTag);
  }

  /** Resolves with the ready link (now or once there is one); rejects once the broker stops. */
  private whenReady(): Promise<Link> {
    if (this.stopped) return Promise.reject(new Error('the broker is shutting down'));
    if (this.link?.ready) return Promise.resolve(this.link);
    return new Promise((resolve, reject) => this.readyWaiters.push({ resolve, reject }));
  }

  private failReadyWaiters(): void {
    const waiters = this.readyWaiters;
    this.readyWaiters = [];
    for (const w of waiters) w.reject(new Error('the broker is shutting down'));
  }

  private async bind(device: string, attachment: Attachment): Promise<void> {
    for (;;) {
      const link = await this.whenReady();
      if (this.attached.get(device) !== attachment) return;
      try {
        await this.bindAndCatchUp(link, device);
        return;
      } catch (err) {
        // A channel error closes the link too; the next link binds every attached device.
        link.fail(asError(err));
      }
    }
  }

  // --- publishing ------------------------------------------------------------------------------

  private nextPublishId(): string {
    this.publishCount += 1;
    return `${this.instance}.${this.publishCount}`;
  }

  private enqueue(publishId: string, exchange: string, routingKey: string, content: Buffer | undefined, options: Options.Publish): Promise<Outcome> {
    if (content === undefined) return Promise.resolve('rejected');
    if (this.stopped) return Promise.resolve('shutting_down');
    return new Promise<Outcome>((settle) => {
      this.outbox.push({ publishId, exchange, routingKey, content, options, returned: false, attempt: 0, settle });
      this.pump();
    });
  }

  /** Send queued publishes while there is a ready link, it is not blocked and its socket takes more. */
  private pump(): void {
    const link = this.link;
    if (!link?.ready || link.lost || link.blocked) return;
    while (this.outbox.length > 0 && link.writable && this.link === link) {
      const out = this.outbox.shift() as Outgoing;
      this.send(link, out);
    }
  }

  private send(link: Link, out: Outgoing): void {
    out.returned = false;
    out.attempt += 1;
    const attempt = out.attempt;
    this.inflight.set(out.publishId, out);
    try {
      const writable = link.confirm.publish(out.exchange, out.routingKey, out.content, out.options, (err: unknown) =>
        this.onConfirm(out, attempt, err),
      );
      if (!writable) link.writable = false;
      link.corkPublisher();
    } catch (err) {
      this.inflight.delete(out.publishId);
      if (link.lost || err instanceof IllegalOperationError) {
        // The channel is closing: keep the message for the next link.
        this.outbox.unshift(out);
        link.fail(asError(err));
      } else {
        // The message itself cannot be encoded (e.g. a header table over 64 KiB).
        this.log.warn({ err, exchange: out.exchange, routingKey: out.routingKey }, 'publish refused by the client library');
        out.settle('rejected');
        this.wakeIdle();
      }
    }
  }

  private onConfirm(out: Outgoing, attempt: number, err: unknown): void {
    if (out.attempt !== attempt || this.inflight.get(out.publishId) !== out) return;
    // amqplib reports a nack as "message nacked"; any other error means the channel closed, and
    // the message stays in flight until the lost link hands it back to the outbox.
    if (err && !(err instanceof Error && err.message === 'message nacked')) return;
    this.inflight.delete(out.publishId);
    out.settle(err ? 'rejected' : out.returned ? 'unroutable' : 'ok');
    this.wakeIdle();
  }

  /** Resolves once nothing is queued or in flight, the link is gone, or `ms` passed. */
  private idle(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const check = (): void => {
        if ((this.outbox.length === 0 && this.inflight.size === 0) || !this.link) done();
      };
      const done = (): void => {
        clearTimeout(timer);
        this.idleWaiters.delete(check);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.idleWaiters.add(check);
      check();
    });
  }

  private wakeIdle(): void {
    for (const check of [...this.idleWaiters]) check();
  }

  // --- consuming -------------------------------------------------------------------------------

  private onCommand(link: Link, message: ConsumeMessage | null): void {
    if (message === null) {
      link.fail(new Error(`RabbitMQ cancelled the consumer of ${this.nodeQueue}`));
      return;
    }
    const device = message.fields.routingKey;
    // A command for a device this process does not hold came through a binding an earlier process
    // in this slot left behind (it crashed before unbinding). Remove that binding, then send the
    // command on to wherever the device is now: otherwise it would come straight back here.
    if (!this.attached.has(device)) {
      // Being detached here right now: send it on once that is done (after a park, it then lands in
      // the device's offline queue; an unbind of our own now could run before the park's bind).
      const detaching = this.detaching.get(device)?.settled;
      if (detaching) {
        void detaching.finally(() => void this.republish(link, message, commandExpiry(message, Date.now())));
        return;
      }
      this.onStray(link, device, message);
      return;
    }
    const held = this.catchingUp.get(device);
    if (held) {
      held.push({ link, message });
      return;
    }
    this.emitCommand(link, message, link.inbox);
  }

  /**
   * Emit a delivered command (from the node queue, settled on `channel` = the inbox; or from an
   * offline queue, on the catch-up channel, with `onSettled` called once it is settled).
   */
  private emitCommand(link: Link, message: Message, channel: Channel, onSettled?: () => void): void {
    const device = message.fields.routingKey;
    const receivedAt = Date.now();
    const expiresAt = commandExpiry(message, receivedAt);
    let settled = false;
    const settle = (): boolean => {
      if (settled) return false;
      settled = true;
      return true;
    };
    const done = (): void => onSettled?.();
    const text = message.content.toString('utf8');
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // Not JSON: the command is delivered as the string.
    }
    // A command published without a message id gets one now, and keeps it: `redeliver` and
    // `deadLetter` publish it with this id, so the device (and `cmd_ack`) see the same id at every
    // delivery the gateway makes of it. (A delivery RabbitMQ itself requeues — the link lost before
    // the device acknowledged it — comes again without one, and gets another.)
    const id = typeof message.properties.messageId === 'string' ? message.properties.messageId : randomUUID();
    const publishAgain = (deadLetter?: DeadLetterReason): void => {
      if (settle()) void this.republish(link, message, expiresAt, channel, { messageId: id, deadLetter }).then((out) => out && done());
    };
    const command: Command = {
      id,
      device,
      body,
      expiresAt,
      ack: () => {
        if (!settle()) return;
        this.ackDelivery(link, message, channel);
        done();
      },
      // Settled only once it is published again (or dropped as expired): a command left
      // unacknowledged on a catch-up channel keeps its offline queue from being deleted, and goes
      // back into it when that channel closes.
      redeliver: () => publishAgain(),
      // To `<p>.down.unrouted` (→ `<p>.down.offline`), settled once that publish is confirmed.
      deadLetter: (reason) => publishAgain(reason),
      drop: () => {
        if (!settle()) return;
        this.ackDelivery(link, message, channel);
        done();
      },
    };
    this.emitSafely('command', command);
  }

  /**
   * A command for a device this process does not hold came through a binding an earlier process
   * in this slot left behind (it died before unbinding). Remove that binding, so nothing more
   * comes here for the device, and hold the command for `strayGrace`: until the device attaches
   * here (it is delivered then, before anything newer), or its `connected` presence event shows it
   * bound on another process or node (it is sent on to `<p>.down`, which routes it there), or the
   * grace ends (sent on to `<p>.down` as it is). Over the hold's bound, sent on at once.
   */
  private onStray(link: Link, device: string, message: ConsumeMessage): void {
    // A lost link's deliveries go back to the queue; a stopping broker leaves them there.
    if (link.lost || this.stopped) return;
    const sendOn = (): void => {
      void this.unbindStray(link, device).finally(() => void this.republish(link, message, commandExpiry(message, Date.now())));
    };
    // Left behind by this process's own session (a detach that overtook a delivery, a takeover by
    // another process): its device is bound elsewhere already, or parked. Send it on now, as always.
    if (this.recentlyDetached.has(device)) return sendOn();
    const outcome = this.strays.hold(device, { link, message });
    if (outcome === 'full') {
      // Behind what is held for the same device, never ahead of it.
      const held = this.takeStrays(device);
      if (held.length > 0) this.releaseStrays(device, [...held, { link, message }]);
      else sendOn();
      return;
    }
    if (outcome === 'held') return;
    // Watch, then unbind, both issued now on the device's binding channel, so that a bind of the
    // device asked for later (it attaches here) is not undone. Watch first: a `connected`
    // published from now on is seen (one published before, by a device that came back even
    // faster, is not: its commands then wait for the grace, and are sent on to where it is bound).
    const watching = this.watchPresence(link, device, true);
    const unbinding = this.unbindStray(link, device);
    this.strayUnbinds.set(device, unbinding);
    void Promise.all([watching, unbinding]).then(() => {
      if (this.strayUnbinds.get(device) === unbinding) this.strayUnbinds.delete(device);
      if (!this.strays.has(device)) return;
      this.log.info({ device }, 'stray command: holding it for its device to come back');
      // The device may be back already, on a process that announced it before this one listened
      // (it came back before this process started): ask every process; one that has it bound says so.
      if (this.available && link === this.link) this.whereabouts(link, { where: device });
    });
  }

  /**
   * Ask or answer where a device is, on the control connection. A hint: if it is lost with its
   * link, the stray commands wait for the device's presence event or the grace instead.
   */
  private whereabouts(link: Link, message: { where: string } | { here: string }): void {
    link.publishControl(this.topology.control, json(message)).catch((err: unknown) => this.log.debug({ err }, 'where/here not published'));
  }

  /** Start (or stop) having this process's control queue receive `<device>.connected` presence events. */
  private async watchPresence(link: Link, device: string, watch: boolean): Promise<void> {
    const queue = link.controlQueue;
    if (queue === undefined || link.lost) return;
    try {
      const ch = link.binder(device);
      if (watch) await ch.bindQueue(queue, this.topology.events, `${device}.connected`);
      else await ch.unbindQueue(queue, this.topology.events, `${device}.connected`);
    } catch (err) {
      // The link fails with its channel; the stray commands come again on the next one.
      if (!link.lost) link.fail(asError(err));
    }
  }

  /** Take the stray commands of `device` (in arrival order) and stop watching its presence. */
  private takeStrays(device: string): { readonly link: Link; readonly message: ConsumeMessage }[] {
    const held = this.strays.take(device);
    const link = held[0]?.link;
    if (link) void this.watchPresence(link, device, false);
    return held;
  }

  /**
   * Send stray commands on to `<p>.down`, in order, each settled once its publish is confirmed;
   * after the device's stray binding is gone (otherwise a copy would come straight back here).
   */
  private releaseStrays(device: string, held: readonly { readonly link: Link; readonly message: ConsumeMessage }[]): void {
    this.log.debug({ device, commands: held.length }, 'stray commands sent on');
    const unbinding = this.strayUnbinds.get(device) ?? Promise.resolve();
    void unbinding.finally(() => {
      for (const h of held) void this.republish(h.link, h.message, commandExpiry(h.message, Date.now()));
    });
  }

  /**
   * Publish a delivered command again to `<p>.down` (same routing key and properties, its
   * remaining time as `expiration`), and settle the delivery once that publish is confirmed. If
   * the link goes first, RabbitMQ puts the delivery back in the queue: a duplicate, never a loss.
   */
  /**
   * Publish a delivered command again; resolves `true` once it is acknowledged here (sent on, or
   * expired). `messageId`: the id to publish it with (the one the gateway gave a command published
   * without one). `deadLetter`: to `<p>.down.unrouted` instead of `<p>.down`, with the reason in the
   * header `gateway-dead-letter-reason`.
   */
  private async republish(
    link: Link,
    message: Message,
    expiresAt: number | undefined,
    channel: Channel = link.inbox,
    extra: { readonly messageId?: string; readonly deadLetter?: DeadLetterReason } = {},
  ): Promise<boolean> {
    const now = Date.now();
    if (expiresAt !== undefined && expiresAt <= now) {
      this.ackDelivery(link, message, channel);
      return true;
    }
    const p = message.properties;
    const options: Options.Publish = {
      deliveryMode: p.deliveryMode,
      contentType: p.contentType,
      contentEncoding: p.contentEncoding,
      priority: p.priority,
      correlationId: p.correlationId,
      replyTo: p.replyTo,
      messageId: extra.messageId ?? p.messageId,
      timestamp: p.timestamp,
      type: p.type,
      appId: p.appId,
      headers: { ...p.headers, [PUBLISHED_AT_HEADER]: now, ...(extra.deadLetter === undefined ? {} : { [DEAD_LETTER_REASON_HEADER]: extra.deadLetter }) },
      expiration: expiresAt === undefined ? undefined : String(expiresAt - now),
    };
    for (const key of Object.keys(options) as (keyof Options.Publish)[]) if (options[key] === undefined) delete options[key];
    const exchange = extra.deadLetter === undefined ? this.topology.down : this.topology.downUnrouted;
    const outcome = await this.enqueue(this.nextPublishId(), exchange, message.fields.routingKey, message.content, options);
    if (outcome === 'ok') {
      this.ackDelivery(link, message, channel);
      return true;
    }
    if (outcome === 'rejected' && !link.lost) {
      // Dead-letter it instead: the node queue's dead-letter exchange is `<p>.down.unrouted`. (From
      // an offline queue, which has none, put it back: the queue is then kept for the next connect.)
      try {
        channel.nack(message, false, channel !== link.inbox);
        return true;
      } catch {
        // The channel is closing; the delivery goes back to the queue.
      }
    }
    return false;
  }

  private ackDelivery(link: Link, message: Message, channel: Channel = link.inbox): void {
    // A delivery of a lost link was requeued by RabbitMQ; its tag means nothing on another channel.
    if (link.lost) return;
    try {
      channel.ack(message);
    } catch {
      // The channel is closing; RabbitMQ requeues the delivery.
    }
  }

  private onControl(link: Link, message: ConsumeMessage | null): void {
    if (message === null) {
      link.fail(new Error('RabbitMQ cancelled the control queue consumer'));
      return;
    }
    if (message.fields.exchange === this.topology.events) {
      // `<device>.connected` of a device whose stray commands are held: it is bound elsewhere now.
      // (Held commands are always the current link's: a lost link's are forgotten.)
      if (link !== this.link) return;
      const device = message.fields.routingKey.slice(0, -'.connected'.length);
      const held = this.takeStrays(device).filter((h) => h.link === link);
      if (held.length > 0) this.releaseStrays(device, held);
      return;
    }
    let value: unknown;
    try {
      value = JSON.parse(message.content.toString('utf8'));
    } catch {
      value = undefined;
    }
    if (typeof value === 'object' && value !== null && ('where' in value || 'here' in value)) {
      this.onWhereabouts(link, value as { where?: unknown; here?: unknown });
      return;
    }
    const takeover = parseTakeover(value);
    if (takeover === undefined) {
      this.log.warn('ignored a malformed control message');
      return;
    }
    // A session of a device whose park is postponed (detached here while the link was down),
    // announced since: it is newer than the one that ended here. Unbind it at the restore, but do
    // not park it.
    if (this.parkLater.has(takeover.device) && !this.attached.has(takeover.device)) this.parkLater.delete(takeover.device);
    this.emitSafely('takeover', takeover);
  }

  /**
   * `{"where": device}`: a process holds stray commands for `device` and asks where it is bound;
   * if it is bound here (its binding confirmed), answer `{"here": device}`. `{"here": device}`:
   * the device is bound on the process that answered — send what is held for it on to `<p>.down`,
   * which routes it there (as its `connected` presence event would).
   */
  private onWhereabouts(link: Link, value: { where?: unknown; here?: unknown }): void {
    if (typeof value.where === 'string') {
      const device = value.where;
      const attachment = this.attached.get(device);
      if (attachment === undefined || this.strays.has(device)) return;
      void attachment.bound.then(
        () => {
          // Not during an outage: queued, it would be published late, naming a binding that may be gone.
          if (this.attached.get(device) !== attachment || this.stopped || !this.available) return;
          if (this.link) this.whereabouts(this.link, { here: device });
        },
        () => undefined,
      );
    } else if (typeof value.here === 'string') {
      if (link !== this.link) return;
      const device = value.here;
      // Not the process's own binding (it holds strays only for devices it does not hold).
      if (this.attached.has(device)) return;
      const parkedAt = this.parkedAtRestore.get(device);
      if (parkedAt !== undefined) {
        this.parkedAtRestore.delete(device);
        if (Date.now() - parkedAt <= UNPARK_WINDOW_MS) void this.unpark(device);
      }
      const held = this.takeStrays(device).filter((h) => h.link === link);
      if (held.length > 0) this.releaseStrays(device, held);
    } else {
      this.log.warn('ignored a malformed control message');
    }
  }

  /**
   * Take back a park made at a restore: the device is bound on another process (it answered
   * `here`). Attach it here — the catch-up takes what its offline queue holds, and, with no
   * session here, each command is given back to `<p>.down`, which routes it to that process — and
   * detach it again without parking (as `unparkIfOvertaken` in device-session.ts does).
   */
  private async unpark(device: string): Promise<void> {
    if (this.attached.has(device) || this.stopped) return;
    this.log.info({ device }, 'a park made at a restore was overtaken: the device is bound on another process; taking the park back');
    try {
      await this.attachDevice(device);
      await this.detachDevice(device);
    } catch (err) {
      this.log.warn({ err, device }, 'taking back a park failed');
    }
  }

  private emitSafely<K extends keyof BrokerEvents>(event: K, ...args: BrokerEvents[K]): void {
    try {
      (this.emit as (event: K, ...args: BrokerEvents[K]) => boolean)(event, ...args);
    } catch (err) {
      this.log.error({ err, event }, 'a broker event listener threw');
    }
  }

  private setState(state: BrokerState): void {
    if (this.currentState === state) return;
    this.currentState = state;
    this.emitSafely('state', state);
  }
}

/** Channels used in parallel for device binds and unbinds (see `Link.binders`). */
const BINDER_CHANNELS = 64;

/** The link's connections: uplinks and events, control messages, and everything consumed or declared. */
type Role = 'publisher' | 'control' | 'consumer';

/**
 * One set of connections (publisher, control and consumer) and their channels. Lost as a whole:
 * when any connection or channel closes, `gone` resolves and every connection is closed.
 */
class Link {
  publisher!: ChannelModel;
  consumer!: ChannelModel;
  confirm!: ConfirmChannel;
  /** Takeover announcements and where/here, confirmed, on a connection of their own ({@link publishControl}). */
  control!: ConfirmChannel;
  controlModel!: ChannelModel;
  admin!: Channel;
  inbox!: Channel;
  /**
   * Channels for device binds and unbinds. amqplib runs one RPC at a time per channel, so one
   * channel caps binds at one per round trip (a few hundred a second under load, which made
   * hellos time out in a 10,000-device run); RabbitMQ reaches ~1,100–3,200/s with many in flight.
   * 64, not 16: a full set-up window (128 hellos) queued 8 binds per channel, and under a burst of
   * uplinks each bind's round trip took 100–300 ms, so a hello waited 0.8–2 s for its bind.
   */
  private binders: Channel[] = [];
  /** Topology declared and consumers running (bindings may still be being restored). */
  ready = false;
  /** This link's control queue (exclusive to its consumer connection), once declared. */
  controlQueue: string | undefined;
  /** Restoring the bindings once ready (settles, never rejects: a failure fails the link). */
  restoring: Promise<void> = Promise.resolve();
  /** Control publishes waiting for their confirm: failed with the link. */
  private readonly controlPending = new Set<(err: Error) => void>();
  /** The connections RabbitMQ sent `connection.blocked` to (and not yet `unblocked`). */
  private readonly blockedRoles = new Set<Role>();
  /** The publisher's socket is corked until the next turn ({@link corkPublisher}). */
  private corked = false;
  private publisherSocket: Socket | undefined;
  /** The publisher's socket takes more (false from a `publish` returning false until `drain`). */
  writable = true;
  readonly consumerTags: string[] = [];
  /** Resolves with the reason once the link is lost. */
  readonly gone: Promise<Error>;
  private lostReason: Error | undefined;
  private resolveLost!: (err: Error) => void;
  private readonly models: Connection[] = [];
  private closing: Promise<void> | undefined;

  constructor(
    private readonly url: string,
    private readonly nodeId: string,
    private readonly log: Logger,
    private readonly hooks: { readonly lost: (link: Link) => void; readonly flow: (link: Link) => void },
  ) {
    this.gone = new Promise((resolve) => (this.resolveLost = resolve));
  }

  /** RabbitMQ blocks a publishing connection (a memory or disk alarm). */
  get blocked(): boolean {
    return this.blockedRoles.size > 0;
  }

  /** The link was lost (or is being closed). */
  get lost(): boolean {
    return this.lostReason !== undefined;
  }

  async open(): Promise<void> {
    // The three connections, then every channel, opened at once: a reconnect is a few round trips.
    await settleAll([
      this.connect('publisher').then((model) => void (this.publisher = model)),
      this.connect('consumer').then((model) => void (this.consumer = model)),
      this.connect('control').then((model) => void (this.controlModel = model)),
    ]);
    const binders: Channel[] = [];
    await settleAll([
      this.publisher.createConfirmChannel().then((ch) => void (this.confirm = this.watch(ch, 'confirm'))),
      this.controlModel.createConfirmChannel().then((ch) => void (this.control = this.watch(ch, 'control'))),
      this.consumer.createChannel().then((ch) => void (this.admin = this.watch(ch, 'admin'))),
      this.consumer.createChannel().then((ch) => void (this.inbox = this.watch(ch, 'inbox'))),
      ...Array.from({ length: BINDER_CHANNELS }, (_, i) => this.consumer.createChannel().then((ch) => void (binders[i] = this.watch(ch, 'binder')))),
    ]);
    this.binders = binders;
  }

  /**
   * The binding channel of a device: always the same one, so a device's binds and unbinds run in
   * the order they were asked (an unbind on one channel must not overtake a later bind on another).
   */
  binder(device: string): Channel {
    return this.binders[binderIndex(device, this.binders.length)]!;
  }

  /**
   * Channels for the offline-queue probe and for parking, one of each per binding channel. Not
   * watched like the others: RabbitMQ answers a probe of a queue that holds commands with 406, the
   * bind of a park whose new queue a catch-up deleted meanwhile with 404 (see `unbindStale`), the
   * declare of a queue that exists with other arguments with 406 (see `park`), and may refuse
   * either for one device otherwise (403, 405): channel errors that close the channel and fail
   * what was queued behind on it, and no reason to lose the link. A closed one is opened again at
   * its next use.
   */
  private readonly probes: (Promise<Channel> | undefined)[] = [];
  private readonly parkers: (Promise<Channel> | undefined)[] = [];

  /**
   * Run `op` on `device`'s channel of `pool` (at its binding channel's index), opened on demand.
   * An error with an AMQP reply code is `op`'s own answer and is thrown to the caller; one without (the channel was closed by another
   * device's answer while `op` was queued behind it) runs `op` again on a new channel — each such
   * close is some other op's own answer, which is not run again, so this ends; 20 tries at most,
   * as a bound all the same.
   */
  private async onPooled<T>(pool: (Promise<Channel> | undefined)[], device: string, op: (ch: Channel) => Promise<T>): Promise<T> {
    const i = binderIndex(device, BINDER_CHANNELS);
    for (let attempt = 0; ; attempt++) {
      if (this.lostReason) throw this.lostReason;
      let pending = pool[i];
      if (pending === undefined) {
        const opened = this.consumer.createChannel().then((ch) => {
          ch.on('error', () => undefined);
          ch.on('close', () => {
            if (pool[i] === opened) pool[i] = undefined;
          });
          return ch;
        });
        pool[i] = pending = opened;
      }
      const current = pending;
      try {
        return await op(await current);
      } catch (err) {
        if (pool[i] === current) pool[i] = undefined;
        if (replyCode(err) !== undefined || attempt >= 19) throw err;
      }
    }
  }

  /**
   * `queue.delete if-empty` of `queue`: true if it was absent or empty (and is gone now), false if
   * it holds messages (RabbitMQ refused with 406, which closed the probe channel).
   */
  async probeEmpty(device: string, queue: string): Promise<boolean> {
    try {
      await this.onPooled(this.probes, device, (ch) => ch.deleteQueue(queue, { ifEmpty: true }));
      return true;
    } catch (err) {
      if (replyCode(err) === 406) return false;
      throw err;
    }
  }

  /**
   * Declare `device`'s offline queue and bind it to `down`, issued together on a parking channel
   * (amqplib sends a channel's RPCs in call order). Rejects with code 404 if the queue was deleted
   * between the two (see `AmqpBroker.unbindStale`).
   */
  declareOffline(device: string, queue: string, down: string): Promise<void> {
    return this.onPooled(this.parkers, device, async (ch) => {
      await Promise.all([ch.assertQueue(queue, { durable: true, arguments: { ...OFFLINE_QUEUE_ARGUMENTS } }), ch.bindQueue(queue, down, device)]);
    });
  }

  /** Bind `device`'s existing offline queue to `down` on its parking channel (no declare: see `AmqpBroker.park`). */
  bindOffline(device: string, queue: string, down: string): Promise<void> {
    return this.onPooled(this.parkers, device, async (ch) => {
      await ch.bindQueue(queue, down, device);
    });
  }

  /**
   * Publish a control message (JSON, to the control fanout) on the control connection; resolves
   * once RabbitMQ confirmed it, rejects if it nacked it or the link went first.
   */
  publishControl(exchange: string, content: Buffer | undefined): Promise<void> {
    if (this.lostReason) return Promise.reject(this.lostReason);
    if (content === undefined) return Promise.reject(new Error('unencodable control message'));
    return new Promise<void>((resolve, reject) => {
      // Settled by its confirm, or by `fail`: amqplib fails pending confirms when the channel
      // closes, which a connection RabbitMQ blocked (it no longer reads it) may never report.
      const fail = (err: Error): void => reject(err);
      this.controlPending.add(fail);
      try {
        this.control.publish(exchange, '', content, { contentType: 'application/json' }, (err: unknown) => {
          this.controlPending.delete(fail);
          if (err) reject(asError(err));
          else resolve();
        });
      } catch (err) {
        this.controlPending.delete(fail);
        reject(asError(err));
      }
    });
  }

  /** A channel of the consumer connection whose loss does not lose the link (the caller closes it). */
  async openDisposable(): Promise<Channel> {
    const ch = await this.consumer.createChannel();
    ch.on('error', (err: Error) => this.log.debug({ err }, 'AMQP catch-up channel error'));
    return ch;
  }

  /** Throws if the link was lost (or the broker stopped) meanwhile. */
  check(stopped: boolean): void {
    if (this.lostReason) throw this.lostReason;
    if (stopped) throw new Error('the broker is stopping');
  }

  /** Mark the link lost (once), tell the broker, close all three connections. */
  fail(reason: Error): void {
    if (this.lostReason) return;
    this.lostReason = reason;
    this.ready = false;
    for (const fail of this.controlPending) fail(reason);
    this.controlPending.clear();
    this.hooks.lost(this);
    this.resolveLost(reason);
    void this.close();
  }

  /** Close every connection and wait for their sockets to close. Idempotent. */
  close(): Promise<void> {
    this.closing ??= Promise.all(this.models.map(closeConnection)).then(() => undefined);
    return this.closing;
  }

  private async connect(role: Role): Promise<ChannelModel> {
    if (this.lostReason) throw this.lostReason;
    const model = await connect(this.url, {
      clientProperties: { connection_name: `corral-gateway ${this.nodeId} ${role}` },
      timeout: 10_000,
      // The consumer connection runs request/response chains (bind, probe, unbind, get, ack,
      // delete): with Nagle's algorithm a small write waiting on a delayed ACK costs ~40 ms per
      // step (measured: catching up a parked device took ~98 ms at the median with it, ~16 ms
      // without). The control connection's messages are each waited for. The publisher corks its
      // writes itself.
      noDelay: role !== 'publisher',
    });
    const connection = watchConnection(model);
    model.on('error', (err: Error) => this.log.warn({ err, role }, 'AMQP connection error'));
    model.on('close', (err?: Error) => this.fail(err ?? new Error(`the ${role} connection closed`)));
    if (role !== 'consumer') {
      model.on('blocked', (reason: string) => {
        this.log.warn({ reason, role }, 'RabbitMQ blocked a publishing connection');
        this.blockedRoles.add(role);
        this.hooks.flow(this);
      });
      model.on('unblocked', () => {
        this.log.info({ role }, 'RabbitMQ unblocked a publishing connection');
        this.blockedRoles.delete(role);
        this.hooks.flow(this);
      });
    }
    if (this.lostReason) {
      await closeConnection(connection);
      throw this.lostReason;
    }
    this.models.push(connection);
    if (role === 'publisher') this.publisherSocket = connection.socket;
    return model;
  }

  /**
   * Hold the publisher socket's writes until amqplib has written this turn's publishes, so they
   * leave in one write (one writev syscall) instead of one write per AMQP frame. amqplib's channel
   * says it is readable on a `process.nextTick`, and its mux then writes from a `setImmediate`;
   * the uncork is queued behind both (a nextTick queued now runs after amqplib's, and queues its
   * setImmediate after the mux's). Uncorking a destroyed socket does nothing.
   */
  corkPublisher(): void {
    const socket = this.publisherSocket;
    if (this.corked || socket === undefined) return;
    this.corked = true;
    socket.cork();
    process.nextTick(() =>
      setImmediate(() => {
        this.corked = false;
        socket.uncork();
      }),
    );
  }

  private watch<C extends Channel>(channel: C, name: string): C {
    channel.on('error', (err: Error) => this.log.warn({ err, channel: name }, 'AMQP channel error'));
    channel.on('close', () => this.fail(new Error(`the ${name} channel closed`)));
    return channel;
  }
}

/** An open connection, whether it has closed, and its socket. */
interface Connection {
  readonly model: ChannelModel;
  /** Resolves once amqplib considers the connection closed (by us, the server or the network). */
  readonly closed: Promise<void>;
  readonly socket: Socket | undefined;
}

function watchConnection(model: ChannelModel): Connection {
  // amqplib keeps the socket and its multiplexer on its (untyped) connection object.
  const connection = (model as unknown as { connection?: { stream?: Socket; muxer?: MuxPass } }).connection;
  const socket = connection?.stream;
  if (socket !== undefined && connection?.muxer !== undefined) writePassesAtOnce(connection.muxer, socket);
  const closed = new Promise<void>((resolve) => model.once('close', () => resolve()));
  return { model, closed, socket };
}

/** What of amqplib's `Mux` (lib/mux.js) {@link writePassesAtOnce} needs: its pass over the channels. */
interface MuxPass {
  _readIncoming?: () => void;
}

/**
 * Send what one pass of amqplib's multiplexer writes as one write (one `writev`) instead of one
 * write per AMQP frame: the pass takes a frame from each channel with one ready, round and round,
 * and writes each to the socket; the socket is corked for the pass and uncorked at its end, in the
 * same turn, so nothing waits longer than before (Nagle off stays off). Measured in a gateway
 * worker under a stampede of 16,000 devices: these per-frame writes were ~6% of its CPU (binds,
 * probes, takeover announcements, presence). Nested with the publisher's own cork (`corkPublisher`),
 * which holds its writes until a later turn. Left alone if amqplib's internals differ.
 */
function writePassesAtOnce(muxer: MuxPass, socket: Socket): void {
  const pass = muxer._readIncoming;
  if (typeof pass !== 'function') return;
  muxer._readIncoming = function (this: MuxPass): void {
    socket.cork();
    try {
      pass.call(this);
    } finally {
      socket.uncork();
    }
  };
}

/**
 * Close a connection politely, bounded; then make sure its socket is gone. (amqplib's `close()`
 * never settles when the socket dies while it waits for `close-ok`, hence the race with `close`.)
 */
async function closeConnection({ model, closed, socket }: Connection): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([model.close().catch(() => undefined), closed, new Promise<void>((resolve) => (timer = setTimeout(resolve, CLOSE_TIMEOUT_MS)))]);
  clearTimeout(timer);
  if (!socket || socket.closed) return;
  await new Promise<void>((resolve) => {
    const t = setTimeout(() => socket.destroy(), CLOSE_TIMEOUT_MS);
    socket.once('close', () => {
      clearTimeout(t);
      resolve();
    });
    if (socket.closed) {
      clearTimeout(t);
      resolve();
    }
  });
}

/**
 * When a delivered command expires: `published-at` header (or, without it, the time it was
 * received) plus its TTL — the `expiration` property, or after dead-lettering (which removes
 * `expiration`) the `original-expiration` of the newest `x-death` entry. `undefined` without a TTL.
 */
function commandExpiry(message: Message, receivedAt: number): number | undefined {
  const headers: unknown = message.properties.headers;
  const h = typeof headers === 'object' && headers !== null ? (headers as Record<string, unknown>) : {};
  let ttl = finite(message.properties.expiration);
  if (ttl === undefined) {
    // Whatever a publisher put there: `x-death` is RabbitMQ's, but anyone may set any header, and
    // this runs in the consumer's callback, where a throw would fail the link (and the delivery
    // would come back and fail it again, for ever).
    const deaths: unknown = h['x-death'];
    const newest: unknown = Array.isArray(deaths) ? deaths[0] : undefined;
    if (typeof newest === 'object' && newest !== null) ttl = finite((newest as Record<string, unknown>)['original-expiration']);
  }
  if (ttl === undefined) return undefined;
  return (finite(h[PUBLISHED_AT_HEADER]) ?? receivedAt) + ttl;
}

function finite(value: unknown): number | undefined {
  const n = typeof value === 'string' && value !== '' ? Number(value) : value;
  return typeof n === 'number' && Number.isFinite(n) ? n : undefined;
}

function json(value: unknown): Buffer | undefined {
  try {
    return Buffer.from(JSON.stringify(value) ?? 'null');
  } catch {
    return undefined;
  }
}

/**
 * A takeover announcement, or `undefined` if `value` is not one. An announcement without `seq`
 * (from a gateway of an earlier version, during a rolling upgrade) counts as seq 0.
 */
function parseTakeover(value: unknown): Takeover | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const v = value as Record<string, unknown>;
  if (typeof v.device !== 'string' || typeof v.node !== 'string' || typeof v.session !== 'string' || typeof v.at !== 'number') return undefined;
  if (v.seq !== undefined && !(typeof v.seq === 'number' && Number.isSafeInteger(v.seq))) return undefined;
  return { device: v.device, node: v.node, session: v.session, at: v.at, seq: typeof v.seq === 'number' ? v.seq : 0 };
}

/** Wait for every promise to settle; then reject with the first failure, if any. */
async function settleAll(promises: readonly Promise<unknown>[]): Promise<void> {
  const results = await Promise.allSettled(promises);
  for (const r of results) if (r.status === 'rejected') throw asError(r.reason as unknown);
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/** The AMQP reply code RabbitMQ refused an operation with (404, 406, …), if `err` carries one. */
function replyCode(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === 'number' ? code : undefined;
}

/** Which of `n` binding channels a device's binds go to (always the same one). */
function binderIndex(device: string, n: number): number {
  let h = 0;
  for (let i = 0; i < device.length; i++) h = (h * 31 + device.charCodeAt(i)) | 0;
  return (h >>> 0) % n;
}

/**
 * Delete a caught-up offline queue if nothing went back into it (and `remove`: the device was not
 * parked again meanwhile), and close the catch-up channel.
 */
async function finishCatchUp(channel: Channel, queue: string, remove: boolean): Promise<boolean> {
  let deleted = false;
  try {
    if (remove) {
      await channel.deleteQueue(queue, { ifEmpty: true });
      deleted = true;
    }
  } catch {
    // Refused (a command was put back) or the channel is gone: the queue waits for the next connect.
  }
  await channel.close().catch(() => undefined);
  return deleted;
}
