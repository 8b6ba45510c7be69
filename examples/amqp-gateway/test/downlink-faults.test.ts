/**
 * Downlink faults: a command that cannot be written to a device (dead-lettered, never a crash), and
 * a command published without a message id (one id at every delivery). Against the MemoryBroker
 * and RabbitMQ (the RabbitMQ half skipped when it is not reachable; see support/rabbit.ts).
 */
import type { Options } from 'amqplib';
import { afterEach, describe, expect, it } from 'vitest';
import { AmqpBroker } from '../src/amqp-broker.js';
import { type Broker, DEAD_LETTER_REASON_HEADER } from '../src/broker.js';
import { DeviceClient } from './support/device-client.js';
import { metric, nextEnqueued, startTestNode, startTestNodeWith, stopGateways, type TestNode, token } from './support/gateway-harness.js';
import { stateReached, watchParks } from './support/broker-state.js';
import { AMQP_URL, amqpAddress, amqpUrlVia, deleteTopology, describeRabbit, rabbitBackEnd, uniquePrefix, withChannel } from './support/rabbit.js';
import { TcpProxy } from './support/tcp-proxy.js';

const topologies: { prefix: string; nodeIds: string[]; devices?: string[] }[] = [];
const proxies: TcpProxy[] = [];

afterEach(async () => {
  await stopGateways();
  for (const p of proxies.splice(0)) await p.close();
  for (const { prefix, nodeIds, devices } of topologies.splice(0)) await deleteTopology(prefix, nodeIds, devices);
});

/** JSON that JSON.parse takes and JSON.stringify of the parsed value cannot (call stack). */
const DEEP = 100_000;
const deepJson = (): string => `${'['.repeat(DEEP)}${']'.repeat(DEEP)}`;

