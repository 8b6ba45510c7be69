/**
 * AmqpBroker against a real RabbitMQ: the shared routing suite, then what only a real broker
 * shows — confirms and persistence, connections cut mid-stream (through a TCP proxy), publisher
 * blocking, and a clean stop.
 *
 * A memory alarm blocks every publisher of the node it is raised on, so it is tested on a node of
 * its own (memory-alarm.test.ts), never on the shared broker.
 */
import { execFile } from 'node:child_process';
import net from 'node:net';
import { Writable } from 'node:stream';
import { promisify } from 'node:util';
import { pino, type Logger } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { AmqpBroker, PUBLISH_ID_HEADER, type AmqpBrokerOptions } from '../src/amqp-broker.js';
import type { BrokerState, Command, PublishResult, Takeover } from '../src/broker.js';
import { topology } from '../src/topology.js';
import { amqpAddress, amqpUrlVia, AMQP_URL, deleteTopology, describeRabbit, rabbitBackEnd, uniquePrefix, withChannel } from './support/rabbit.js';
import { stateReached } from './support/broker-state.js';
import { EventLog, routingSuite } from './support/routing-suite.js';
import { TcpProxy } from './support/tcp-proxy.js';

const run = promisify(execFile);

async function rabbitmqctl(...args: string[]): Promise<string> {
  // list_bindings lists the whole broker's bindings, others' too (tens of MB with 50,000 queues).
  const { stdout } = await run('rabbitmqctl', args, { timeout: 30_000, maxBuffer: 512 * 1024 * 1024 });
  return stdout;
}

const hasRabbitmqctl = await rabbitmqctl('status').then(
  () => true,
  () => false,
);

const delay = (ms: number): Promise<'timeout'> => new Promise((resolve) => setTimeout(() => resolve('timeout'), ms));

