/**
 * The back end (the application side of `<p>.up`, `<p>.events` and `<p>.down.offline`) over a
 * {@link MemoryExchangeHub}, for the suites that run against both brokers.
 */
import { type HubMessage, MemoryExchangeHub } from '../../src/memory-exchange-hub.js';
import { topology } from '../../src/topology.js';
import type { BackEnd, BackEndMessage } from './routing-suite.js';

/** A {@link BackEnd} on `hub`, and the removal of everything of a prefix from it. */
export interface HubBackEnd extends BackEnd {
  /** Delete the topology of `prefix`, the queues of `nodeIds` and the back-end queues declared here. */
  cleanup(prefix: string, nodeIds: readonly string[]): void;
}

export function hubBackEnd(hub: MemoryExchangeHub): HubBackEnd {
  const backEndQueues = new Map<string, Set<string>>();
  const bind = (prefix: string, queueName: string, exchange: string, pattern: string): void => {
    hub.declareExchange(exchange, 'topic');
    hub.bindQueue(queueName, exchange, pattern);
    let set = backEndQueues.get(prefix);
    if (set === undefined) backEndQueues.set(prefix, (set = new Set()));
    set.add(queueName);
  };
  return {
    async bindUplinkQueue(prefix, queueName, pattern) {
      bind(prefix, queueName, topology(prefix).up, pattern);
    },
    async bindEventQueue(prefix, queueName, pattern) {
      bind(prefix, queueName, topology(prefix).events, pattern);
    },
    async read(_prefix, queueName, n) {
      const taken: BackEndMessage[] = hub.read(queueName).map(toBackEnd);
      if (taken.length >= n) return taken;
      // Wait (a few seconds at most) for the rest, as the RabbitMQ back end does.
      return new Promise((resolve) => {
        const done = (): void => {
          clearTimeout(timer);
          hub.off('enqueue', onEnqueue);
          resolve(taken);
        };
        const onEnqueue = (queue: string): void => {
          if (queue !== queueName) return;
          taken.push(...hub.read(queueName).map(toBackEnd));
          if (taken.length >= n) done();
        };
        const timer = setTimeout(done, 5000);
        hub.on('enqueue', onEnqueue);
      });
    },
    cleanup(prefix, nodeIds) {
      const t = topology(prefix);
      for (const q of [t.downOffline, ...nodeIds.map((n) => t.nodeQueue(n)), ...(backEndQueues.get(prefix) ?? [])]) hub.deleteQueue(q);
      for (const x of [t.up, t.down, t.downUnrouted, t.events, t.control]) hub.deleteExchange(x);
      backEndQueues.delete(prefix);
    },
  };
}

function toBackEnd(m: HubMessage): BackEndMessage {
  return { routingKey: m.routingKey, messageId: m.messageId, headers: m.headers, body: m.body };
}
