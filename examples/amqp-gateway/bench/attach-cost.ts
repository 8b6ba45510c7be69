/**
 * What attaching and detaching N devices costs one AmqpBroker (each attach: a bind and, since
 * offline queues, the probe of the device's offline queue), directly to RabbitMQ: wall time, and CPU
 * per device of this process and (when it runs on this machine, read from /proc) of RabbitMQ.
 *
 *   AMQP_URL=amqp://guest:guest@127.0.0.1:5672 npx tsx examples/amqp-gateway/bench/attach-cost.ts [N]
 *
 * Run it on two checkouts to compare versions. Uses its own prefix and deletes what it declared.
 */
import { performance } from 'node:perf_hooks';
import { connect } from 'amqplib';
import { findProcess, rabbitCpuSeconds } from '../../../bench/lib/proc-stats.js';
import { AmqpBroker } from '../src/amqp-broker.js';

const url = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const n = Number(process.argv[2] ?? 3000);
const prefix = `bench-attach-${process.pid}`;
const broker = new AmqpBroker({ url, nodeId: 'n1', prefix });
await broker.start();
const devices = Array.from({ length: n }, (_, i) => `dev-${i}`);

// RabbitMQ's CPU (bench/lib/proc-stats.ts, from /proc), read only when the URL points at this machine.
const local = ['127.0.0.1', 'localhost', '[::1]'].includes(new URL(url).hostname);
const brokerCpu = (): number | undefined => (local ? rabbitCpuSeconds() : undefined);
const beam = local ? findProcess('beam.smp') : undefined;
console.log(beam === undefined ? 'RabbitMQ CPU: not read (no local beam.smp)' : `RabbitMQ CPU: beam.smp pid ${beam}`);
async function measure(what: string, op: (device: string) => Promise<void>): Promise<void> {
  const t = performance.now();
  const cpu = process.cpuUsage();
  const b = brokerCpu();
  await Promise.all(devices.map(op));
  const used = process.cpuUsage(cpu);
  const b2 = brokerCpu();
  const perDevice = (seconds: number): string => `${Math.round((seconds / n) * 1e6)} µs`;
  console.log(
    `${what} ${n}: ${(performance.now() - t).toFixed(0)} ms; CPU per device: this process ${perDevice((used.user + used.system) / 1e6)}` +
      (b === undefined || b2 === undefined ? '' : `, RabbitMQ ${perDevice(b2 - b)}`),
  );
}
await measure('attach', (d) => broker.attachDevice(d));
await measure('detach', (d) => broker.detachDevice(d));
await broker.stop();
const model = await connect(url);
const ch = await model.createChannel();
for (const q of [`${prefix}.down.offline`, `${prefix}.down.node.n1.0`]) await ch.deleteQueue(q);
for (const x of ['up', 'down', 'down.unrouted', 'events', 'control']) await ch.deleteExchange(`${prefix}.${x}`);
await model.close();
