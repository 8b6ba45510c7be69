/**
 * Does RabbitMQ confirm everything it took before it closes a publisher's connection at shutdown?
 * (docs/gateway.md, "Broker outage and recovery": why a restart leaves second copies.) No gateway:
 * a bare amqplib confirm channel.
 *
 *   npx tsx examples/amqp-gateway/bench/unconfirmed-at-shutdown.ts [runs] [in flight]
 *
 * Each run starts a RabbitMQ node of its own (examples/amqp-gateway/test/support/private-rabbit.ts:
 * needs rabbitmq-server, run as root or rabbitmq; the shared broker is not touched), publishes
 * persistent 100-byte messages to a durable queue keeping `in flight` (default 40) unconfirmed,
 * runs `rabbitmqctl stop_app` after 1 s, then `start_app`, and counts the queue. Publishes whose
 * confirm never came (amqplib fails them when the connection closes) but that are in the queue
 * are what a publisher that sends its unconfirmed publishes again (at-least-once) duplicates, and
 * one that does not (at-most-once) would have lost had they not been there.
 */
import { connect } from 'amqplib';
import { PrivateRabbit } from '../test/support/private-rabbit.js';

const runs = Number(process.argv[2] ?? 3);
const inFlight = Number(process.argv[3] ?? 40);
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function once(run: number): Promise<void> {
  const rabbit = await PrivateRabbit.start();
  try {
    const model = await connect(rabbit.url);
    model.on('error', () => undefined);
    const channel = await model.createConfirmChannel();
    channel.on('error', () => undefined);
    await channel.assertQueue('q', { durable: true });
    let sent = 0;
    let confirmed = 0;
    let unconfirmed = 0;
    let closed = false;
    model.on('close', () => (closed = true));
    let stopping = false;
    const pump = (async () => {
      while (!stopping && !closed) {
        if (sent - confirmed - unconfirmed >= inFlight) {
          await new Promise((resolve) => setImmediate(resolve));
          continue;
        }
        sent += 1;
        channel.publish('', 'q', Buffer.alloc(100, 'x'), { persistent: true }, (err) => {
          if (err) unconfirmed += 1;
          else confirmed += 1;
        });
      }
    })();
    await sleep(1000);
    await rabbit.stopApp();
    stopping = true;
    await pump;
    await rabbit.startApp();
    const check = await connect(rabbit.url);
    const held = (await (await check.createChannel()).checkQueue('q')).messageCount;
    await check.close();
    console.log(
      `run ${run}: sent ${sent}, confirmed ${confirmed}, unconfirmed at the close ${unconfirmed}, in the queue after the restart ${held}: ` +
        `${held - confirmed} of the ${unconfirmed} unconfirmed were held (${sent - held} lost)`,
    );
  } finally {
    await rabbit.stop();
  }
}

for (let i = 1; i <= runs; i++) await once(i);
