/**
 * What a queue per offline device costs RabbitMQ (docs/gateway.md, "Commands for offline devices").
 *
 *   AMQP_URL=amqp://guest:guest@127.0.0.1:5672 npx tsx examples/amqp-gateway/bench/offline-queues.ts [N] [channels]
 *
 * With its own prefix (`bench-offline-<pid>`), so it touches nothing else on the broker:
 *
 * 1. RabbitMQ memory (`rabbitmqctl status`, total) before.
 * 2. Park N devices: declare `<p>.down.offline.<device>` (durable, `x-expires` 7 days,
 *    `x-max-length` 1000, `x-overflow` reject-publish) and bind it to `<p>.down` with the device id,
 *    over `channels` channels in parallel (one RPC at a time per channel, as amqplib does).
 * 3. Publish one persistent command to each device through `<p>.down` (confirmed).
 * 4. RabbitMQ memory after.
 * 5. The probe every connect pays, on devices that were never parked: `queue.delete` with
 *    `if-empty` of a queue that does not exist (RabbitMQ answers delete-ok). Sequential, for the
 *    latency; then in parallel, for the rate.
 * 6. Catching up one device, sequentially on a sample: probe (`queue.delete if-empty` refused
 *    with 406 because the queue holds a command, which closes that channel: open another), unbind
 *    the queue from `<p>.down`, `basic.get` until empty, ack, delete the queue.
 * 7. Catching up every other device, on `channels` channels in parallel (the reconnect stampede),
 *    which also deletes everything the run declared; memory after.
 */
import { execFileSync } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { connect, type Channel, type ChannelModel, type ConfirmChannel } from 'amqplib';

const url = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const n = Number(process.argv[2] ?? 50_000);
const channels = Number(process.argv[3] ?? 32);
const sample = Math.min(200, Math.floor(n / 10));
const prefix = `bench-offline-${process.pid}`;
const down = `${prefix}.down`;
const offline = (device: string): string => `${prefix}.down.offline.${device}`;
const device = (i: number): string => `d-${i}`;
const QUEUE_ARGS = { 'x-expires': 7 * 24 * 3600 * 1000, 'x-max-length': 1000, 'x-overflow': 'reject-publish' };

