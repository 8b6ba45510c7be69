/**
 * An in-process stand-in for the parts of an AMQP broker the gateway uses: exchanges (`topic`,
 * `direct`, `fanout`, with an alternate exchange for what they cannot route), queues with an
 * optional length limit (oldest dropped first, like RabbitMQ's `x-max-length`), bindings, per-message
 * expiry, and one consumer per queue. Several `MemoryBroker`s — several gateway nodes in one process
 * — share one hub, as nodes share one RabbitMQ.
 *
 * Delivery to a consumer is asynchronous (`setImmediate`), as it is over a network, so a publish
 * never re-enters its publisher and a message that keeps being sent back cannot starve I/O.
 */
import { EventEmitter } from 'node:events';
import Denque from 'denque';

/** How an exchange routes: AMQP's `topic` (`*` one word, `#` any words), `direct` (equal key), `fanout` (all). */
export type ExchangeType = 'topic' | 'direct' | 'fanout';

/** A message as it sits in a hub queue. */
export interface HubMessage {
  readonly exchange: string;
  readonly routingKey: string;
  readonly body: unknown;
  readonly headers: Readonly<Record<string, string>>;
  readonly messageId: string | undefined;
  /** When it expires (ms since the epoch); an expired message is dropped, never delivered. */
  readonly expiresAt: number | undefined;
  /** When it was published (ms since the epoch). */
  readonly publishedAt: number;
}

/** What a publisher gives {@link MemoryExchangeHub.publish}. */
export interface HubPublish {
  readonly body: unknown;
  readonly headers?: Readonly<Record<string, string>>;
  readonly messageId?: string | undefined;
  readonly expiresAt?: number | undefined;
}

/** Where {@link MemoryExchangeHub.publish} put a message: how many queues took it, how many refused it (full). */
export interface HubRouting {
  readonly taken: number;
  readonly rejected: number;
}

/** Events of a {@link MemoryExchangeHub}, for tests and tools that watch traffic. */
export interface HubEvents {
  /** A message was put into a queue. */
  enqueue: [queue: string, message: HubMessage];
  /** A message expired in a queue and was dropped. */
  expire: [queue: string, message: HubMessage];
}

interface Exchange {
  readonly type: ExchangeType;
  readonly alternate: string | undefined;
  /** Bound queues and their patterns. */
  readonly bindings: Map<string, Set<string>>;
}

interface Queue {
  readonly maxLength: number;
  /** What a full queue does with one more message: drop its oldest (default) or refuse the new one. */
  readonly overflow: 'drop-head' | 'reject-publish';
  /** A deque: delivery and overflow take from the head, which `Array.shift` does in O(n). */
  messages: Denque<HubMessage>;
  consumer: ((message: HubMessage) => void) | undefined;
  scheduled: boolean;
}

/** Messages handed to a consumer per turn of the event loop. */
const BATCH = 256;

/** In-process exchanges and queues shared by the `MemoryBroker`s of one process. */
export class MemoryExchangeHub extends EventEmitter<HubEvents> {
  private static shared: MemoryExchangeHub | undefined;
  private readonly exchanges = new Map<string, Exchange>();
  private readonly queues = new Map<string, Queue>();

  /** The hub `MemoryBroker`s use when not given one: one per process. */
  static default(): MemoryExchangeHub {
    return (MemoryExchangeHub.shared ??= new MemoryExchangeHub());
  }

  /** Declare an exchange. Idempotent; a different type for an existing name throws. */
  declareExchange(name: string, type: ExchangeType, options: { alternate?: string } = {}): void {
    const existing = this.exchanges.get(name);
    if (existing !== undefined) {
      if (existing.type !== type) throw new Error(`exchange ${name} exists with type ${existing.type}, not ${type}`);
      return;
    }
    this.exchanges.set(name, { type, alternate: options.alternate, bindings: new Map() });
  }

  /**
   * Declare a queue. Idempotent (the first declaration's limit stays). `maxLength` 0: unbounded;
   * `overflow` says what a full queue does (RabbitMQ's `x-overflow`; default `drop-head`).
   */
  declareQueue(name: string, options: { maxLength?: number; overflow?: 'drop-head' | 'reject-publish' } = {}): void {
    if (this.queues.has(name)) return;
    this.queues.set(name, {
      maxLength: options.maxLength ?? 0,
      overflow: options.overflow ?? 'drop-head',
      messages: new Denque<HubMessage>(),
      consumer: undefined,
      scheduled: false,
    });
  }

  /** Delete an exchange and its bindings (idempotent). */
  deleteExchange(name: string): void {
    this.exchanges.delete(name);
  }

  /** Delete a queue, its messages and its bindings. */
  deleteQueue(name: string): void {
    if (!this.queues.delete(name)) return;
    for (const exchange of this.exchanges.values()) exchange.bindings.delete(name);
  }

  hasQueue(name: string): boolean {
    return this.queues.has(name);
  }

  /** Bind `queue` (declared if it is not yet) to `exchange` with `pattern` (ignored by fanout). */
  bindQueue(queue: string, exchange: string, pattern: string): void {
    const ex = this.exchange(exchange);
    this.declareQueue(queue);
    let patterns = ex.bindings.get(queue);
    if (patterns === undefined) ex.bindings.set(queue, (patterns = new Set()));
    patterns.add(pattern);
  }

