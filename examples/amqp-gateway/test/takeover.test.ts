/**
 * A device connecting again: the later session wins, on one node and across nodes, and its
 * downlink follows it.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { MemoryBroker } from '../src/memory-broker.js';
import { MemoryExchangeHub } from '../src/memory-exchange-hub.js';
import { DeviceClient } from './support/device-client.js';
import { gatedAuthenticate, metric, startTestNode, startTestNodeWith, stopGateways, token } from './support/gateway-harness.js';

afterEach(stopGateways);

async function roundTrip(client: DeviceClient): Promise<void> {
  client.send({ type: 'ping' });
  await client.next('pong');
}

describe('takeover on one node', () => {
  it('closes the older session with taken_over when the device connects again', async () => {
    const node = await startTestNode();
    const { client: first } = await DeviceClient.hello(node.port, 'dev-1', token('dev-1'));
    const { client: second, welcome } = await DeviceClient.hello(node.port, 'dev-1', token('dev-1'));
    // Listed once from the new session's welcome on, not also as the old one while it closes.
    expect((await node.gateway.devices()).map((d) => d.session)).toEqual([welcome.session]);
    expect((await first.expectError()).code).toBe('taken_over');
    await roundTrip(second);
    await node.gateway.listener.waitForConnections('==', 1);
    expect((await node.gateway.devices()).map((d) => d.session)).toEqual([welcome.session]);
    expect(await metric(node.metrics, 'gateway_takeovers_total', { kind: 'closed' })).toBe(1);
    expect(await metric(node.metrics, 'gateway_device_connections')).toBe(1);
  });

  it('moves commands the older session had not had acknowledged to the new one', async () => {
    const node = await startTestNode();
    const { client: first } = await DeviceClient.hello(node.port, 'dev-1', token('dev-1'));
    await node.broker.publishCommand('dev-1', 'x', { id: 'c-1' });
    await first.next('cmd');
    const { client: second } = await DeviceClient.hello(node.port, 'dev-1', token('dev-1'));
    await first.closed;
    expect(await second.next('cmd')).toEqual({ type: 'cmd', id: 'c-1', body: 'x' });
    await node.broker.publishCommand('dev-1', 'y', { id: 'c-2' });
    expect((await second.next('cmd')).id).toBe('c-2');
  });

  it('keeps the device routed here while the newer session lives (attach and detach are counted)', async () => {
    const node = await startTestNode();
    await DeviceClient.hello(node.port, 'dev-1', token('dev-1'));
    const { client: second } = await DeviceClient.hello(node.port, 'dev-1', token('dev-1'));
    await node.gateway.listener.waitForConnections('==', 1);
    await node.broker.publishCommand('dev-1', 'z', { id: 'c-1' });
    expect((await second.next('cmd')).id).toBe('c-1');
  });
});

describe('takeover across nodes sharing a hub', () => {
  it('closes the session on the other node; commands follow the device to its new node', async () => {
    const hub = new MemoryExchangeHub();
    const a = await startTestNode({ hub, nodeId: 'gw-a' });
    const b = await startTestNode({ hub, nodeId: 'gw-b' });
    const { client: onA } = await DeviceClient.hello(a.port, 'dev-1', token('dev-1'));
    await a.broker.publishCommand('dev-1', 'first', { id: 'c-1' });
    expect((await onA.next('cmd')).id).toBe('c-1');
    const { client: onB, welcome } = await DeviceClient.hello(b.port, 'dev-1', token('dev-1'));
    expect(welcome.node).toBe('gw-b');
    expect((await onA.expectError()).code).toBe('taken_over');
    // c-1 was never acknowledged on a: it follows the device to b.
    expect(await onB.next('cmd')).toEqual({ type: 'cmd', id: 'c-1', body: 'first' });
    // Node a gave c-1 back after detaching the device, and did not park it: it was taken over.
    expect(hub.hasQueue(a.broker.topology.offlineQueue('dev-1'))).toBe(false);
    // A command published through either node now reaches b.
    await a.broker.publishCommand('dev-1', 'second', { id: 'c-2' });
    expect((await onB.next('cmd')).id).toBe('c-2');
    expect(await a.gateway.devices()).toEqual([]);
    expect((await b.gateway.devices()).map((d) => d.device)).toEqual(['dev-1']);
  });
});

describe('a hello that binds the device but does not get to welcome it', () => {
  /** A memory broker whose next attach waits for `open()`, or whose announcements fail. */
  function gatedBroker(hub: MemoryExchangeHub, nodeId: string, mode: 'gate-attach' | 'fail-announce') {
    const control = { gated: false, open: (): void => undefined };
    class Gated extends MemoryBroker {
      override async attachDevice(device: string): Promise<void> {
        if (mode === 'gate-attach' && !control.gated) {
          control.gated = true;
          await new Promise<void>((resolve) => (control.open = resolve));
        }
        return super.attachDevice(device);
      }
      override async announceTakeover(takeover: Parameters<MemoryBroker['announceTakeover']>[0]): Promise<void> {
        if (mode === 'fail-announce') throw new Error('RabbitMQ blocked after the bind (simulated)');
        return super.announceTakeover(takeover);
      }
    }
    return { broker: new Gated({ nodeId, hub }), control };
  }

  it('whose announcement fails does not park the device its older session on another node still holds', async () => {
    const hub = new MemoryExchangeHub();
    const a = await startTestNode({ hub, nodeId: 'gw-a' });
    const b = await startTestNodeWith({ nodeId: 'gw-b' }, (nodeId) => gatedBroker(hub, nodeId, 'fail-announce').broker, hub);
    const { client: onA } = await DeviceClient.hello(a.port, 'dev-1', token('dev-1'));
    const second = await DeviceClient.connect(b.port);
    second.send({ type: 'hello', device: 'dev-1', token: token('dev-1') });
    expect((await second.expectError()).code).toBe('overloaded');
    await second.closed;
    await b.gateway.listener.waitForConnections('==', 0);
    await roundTrip(onA); // still connected on a
    expect(hub.hasQueue(a.broker.topology.offlineQueue('dev-1'))).toBe(false);
    await a.broker.publishCommand('dev-1', 'x', { id: 'c-1' });
    expect((await onA.next('cmd')).id).toBe('c-1');
  });

  it('whose hello times out while it binds, beside an older session on the same node: the device is parked when both are gone', async () => {
    const hub = new MemoryExchangeHub();
    let gate!: { gated: boolean; open: () => void };
    const a = await startTestNodeWith({ nodeId: 'gw-a', helloTimeout: 300 }, (nodeId) => {
      const g = gatedBroker(hub, nodeId, 'gate-attach');
      g.control.gated = true; // the first attach (dev-1's first session) goes through
      gate = g.control;
      return g.broker;
    }, hub);
    const { client: first } = await DeviceClient.hello(a.port, 'dev-1', token('dev-1'));
    gate.gated = false; // the next attach waits
    const second = await DeviceClient.connect(a.port);
    second.send({ type: 'hello', device: 'dev-1', token: token('dev-1') });
    expect((await second.expectError()).code).toBe('hello_timeout');
    gate.open();
    // Its hello is still the device's latest: announced, it closes the first session.
    expect((await first.expectError()).code).toBe('taken_over');
    await a.gateway.listener.waitForConnections('==', 0);
    const offline = a.broker.topology.offlineQueue('dev-1');
    for (let i = 0; i < 50 && !hub.hasQueue(offline); i++) await new Promise((r) => setTimeout(r, 20));
    expect(hub.hasQueue(offline)).toBe(true);
    await a.broker.publishCommand('dev-1', 'later', { id: 'c-9' });
    expect(hub.read(offline).map((m) => m.messageId)).toEqual(['c-9']);
  });
});

