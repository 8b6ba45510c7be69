/**
 * The gateway node as a whole: its listener, devices(), healthy() and drain().
 */
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { hmacAuthenticate } from '../src/auth.js';
import { startGateway } from '../src/gateway.js';
import { MemoryBroker } from '../src/memory-broker.js';
import { MemoryExchangeHub } from '../src/memory-exchange-hub.js';
import { createMetrics } from '../src/metrics.js';
import { DeviceClient } from './support/device-client.js';
import { metric, nextEnqueued, SECRET, startTestNode, stopGateways, testCertificate, token } from './support/gateway-harness.js';

afterEach(stopGateways);

describe('gateway', () => {
  it('names its listener after the node and lists its devices', async () => {
    const node = await startTestNode({ nodeId: 'gw-list' });
    expect(node.gateway.listener.name).toBe('gateway-gw-list');
    expect(node.gateway.listener.role).toBe('single');
    const a = await DeviceClient.hello(node.port, 'dev-a', token('dev-a'));
    const b = await DeviceClient.hello(node.port, 'dev-b', token('dev-b'));
    const unwelcomed = await DeviceClient.connect(node.port);
    await node.gateway.listener.waitForConnections('==', 3);
    const devices = await node.gateway.devices();
    expect(devices.map((d) => [d.device, d.session]).sort()).toEqual([
      ['dev-a', a.welcome.session],
      ['dev-b', b.welcome.session],
    ]);
    await unwelcomed.close();
  });

  it('bounds the connections being set up (maxConnecting), not the devices held: a welcomed device leaves corral’s count', async () => {
    const node = await startTestNode({ nodeId: 'gw-setup', maxConnecting: 1 });
    // One at a time, three devices get in: each leaves the count at its welcome.
    const held = [];
    for (const d of ['dev-a', 'dev-b', 'dev-c']) held.push((await DeviceClient.hello(node.port, d, token(d))).client);
    expect((await node.gateway.listener.info()).active).toBe(0);
    // A connection that completed its TLS handshake and sends no hello holds the one set-up slot,
    // for 1 s at most (HELLO_WINDOW_MS): the next device waits (paused in corral's wait queue), and gets in
    // once that connection has left the window, while it is still open.
    const silent = await DeviceClient.connect(node.port);
    let silentClosed = false;
    void silent.closed.then(() => (silentClosed = true));
    expect((await node.gateway.listener.info()).active).toBe(1);
    const { welcome } = await DeviceClient.hello(node.port, 'dev-d', token('dev-d'));
    expect(welcome.node).toBe('gw-setup');
    // Not let in by the silent one's hello timeout (10 s): it is still open.
    expect(silentClosed).toBe(false);
    expect((await node.gateway.devices()).map((d) => d.device).sort()).toEqual(['dev-a', 'dev-b', 'dev-c', 'dev-d']);
    await silent.close();
  });

  it('refuses a hello with overloaded once it holds maxConnections devices, and takes one again when a device leaves', async () => {
    const node = await startTestNode({ nodeId: 'gw-full', maxConnections: 2 });
    const a = await DeviceClient.hello(node.port, 'dev-a', token('dev-a'));
    await DeviceClient.hello(node.port, 'dev-b', token('dev-b'));
    const third = await DeviceClient.connect(node.port);
    third.send({ type: 'hello', device: 'dev-c', token: token('dev-c') });
    expect((await third.expectError()).code).toBe('overloaded');
    expect(await metric(node.metrics, 'gateway_hellos_total', { outcome: 'full' })).toBe(1);
    await a.client.close();
    await node.gateway.listener.waitForConnections('==', 1);
    const { welcome } = await DeviceClient.hello(node.port, 'dev-c', token('dev-c'));
    expect(welcome.type).toBe('welcome');
  });

  it('connectionRatePerSource: connects from one address beyond its rate are closed at accept; other addresses connect', async () => {
    const node = await startTestNode({ nodeId: 'gw-rate', connectionRatePerSource: { rate: 0.01, burst: 2 } });
    const rejected = new Promise<void>((resolve) => node.gateway.listener.once('reject', (e) => e.reason === 'rate_limited' && resolve()));
    const held = [await DeviceClient.connect(node.port, '127.0.0.1', '127.0.0.81'), await DeviceClient.connect(node.port, '127.0.0.1', '127.0.0.81')];
    // The third from that address: closed before a byte is read, so its TLS handshake fails.
    await expect(DeviceClient.connect(node.port, '127.0.0.1', '127.0.0.81')).rejects.toThrow();
    await rejected;
    expect((await node.gateway.listener.info()).rejected.rate_limited).toBe(1);
    const { welcome } = await DeviceClient.hello(node.port, 'dev-r', token('dev-r'), '127.0.0.82');
    expect(welcome.type).toBe('welcome');
    for (const c of held) c.destroy();
  });

  it('reports the broker state as a metric and healthy() until drained', async () => {
    const node = await startTestNode();
    expect(node.gateway.healthy()).toBe(true);
    expect(await metric(node.metrics, 'gateway_broker_state', { state: 'connected' })).toBe(1);
    await node.gateway.drain();
    expect(node.gateway.healthy()).toBe(false);
    expect(node.broker.state).toBe('closed');
    expect(await metric(node.metrics, 'gateway_broker_state', { state: 'closed' })).toBe(1);
    expect(await metric(node.metrics, 'gateway_broker_state', { state: 'connected' })).toBe(0);
  });

  it('refuses workers with the embedded broker', async () => {
    await expect(
      startGateway({
        nodeId: 'gw-workers',
        host: '127.0.0.1',
        port: 0,
        tls: await testCertificate(),
        authenticate: hmacAuthenticate({ current: SECRET }),
        broker: () => new MemoryBroker({ nodeId: 'gw-workers', hub: new MemoryExchangeHub() }),
        logger: pino({ enabled: false }),
        metrics: createMetrics({ defaultMetrics: false }),
        workers: 2,
      }),
    ).rejects.toThrow(/workers need a shared broker/);
  });
});

