/**
 * What attaching and detaching N devices costs one AmqpBroker (each attach: a bind and, since
 * offline queues, the probe of the device's offline queue), directly to RabbitMQ.
 *
 *   AMQP_URL=amqp://guest:guest@127.0.0.1:5672 npx tsx examples/amqp-gateway/bench/attach-cost.ts [N]
 *
 * Run it on two checkouts to compare versions. Uses its own prefix and deletes what it declared.
 */
import { performance } from 'node:perf_hooks';
import { connect } from 'amqplib';
import { AmqpBroker } from '../src/amqp-broker.js';

const url = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const n = Number(process.argv[2] ?? 3000);
const prefix = `bench-attach-${process.pid}`;
const broker = new AmqpBroker({ url, nodeId: 'n1', prefix });
await broker.start();
const devices = Array.from({ length: n }, (_, i) => `dev-${i}`);
let t = performance.now();
await Promise.all(devices.map((d) => broker.attachDevice(d)));
console.log(`attach ${n}: ${(performance.now() - t).toFixed(0)} ms`);
t = performance.now();
await Promise.all(devices.map((d) => broker.detachDevice(d)));
console.log(`detach ${n}: ${(performance.now() - t).toFixed(0)} ms`);
await broker.stop();
const model = await connect(url);
const ch = await model.createChannel();
for (const q of [`${prefix}.down.offline`, `${prefix}.down.node.n1.0`]) await ch.deleteQueue(q);
for (const x of ['up', 'down', 'down.unrouted', 'events', 'control']) await ch.deleteExchange(`${prefix}.${x}`);
await model.close();
