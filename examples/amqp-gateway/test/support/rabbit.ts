/**
 * The real RabbitMQ the broker tests run against: where it is, whether it is there, names that do
 * not collide between tests, removal of everything a test declared, and a back end (the
 * application side of `<p>.up`, `<p>.events` and `<p>.down.offline`) for the routing suite.
 *
 * `AMQP_URL` (default amqp://guest:guest@127.0.0.1:5672) says where RabbitMQ is. When it is not
 * reachable, suites declared with `describeRabbit` are skipped with one warning — unless
 * `REQUIRE_RABBITMQ=1`, which turns that into a failing test.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { connect, type Channel, type ChannelModel, type GetMessage, type MessageProperties, type Options } from 'amqplib';
import { describe, it } from 'vitest';
import { topology } from '../../src/topology.js';
import type { BackEnd, BackEndMessage } from './routing-suite.js';

const execFileAsync = promisify(execFile);

/** Where the tests find RabbitMQ. */
export const AMQP_URL = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';

let availability: Promise<boolean> | undefined;

/** Whether RabbitMQ accepts a connection at `AMQP_URL` (checked once per test file). */
export function rabbitAvailable(): Promise<boolean> {
  availability ??= (async () => {
    try {
      const model = await connect(AMQP_URL, { timeout: 2000 });
      await model.close();
      return true;
    } catch {
      return false;
    }
  })();
  return availability;
}

const available = await rabbitAvailable();
let warned = false;

/** `describe`, when RabbitMQ is reachable; otherwise skipped with a notice (or failed, see above). */
export function describeRabbit(name: string, body: () => void): void {
  if (available) {
    describe(name, body);
    return;
  }
  if (process.env.REQUIRE_RABBITMQ === '1') {
    describe(name, () => {
      it('needs RabbitMQ', () => {
        throw new Error(`RabbitMQ is not reachable at ${redacted(AMQP_URL)} and REQUIRE_RABBITMQ=1`);
      });
    });
    return;
  }
  if (!warned) {
    warned = true;
    console.warn(`RabbitMQ is not reachable at ${redacted(AMQP_URL)}: skipping the tests that need it (REQUIRE_RABBITMQ=1 makes this a failure)`);
  }
  describe.skip(name, body);
}

/** `AMQP_URL` without its password, for messages. */
function redacted(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url;
  }
}

/** `AMQP_URL` pointed at another port on loopback (through a {@link TcpProxy}, say). */
export function amqpUrlVia(port: number): string {
  const u = new URL(AMQP_URL);
  u.hostname = '127.0.0.1';
  u.port = String(port);
  return u.toString();
}

/** Host and port of `AMQP_URL`. */
export function amqpAddress(): { host: string; port: number } {
  const u = new URL(AMQP_URL);
  return { host: u.hostname, port: u.port ? Number(u.port) : 5672 };
}

let prefixCount = 0;

/** A topology prefix no other test (or test process) uses: `t-<name>-<pid>-<n>`. */
export function uniquePrefix(name: string): string {
  prefixCount += 1;
  return `t-${name.replace(/[^A-Za-z0-9_-]+/g, '-')}-${process.pid}-${prefixCount}`;
}

/** Back-end queues declared per prefix, so `deleteTopology` removes them too. */
const backEndQueues = new Map<string, Set<string>>();

/** Run `fn` on a channel of a connection of its own (to `url`, `AMQP_URL` by default), then close the connection. */
export async function withChannel<T>(fn: (channel: Channel, model: ChannelModel) => Promise<T>, url = AMQP_URL): Promise<T> {
  const model = await connect(url);
  model.on('error', () => undefined);
  try {
    const channel = await model.createChannel();
    channel.on('error', () => undefined);
    return await fn(channel, model);
  } finally {
    await model.close().catch(() => undefined);
  }
}

/**
 * The per-device offline queues (`<prefix>.down.offline.<device>`) a gateway under test parked,
 * listed with `rabbitmqctl` when it is at hand (AMQP cannot list queues). Elsewhere, pass the
 * devices to {@link deleteTopology}; what is left expires after 7 days.
 */
async function parkedQueues(prefix: string): Promise<string[]> {
  const stem = `${topology(prefix).downOffline}.`;
  try {
    const { stdout } = await execFileAsync('rabbitmqctl', ['-q', 'list_queues', 'name', '--no-table-headers'], { timeout: 10_000, maxBuffer: 512 * 1024 * 1024 });
    return stdout.split('\n').map((l) => l.trim()).filter((name) => name.startsWith(stem));
  } catch {
    return [];
  }
}

