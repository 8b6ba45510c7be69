/**
 * The routing every {@link Broker} must do, as one suite: run it once per implementation
 * (`AmqpBroker` against RabbitMQ, `MemoryBroker` in process), the way MQTT.js runs one client suite
 * over every transport.
 *
 * Each test uses a prefix of its own and brokers from `make` (started, ready to use); afterwards
 * the suite stops them and calls `cleanup(prefix, nodeIds)`. The `backEnd` plays the application
 * behind the gateway: it binds queues to `<prefix>.up` or `<prefix>.events` and reads queues (a
 * bound one, or `<prefix>.down.offline`).
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Broker, BrokerEvents, Command, Takeover } from '../../src/broker.js';
import { topology } from '../../src/topology.js';

/** A message as the back end sees it. */
export interface BackEndMessage {
  readonly routingKey: string;
  /** The AMQP `messageId`, if any. */
  readonly messageId: string | undefined;
  readonly headers: Readonly<Record<string, unknown>>;
  /** Parsed JSON (or the string, if it is not JSON). */
  readonly body: unknown;
}

/** The application side of a broker, implemented once per broker implementation. */
export interface BackEnd {
  /** Declare `queueName` (idempotently) and bind it to `<prefix>.up` with the topic `pattern`. */
  bindUplinkQueue(prefix: string, queueName: string, pattern: string): Promise<void>;
  /** Declare `queueName` (idempotently) and bind it to `<prefix>.events` with the topic `pattern`. */
  bindEventQueue(prefix: string, queueName: string, pattern: string): Promise<void>;
  /**
   * Take (and remove) up to `n` messages from `queueName`, oldest first, waiting a few seconds
   * at most for `n` to be there.
   */
  read(prefix: string, queueName: string, n: number): Promise<BackEndMessage[]>;
}

/** Options `make` gets. */
export interface MakeBroker {
  readonly prefix: string;
  readonly nodeId: string;
}

/** Everything a broker emitted for one event, and a way to wait for the next of them. */
export class EventLog<T> {
  readonly items: T[] = [];
  private read = 0;
  private waiter: (() => void) | undefined;

  constructor(emitter: Broker, event: keyof BrokerEvents) {
    (emitter as unknown as NodeJS.EventEmitter).on(event, (item: T) => {
      this.items.push(item);
      this.waiter?.();
    });
  }

