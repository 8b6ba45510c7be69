/**
 * The bundled gateway (examples/amqp-gateway, compiled and run as `corral-gateway` runs it: the
 * sources are built once per bench run) as a benchmark server: started with its credentials in its
 * environment (the device secret in CORRAL_GATEWAY_SECRET, the broker URL in
 * CORRAL_GATEWAY_AMQP_URL), never on its command line; its port and admin API read from its
 * ready output; stopped with SIGTERM and then, whatever is left of its process tree, SIGKILL by
 * PID. {@link deleteGatewayTopology} deletes what a gateway declared on RabbitMQ under its prefix.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import amqplib from 'amqplib';
import { type TreeStats, treeStats } from './proc-stats.js';
import { buildGateway } from './build.js';
import { killOnExit } from './server-child.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
// The compiled gateway, as users run it (`corral-gateway`): no TypeScript toolchain in its processes.
const CLI = fileURLToPath(new URL('../../examples/amqp-gateway/bin/corral-gateway.mjs', import.meta.url));

/** Options of {@link startGateway}. */
export interface GatewayProcessOptions {
  /** The device secret (HMAC key of the device tokens). */
  secret: string;
  /** RabbitMQ URL; undefined: the embedded in-process broker. */
  url?: string;
  /** `--workers n` (needs `url`). */
  workers?: number;
  /** `--prefix`: every exchange and queue name starts with it. */
  prefix: string;
  /** `--node-id`. */
  nodeId: string;
  /** `--uplink-queue` (needs `url`): a durable queue bound to every uplink, so every message is routed and acked. */
  uplinkQueue?: string;
  /** `--max-connections` (default: the gateway's own, 60,000). */
  maxConnections?: number;
  /** How long it may take to listen. Default 90 s. */
  startTimeoutMs?: number;
}

/** A running gateway. */
export interface GatewayProcess {
  readonly pid: number;
  readonly port: number;
  /** The admin API, e.g. `http://127.0.0.1:40123` (undefined if it was not printed). */
  readonly adminUrl: string | undefined;
  /** CPU and RSS of its process tree (workers included). */
  stats(): TreeStats;
  /** SIGTERM, then SIGKILL to every process of its tree still there after `graceMs` (default 20 s). */
  stop(graceMs?: number): Promise<void>;
}

const exited = (child: ChildProcess): Promise<void> =>
  child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((resolve) => child.once('exit', () => resolve()));

function killPids(pids: readonly number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

/** Start the gateway and resolve once it listens. */
export async function startGateway(o: GatewayProcessOptions): Promise<GatewayProcess> {
  buildGateway();
  const args = [
    CLI,
    '--prefix', o.prefix, '--node-id', o.nodeId, '--port', '0', '--admin-port', '0', '--log-level', 'warn',
    ...(o.workers ? ['--workers', String(o.workers)] : []),
    ...(o.uplinkQueue ? ['--uplink-queue', o.uplinkQueue] : []),
    ...(o.maxConnections ? ['--max-connections', String(o.maxConnections)] : []),
  ];
  const env: NodeJS.ProcessEnv = { ...process.env, CORRAL_GATEWAY_SECRET: o.secret };
  delete env.CORRAL_GATEWAY_AMQP_URL;
  delete env.CORRAL_GATEWAY_PREVIOUS_SECRET;
  delete env.CORRAL_GATEWAY_ADMIN_TOKEN;
  if (o.url !== undefined) env.CORRAL_GATEWAY_AMQP_URL = o.url;
  const child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'inherit'] });
  killOnExit(child);
  let pids: number[] = [];
  // Every process of its tree seen so far: its workers may be gone from the tree (reparented) by the time it is stopped.
  const remember = (): void => {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) pids = [...new Set([...pids, ...treeStats(child.pid).pids])];
  };
  const stop = async (graceMs = 20_000): Promise<void> => {
    remember();
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => killPids(pids), graceMs);
      await exited(child);
      clearTimeout(timer);
    }
    killPids(pids.filter((p) => p !== child.pid));
  };
  let adminUrl: string | undefined;
  try {
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the gateway did not listen within ${(o.startTimeoutMs ?? 90_000) / 1000} s`)), o.startTimeoutMs ?? 90_000);
      // Read on after the port (its logs must not fill the pipe); the admin API comes a line later.
      createInterface({ input: child.stdout! }).on('line', (line) => {
        const admin = /admin API on (http:\/\/[^ ]+)/.exec(line);
        if (admin) adminUrl = admin[1];
        const m = /listening on [^ ]*:(\d+)/.exec(line);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`the gateway exited (code ${code}, signal ${signal}) before listening`));
      });
    });
    await new Promise((r) => setTimeout(r, 200)); // the admin line follows the listening line
    remember();
    return {
      pid: child.pid!,
      port,
      get adminUrl() {
        return adminUrl;
      },
      stats: () => {
        remember();
        return treeStats(child.pid!);
      },
      stop,
    };
  } catch (err) {
    await stop(0);
    throw err;
  }
}

/** The per-device offline queues of `prefix`, listed with rabbitmqctl (AMQP cannot list queues). */
async function parkedQueues(prefix: string): Promise<string[]> {
  const r = spawnSync('rabbitmqctl', ['-q', 'list_queues', 'name', '--no-table-headers'], { encoding: 'utf8', timeout: 60_000, maxBuffer: 512 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`rabbitmqctl list_queues failed (status ${r.status}): the parked queues of ${prefix} are left to expire`);
  const stem = `${prefix}.down.offline.`;
  return r.stdout.split('\n').map((l) => l.trim()).filter((name) => name.startsWith(stem));
}

/**
 * Delete, on RabbitMQ at `url`, every queue and exchange a gateway with this prefix and node id
 * declares: its node queues (`primary`, and slots
 * 0…workers), the offline queue and every device's parked queue, the given `queues` (e.g. its uplink queue) and its five
 * exchanges. Control queues are exclusive and went with the gateway's connections. A queue or
 * exchange that is not there is no error.
 */
export async function deleteGatewayTopology(url: string, prefix: string, nodeId: string, workers: number, queues: readonly string[] = []): Promise<void> {
  const connection = await amqplib.connect(url);
  try {
    // A failed delete closes its channel: one channel per delete, so one failure cannot skip the rest.
    const remove = async (op: (ch: amqplib.Channel) => Promise<unknown>): Promise<void> => {
      try {
        const ch = await connection.createChannel();
        await op(ch);
        await ch.close();
      } catch {
        // not there
      }
    };
    const node = `${prefix}.down.node.${nodeId}`;
    for (const q of [...queues, `${prefix}.down.offline`, `${node}.primary`, ...Array.from({ length: workers + 1 }, (_, i) => `${node}.${i}`)]) {
      await remove((ch) => ch.deleteQueue(q));
    }
    for (const x of ['up', 'down', 'down.unrouted', 'events', 'control']) await remove((ch) => ch.deleteExchange(`${prefix}.${x}`));
    // Every device whose session ended was parked in a queue of its own (`<p>.down.offline.<device>`,
    // ~50 KB of broker memory each until it expires in 7 days): list them and delete them, in
    // batches on one channel (deleting a listed queue that went meanwhile is no error).
    const parked = await parkedQueues(prefix);
    if (parked.length > 0) {
      const ch = await connection.createChannel();
      for (let i = 0; i < parked.length; i += 500) await Promise.all(parked.slice(i, i + 500).map((q) => ch.deleteQueue(q)));
      await ch.close();
    }
  } finally {
    await connection.close().catch(() => undefined);
  }
}