function memory(): number {
  const out = execFileSync('rabbitmqctl', ['status', '--formatter', 'json'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const status = JSON.parse(out) as { memory: { total: { rss?: number; erlang?: number; allocated?: number } } };
  const total = status.memory.total;
  return total.rss ?? total.allocated ?? total.erlang ?? Number.NaN;
}

const mb = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MB`;

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

const stats = (values: number[]): string =>
  `p50 ${percentile(values, 50).toFixed(2)} ms, p99 ${percentile(values, 99).toFixed(2)} ms, max ${Math.max(...values).toFixed(2)} ms`;

/** Run `work(i)` for i in [from, to) on `pool.length` channels, each one at a time. */
async function onChannels(pool: Channel[], from: number, to: number, work: (ch: Channel, i: number) => Promise<void>): Promise<void> {
  let next = from;
  await Promise.all(
    pool.map(async (ch) => {
      while (next < to) {
        const i = next++;
        await work(ch, i);
      }
    }),
  );
}

/** `queue.delete if-empty`: true if deleted (or absent), false if it holds messages (the channel is then closed). */
async function probe(ch: Channel, queue: string): Promise<boolean> {
  try {
    const { messageCount } = await ch.deleteQueue(queue, { ifEmpty: true });
    if (messageCount !== 0) throw new Error(`queue.delete if-empty deleted ${queue} with ${messageCount} messages`);
    return true;
  } catch (err) {
    if ((err as { code?: number }).code === 406) return false;
    throw err;
  }
}

class ProbeChannel {
  private ch: Channel | undefined;
  constructor(private readonly model: ChannelModel) {}
  async get(): Promise<Channel> {
    if (!this.ch) {
      const ch = await this.model.createChannel();
      ch.on('error', () => undefined);
      ch.on('close', () => {
        if (this.ch === ch) this.ch = undefined;
      });
      this.ch = ch;
    }
    return this.ch;
  }
}

/** Catch one device up: probe, unbind, get until empty, ack, delete. Returns the commands read. */
async function catchUp(probeChannel: ProbeChannel, ch: Channel, d: string): Promise<number> {
  if (await probe(await probeChannel.get(), offline(d))) return 0;
  await ch.unbindQueue(offline(d), down, d);
  let count = 0;
  for (;;) {
    const message = await ch.get(offline(d), { noAck: false });
    if (message === false) break;
    count += 1;
    ch.ack(message);
  }
  await ch.deleteQueue(offline(d));
  return count;
}

async function main(): Promise<void> {
  console.log(`RabbitMQ ${url.replace(/\/\/[^@]*@/, '//')}; N = ${n}; ${channels} channels; prefix ${prefix}`);
  const model = await connect(url, { noDelay: true });
  const pool: Channel[] = [];
  for (let i = 0; i < channels; i++) pool.push(await model.createChannel());
  const confirm: ConfirmChannel = await model.createConfirmChannel();
  await pool[0]!.assertExchange(down, 'direct', { durable: true });
  let parked = 0;
  try {
    const before = memory();
    console.log(`memory before: ${mb(before)}`);

    let t = performance.now();
    await onChannels(pool, 0, n, async (ch, i) => {
      await ch.assertQueue(offline(device(i)), { durable: true, arguments: QUEUE_ARGS });
      parked = Math.max(parked, i + 1);
      await ch.bindQueue(offline(device(i)), down, device(i));
    });
    let s = (performance.now() - t) / 1000;
    console.log(`declare + bind: ${n} queues in ${s.toFixed(1)} s = ${Math.round(n / s)} devices/s`);
    const afterDeclare = memory();
    console.log(`memory after declare + bind: ${mb(afterDeclare)} (+${mb(afterDeclare - before)}, ${Math.round((afterDeclare - before) / n)} B per device)`);

    t = performance.now();
    for (let i = 0; i < n; i++) {
      const ok = confirm.publish(down, device(i), Buffer.from(JSON.stringify({ op: 'reboot', i })), {
        persistent: true,
        messageId: `c-${i}`,
        contentType: 'application/json',
      });
      if (!ok) await new Promise((resolve) => confirm.once('drain', resolve));
    }
    await confirm.waitForConfirms();
    s = (performance.now() - t) / 1000;
    console.log(`publish: ${n} commands confirmed in ${s.toFixed(1)} s = ${Math.round(n / s)}/s`);
    const afterPublish = memory();
    console.log(`memory after one command each: ${mb(afterPublish)} (+${mb(afterPublish - before)} over before, ${Math.round((afterPublish - before) / n)} B per device)`);

    // The probe a device that was never parked pays at every connect.
    const probeChannel = new ProbeChannel(model);
    const probeTimes: number[] = [];
    for (let i = 0; i < 1000; i++) {
      const t0 = performance.now();
      if (!(await probe(await probeChannel.get(), offline(`never-${i}`)))) throw new Error('probe of an absent queue refused');
      probeTimes.push(performance.now() - t0);
    }
    console.log(`probe of a device never parked (queue.delete if-empty, absent queue), sequential: ${stats(probeTimes)}`);
    t = performance.now();
    const probes = 20_000;
    await onChannels(pool, 0, probes, async (ch, i) => {
      await ch.deleteQueue(offline(`never-${i}`), { ifEmpty: true });
    });
    s = (performance.now() - t) / 1000;
    console.log(`probe of a device never parked, ${channels} channels: ${probes} in ${s.toFixed(2)} s = ${Math.round(probes / s)}/s`);

    // Catching up one device at a time.
    const catchUpTimes: number[] = [];
    for (let i = 0; i < sample; i++) {
      const t0 = performance.now();
      const got = await catchUp(probeChannel, pool[0]!, device(i));
      catchUpTimes.push(performance.now() - t0);
      if (got !== 1) throw new Error(`${device(i)}: read ${got} commands, expected 1`);
    }
    console.log(`catch-up of one device (probe 406 + reopen channel, unbind, get x2, ack, delete), sequential, ${sample} devices: ${stats(catchUpTimes)}`);

    // The stampede: everyone else at once.
    const probeChannels = new Map(pool.map((ch) => [ch, new ProbeChannel(model)]));
    t = performance.now();
    let read = 0;
    await onChannels(pool, sample, n, async (ch, i) => {
      const got = await catchUp(probeChannels.get(ch)!, ch, device(i));
      read += got;
    });
    s = (performance.now() - t) / 1000;
    console.log(`catch-up, ${channels} channels: ${n - sample} devices (${read} commands) in ${s.toFixed(1)} s = ${Math.round((n - sample) / s)} devices/s`);
    parked = 0;
    const afterAll = memory();
    console.log(`memory after everything deleted: ${mb(afterAll)}`);
  } finally {
    // Whatever is left (a failed run).
    const cleanup = await model.createChannel();
    for (let i = 0; i < parked; i++) await cleanup.deleteQueue(offline(device(i))).catch(() => undefined);
    await cleanup.deleteExchange(down);
    await model.close();
  }
}

await main();