/**
 * Delete every exchange and queue of `prefix`: the topology, the queues of `nodeIds`, and the
 * back-end queues declared through {@link rabbitBackEnd}. Missing ones are fine.
 */
export async function deleteTopology(prefix: string, nodeIds: readonly string[], devices: readonly string[] = []): Promise<void> {
  const t = topology(prefix);
  const queues = [
    t.downOffline,
    ...nodeIds.map((n) => t.nodeQueue(n)),
    ...devices.map((d) => t.offlineQueue(d)),
    ...(backEndQueues.get(prefix) ?? []),
    ...(await parkedQueues(prefix)),
  ];
  const exchanges = [t.up, t.down, t.downUnrouted, t.events, t.control];
  backEndQueues.delete(prefix);
  await withChannel(async (first, model) => {
    let channel = first;
    const attempt = async (op: (ch: Channel) => Promise<unknown>): Promise<void> => {
      try {
        await op(channel);
      } catch {
        // A 404 (or any error) closes the channel: carry on with a new one.
        channel = await model.createChannel();
        channel.on('error', () => undefined);
      }
    };
    for (const q of queues) await attempt((ch) => ch.deleteQueue(q));
    for (const x of exchanges) await attempt((ch) => ch.deleteExchange(x));
  });
}

/** A message taken from a back-end queue, with its AMQP properties. */
export interface RabbitMessage extends BackEndMessage {
  readonly properties: MessageProperties;
}

function toMessage(m: GetMessage): RabbitMessage {
  const text = m.content.toString('utf8');
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: keep the string
  }
  return {
    routingKey: m.fields.routingKey,
    messageId: typeof m.properties.messageId === 'string' ? m.properties.messageId : undefined,
    headers: { ...(m.properties.headers ?? {}) },
    body,
    properties: m.properties,
  };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** {@link BackEnd} for RabbitMQ; `read` also gives the AMQP properties and takes a deadline. */
export interface RabbitBackEnd extends BackEnd {
  /** As {@link BackEnd.bindUplinkQueue}, declaring the queue with `options` (durable by default). */
  bindUplinkQueue(prefix: string, queueName: string, pattern: string, options?: Options.AssertQueue): Promise<void>;
  read(prefix: string, queueName: string, n: number, timeoutMs?: number): Promise<RabbitMessage[]>;
}

/**
 * A back end on the RabbitMQ at `url` (plain AMQP on a connection of its own per call). Queues it
 * declares are removed by {@link deleteTopology} only on the shared broker (`AMQP_URL`).
 */
export function rabbitBackEndAt(url: string): RabbitBackEnd {
  const remember = (prefix: string, queueName: string): void => {
    if (url !== AMQP_URL) return;
    let set = backEndQueues.get(prefix);
    if (!set) backEndQueues.set(prefix, (set = new Set()));
    set.add(queueName);
  };
  return {
    async bindUplinkQueue(prefix, queueName, pattern, options = { durable: true }) {
      const t = topology(prefix);
      remember(prefix, queueName);
      await withChannel(async (ch) => {
        await ch.assertExchange(t.up, 'topic', { durable: true });
        await ch.assertQueue(queueName, options);
        await ch.bindQueue(queueName, t.up, pattern);
      }, url);
    },

    async bindEventQueue(prefix, queueName, pattern) {
      const t = topology(prefix);
      remember(prefix, queueName);
      await withChannel(async (ch) => {
        await ch.assertExchange(t.events, 'topic', { durable: true });
        await ch.assertQueue(queueName, { durable: true });
        await ch.bindQueue(queueName, t.events, pattern);
      }, url);
    },

    async read(_prefix, queueName, n, timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs;
      return withChannel(async (ch) => {
        const out: RabbitMessage[] = [];
        while (out.length < n) {
          const m = await ch.get(queueName, { noAck: true });
          if (m) out.push(toMessage(m));
          else if (Date.now() >= deadline) break;
          else await sleep(20);
        }
        return out;
      }, url);
    },
  };
}

/** The routing suite's back end for the shared RabbitMQ (`AMQP_URL`). */
export const rabbitBackEnd: RabbitBackEnd = rabbitBackEndAt(AMQP_URL);
