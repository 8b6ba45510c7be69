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


/**
 * Watch `broker`'s parks (detaches with `park`): the returned function gives a promise of the next
 * park, settled once it is done.
 */
export function watchParks(broker: AmqpBroker): () => Promise<void> {
  const detach = broker.detachDevice.bind(broker);
  let onPark: () => void = () => undefined;
  broker.detachDevice = async (device, options) => {
    await detach(device, options);
    if (options?.park === true) onPark();
  };
  return () => new Promise<void>((resolve) => (onPark = resolve));
}