  /** Remove one binding (idempotent). */
  unbindQueue(queue: string, exchange: string, pattern: string): void {
    const ex = this.exchanges.get(exchange);
    const patterns = ex?.bindings.get(queue);
    if (patterns === undefined) return;
    patterns.delete(pattern);
    if (patterns.size === 0) ex!.bindings.delete(queue);
  }

  /** Remove every binding of `queue` to `exchange`. */
  unbindAll(queue: string, exchange: string): void {
    this.exchanges.get(exchange)?.bindings.delete(queue);
  }

  /**
   * Publish to `exchange` (through its alternate exchange too). Returns how many queues took the
   * message and how many refused it (full, with `reject-publish`): RabbitMQ nacks a publish that
   * any queue refused, and returns a mandatory one that no queue took.
   */
  publish(exchange: string, routingKey: string, message: HubPublish): HubRouting {
    const m: HubMessage = {
      exchange,
      routingKey,
      body: message.body,
      headers: message.headers ?? {},
      messageId: message.messageId,
      expiresAt: message.expiresAt,
      publishedAt: Date.now(),
    };
    const targets = new Set<string>();
    this.route(exchange, routingKey, targets, new Set());
    let taken = 0;
    let rejected = 0;
    for (const queue of targets) {
      const outcome = this.enqueue(queue, m);
      if (outcome === 'taken') taken += 1;
      else if (outcome === 'rejected') rejected += 1;
    }
    return { taken, rejected };
  }

  /** Take every unexpired message waiting in `queue` (none if it does not exist). */
  read(queue: string): HubMessage[] {
    const q = this.queues.get(queue);
    if (q === undefined) return [];
    const taken = q.messages.toArray();
    q.messages = new Denque<HubMessage>();
    const now = Date.now();
    return taken.filter((m) => !this.expired(queue, m, now));
  }

  /** Messages waiting in `queue`. */
  depth(queue: string): number {
    return this.queues.get(queue)?.messages.length ?? 0;
  }

  /**
   * Consume `queue`: every message waiting and every later one goes to `onMessage`, in order,
   * asynchronously. One consumer per queue. Returns the cancel function.
   */
  consume(queue: string, onMessage: (message: HubMessage) => void): () => void {
    this.declareQueue(queue);
    const q = this.queues.get(queue)!;
    if (q.consumer !== undefined) throw new Error(`queue ${queue} already has a consumer`);
    q.consumer = onMessage;
    this.schedule(queue, q);
    return () => {
      if (q.consumer === onMessage) q.consumer = undefined;
    };
  }

  private exchange(name: string): Exchange {
    const ex = this.exchanges.get(name);
    if (ex === undefined) throw new Error(`no exchange ${name}`);
    return ex;
  }

  private route(exchange: string, key: string, targets: Set<string>, visited: Set<string>): void {
    if (visited.has(exchange)) return;
    visited.add(exchange);
    const ex = this.exchange(exchange);
    let matched = false;
    for (const [queue, patterns] of ex.bindings) {
      for (const pattern of patterns) {
        if (ex.type === 'fanout' || (ex.type === 'direct' ? pattern === key : topicMatches(pattern, key))) {
          targets.add(queue);
          matched = true;
          break;
        }
      }
    }
    if (!matched && ex.alternate !== undefined) this.route(ex.alternate, key, targets, visited);
  }

  private enqueue(queue: string, m: HubMessage): 'taken' | 'rejected' | 'absent' {
    const q = this.queues.get(queue);
    if (q === undefined) return 'absent';
    if (q.maxLength > 0 && q.overflow === 'reject-publish' && q.messages.length >= q.maxLength) return 'rejected';
    q.messages.push(m);
    if (q.maxLength > 0 && q.messages.length > q.maxLength) q.messages.shift();
    this.emit('enqueue', queue, m);
    this.schedule(queue, q);
    return 'taken';
  }

  private schedule(queue: string, q: Queue): void {
    if (q.scheduled || q.consumer === undefined || q.messages.length === 0) return;
    q.scheduled = true;
    setImmediate(() => {
      q.scheduled = false;
      const now = Date.now();
      let n = 0;
      while (q.consumer !== undefined && q.messages.length > 0 && n++ < BATCH) {
        const m = q.messages.shift()!;
        if (this.expired(queue, m, now)) continue;
        q.consumer(m);
      }
      this.schedule(queue, q);
    });
  }

  private expired(queue: string, m: HubMessage, now: number): boolean {
    if (m.expiresAt === undefined || m.expiresAt > now) return false;
    this.emit('expire', queue, m);
    return true;
  }
}

/** Whether a routing key matches an AMQP topic pattern (`*`: exactly one word, `#`: zero or more). */
export function topicMatches(pattern: string, key: string): boolean {
  return matchWords(pattern.split('.'), 0, key.split('.'), 0);
}

function matchWords(p: string[], i: number, k: string[], j: number): boolean {
  while (i < p.length) {
    const word = p[i]!;
    if (word === '#') {
      if (i === p.length - 1) return true;
      for (let s = j; s <= k.length; s++) if (matchWords(p, i + 1, k, s)) return true;
      return false;
    }
    if (j >= k.length || (word !== '*' && word !== k[j])) return false;
    i++;
    j++;
  }
  return j === k.length;
}