/** Publish as a back end would (confirmed), with the properties given. */
async function publishRaw(exchange: string, routingKey: string, content: string, options: Options.Publish = {}): Promise<void> {
  await withChannel(async (_ch, model) => {
    const confirm = await model.createConfirmChannel();
    confirm.publish(exchange, routingKey, Buffer.from(content), { contentType: 'application/json', persistent: true, ...options });
    await confirm.waitForConfirms();
  });
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A device that does not acknowledge, sent more commands than its session holds (2 written, 2
 * queued, 4 held): nothing loops back to the broker meanwhile, and once it acknowledges it gets
 * them all, the first 8 in publish order (the 4 beyond waited 1 s and went back to the broker).
 */
async function queueFull(node: TestNode<Broker>): Promise<void> {
  const { client } = await DeviceClient.hello(node.port, 'dev-q', token('dev-q'));
  const ids = Array.from({ length: 12 }, (_, i) => `c-${i}`);
  for (const [i, id] of ids.entries()) await node.broker.publishCommand('dev-q', i, { id });
  expect((await client.next('cmd')).id).toBe('c-0');
  expect((await client.next('cmd')).id).toBe('c-1');
  await sleep(500);
  // Before the fix each command beyond the session's queue went round through the broker and
  // back, without pause: thousands of times in these 500 ms.
  expect(await metric(node.metrics, 'gateway_downlink_redelivered_total', { reason: 'queue_full' })).toBe(0);
  expect(client.all('cmd')).toHaveLength(2);
  client.send({ type: 'cmd_ack', id: 'c-0' });
  client.send({ type: 'cmd_ack', id: 'c-1' });
  const seen: string[] = [];
  while (seen.length < ids.length - 2) {
    const cmd = await client.next('cmd');
    seen.push(cmd.id);
    client.send({ type: 'cmd_ack', id: cmd.id });
  }
  expect(seen.slice(0, 6)).toEqual(ids.slice(2, 8)); // what the session held, in publish order
  expect([...seen].sort()).toEqual(ids.slice(2).sort()); // and the 4 that waited and went round
  expect(await metric(node.metrics, 'gateway_downlink_redelivered_total', { reason: 'queue_full' })).toBeLessThanOrEqual(8);
}

/** Publish a command for `device` and expect it in `<p>.down.offline`, dead-lettered for `reason`. */
async function expectDeadLettered(node: TestNode, device: string, body: unknown, id: string, reason: string): Promise<void> {
  const landed = nextEnqueued(node.hub, node.broker.topology.downOffline);
  await node.broker.publishCommand(device, body, { id });
  const m = await landed;
  expect(m.messageId).toBe(id);
  expect(m.headers[DEAD_LETTER_REASON_HEADER]).toBe(reason);
}

const QUEUE_FULL_LIMITS = { maxPendingCommands: 2, maxQueuedCommands: 2, maxHeldCommands: 4, cmdAckTimeout: 60_000 };

describe('embedded broker', () => {
  it('dead-letters a command it cannot encode, counts it, and goes on delivering (no crash at the ack timeout)', async () => {
    const node = await startTestNode({ cmdAckTimeout: 100 });
    const { client } = await DeviceClient.hello(node.port, 'dev-p', token('dev-p'));
    await expectDeadLettered(node, 'dev-p', JSON.parse(deepJson()), 'poison', 'unencodable');
    await node.broker.publishCommand('dev-p', 'fine', { id: 'ok-1' });
    expect(await client.next('cmd')).toEqual({ type: 'cmd', id: 'ok-1', body: 'fine' });
    client.send({ type: 'cmd_ack', id: 'ok-1' });
    await sleep(300); // past the ack timeout of anything the session held
    client.send({ type: 'ping' });
    await client.next('pong');
    expect(client.all('cmd').map((c) => c.id)).toEqual(['ok-1']);
    expect(await metric(node.metrics, 'gateway_downlink_dead_lettered_total', { reason: 'unencodable' })).toBe(1);
    expect(await metric(node.metrics, 'gateway_downlink_delivered_total')).toBe(1);
  });

  it('dead-letters a command whose id a device could not acknowledge, and the next command is delivered', async () => {
    const node = await startTestNode();
    const { client } = await DeviceClient.hello(node.port, 'dev-i', token('dev-i'));
    await expectDeadLettered(node, 'dev-i', 'x', 'has space', 'invalid_id');
    await node.broker.publishCommand('dev-i', 'fine', { id: 'ok-1' });
    expect(await client.next('cmd')).toEqual({ type: 'cmd', id: 'ok-1', body: 'fine' });
    client.send({ type: 'cmd_ack', id: 'ok-1' });
    client.send({ type: 'ping' });
    await client.next('pong'); // still connected: its ack was valid
    expect(client.all('cmd').map((c) => c.id)).toEqual(['ok-1']);
    expect(await metric(node.metrics, 'gateway_downlink_dead_lettered_total', { reason: 'invalid_id' })).toBe(1);
  });

  it('dead-letters a command whose line would be over the protocol\'s 64 KiB, and the next command is delivered', async () => {
    const node = await startTestNode();
    const { client } = await DeviceClient.hello(node.port, 'dev-l', token('dev-l'));
    await expectDeadLettered(node, 'dev-l', 'x'.repeat(65_536), 'big', 'too_large');
    // Multi-byte characters: under the bound in UTF-16 code units, over it in bytes.
    await expectDeadLettered(node, 'dev-l', 'é'.repeat(40_000), 'big-utf8', 'too_large');
    await node.broker.publishCommand('dev-l', 'x'.repeat(60_000), { id: 'ok-1' });
    expect((await client.next('cmd')).id).toBe('ok-1');
    client.send({ type: 'cmd_ack', id: 'ok-1' });
    client.send({ type: 'ping' });
    await client.next('pong');
    expect(await metric(node.metrics, 'gateway_downlink_dead_lettered_total', { reason: 'too_large' })).toBe(2);
  });

  it('holds what a full session cannot take instead of looping it through the broker, in order', async () => {
    await queueFull(await startTestNode(QUEUE_FULL_LIMITS));
  });

  it('writes a parked backlog larger than the queue in publish order', async () => {
    const node = await startTestNode();
    const { client: first } = await DeviceClient.hello(node.port, 'dev-b', token('dev-b'));
    await first.close();
    await node.gateway.listener.waitForConnections('==', 0);
    await sleep(50); // parked
    const ids = Array.from({ length: 200 }, (_, i) => `b-${i}`);
    for (const [i, id] of ids.entries()) await node.broker.publishCommand('dev-b', i, { id });
    const { client } = await DeviceClient.hello(node.port, 'dev-b', token('dev-b'));
    const seen: string[] = [];
    while (seen.length < ids.length) {
      const cmd = await client.next('cmd');
      seen.push(cmd.id);
      client.send({ type: 'cmd_ack', id: cmd.id });
    }
    expect(seen).toEqual(ids);
    expect(await metric(node.metrics, 'gateway_downlink_redelivered_total', { reason: 'queue_full' })).toBe(0);
  });

  it('keeps the id it gave a command published without one across redeliveries', async () => {
    const node = await startTestNode({ cmdAckTimeout: 100 });
    const { client } = await DeviceClient.hello(node.port, 'dev-n', token('dev-n'));
    node.hub.publish(node.broker.topology.down, 'dev-n', { body: 'no id' });
    const first = await client.next('cmd');
    const second = await client.next('cmd'); // after the ack timeout
    expect(second).toEqual(first);
    client.send({ type: 'cmd_ack', id: first.id });
    client.send({ type: 'ping' });
    await client.next('pong');
    expect(await metric(node.metrics, 'gateway_downlink_acked_total')).toBe(1);
  });
});

describeRabbit('over RabbitMQ', () => {
  /** A node on RabbitMQ under a fresh prefix; `device` is the one the test parks (its offline queue is removed after). */
  async function amqpNode(name: string, device: string, cmdAckTimeout: number, limits: object = {}) {
    const prefix = uniquePrefix(name);
    const nodeId = 'gw-f';
    topologies.push({ prefix, nodeIds: [nodeId], devices: [device] });
    const node = await startTestNodeWith({ nodeId, cmdAckTimeout, ...limits }, () => new AmqpBroker({ url: AMQP_URL, nodeId, prefix }));
    return { node, prefix };
  }

  it('holds what a full session cannot take instead of looping it through RabbitMQ, in order', async () => {
    const { node } = await amqpNode('qfull', 'dev-q', 60_000, QUEUE_FULL_LIMITS);
    await queueFull(node);
  });

  it('dead-letters a command it cannot encode to <p>.down.offline, and goes on delivering (no crash at the ack timeout)', async () => {
    const { node, prefix } = await amqpNode('poison', 'dev-p', 200);
    const { client } = await DeviceClient.hello(node.port, 'dev-p', token('dev-p'));
    await publishRaw(node.broker.topology.down, 'dev-p', deepJson(), { messageId: 'poison' });
    await publishRaw(node.broker.topology.down, 'dev-p', '"fine"', { messageId: 'ok-1' });
    expect(await client.next('cmd')).toEqual({ type: 'cmd', id: 'ok-1', body: 'fine' });
    client.send({ type: 'cmd_ack', id: 'ok-1' });
    const [dead] = await rabbitBackEnd.read(prefix, node.broker.topology.downOffline, 1);
    expect(dead?.messageId).toBe('poison');
    expect(dead?.routingKey).toBe('dev-p');
    expect(dead?.headers[DEAD_LETTER_REASON_HEADER]).toBe('unencodable');
    await sleep(500); // past the ack timeout of anything the session held
    client.send({ type: 'ping' });
    await client.next('pong');
    expect(client.all('cmd').map((c) => c.id)).toEqual(['ok-1']);
    expect(await metric(node.metrics, 'gateway_downlink_dead_lettered_total', { reason: 'unencodable' })).toBe(1);
  });

  it('dead-letters a 2 MiB command to <p>.down.offline instead of closing its device at every connect', async () => {
    const { node, prefix } = await amqpNode('huge', 'dev-h', 60_000);
    const { client } = await DeviceClient.hello(node.port, 'dev-h', token('dev-h'));
    await publishRaw(node.broker.topology.down, 'dev-h', JSON.stringify('x'.repeat(2 * 1024 * 1024)), { messageId: 'huge' });
    await publishRaw(node.broker.topology.down, 'dev-h', '"fine"', { messageId: 'ok-1' });
    expect(await client.next('cmd')).toEqual({ type: 'cmd', id: 'ok-1', body: 'fine' });
    client.send({ type: 'cmd_ack', id: 'ok-1' });
    const [dead] = await rabbitBackEnd.read(prefix, node.broker.topology.downOffline, 1);
    expect(dead?.messageId).toBe('huge');
    expect(dead?.headers[DEAD_LETTER_REASON_HEADER]).toBe('too_large');
    client.send({ type: 'ping' });
    await client.next('pong'); // the same connection: never closed for it
    expect(await metric(node.metrics, 'gateway_downlink_dead_lettered_total', { reason: 'too_large' })).toBe(1);
  });

  it('delivers commands whose x-death header is not what RabbitMQ writes (online and parked) without failing its link', async () => {
    const { node } = await amqpNode('xdeath', 'dev-x', 60_000);
    const parked = watchParks(node.broker as AmqpBroker)();
    const states: string[] = [];
    node.broker.on('state', (s) => states.push(s));
    const odd: unknown[] = [[null], [1], ['s'], [[]], []];
    // Online: each delivered in order, the link never lost.
    const first = await DeviceClient.hello(node.port, 'dev-x', token('dev-x'));
    for (const [i, deaths] of odd.entries()) await publishRaw(node.broker.topology.down, 'dev-x', String(i), { messageId: `on-${i}`, headers: { 'x-death': deaths } });
    for (let i = 0; i < odd.length; i++) {
      const cmd = await first.client.next('cmd');
      expect(cmd.id).toBe(`on-${i}`);
      first.client.send({ type: 'cmd_ack', id: cmd.id });
    }
    first.client.send({ type: 'ping' });
    await first.client.next('pong');
    // Parked: published while it is offline, delivered by its catch-up at the next connect.
    await first.client.close();
    await parked;
    for (const [i, deaths] of odd.entries()) await publishRaw(node.broker.topology.down, 'dev-x', String(i), { messageId: `off-${i}`, headers: { 'x-death': deaths } });
    const second = await DeviceClient.hello(node.port, 'dev-x', token('dev-x'));
    for (let i = 0; i < odd.length; i++) {
      const cmd = await second.client.next('cmd');
      expect(cmd.id).toBe(`off-${i}`);
      second.client.send({ type: 'cmd_ack', id: cmd.id });
    }
    expect(states).not.toContain('reconnecting');
  });

  it('keeps the id it gave a command published without one across redeliveries, into cmd_ack', async () => {
    const { node, prefix } = await amqpNode('noid', 'dev-n', 200);
    await rabbitBackEnd.bindEventQueue(prefix, `${prefix}.acks`, '#.cmd_ack');
    const { client } = await DeviceClient.hello(node.port, 'dev-n', token('dev-n'));
    await publishRaw(node.broker.topology.down, 'dev-n', '"no id"');
    const first = await client.next('cmd');
    const second = await client.next('cmd'); // after the ack timeout: republished to <p>.down, back here
    expect(second).toEqual(first);
    client.send({ type: 'cmd_ack', id: first.id });
    const [ack] = await rabbitBackEnd.read(prefix, `${prefix}.acks`, 1);
    expect(ack?.body).toMatchObject({ event: 'cmd_ack', command: first.id, device: 'dev-n' });
  });

  it('does not park a device at a restore when it connected to another node during the outage', { timeout: 60_000 }, async () => {
    const prefix = uniquePrefix('restore-park');
    topologies.push({ prefix, nodeIds: ['gw-a', 'gw-b'], devices: ['dev-r'] });
    const proxy = new TcpProxy(amqpAddress());
    proxies.push(proxy);
    const url = amqpUrlVia(await proxy.start());
    const a = await startTestNodeWith({ nodeId: 'gw-a' }, () => new AmqpBroker({ url, nodeId: 'gw-a', prefix, reconnect: { initialDelay: 20, maxDelay: 100 } }));
    const b = await startTestNodeWith({ nodeId: 'gw-b' }, () => new AmqpBroker({ url: AMQP_URL, nodeId: 'gw-b', prefix }));
    const offline = a.broker.topology.offlineQueue('dev-r');
    const exists = (): Promise<boolean> => withChannel(async (ch) => ch.checkQueue(offline).then(() => true, () => false));

    const { client: onA } = await DeviceClient.hello(a.port, 'dev-r', token('dev-r'));
    // RabbitMQ unreachable for node a; the device leaves it then (its park is postponed) and
    // connects to node b, whose takeover announcement node a cannot hear.
    proxy.pause();
    proxy.cut();
    await stateReached(a.broker, 'reconnecting');
    await onA.close();
    await a.gateway.listener.waitForConnections('==', 0);
    const { client: onB } = await DeviceClient.hello(b.port, 'dev-r', token('dev-r'));
    proxy.resume();
    await stateReached(a.broker, 'connected');

    // Node a restores its bindings: it parks the device, asks where it is, node b answers, and
    // node a takes the park back: no offline queue is left to copy the device's commands into.
    const deadline = Date.now() + 10_000;
    await sleep(300);
    while ((await exists()) && Date.now() < deadline) await sleep(100);
    expect(await exists()).toBe(false);
    await b.broker.publishCommand('dev-r', 'live', { id: 'c-live' });
    expect(await onB.next('cmd')).toEqual({ type: 'cmd', id: 'c-live', body: 'live' });
    onB.send({ type: 'cmd_ack', id: 'c-live' });
    await sleep(300);
    expect(await exists()).toBe(false);
  });
});