describeRabbit('AmqpBroker', () => {
  routingSuite(
    'AmqpBroker',
    async ({ prefix, nodeId }) => {
      const broker = new AmqpBroker({ url: AMQP_URL, nodeId, prefix });
      await broker.start();
      return broker;
    },
    deleteTopology,
    rabbitBackEnd,
  );

  describe('against RabbitMQ', () => {
    const started: { prefix: string; nodeIds: string[]; brokers: AmqpBroker[]; proxies: TcpProxy[] }[] = [];
    let current: (typeof started)[number];

    const setup = (name: string): string => {
      current = { prefix: uniquePrefix(name), nodeIds: [], brokers: [], proxies: [] };
      started.push(current);
      return current.prefix;
    };
    const broker = (options: Partial<AmqpBrokerOptions> & { nodeId: string }): AmqpBroker => {
      current.nodeIds.push(options.nodeId);
      const b = new AmqpBroker({ url: AMQP_URL, prefix: current.prefix, ...options });
      current.brokers.push(b);
      return b;
    };
    const proxy = async (): Promise<{ proxy: TcpProxy; url: string }> => {
      const p = new TcpProxy(amqpAddress());
      current.proxies.push(p);
      return { proxy: p, url: amqpUrlVia(await p.start()) };
    };

    /** A broker (node n1, not started) reaching RabbitMQ through a proxy, quick to reconnect. */
    const brokerViaProxy = async (): Promise<{ p: TcpProxy; b: AmqpBroker }> => {
      const { proxy: p, url } = await proxy();
      return { p, b: broker({ nodeId: 'n1', url, reconnect: { initialDelay: 20, maxDelay: 100 } }) };
    };
    /** RabbitMQ unreachable for `b`: the proxy cuts every connection and refuses new ones, until `b` is reconnecting. */
    const cutOff = async (p: TcpProxy, b: AmqpBroker): Promise<void> => {
      p.pause();
      p.cut();
      await stateReached(b, 'reconnecting');
    };

    afterEach(async () => {
      for (const s of started.splice(0)) {
        await Promise.all(s.brokers.map((b) => b.stop()));
        await Promise.all(s.proxies.map((p) => p.close()));
        await deleteTopology(s.prefix, s.nodeIds);
      }
    });

    it('declares the topology with the arguments that let stranded commands find their device', async () => {
      const prefix = setup('topology');
      const t = topology(prefix);
      await broker({ nodeId: 'n1' }).start();
      await withChannel(async (ch) => {
        // Redeclaring with the same arguments succeeds; different ones would close the channel.
        await ch.assertExchange(t.down, 'direct', { durable: true, alternateExchange: t.downUnrouted });
        await ch.assertQueue(t.nodeQueue('n1'), {
          durable: true,
          arguments: { 'x-message-ttl': 30_000, 'x-dead-letter-exchange': t.downUnrouted },
        });
        await ch.checkQueue(t.downOffline);
        for (const x of [t.up, t.downUnrouted, t.events, t.control]) await ch.checkExchange(x);
      });
    });

    it('takes a takeover announcement without seq (from an earlier gateway version) as seq 0, and ignores a malformed one', async () => {
      const prefix = setup('old-takeover');
      const b = broker({ nodeId: 'n1' });
      await b.start();
      const takeovers = new EventLog<Takeover>(b, 'takeover');
      await withChannel(async (_ch, model) => {
        const ch = await model.createConfirmChannel();
        const control = topology(prefix).control;
        ch.publish(control, '', Buffer.from(JSON.stringify({ device: 'dev-1', node: 'old', session: 's-old', at: 1 })));
        ch.publish(control, '', Buffer.from(JSON.stringify({ device: 'dev-1', node: 'bad', session: 's-bad', at: 2, seq: 'x' })));
        ch.publish(control, '', Buffer.from(JSON.stringify({ device: 'dev-1', node: 'new', session: 's-new', at: 3, seq: 8 })));
        await ch.waitForConfirms();
      });
      expect(await takeovers.next()).toEqual({ device: 'dev-1', node: 'old', session: 's-old', at: 1, seq: 0 });
      expect(await takeovers.next()).toEqual({ device: 'dev-1', node: 'new', session: 's-new', at: 3, seq: 8 });
    });

    it('resolves ok only once confirmed, and the message is persistent with its headers', async () => {
      const prefix = setup('confirm');
      const b = broker({ nodeId: 'n1' });
      await b.start();
      await rabbitBackEnd.bindUplinkQueue(prefix, `${prefix}.app`, 'dev-1.*');
      expect(await b.publishUplink({ device: 'dev-1', id: 'm-1', topic: 'temp', body: { v: 1 } })).toEqual({ ok: true });
      const [m] = await rabbitBackEnd.read(prefix, `${prefix}.app`, 1);
      expect(m?.properties.deliveryMode).toBe(2);
      expect(m?.properties.contentType).toBe('application/json');
      expect(m?.properties.messageId).toBe('m-1');
      expect(m?.headers).toMatchObject({ 'device-id': 'dev-1', 'message-id': 'm-1', 'node-id': 'n1' });
      expect(m?.headers[PUBLISH_ID_HEADER]).toEqual(expect.any(String));
      expect(m?.body).toEqual({ v: 1 });
    });

    it('writes the publishes of one turn to its socket together, not one write per AMQP frame', async () => {
      const prefix = setup('cork');
      const b = broker({ nodeId: 'n1' });
      await b.start();
      await rabbitBackEnd.bindUplinkQueue(prefix, `${prefix}.app`, '#');
      // Count what reaches the kernel from sockets to RabbitMQ's port (a write or a writev each).
      const port = amqpAddress().port;
      const proto = net.Socket.prototype as unknown as Record<'_write' | '_writev', (...args: unknown[]) => unknown>;
      const original = { _write: proto._write, _writev: proto._writev };
      let writes = 0;
      for (const name of ['_write', '_writev'] as const) {
        proto[name] = function (this: net.Socket, ...args: unknown[]) {
          if (this.remotePort === port) writes++;
          return original[name].apply(this, args);
        };
      }
      try {
        // 100 uplinks in one turn.
        const results = Array.from({ length: 100 }, (_, i) => b.publishUplink({ device: 'dev-1', id: `m-${i}`, topic: 't', body: { i } }));
        expect(await Promise.all(results)).toEqual(results.map(() => ({ ok: true })));
      } finally {
        Object.assign(proto, original);
      }
      // amqplib writes each publish (its three frames) in one write: 100 writes without the cork.
      // With it, a turn's publishes go out together (measured: 27 writes, amqplib's mux writing in
      // batches as its buffers fill).
      expect(writes).toBeLessThan(50);
    });

    it('confirms a takeover announcement without waiting behind the uplinks still unconfirmed', async () => {
      const prefix = setup('control-lane');
      const b = broker({ nodeId: 'n1' });
      await b.start();
      await rabbitBackEnd.bindUplinkQueue(prefix, `${prefix}.app`, '#');
      // A burst's backlog: 20,000 uplinks queued in the outbox and the publisher's socket.
      let confirmed = 0;
      const uplinks = Array.from({ length: 20_000 }, (_, i) =>
        b.publishUplink({ device: `dev-${i % 100}`, id: `m-${i}`, topic: 't', body: { i } }).then((r) => {
          confirmed++;
          return r;
        }),
      );
      const takeovers = new EventLog<Takeover>(b, 'takeover');
      const takeover: Takeover = { device: 'dev-1', node: 'n1', session: 's-1', at: 1, seq: 1 };
      await b.announceTakeover(takeover);
      // Announced on the control connection: confirmed while most of the backlog is not (on the
      // publisher's channel it was confirmed after every uplink queued before it).
      expect(confirmed).toBeLessThan(uplinks.length / 2);
      expect(await takeovers.next()).toEqual(takeover);
      expect((await Promise.all(uplinks)).every((r) => r.ok)).toBe(true);
    });

    it('reports an uplink RabbitMQ refuses (nack) as rejected', async () => {
      const prefix = setup('nack');
      const b = broker({ nodeId: 'n1' });
      await b.start();
      await rabbitBackEnd.bindUplinkQueue(prefix, `${prefix}.full`, '#', { durable: true, maxLength: 1, overflow: 'reject-publish' });
      expect(await b.publishUplink({ device: 'dev-1', id: 'm-1', topic: 't', body: 1 })).toEqual({ ok: true });
      expect(await b.publishUplink({ device: 'dev-1', id: 'm-2', topic: 't', body: 2 })).toEqual({ ok: false, reason: 'rejected' });
      expect(b.state).toBe('connected');
    });

    it('loses no confirmed uplink when its connections are cut mid-stream, and downlink comes back', async () => {
      const prefix = setup('cut');
      const { proxy: p, url } = await proxy();
      const b = broker({ nodeId: 'n1', url, reconnect: { initialDelay: 20, maxDelay: 200 } });
      const states: BrokerState[] = [];
      b.on('state', (s) => states.push(s));
      const commands = new EventLog<Command>(b, 'command');
      await b.start();
      await rabbitBackEnd.bindUplinkQueue(prefix, `${prefix}.app`, '#');
      await b.attachDevice('dev-cmd');

      const N = 2000;
      const window = 200;
      const results: Promise<PublishResult>[] = [];
      const cuts: number[] = [];
      for (let i = 0; i < N; i++) {
        results.push(b.publishUplink({ device: `dev-${i % 20}`, id: `m-${i}`, topic: 't', body: { i } }));
        if (i === 600) cuts.push(p.cut());
        if (i === 1300) {
          // A second outage, after the first is over (else the two are one reconnect), and longer:
          // RabbitMQ is unreachable for a few attempts, then back.
          await stateReached(b, 'connected');
          p.pause();
          cuts.push(p.cut());
          await p.refusals(2);
          p.resume();
        }
        // Like devices, keep a bounded number of messages unconfirmed.
        if (i >= window) await results[i - window];
      }
      const settled = await Promise.all(results);
      expect(cuts).toEqual([3, 3]); // publisher, control and consumer connections
      expect(settled.filter((r) => r.ok).length).toBe(N);

      // Every confirmed message is in the back end's queue; duplicates are allowed. Their first
      // copies are in publish order: what was in flight on a cut link is sent again first, in the
      // order it was sent, then what waited in the outbox.
      const seen = new Set<string>();
      const firstCopies: string[] = [];
      let received = 0;
      await withChannel(async (ch) => {
        const deadline = Date.now() + 15_000;
        while (seen.size < N && Date.now() < deadline) {
          const m = await ch.get(`${prefix}.app`, { noAck: true });
          if (!m) continue;
          received += 1;
          const id = String(m.properties.messageId);
          if (!seen.has(id)) firstCopies.push(id);
          seen.add(id);
        }
      });
      expect(seen.size).toBe(N);
      expect(received).toBeGreaterThanOrEqual(N);
      expect(firstCopies).toEqual(Array.from({ length: N }, (_, i) => `m-${i}`));

      expect(states.filter((s) => s === 'reconnecting').length).toBe(2);
      expect(states.at(-1)).toBe('connected');
      // The binding of the device attached before the cuts is back, and so is the consumer.
      await b.publishCommand('dev-cmd', { op: 'after-cut' }, { id: 'c-1' });
      const command = await commands.next(10_000);
      expect(command).toMatchObject({ id: 'c-1', device: 'dev-cmd', body: { op: 'after-cut' } });
      command.ack();
    });

    it('keeps its link when a park is overtaken: another process deletes the new offline queue between its declare and its bind', async () => {
      const OVERTAKEN = 'park overtaken: the offline queue was deleted between its declare and its bind; parking again';
      // Another process catching these devices up (they reconnected there) probes their offline
      // queues with `queue.delete if-empty`, over and over, while this one parks them: a probe that
      // lands between a park's declare and its bind makes the bind fail 404, which closed the
      // binding channel and lost the link (seen in a stampede). Three rounds of attach, then park.
      const { prefix, log, b, states } = await watchedBroker('park-race');
      const devices = Array.from({ length: 300 }, (_, i) => `race-${i}`);
      const offline = devices.map((d) => topology(prefix).offlineQueue(d));
      let parking = true;
      const deleted = withChannel(async (_ch, model) => {
        const channels = await Promise.all(Array.from({ length: 8 }, () => model.createChannel()));
        await Promise.all(
          channels.map(async (ch, k) => {
            ch.on('error', () => undefined);
            for (let i = k; parking; i = (i + 8) % offline.length) await ch.deleteQueue(offline[i]!, { ifEmpty: true });
          }),
        );
      });
      try {
        // At least three rounds, more (up to ten) until the race has happened: on a loaded machine
        // the deleters may not land between a declare and its bind in the first three.
        for (let round = 0; round < 10 && (round < 3 || log.count(OVERTAKEN) === 0); round++) {
          await Promise.all(devices.map((d) => b.attachDevice(d)));
          await Promise.all(devices.map((d) => b.detachDevice(d, { park: true })));
        }
      } finally {
        parking = false;
        await deleted;
        await deleteTopology(prefix, [], devices); // the parked queues
      }
      expect(states).not.toContain('reconnecting');
      expect(b.state).toBe('connected');
      // The race did happen, and no park was given up.
      expect(log.count(OVERTAKEN)).toBeGreaterThan(0);
      expect(log.count('park given up: the offline queue was deleted between its declare and its bind 3 times')).toBe(0);
      // Still serving: a device attached now gets its command.
      const commands = new EventLog<Command>(b, 'command');
      await b.attachDevice('after-race');
      await b.publishCommand('after-race', { op: 'x' }, { id: 'c-race' });
      const command = await commands.next(10_000);
      expect(command).toMatchObject({ id: 'c-race', device: 'after-race' });
      command.ack();
    });

    it('parks into an offline queue declared with other arguments (bound as it is) without losing its link', async () => {
      // An offline queue declared with other arguments (other x-max-length, no x-expires) by another
      // version or an operator, while the device was connected: declaring it with this gateway's
      // arguments is refused 406. That failed the link, and the restore parked again, failing it
      // again, for ever. Now the queue is bound as it is.
      const { prefix, log, b, states } = await watchedBroker('park-406');
      const devices = Array.from({ length: 20 }, (_, i) => `old-${i}`);
      try {
        // Declared once the devices are attached: an attach deletes an empty offline queue (its catch-up probe).
        await Promise.all(devices.map((d) => b.attachDevice(d)));
        await withChannel(async (ch) => {
          for (const d of devices) await ch.assertQueue(topology(prefix).offlineQueue(d), { durable: true, arguments: { 'x-max-length': 5 } });
        });
        await Promise.all(devices.map((d) => b.detachDevice(d, { park: true })));
        expect(states).not.toContain('reconnecting');
        expect(b.state).toBe('connected');
        expect(log.count('the offline queue exists with other arguments than this gateway declares: bound as it is')).toBe(devices.length);
        // Parked: a command for each lands in its queue, and reaches the device at its next attach.
        for (const d of devices) await b.publishCommand(d, { op: 'x' }, { id: `c-${d}` });
        const commands = new EventLog<Command>(b, 'command');
        await b.attachDevice('old-3');
        const command = await commands.next(10_000);
        expect(command).toMatchObject({ id: 'c-old-3', device: 'old-3' });
        command.ack();
        await withChannel(async (ch) => expect((await ch.checkQueue(topology(prefix).offlineQueue('old-4'))).messageCount).toBe(1));
      } finally {
        await deleteTopology(prefix, [], devices);
      }
    });

    it('keeps its link when RabbitMQ refuses the catch-up probe or the park of one device (405: an exclusive queue of that name)', async () => {
      // Refusals other than 404 and 406 (403 without permission, 405 here) are the device's own:
      // failing the link for them failed it again at every restore (the attach never resolved).
      const { prefix, log, b, states } = await watchedBroker('refused-405');
      const queue = topology(prefix).offlineQueue('locked-1');
      await withChannel(async (ch) => {
        // Held exclusively by this connection while the broker attaches and parks the device.
        await ch.assertQueue(queue, { exclusive: true });
        await b.attachDevice('locked-1');
        await b.detachDevice('locked-1', { park: true });
      });
      expect(states).not.toContain('reconnecting');
      expect(b.state).toBe('connected');
      expect(log.count('probing the offline queue of a device was refused; its commands, if any, stay there')).toBe(1);
      expect(log.count("park refused by RabbitMQ: given up, the device's commands go to the unrouted path")).toBe(1);
      // The park was given up, the unbind was not: a command for the device goes to <p>.down.offline.
      await b.publishCommand('locked-1', { op: 'x' }, { id: 'c-locked' });
      const offline = await rabbitBackEnd.read(prefix, topology(prefix).downOffline, 1);
      expect(offline.map((m) => m.messageId)).toEqual(['c-locked']);
    });

    it('announces a takeover again on the next link when its link is cut before the confirm', async () => {
      const prefix = setup('control-cut');
      const { proxy: p, url } = await proxy();
      const b = broker({ nodeId: 'n1', url, reconnect: { initialDelay: 20, maxDelay: 200 } });
      await b.start();
      const takeovers = new EventLog<Takeover>(b, 'takeover');
      const takeover: Takeover = { device: 'dev-1', node: 'n1', session: 's-1', at: 1, seq: 1 };
      const announced = b.announceTakeover(takeover);
      // Cut before amqplib has written it (it writes from a later tick): lost with the link.
      p.cut();
      await expect(announced).resolves.toBeUndefined();
      // Received (once or, if RabbitMQ had it before the cut, twice: the same announcement).
      expect(await takeovers.next(10_000)).toEqual(takeover);
      expect(b.state).toBe('connected');
    });

    it('is connected again before it sends the uplinks held while RabbitMQ was unreachable', async () => {
      // Sent first, a backlog this size made RabbitMQ answer the consumers' set-up late after a
      // restart, and the process went `connected` (/healthz 200) only then. Now nothing is sent
      // before the link is ready, so no held uplink is settled before the state is `connected`.
      const prefix = setup('held-uplinks');
      await rabbitBackEnd.bindUplinkQueue(prefix, `${prefix}.app`, '#');
      const { p, b } = await brokerViaProxy();
      await b.start();
      await cutOff(p, b);
      const order: string[] = [];
      b.on('state', (s) => order.push(s));
      const held = Array.from({ length: 2000 }, (_, i) =>
        b.publishUplink({ device: 'd', id: `m-${i}`, topic: 't', body: i }).then((r) => {
          order.push('settled');
          return r;
        }),
      );
      p.resume();
      const results = await Promise.all(held);
      expect(results.filter((r) => !r.ok)).toEqual([]);
      expect(order.indexOf('connected')).toBeGreaterThanOrEqual(0);
      expect(order.indexOf('connected')).toBeLessThan(order.indexOf('settled'));
    });

    it('binds a device attached while RabbitMQ is unreachable once it is back', async () => {
      const prefix = setup('attach-down');
      const { p, b } = await brokerViaProxy();
      const commands = new EventLog<Command>(b, 'command');
      await b.start();
      await b.attachDevice('dev-gone');
      await cutOff(p, b);
      let attached = false;
      const attaching = b.attachDevice('dev-new').then(() => (attached = true));
      await b.detachDevice('dev-gone');
      await p.refusals(1);
      expect(attached).toBe(false);
      p.resume();
      await attaching;
      expect(b.state).toBe('connected');

      await b.publishCommand('dev-new', { op: 1 }, { id: 'c-new' });
      expect((await commands.next()).id).toBe('c-new');
      // dev-gone was detached while the link was down: its binding is gone too.
      await b.publishCommand('dev-gone', { op: 2 }, { id: 'c-gone' });
      const offline = await rabbitBackEnd.read(prefix, topology(prefix).downOffline, 1);
      expect(offline.map((m) => m.messageId)).toEqual(['c-gone']);
    });

    it.skipIf(!hasRabbitmqctl)(
      'is connected again before the bindings are restored, then restores them, with devices attaching and detaching meanwhile',
      { timeout: 60_000 },
      async () => {
        const prefix = setup('restore');
        const t = topology(prefix);
        const { p, b } = await brokerViaProxy();
        await b.start();
        const devices = Array.from({ length: 3000 }, (_, i) => `dev-${i}`);
        await Promise.all(devices.map((d) => b.attachDevice(d)));
        await cutOff(p, b);
        await b.detachDevice('dev-0'); // while down: unbound by the restore
        p.resume();
        await stateReached(b, 'connected');
        // The restore has begun (3 batches of 1000 binds): a device attaches (bound behind the first
        // batch's binds on its channel), then one of the last batch detaches.
        await b.attachDevice('dev-new');
        await b.detachDevice('dev-2999');

        const expected = [...devices.slice(1, 2999), 'dev-new'].sort();
        const bound = async (): Promise<string[]> => {
          const out = await rabbitmqctl('list_bindings', '-q', 'source_name', 'destination_name', 'routing_key');
          return out
            .split('\n')
            .map((line) => line.split('\t'))
            .filter(([source, destination]) => source === t.down && destination === t.nodeQueue('n1'))
            .map(([, , key]) => key ?? '')
            .sort();
        };
        let now = await bound();
        const deadline = Date.now() + 30_000;
        while (now.join() !== expected.join() && Date.now() < deadline) now = await bound();
        expect(now.length).toBe(expected.length);
        expect(now).toEqual(expected);
      },
    );

    /**
     * Slot 0 of node n1 holds dev-1, then its process "crashes" (its connection goes, nothing is
     * unbound), and a command for dev-1 is routed into the dead slot's queue through the stale
     * binding, where it waits: no consumer, and no alternate exchange for a routed message.
     */
    async function strand(prefix: string): Promise<void> {
      const { proxy: p, url } = await proxy();
      const crashed = broker({ nodeId: 'n1', slot: '0', url });
      await crashed.start();
      await crashed.attachDevice('dev-1');
      await cutOff(p, crashed);
      await withChannel(async (_ch, model) => {
        const confirm = await model.createConfirmChannel();
        confirm.publish(topology(prefix).down, 'dev-1', Buffer.from('{"op":"unlock"}'), { messageId: 'c-stranded', persistent: true });
        await confirm.waitForConfirms();
      });
      await withChannel(async (ch) => expect((await ch.checkQueue(topology(prefix).nodeQueue('n1', '0'))).messageCount).toBe(1));
    }

    /** A logger whose messages can be awaited (resolves once one with `msg` was logged) and counted. */
    /** A started broker (node n1) on a new prefix, its log watched at debug level and its states recorded. */
    async function watchedBroker(name: string): Promise<{ prefix: string; log: ReturnType<typeof logWatch>; b: AmqpBroker; states: BrokerState[] }> {
      const prefix = setup(name);
      const log = logWatch('debug');
      const b = broker({ nodeId: 'n1', logger: log.logger });
      const states: BrokerState[] = [];
      b.on('state', (s) => states.push(s));
      await b.start();
      return { prefix, log, b, states };
    }
    function logWatch(level: 'info' | 'debug' = 'info'): { logger: Logger; logged: (msg: string) => Promise<void>; count: (msg: string) => number } {
      const seen = new Set<string>();
      const counts = new Map<string, number>();
      const waiters = new Map<string, () => void>();
      const stream = new Writable({
        write(chunk: Buffer, _enc, done) {
          for (const line of chunk.toString('utf8').split('\n')) {
            if (!line) continue;
            const { msg } = JSON.parse(line) as { msg: string };
            seen.add(msg);
            counts.set(msg, (counts.get(msg) ?? 0) + 1);
            waiters.get(msg)?.();
          }
          done();
        },
      });
      return {
        logger: pino({ level }, stream),
        logged: (msg) => (seen.has(msg) ? Promise.resolve() : new Promise((resolve) => waiters.set(msg, resolve))),
        count: (msg) => counts.get(msg) ?? 0,
      };
    }
    const HOLDING = 'stray command: holding it for its device to come back';

    it('a process taking over a crashed slot holds a stranded command for the grace, then sends it on and removes the stale binding', async () => {
      const prefix = setup('stranded');
      await strand(prefix);
      // A new process takes over slot 0. It does not hold dev-1, which stays connected nowhere:
      // once the grace is over, the command must reach the offline queue, not loop or vanish.
      const watch = logWatch();
      const takeover = broker({ nodeId: 'n1', slot: '0', strayGrace: 300, logger: watch.logger });
      await takeover.start();
      await watch.logged(HOLDING);
      const offline = await rabbitBackEnd.read(prefix, topology(prefix).downOffline, 1);
      expect(offline.map((m) => m.messageId)).toEqual(['c-stranded']);
      // The stale binding is gone: the next command goes straight to the offline queue too.
      await takeover.publishCommand('dev-1', { op: 'lock' }, { id: 'c-next' });
      const next = await rabbitBackEnd.read(prefix, topology(prefix).downOffline, 1);
      expect(next.map((m) => m.messageId)).toEqual(['c-next']);
    });

    it('delivers a stranded command to its device when it comes back to the process that took the slot over, before newer ones', async () => {
      const prefix = setup('stranded-back');
      await strand(prefix);
      const watch = logWatch();
      const takeover = broker({ nodeId: 'n1', slot: '0', logger: watch.logger });
      const commands = new EventLog<Command>(takeover, 'command');
      await takeover.start();
      await watch.logged(HOLDING);
      await takeover.attachDevice('dev-1');
      await takeover.publishCommand('dev-1', { op: 'lock' }, { id: 'c-next' });
      const first = await commands.next();
      const second = await commands.next();
      expect([first.id, second.id]).toEqual(['c-stranded', 'c-next']);
      first.ack();
      second.ack();
      await withChannel(async (ch) => expect((await ch.checkQueue(topology(prefix).downOffline)).messageCount).toBe(0));
    });

    it('sends a stranded command to the node its device came back to, within the grace', async () => {
      const prefix = setup('stranded-elsewhere');
      await strand(prefix);
      const watch = logWatch();
      const takeover = broker({ nodeId: 'n1', slot: '0', logger: watch.logger });
      await takeover.start();
      await watch.logged(HOLDING);
      // dev-1 comes back on node n2: bound there, then its `connected` presence event (what a
      // session does after its attach) tells n1 where to send the held command.
      const other = broker({ nodeId: 'n2' });
      const commands = new EventLog<Command>(other, 'command');
      await other.start();
      await other.attachDevice('dev-1');
      await other.publishPresence({ device: 'dev-1', event: 'connected', node: 'n2', session: 's-2', seq: 2, at: new Date().toISOString() });
      const command = await commands.next();
      expect(command.id).toBe('c-stranded');
      command.ack();
    });

    it('sends a stranded command to the node its device came back to before the slot was taken over', async () => {
      const prefix = setup('stranded-before');
      await strand(prefix);
      // dev-1 is back on node n2 (bound, `connected` published) before any process takes slot 0
      // over: no presence event will come. The process taking the slot over asks where dev-1 is.
      const other = broker({ nodeId: 'n2' });
      const commands = new EventLog<Command>(other, 'command');
      await other.start();
      await other.attachDevice('dev-1');
      const takeover = broker({ nodeId: 'n1', slot: '0', strayGrace: 60_000 });
      await takeover.start();
      const command = await commands.next();
      expect(command.id).toBe('c-stranded');
      command.ack();
    });

    it('keeps a command’s deadline when it is redelivered', async () => {
      setup('deadline');
      const b = broker({ nodeId: 'n1' });
      const commands = new EventLog<Command>(b, 'command');
      await b.start();
      await b.attachDevice('dev-1');
      await b.publishCommand('dev-1', { op: 1 }, { id: 'c-1', expirationMs: 60_000 });
      const first = await commands.next();
      first.redeliver(); // still attached here: it comes back to this node
      const second = await commands.next();
      expect(second.id).toBe('c-1');
      expect(Math.abs((second.expiresAt ?? 0) - (first.expiresAt ?? 0))).toBeLessThanOrEqual(5);
      second.ack();
    });

    it('settles waiting publishes as shutting_down when stopped while RabbitMQ is unreachable', async () => {
      setup('stop-down');
      const { p, b } = await brokerViaProxy();
      await b.start();
      await cutOff(p, b);
      const waiting = b.publishUplink({ device: 'dev-1', id: 'm-1', topic: 't', body: 1 });
      await p.refusals(1);
      const stopping = Date.now();
      await b.stop();
      // Closing the cut link must not wait for a close-ok that can never come.
      expect(Date.now() - stopping).toBeLessThan(1000);
      expect(await waiting).toEqual({ ok: false, reason: 'shutting_down' });
      expect(await b.publishUplink({ device: 'dev-1', id: 'm-2', topic: 't', body: 2 })).toEqual({ ok: false, reason: 'shutting_down' });
      expect(b.state).toBe('closed');
    });

    it('rejects start when RabbitMQ is unreachable, and leaves nothing behind', async () => {
      setup('unreachable');
      const { proxy: p, url } = await proxy();
      p.pause();
      const sockets = await quietSockets();
      const b = broker({ nodeId: 'n1', url });
      await expect(b.start()).rejects.toThrow();
      expect(b.state).toBe('closed');
      // amqplib destroys the socket of a failed connect; its handle (and the proxy's) go a tick later.
      expect(await quietSockets(sockets)).toBeLessThanOrEqual(sockets);
    });

    it('leaves no socket or timer behind after stop', async () => {
      setup('stop');
      const sockets = await quietSockets();
      const timers = countResources('Timeout');
      const b = broker({ nodeId: 'n1' });
      await b.start();
      expect(countResources('TCPSocketWrap')).toBeGreaterThanOrEqual(sockets + 3); // publisher, control, consumer
      await b.attachDevice('dev-1');
      await b.publishUplink({ device: 'dev-1', id: 'm-1', topic: 't', body: 1 });
      await b.stop();
      expect(b.state).toBe('closed');
      expect(countResources('TCPSocketWrap')).toBeLessThanOrEqual(sockets);
      expect(countResources('Timeout')).toBeLessThanOrEqual(timers);
    });
  });
});

function countResources(kind: string): number {
  return process.getActiveResourcesInfo().filter((r) => r === kind).length;
}

/**
 * The number of TCP sockets once those closing (earlier tests' helper connections, reset proxy
 * sockets) are gone: polls until there are at most `target`, for 2 s at most.
 */
async function quietSockets(target = 0): Promise<number> {
  const deadline = Date.now() + 2000;
  while (countResources('TCPSocketWrap') > target && Date.now() < deadline) await delay(10);
  return countResources('TCPSocketWrap');
}
