/** Waiting for an {@link AmqpBroker}'s state in tests. */
import type { AmqpBroker } from '../../src/amqp-broker.js';
import type { BrokerState } from '../../src/broker.js';

/** Resolves once `broker` is in `state` (now or later). */
export function stateReached(broker: AmqpBroker, state: BrokerState, timeoutMs = 10_000): Promise<void> {
  if (broker.state === state) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      broker.off('state', onState);
      reject(new Error(`state ${state} not reached within ${timeoutMs} ms (now ${broker.state})`));
    }, timeoutMs);
    const onState = (s: BrokerState): void => {
      if (s !== state) return;
      clearTimeout(timer);
      broker.off('state', onState);
      resolve();
    };
    broker.on('state', onState);
  });
}

