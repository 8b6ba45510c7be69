/**
 * A queue that takes every uplink, for a first run against a fresh RabbitMQ (`--uplink-queue`).
 * The gateway publishes uplinks to `<p>.up` as mandatory messages and acks a device only once a
 * queue holds its message; on a broker where no back end has bound a queue yet, every uplink comes
 * back unroutable and is nacked. A real back end declares and binds its own queues, with its own
 * patterns (docs/gateway.md, "Topology"); this declares one plain durable queue bound with `#`.
 */
import { connect } from 'amqplib';
import { topology } from './topology.js';

/** Where the queue goes and what it is called. */
export interface UplinkQueueOptions {
  /** RabbitMQ, `amqp://` or `amqps://`. */
  readonly url: string;
  /** The prefix of the gateway's names: the queue is bound to `<prefix>.up`. */
  readonly prefix: string;
  /** The queue's name. */
  readonly queue: string;
}

/**
 * Declare the durable queue `queue` (no arguments, so a back end's plain declaration of the same
 * name agrees with it) and bind it to `<prefix>.up` with `#`, on a connection of its own that is
 * closed before this resolves. Idempotent. The exchange must exist: the gateway declares it when it
 * starts. Rejects with RabbitMQ's error, e.g. when a queue of that name exists with other arguments.
 */
export async function declareUplinkQueue(options: UplinkQueueOptions): Promise<void> {
  const model = await connect(options.url, { timeout: 10_000 });
  try {
    const channel = await model.createChannel();
    channel.on('error', () => undefined); // a refused declaration rejects the call below with the same error
    await channel.assertQueue(options.queue, { durable: true });
    await channel.bindQueue(options.queue, topology(options.prefix).up, '#');
  } finally {
    await model.close().catch(() => undefined);
  }
}
