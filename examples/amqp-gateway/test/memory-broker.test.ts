/**
 * The in-process broker: the shared routing suite (the one `AmqpBroker` runs against RabbitMQ), over
 * a back end that reads the hub, and what is particular to the memory broker and its hub.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Broker, Command } from '../src/broker.js';
import { MemoryBroker } from '../src/memory-broker.js';
import { type HubMessage, MemoryExchangeHub, topicMatches } from '../src/memory-exchange-hub.js';
import { OFFLINE_QUEUE_MAX_LENGTH } from '../src/topology.js';
import { nextEnqueued } from './support/gateway-harness.js';
import { hubBackEnd } from './support/hub-back-end.js';
import { EventLog, routingSuite } from './support/routing-suite.js';

const hub = new MemoryExchangeHub();
const backEnd = hubBackEnd(hub);

routingSuite(
  'MemoryBroker',
  async ({ prefix, nodeId }) => {
    // No embedded queue: the suite's back end decides what is routable.
    const broker = new MemoryBroker({ nodeId, prefix, hub, retain: 0 });
    await broker.start();
    return broker;
  },
  async (prefix, nodeIds) => backEnd.cleanup(prefix, nodeIds),
  backEnd,
);

describe('MemoryBroker', () => {
  const brokers: Broker[] = [];
  afterEach(async () => {
    await Promise.all(brokers.splice(0).map((b) => b.stop()));
  });
  const start = async (options: ConstructorParameters<typeof MemoryBroker>[0]): Promise<MemoryBroker> => {
    const broker = new MemoryBroker(options);
    brokers.push(broker);
    await broker.start();
    return broker;
  };

  it('is embedded, connected once started and closed once stopped', async () => {
    const broker = new MemoryBroker({ nodeId: 'n', hub: new MemoryExchangeHub() });
    const states: string[] = [];
    broker.on('state', (s) => states.push(s));
    expect(broker.mode).toBe('embedded');
    expect(broker.state).toBe('connecting');
    await broker.start();
    await broker.stop();
    expect(states).toEqual(['connected', 'closed']);
    expect(await broker.publishUplink({ device: 'd', id: '1', topic: 't', body: 1 })).toEqual({ ok: false, reason: 'shutting_down' });
    await expect(broker.publishCommand('d', 1)).rejects.toThrow(/stopped/);
  });

  it('accepts uplinks with no back end, keeping the last `retain` of them and of the presence events', async () => {
    const broker = await start({ nodeId: 'n', hub: new MemoryExchangeHub(), retain: 2 });
    for (let i = 0; i < 3; i++) expect(await broker.publishUplink({ device: 'd', id: `${i}`, topic: 't', body: i })).toEqual({ ok: true });
    expect(broker.read(broker.embeddedUplinkQueue).map((m) => m.body)).toEqual([1, 2]);
    await broker.publishPresence({ device: 'd', event: 'connected', node: 'n', session: 's', seq: 2, at: new Date(0).toISOString() });
    expect(broker.read(broker.embeddedEventQueue)).toMatchObject([{ routingKey: 'd.connected', body: { event: 'connected' } }]);
  });

  it('nacks an uplink a full reject-publish queue refused (rejected), as RabbitMQ does, even when another queue took it', async () => {
    const hub = new MemoryExchangeHub();
    const broker = await start({ nodeId: 'n', hub });
    hub.declareQueue('app', { maxLength: 1, overflow: 'reject-publish' });
    hub.bindQueue('app', broker.topology.up, '#');
    const up = { device: 'd', topic: 't', body: 1 };
    expect(await broker.publishUplink({ ...up, id: '1' })).toEqual({ ok: true });
    expect(await broker.publishUplink({ ...up, id: '2' })).toEqual({ ok: false, reason: 'rejected' });
    expect(hub.read('app').map((m) => m.messageId)).toEqual(['1']);
  });

  it('refuses a command for a parked device whose offline queue is full, as RabbitMQ nacks it', async () => {
    const hub = new MemoryExchangeHub();
    const broker = await start({ nodeId: 'n', hub });
    await broker.attachDevice('dev-1');
    await broker.detachDevice('dev-1', { park: true });
    for (let i = 0; i < OFFLINE_QUEUE_MAX_LENGTH; i++) await broker.publishCommand('dev-1', i, { id: `c-${i}` });
    await expect(broker.publishCommand('dev-1', 'one too many', { id: 'c-full' })).rejects.toThrow('command c-full for dev-1 was not published (rejected)');
    expect(hub.depth(broker.topology.offlineQueue('dev-1'))).toBe(OFFLINE_QUEUE_MAX_LENGTH);
  });

  it('holds uplink confirms for tests, and settles them in order', async () => {
    const broker = await start({ nodeId: 'n', hub: new MemoryExchangeHub() });
    const hold = broker.holdConfirms();
    const settled: string[] = [];
    const publishes = ['a', 'b', 'c'].map((id) => broker.publishUplink({ device: 'd', id, topic: 't', body: id }).then(() => settled.push(id)));
    await hold.waitFor(3);
    expect(settled).toEqual([]);
    hold.release(1);
    await publishes[0];
    expect(settled).toEqual(['a']);
    hold.end();
    await Promise.all(publishes);
    expect(settled).toEqual(['a', 'b', 'c']);
  });

  it('sends commands it holds unsettled, and what waits in its queue, back to <p>.down when stopped', async () => {
    const shared = new MemoryExchangeHub();
    const a = await start({ nodeId: 'a', hub: shared });
    const b = await start({ nodeId: 'b', hub: shared });
    const atB = new EventLog<Command>(b, 'command');
    await a.attachDevice('dev-1');
    const delivered = new Promise<Command>((resolve) => a.once('command', resolve));
    await a.publishCommand('dev-1', 'x', { id: 'c-1' });
    await delivered; // and never settled
    await b.attachDevice('dev-1');
    await a.stop();
    const moved = await atB.next();
    expect(moved.id).toBe('c-1');
    moved.ack();
  });

  it('never delivers a command that expired in the queue', async () => {
    const shared = new MemoryExchangeHub();
    const broker = await start({ nodeId: 'n', hub: shared });
    const commands = new EventLog<Command>(broker, 'command');
    await broker.attachDevice('dev-1');
    const expired = new Promise<HubMessage>((resolve) => shared.once('expire', (_q, m) => resolve(m)));
    shared.publish(broker.topology.down, 'dev-1', { body: 'stale', messageId: 'old', expiresAt: Date.now() - 1 });
    await broker.publishCommand('dev-1', 'fresh', { id: 'new' });
    expect((await expired).messageId).toBe('old');
    const c = await commands.next();
    expect(c.id).toBe('new');
    c.ack();
    expect(commands.items.map((x) => x.id)).toEqual(['new']);
  });

  it('settles a command once: a second ack, drop or redeliver does nothing', async () => {
    const shared = new MemoryExchangeHub();
    const broker = await start({ nodeId: 'n', hub: shared });
    const commands = new EventLog<Command>(broker, 'command');
    await broker.attachDevice('dev-1');
    await broker.publishCommand('dev-1', 'x', { id: 'c-1' });
    const c = await commands.next();
    c.ack();
    await broker.detachDevice('dev-1');
    const offline = nextEnqueued(shared, broker.topology.downOffline);
    c.redeliver(); // ignored: already settled
    await broker.publishCommand('dev-1', 'marker', { id: 'marker' });
    expect((await offline).messageId).toBe('marker');
  });
});

describe('topicMatches', () => {
  const cases: [string, string, boolean][] = [
    ['#', 'a.b', true],
    ['#', '', true],
    ['a.*', 'a.b', true],
    ['a.*', 'a.b.c', false],
    ['a.#', 'a', true],
    ['a.#', 'a.b.c', true],
    ['*.temp', 'dev-1.temp', true],
    ['*.temp', 'dev-1.hum', false],
    ['a.#.z', 'a.z', true],
    ['a.#.z', 'a.b.c.z', true],
    ['a.#.z', 'a.b.c', false],
    ['*', 'a.b', false],
    ['dev-1.telemetry', 'dev-1.telemetry', true],
  ];
  for (const [pattern, key, match] of cases) {
    it(`${pattern} ${match ? 'matches' : 'does not match'} "${key}"`, () => expect(topicMatches(pattern, key)).toBe(match));
  }
});
