/**
 * The events suite (support/events-suite.ts) over both brokers: gateway nodes with MemoryBrokers
 * sharing a hub, and gateway nodes with AmqpBrokers on the real RabbitMQ (skipped when RabbitMQ is
 * not reachable; see support/rabbit.ts).
 */
import { AmqpBroker } from '../src/amqp-broker.js';
import { MemoryBroker } from '../src/memory-broker.js';
import { MemoryExchangeHub } from '../src/memory-exchange-hub.js';
import { startTestNodeWith } from './support/gateway-harness.js';
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