describe('simultaneous hellos: the later hello wins', () => {
  for (const where of ['one node', 'two nodes'] as const) {
    for (const finishing of ['the later hello finishes first', 'the earlier hello finishes first'] as const) {
      it(`${where}, ${finishing}`, async () => {
        const hub = new MemoryExchangeHub();
        const gateA = gatedAuthenticate();
        const gateB = where === 'one node' ? gateA : gatedAuthenticate();
        const nodeA = await startTestNode({ hub, authenticate: gateA.authenticate });
        const nodeB = where === 'one node' ? nodeA : await startTestNode({ hub, authenticate: gateB.authenticate });

        const earlier = await DeviceClient.connect(nodeA.port);
        earlier.send({ type: 'hello', device: 'dev-1', token: 'a' });
        const callA = await gateA.call(0);
        const later = await DeviceClient.connect(nodeB.port);
        later.send({ type: 'hello', device: 'dev-1', token: 'b' });
        const callB = await gateB.call(where === 'one node' ? 1 : 0);
        expect([callA.hello.token, callB.hello.token]).toEqual(['a', 'b']);

        if (finishing === 'the later hello finishes first') {
          callB.accept();
          await later.next('welcome');
          callA.accept();
        } else {
          callA.accept();
          await earlier.next('welcome');
          callB.accept();
          await later.next('welcome');
        }
        expect((await earlier.expectError()).code).toBe('taken_over');
        await roundTrip(later);
        await nodeB.broker.publishCommand('dev-1', 'to the winner', { id: 'c-1' });
        expect((await later.next('cmd')).id).toBe('c-1');
        const refused = await metric(nodeA.metrics, 'gateway_takeovers_total', { kind: 'refused' });
        const closed = await metric(nodeA.metrics, 'gateway_takeovers_total', { kind: 'closed' });
        expect(refused + closed).toBe(1);
      });
    }
  }
});