describe('drain', () => {
  it('closes every device once its unconfirmed uplinks are acknowledged, then stops the broker', async () => {
    // Every session is asked to shut down at once: a paced drain asks them in random order, and
    // `busy` asked after `quiet` closed would publish 'too-late' instead of refusing it.
    const node = await startTestNode({ drainRate: Infinity });
    node.broker.bindQueue('presence', node.broker.topology.events, '*.disconnected');
    const { client: quiet } = await DeviceClient.hello(node.port, 'quiet', token('quiet'));
    const { client: busy } = await DeviceClient.hello(node.port, 'busy', token('busy'));
    const hold = node.broker.holdConfirms();
    busy.send({ type: 'msg', id: 'last', topic: 't', body: 1 });
    await hold.waitFor(1);

    const drained = node.gateway.drain();
    await quiet.closed;
    expect(node.gateway.healthy()).toBe(false);
    // Still open while its uplink is unconfirmed; anything new goes elsewhere.
    busy.send({ type: 'msg', id: 'too-late', topic: 't', body: 2 });
    expect(await busy.next('nack')).toEqual({ type: 'nack', id: 'too-late', reason: 'shutting_down' });
    hold.release();
    expect(await busy.next('ack')).toEqual({ type: 'ack', id: 'last' });
    await busy.closed;
    await drained;
    expect(node.broker.state).toBe('closed');
    expect(busy.all('error')).toEqual([]);
    expect(quiet.all('error')).toEqual([]);
    expect(node.broker.read('presence').map((m) => m.routingKey).sort()).toEqual(['busy.disconnected', 'quiet.disconnected']);
  });

  it('gives commands of drained devices back, to their offline queue (parked, for their next connect)', async () => {
    const hub = new MemoryExchangeHub();
    const node = await startTestNode({ hub });
    const { client } = await DeviceClient.hello(node.port, 'dev-1', token('dev-1'));
    await node.broker.publishCommand('dev-1', 'x', { id: 'c-1' });
    await client.next('cmd');
    const offline = nextEnqueued(hub, node.broker.topology.offlineQueue('dev-1'));
    await node.gateway.drain();
    expect((await offline).messageId).toBe('c-1');
    expect(await metric(node.metrics, 'gateway_downlink_redelivered_total', { reason: 'disconnected' })).toBe(1);
  });
});

describe('offline devices', () => {
  it('delivers the commands published while a device was connected nowhere when it connects to another node, in publish order', async () => {
    const hub = new MemoryExchangeHub();
    const a = await startTestNode({ hub, nodeId: 'gw-a' });
    const b = await startTestNode({ hub, nodeId: 'gw-b' });
    const { client: onA } = await DeviceClient.hello(a.port, 'dev-1', token('dev-1'));
    const parkedQueue = a.broker.topology.offlineQueue('dev-1');
    // The first lands in the device's offline queue once node a has parked it (until then it comes
    // back to node a, which has no session for it, and is published again).
    const first = nextEnqueued(hub, parkedQueue);
    await onA.close();
    await b.broker.publishCommand('dev-1', { n: 1 }, { id: 'c-1' });
    expect((await first).messageId).toBe('c-1');
    await a.broker.publishCommand('dev-1', { n: 2 }, { id: 'c-2' });
    await b.broker.publishCommand('dev-1', { n: 3 }, { id: 'c-3' });

    const { client: onB } = await DeviceClient.hello(b.port, 'dev-1', token('dev-1'));
    const got = [await onB.next('cmd'), await onB.next('cmd'), await onB.next('cmd')];
    expect(got).toEqual([
      { type: 'cmd', id: 'c-1', body: { n: 1 } },
      { type: 'cmd', id: 'c-2', body: { n: 2 } },
      { type: 'cmd', id: 'c-3', body: { n: 3 } },
    ]);
    for (const c of got) onB.send({ type: 'cmd_ack', id: c.id });
    expect(hub.hasQueue(parkedQueue)).toBe(false);
    await a.broker.publishCommand('dev-1', 'live', { id: 'c-4' });
    expect((await onB.next('cmd')).id).toBe('c-4');
  });
});