  /** The next item not returned by `next` yet (waits up to `timeoutMs` for it). */
  async next(timeoutMs = 5000): Promise<T> {
    if (this.read < this.items.length) return this.items[this.read++] as T;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new Error(`no event within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = () => {
        clearTimeout(timer);
        this.waiter = undefined;
        resolve();
      };
    });
    return this.items[this.read++] as T;
  }
}

let prefixCount = 0;

/** Broker-level routing tests any {@link Broker} must pass. */
export function routingSuite(
  label: string,
  make: (options: MakeBroker) => Promise<Broker>,
  cleanup: (prefix: string, nodeIds: string[]) => Promise<void>,
  backEnd: BackEnd,
): void {
  describe(`${label}: routing`, () => {
    let prefix = '';
    let nodeIds: string[] = [];
    let brokers: Broker[] = [];

    const fresh = (): string => {
      prefixCount += 1;
      prefix = `rt-${label.replace(/[^A-Za-z0-9_-]+/g, '-')}-${process.pid}-${prefixCount}`;
      return prefix;
    };
    const node = async (nodeId: string): Promise<Broker> => {
      nodeIds.push(nodeId);
      const broker = await make({ prefix, nodeId });
      brokers.push(broker);
      return broker;
    };
    const commands = (b: Broker): EventLog<Command> => new EventLog<Command>(b, 'command');

    afterEach(async () => {
      await Promise.all(brokers.map((b) => b.stop()));
      await cleanup(prefix, nodeIds);
      brokers = [];
      nodeIds = [];
    });

    it('confirms an uplink a queue takes, with its headers', async () => {
      fresh();
      const a = await node('node-a');
      await backEnd.bindUplinkQueue(prefix, `${prefix}.app`, '#');
      const result = await a.publishUplink({ device: 'dev-1', id: 'm-1', topic: 'temp', body: { celsius: 21.5 } });
      expect(result).toEqual({ ok: true });
      const [message] = await backEnd.read(prefix, `${prefix}.app`, 1);
      expect(message).toMatchObject({
        routingKey: 'dev-1.temp',
        messageId: 'm-1',
        headers: { 'device-id': 'dev-1', 'message-id': 'm-1', 'node-id': 'node-a' },
        body: { celsius: 21.5 },
      });
    });

    it('reports an uplink no queue takes as unroutable', async () => {
      fresh();
      const a = await node('node-a');
      await backEnd.bindUplinkQueue(prefix, `${prefix}.app`, '*.other');
      expect(await a.publishUplink({ device: 'dev-1', id: 'm-1', topic: 'temp', body: 1 })).toEqual({ ok: false, reason: 'unroutable' });
      expect(await a.publishUplink({ device: 'dev-1', id: 'm-2', topic: 'other', body: 2 })).toEqual({ ok: true });
    });

    it('routes a command to the node its device is attached to', async () => {
      fresh();
      const a = await node('node-a');
      const b = await node('node-b');
      const atA = commands(a);
      const atB = commands(b);
      await a.attachDevice('dev-a');
      await b.attachDevice('dev-b');

      expect(await a.publishCommand('dev-b', { op: 'reboot' }, { id: 'c-1' })).toEqual({ id: 'c-1' });
      const c1 = await atB.next();
      expect(c1).toMatchObject({ id: 'c-1', device: 'dev-b', body: { op: 'reboot' }, expiresAt: undefined });
      c1.ack();

      await b.publishCommand('dev-a', 'plain text', { id: 'c-2' });
      const c2 = await atA.next();
      expect(c2).toMatchObject({ id: 'c-2', device: 'dev-a', body: 'plain text' });
      c2.ack();

      expect(atA.items.map((c) => c.id)).toEqual(['c-2']);
      expect(atB.items.map((c) => c.id)).toEqual(['c-1']);
    });

    it('makes up a command id when none is given', async () => {
      fresh();
      const a = await node('node-a');
      const atA = commands(a);
      await a.attachDevice('dev-a');
      const { id } = await a.publishCommand('dev-a', { op: 'x' });
      expect(id).toMatch(/\S/);
      const c = await atA.next();
      expect(c.id).toBe(id);
      c.ack();
    });

    it('puts a command for a device attached nowhere in the offline queue', async () => {
      fresh();
      const a = await node('node-a');
      const atA = commands(a);
      await a.attachDevice('dev-a');
      await a.publishCommand('ghost', { op: 'wake' }, { id: 'c-3' });
      const offline = await backEnd.read(prefix, topology(prefix).downOffline, 1);
      expect(offline).toMatchObject([{ routingKey: 'ghost', messageId: 'c-3', body: { op: 'wake' } }]);
      expect(atA.items).toEqual([]);
    });

    it('stops routing to a node once its device is detached as often as it was attached', async () => {
      fresh();
      const a = await node('node-a');
      const atA = commands(a);
      await a.attachDevice('dev-a');
      await a.attachDevice('dev-a');
      await a.detachDevice('dev-a');
      await a.publishCommand('dev-a', { n: 1 }, { id: 'c-1' });
      const c1 = await atA.next();
      expect(c1.id).toBe('c-1');
      c1.ack();

      await a.detachDevice('dev-a');
      await a.publishCommand('dev-a', { n: 2 }, { id: 'c-2' });
      const offline = await backEnd.read(prefix, topology(prefix).downOffline, 1);
      expect(offline.map((m) => m.messageId)).toEqual(['c-2']);
      expect(atA.items.map((c) => c.id)).toEqual(['c-1']);
    });

    it('redelivers a command to wherever its device is now, or to the offline queue', async () => {
      fresh();
      const a = await node('node-a');
      const b = await node('node-b');
      const atA = commands(a);
      const atB = commands(b);
      await a.attachDevice('dev-1');
      await a.publishCommand('dev-1', { op: 'move' }, { id: 'c-5' });
      const first = await atA.next();

      // The device reconnects to node b before acknowledging the command on node a.
      await a.detachDevice('dev-1');
      await b.attachDevice('dev-1');
      first.redeliver();
      const second = await atB.next();
      expect(second).toMatchObject({ id: 'c-5', device: 'dev-1', body: { op: 'move' } });

      // Then it disconnects for good: the command waits in the offline queue.
      await b.detachDevice('dev-1');
      second.redeliver();
      const offline = await backEnd.read(prefix, topology(prefix).downOffline, 1);
      expect(offline).toMatchObject([{ routingKey: 'dev-1', messageId: 'c-5', body: { op: 'move' } }]);
      expect(atA.items.map((c) => c.id)).toEqual(['c-5']);
      expect(atB.items.map((c) => c.id)).toEqual(['c-5']);
    });

    it('keeps the commands of a parked device and delivers them, in publish order, before live ones, on the node it attaches to next', async () => {
      fresh();
      const a = await node('node-a');
      const b = await node('node-b');
      const atA = commands(a);
      const atB = commands(b);
      await a.attachDevice('dev-p');
      await a.detachDevice('dev-p', { park: true });
      for (const n of [1, 2, 3]) await a.publishCommand('dev-p', { n }, { id: `c-${n}` });

      await b.attachDevice('dev-p');
      await b.publishCommand('dev-p', { n: 4 }, { id: 'c-4' });
      const got = [await atB.next(), await atB.next(), await atB.next(), await atB.next()];
      expect(got.map((c) => c.id)).toEqual(['c-1', 'c-2', 'c-3', 'c-4']);
      expect(got[0]).toMatchObject({ device: 'dev-p', body: { n: 1 } });
      for (const c of got) c.ack();
      expect(atA.items).toEqual([]);

      // Caught up, the device is parked no more: detached without parking, its commands go to the
      // shared offline queue again, and nothing of the backlog is left anywhere.
      await b.detachDevice('dev-p');
      await b.publishCommand('dev-p', { n: 5 }, { id: 'c-5' });
      const offline = await backEnd.read(prefix, topology(prefix).downOffline, 1);
      expect(offline.map((m) => m.messageId)).toEqual(['c-5']);
      expect(atB.items.map((c) => c.id)).toEqual(['c-1', 'c-2', 'c-3', 'c-4']);
    });

    it('does not deliver a parked command that expired while the device was away', async () => {
      fresh();
      const a = await node('node-a');
      const b = await node('node-b');
      const atB = commands(b);
      await a.attachDevice('dev-e');
      await a.detachDevice('dev-e', { park: true });
      await a.publishCommand('dev-e', { op: 'stale' }, { id: 'c-old', expirationMs: 1 });
      const publishedAt = Date.now();
      await a.publishCommand('dev-e', { op: 'fresh' }, { id: 'c-new', expirationMs: 60_000 });
      // The clock has to pass c-old's expiry (1 ms); RabbitMQ and the hub drop it at the head of the queue.
      while (Date.now() <= publishedAt + 2) await new Promise((resolve) => setImmediate(resolve));

      await b.attachDevice('dev-e');
      const first = await atB.next();
      expect(first.id).toBe('c-new');
      first.ack();
      await b.publishCommand('dev-e', { op: 'live' }, { id: 'c-live' });
      (await atB.next()).ack();
      expect(atB.items.map((c) => c.id)).toEqual(['c-new', 'c-live']);
    });

    it('routes a command for a parked device to its offline queue, not to a node it left', async () => {
      fresh();
      const a = await node('node-a');
      const atA = commands(a);
      await a.attachDevice('dev-q');
      await a.detachDevice('dev-q', { park: true });
      await a.publishCommand('dev-q', { n: 1 }, { id: 'c-1' });
      await a.publishCommand('ghost', { n: 2 }, { id: 'c-2' });
      // Only the command for the never-parked device reaches the shared offline queue.
      const offline = await backEnd.read(prefix, topology(prefix).downOffline, 1);
      expect(offline.map((m) => m.messageId)).toEqual(['c-2']);
      expect(atA.items).toEqual([]);
      // Same node again: caught up there.
      await a.attachDevice('dev-q');
      const c1 = await atA.next();
      expect(c1.id).toBe('c-1');
      c1.ack();
    });

    it('gives a command its expiry, and drops an expired one for good', async () => {
      fresh();
      const a = await node('node-a');
      const atA = commands(a);
      await a.attachDevice('dev-1');
      const before = Date.now();
      await a.publishCommand('dev-1', { op: 'old' }, { id: 'c-6', expirationMs: 60_000 });
      const after = Date.now();
      const c6 = await atA.next();
      expect(c6.expiresAt).toBeGreaterThanOrEqual(before + 60_000);
      expect(c6.expiresAt).toBeLessThanOrEqual(after + 60_000 + 1000);
      c6.drop();

      await a.publishCommand('dev-1', { op: 'new' }, { id: 'c-7' });
      const c7 = await atA.next();
      expect(c7.id).toBe('c-7');
      c7.ack();

      // Nothing of c-6 is left anywhere: once the device is gone, only what is published next
      // reaches the offline queue.
      await a.detachDevice('dev-1');
      await a.publishCommand('dev-1', { op: 'marker' }, { id: 'c-8' });
      const offline = await backEnd.read(prefix, topology(prefix).downOffline, 1);
      expect(offline.map((m) => m.messageId)).toEqual(['c-8']);
      expect(atA.items.map((c) => c.id)).toEqual(['c-6', 'c-7']);
    });

    it('publishes command outcome events with the command id to the queues bound for them', async () => {
      fresh();
      const a = await node('node-a');
      await backEnd.bindEventQueue(prefix, `${prefix}.acks`, '#.cmd_ack');
      await backEnd.bindEventQueue(prefix, `${prefix}.expired`, '*.cmd_expired');
      const at = new Date().toISOString();
      await a.publishCommandEvent({ device: 'dev-1', command: 'c-1', event: 'cmd_ack', node: 'node-a', session: 's-1', at });
      await a.publishCommandEvent({ device: 'dev-1', command: 'c-2', event: 'cmd_expired', node: 'node-a', session: null, at });
      expect(await backEnd.read(prefix, `${prefix}.acks`, 1)).toMatchObject([
        {
          routingKey: 'dev-1.cmd_ack',
          messageId: 'c-1',
          headers: { 'device-id': 'dev-1', 'node-id': 'node-a' },
          body: { device: 'dev-1', command: 'c-1', event: 'cmd_ack', node: 'node-a', session: 's-1', at },
        },
      ]);
      expect(await backEnd.read(prefix, `${prefix}.expired`, 1)).toMatchObject([
        { routingKey: 'dev-1.cmd_expired', body: { device: 'dev-1', command: 'c-2', event: 'cmd_expired', session: null } },
      ]);
    });

    it('publishes presence events with their session and seq', async () => {
      fresh();
      const a = await node('node-a');
      await backEnd.bindEventQueue(prefix, `${prefix}.presence`, '*.connected');
      const event = { device: 'dev-1', event: 'connected', node: 'node-a', session: 's-1', seq: 4, at: new Date().toISOString() } as const;
      await a.publishPresence(event);
      expect(await backEnd.read(prefix, `${prefix}.presence`, 1)).toMatchObject([{ routingKey: 'dev-1.connected', body: event }]);
    });

    it('announces a takeover to every node, the announcing one too', async () => {
      fresh();
      const a = await node('node-a');
      const b = await node('node-b');
      const atA = new EventLog<Takeover>(a, 'takeover');
      const atB = new EventLog<Takeover>(b, 'takeover');
      const takeover: Takeover = { device: 'dev-1', node: 'node-a', session: 'session-1', at: 1_700_000_000_000, seq: 6 };
      await a.announceTakeover(takeover);
      expect(await atA.next()).toEqual(takeover);
      expect(await atB.next()).toEqual(takeover);
    });
  });
}
