/**
 * The events suite (support/events-suite.ts) over both brokers: gateway nodes with MemoryBrokers
 * sharing a hub, and gateway nodes with AmqpBrokers on the real RabbitMQ (skipped when RabbitMQ is
 * not reachable; see support/rabbit.ts). Then what a session does when a `cmd_ack` event cannot
 * be published.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { AmqpBroker } from '../src/amqp-broker.js';
import type { CommandEvent } from '../src/broker.js';
import { MemoryBroker } from '../src/memory-broker.js';
import { MemoryExchangeHub } from '../src/memory-exchange-hub.js';
import { DeviceClient } from './support/device-client.js';
import { metric, nextEnqueued, startTestNodeWith, stopGateways, token } from './support/gateway-harness.js';
import { eventsSuite } from './support/events-suite.js';
import { hubBackEnd } from './support/hub-back-end.js';
import { AMQP_URL, deleteTopology, describeRabbit, rabbitBackEnd } from './support/rabbit.js';

const hub = new MemoryExchangeHub();
const memoryBackEnd = hubBackEnd(hub);

eventsSuite('MemoryBroker', {
  // retain 0: no embedded queues, the back end's queues are the only ones bound to <p>.events.
  start: (prefix, nodeId, options = {}) => startTestNodeWith({ ...options, nodeId }, () => new MemoryBroker({ nodeId, prefix, hub, retain: 0 }), hub),
  backEnd: memoryBackEnd,
  cleanup: async (prefix, nodeIds) => memoryBackEnd.cleanup(prefix, nodeIds),
});

describeRabbit('over RabbitMQ', () => {
  eventsSuite('AmqpBroker', {
    start: (prefix, nodeId, options = {}) => startTestNodeWith({ ...options, nodeId }, () => new AmqpBroker({ url: AMQP_URL, nodeId, prefix })),
    backEnd: rabbitBackEnd,
    cleanup: (prefix, nodeIds) => deleteTopology(prefix, nodeIds),
  });
});

describe('cmd_ack when RabbitMQ refuses the event', () => {
  afterEach(stopGateways);

  it('settles the command anyway, counts the lost event, and does not send the command to the device again', async () => {
    const local = new MemoryExchangeHub();
    let refuse = 1;
    class RefusingBroker extends MemoryBroker {
      override async publishCommandEvent(event: CommandEvent): Promise<void> {
        if (refuse > 0) {
          refuse -= 1;
          throw new Error('refused (test)');
        }
        return super.publishCommandEvent(event);
      }
    }
    const node = await startTestNodeWith({ nodeId: 'gw-r' }, (nodeId) => new RefusingBroker({ nodeId, hub: local, retain: 0 }), local);
    const acks = `${node.broker.topology.events}.acks`;
    node.broker.bindQueue(acks, node.broker.topology.events, '#.cmd_ack');
    const { client } = await DeviceClient.hello(node.port, 'dev-1', token('dev-1'));
    await node.broker.publishCommand('dev-1', 'x', { id: 'c-1' });
    expect((await client.next('cmd')).id).toBe('c-1');
    client.send({ type: 'cmd_ack', id: 'c-1' });
    // The next command's cmd_ack is published: c-1's was refused, and c-1 did not come back before c-2.
    const published = nextEnqueued(local, acks);
    await node.broker.publishCommand('dev-1', 'y', { id: 'c-2' });
    expect((await client.next('cmd')).id).toBe('c-2');
    client.send({ type: 'cmd_ack', id: 'c-2' });
    expect(await published).toMatchObject({ routingKey: 'dev-1.cmd_ack', body: { command: 'c-2' } });
    expect(client.all('cmd').map((c) => c.id)).toEqual(['c-1', 'c-2']);
    expect(await metric(node.metrics, 'gateway_downlink_redelivered_total')).toBe(0);
    expect(await metric(node.metrics, 'gateway_command_events_total', { event: 'cmd_ack', outcome: 'failed' })).toBe(1);
    expect(await metric(node.metrics, 'gateway_command_events_total', { event: 'cmd_ack', outcome: 'published' })).toBe(1);
    expect(node.broker.read(acks).map((m) => m.routingKey)).toEqual(['dev-1.cmd_ack']); // c-2's only
  });
});
