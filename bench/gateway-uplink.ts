/**
 * Gateway uplink through the local RabbitMQ: N simulated TLS devices send M messages each through
 * `npm run gateway` (AMQP mode) to a back-end queue bound to every uplink; reports acked messages
 * per second, ack latency (from the simulator) and gateway CPU per acked message (from /proc).
 * The work is done by runGatewayUplink (bench/lib/gateway-uplink.ts), which the benchmark
 * scenario bench/scenarios/gateway-uplink.ts shares.
 *
 *   node --import tsx bench/gateway-uplink.ts [--devices 10000] [--msgs 50] [--rate 1000] [--interval 0] [--workers n] [--client simulator|native]
 */
import { parseArgs } from 'node:util';
import { runGatewayUplink } from './lib/gateway-uplink.js';

const { values } = parseArgs({
  options: {
    devices: { type: 'string', default: '10000' },
    msgs: { type: 'string', default: '50' },
    rate: { type: 'string', default: '1000' },
    interval: { type: 'string', default: '0' },
    workers: { type: 'string' },
    client: { type: 'string', default: 'simulator' },
    url: { type: 'string', default: process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672' },
  },
});
const { progress, ...report } = await runGatewayUplink({
  url: values.url,
  devices: Number(values.devices),
  msgsPerDevice: Number(values.msgs),
  rate: Number(values.rate),
  interval: Number(values.interval),
  ...(values.workers ? { workers: Number(values.workers) } : {}),
  client: values.client === 'native' ? 'native' : 'simulator',
  log: (line) => process.stderr.write(`${line}\n`),
});
console.log(JSON.stringify(report, null, 2));
