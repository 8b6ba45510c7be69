/**
 * Gateway uplink through RabbitMQ, as a function: starts the gateway CLI (AMQP mode, its own
 * exchange prefix) and a durable back-end queue bound to every uplink, runs the simulator with N
 * TLS devices sending M messages each, and reports acked messages per second, ack latency (from
 * the simulator), gateway CPU per acked message (from /proc, the gateway's process tree, TLS
 * handshakes included) and acks over time. Deletes every queue and exchange it declared, and
 * leaves no process behind. Used by bench/gateway-uplink.ts and bench/scenarios/gateway-uplink.ts.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import amqplib from 'amqplib';
import { buildGateway } from './gateway-process.js';
import { treeStats } from './proc-stats.js';
import { killOnExit } from './server-child.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
// The compiled gateway and simulator, as users run them (`corral-gateway`, `corral-simulate`).
const CLI = fileURLToPath(new URL('../../examples/amqp-gateway/bin/corral-gateway.mjs', import.meta.url));
const SIMULATE = fileURLToPath(new URL('../../examples/amqp-gateway/bin/corral-simulate.mjs', import.meta.url));

export interface GatewayUplinkOptions {
  url: string;
  devices: number;
  msgsPerDevice: number;
  /** Devices connecting per second (simulator --rate). */
  rate: number;
  /** ms between one device's messages (simulator --interval; 0: all at once). */
  interval: number;
  workers?: number;
  /** Simulator --timeout, in s. */
  timeoutS?: number;
  /** Each simulator progress line (about one per second), and notices. */
  log?: (line: string) => void;
}

export interface GatewayUplinkReport {
  devices: number;
  msgsPerDevice: number;
  workers: number;
  connected: number;
  failed: number;
  acked: number;
  nacked: number;
  inBackEndQueue: number;
  uplinkAckedPerSecond: number | null;
  ackLatencyP50Ms: number | null;
  ackLatencyP99Ms: number | null;
  gatewayCpuSeconds: number;
  gatewayCpuUsPerAckedMessage: number;
  gatewayRssMiB: number;
  complete: boolean;
  simulatorSeconds: number;
  /** From the simulator's progress lines: [s since the simulator started, devices connected, acks]. */
  progress: [number, number, number][];
  /** corral's listener counters from the gateway's /metrics at the end (undefined if unreadable). */
  corral?: { rejected: Record<string, number>; handshakeFailures: Record<string, number>; accepted: number; opened: number };
}

/** corral's counters from the gateway's Prometheus text. */
async function corralCounters(adminUrl: string): Promise<GatewayUplinkReport['corral']> {
  try {
    const text = await (await fetch(`${adminUrl}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
    const labelled = (name: string, label: string): Record<string, number> => {
      const out: Record<string, number> = {};
      for (const m of text.matchAll(new RegExp(`^${name}\\{${label}="([^"]+)"\\} (\\S+)$`, 'gm'))) out[m[1]!] = Number(m[2]);
      return out;
    };
    const plain = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
    return {
      rejected: labelled('corral_listener_rejected', 'reason'),
      handshakeFailures: labelled('corral_listener_handshake_failures', 'kind'),
      accepted: plain('corral_listener_accepted'),
      opened: plain('corral_listener_opened'),
    };
  } catch {
    return undefined;
  }
}

function killTree(child: ChildProcess): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  for (const pid of treeStats(child.pid).pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

const exited = (child: ChildProcess): Promise<void> =>
  child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((resolve) => child.once('exit', () => resolve()));

/** Resolves once RabbitMQ at `url` accepts a connection; rejects with its error otherwise. */
export async function probeRabbit(url: string, timeoutMs = 5000): Promise<void> {
  const connection = await amqplib.connect(url, { timeout: timeoutMs });
  await connection.close();
}

/** `amqp://user:pass@host` → `amqp://user:***@host`. */
export const redact = (url: string): string => url.replace(/(\/\/[^:/@]*:)[^@]*@/, '$1***@');

export async function runGatewayUplink(o: GatewayUplinkOptions): Promise<GatewayUplinkReport> {
  const log = o.log ?? (() => {});
  const prefix = `bench-uplink-${process.pid}-${Date.now().toString(36)}`;
  const secret = 'bench-secret';
  buildGateway();
  // Credentials in the environment, never on a command line (where `ps` shows them).
  const env: NodeJS.ProcessEnv = { ...process.env, CORRAL_GATEWAY_SECRET: secret, CORRAL_GATEWAY_AMQP_URL: o.url };
  delete env.CORRAL_GATEWAY_PREVIOUS_SECRET;
  delete env.CORRAL_GATEWAY_ADMIN_TOKEN;
  const gatewayArgs = [
    CLI,
    '--prefix', prefix, '--node-id', 'gw-bench',
    '--port', '0', '--admin-port', '0', '--max-connections', String(o.devices + 1000), '--log-level', 'warn',
    ...(o.workers ? ['--workers', String(o.workers)] : []),
  ];
  const connection = await amqplib.connect(o.url);
  const channel = await connection.createChannel();
  const backEnd = `${prefix}.backend`;
  let gateway: ChildProcess | undefined;
  let simulator: ChildProcess | undefined;
  try {
    gateway = spawn(process.execPath, gatewayArgs, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'inherit'] });
    killOnExit(gateway);
    const gw = gateway;
    let adminUrl: string | undefined;
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('gateway did not print its port within 60 s')), 60_000);
      createInterface({ input: gw.stdout! }).on('line', (line) => {
        // Read on after the port: the admin API's address comes a line later (read at the end).
        const admin = /admin API on (http:\/\/[^ ]+)/.exec(line);
        if (admin) adminUrl = admin[1];
        const m = /listening on [^ ]*:(\d+)/.exec(line);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
      gw.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`gateway exited with ${code} before listening`));
      });
    });

    // The back end: one durable queue bound to every uplink, so every publish is routed and confirmed.
    await channel.assertQueue(backEnd, { durable: true });
    await channel.bindQueue(backEnd, `${prefix}.up`, '#');

    const before = treeStats(gw.pid!);
    const began = Date.now();
    simulator = spawn(
      process.execPath,
      [SIMULATE, '--port', String(port), '--devices', String(o.devices), '--msgs', String(o.msgsPerDevice),
        '--rate', String(o.rate), '--interval', String(o.interval), '--json', '--timeout', String(o.timeoutS ?? 600)],
      { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    killOnExit(simulator);
    let summaryLine = '';
    const progress: [number, number, number][] = [];
    createInterface({ input: simulator.stdout! }).on('line', (line) => {
      if (line.startsWith('{')) summaryLine = line;
    });
    createInterface({ input: simulator.stderr! }).on('line', (line) => {
      const m = /^\[([\d.]+) s\] connected (\d+)\/\d+, acks (\d+)\//.exec(line);
      if (m) progress.push([Number(m[1]), Number(m[2]), Number(m[3])]);
      log(line);
    });
    await exited(simulator);
    const simulatorSeconds = (Date.now() - began) / 1000;
    const after = treeStats(gw.pid!);
    if (!summaryLine) throw new Error(`the simulator exited with ${simulator.exitCode} without a summary`);
    const summary = JSON.parse(summaryLine) as {
      acks: number; nacks: number; connected: number; failed: number; p50Ms: number | null; p99Ms: number | null;
      msgsPerSecond: number | null; complete: boolean;
    };
    const held = (await channel.checkQueue(backEnd)).messageCount;
    const corral = adminUrl ? await corralCounters(adminUrl) : undefined;
    return {
      devices: o.devices,
      msgsPerDevice: o.msgsPerDevice,
      workers: o.workers ?? 0,
      connected: summary.connected,
      failed: summary.failed,
      acked: summary.acks,
      nacked: summary.nacks,
      inBackEndQueue: held,
      uplinkAckedPerSecond: summary.msgsPerSecond,
      ackLatencyP50Ms: summary.p50Ms,
      ackLatencyP99Ms: summary.p99Ms,
      gatewayCpuSeconds: Number((after.cpuSeconds - before.cpuSeconds).toFixed(1)),
      gatewayCpuUsPerAckedMessage: Math.round(((after.cpuSeconds - before.cpuSeconds) / Math.max(1, summary.acks)) * 1e6),
      gatewayRssMiB: Math.round(after.rssKiB / 1024),
      complete: summary.complete,
      simulatorSeconds,
      progress,
      ...(corral ? { corral } : {}),
    };
  } finally {
    if (simulator) {
      killTree(simulator);
      await exited(simulator);
    }
    if (gateway) {
      // SIGTERM drains (devices are gone by now); a gateway still there after 20 s is killed.
      if (gateway.exitCode === null && gateway.signalCode === null) {
        const pids = gateway.pid === undefined ? [] : treeStats(gateway.pid).pids;
        gateway.kill('SIGTERM');
        const timer = setTimeout(() => killTree(gateway!), 20_000);
        await exited(gateway);
        clearTimeout(timer);
        for (const pid of pids) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // exited with the gateway
          }
        }
      }
    }
    const queues = [backEnd, `${prefix}.down.offline`, `${prefix}.down.node.gw-bench.0`, `${prefix}.down.node.gw-bench.primary`,
      ...Array.from({ length: o.workers ?? 0 }, (_, i) => `${prefix}.down.node.gw-bench.${i}`)];
    // A failed delete closes its channel: one channel per delete, so one failure cannot skip the rest.
    const remove = async (op: (ch: amqplib.Channel) => Promise<unknown>): Promise<void> => {
      try {
        const ch = await connection.createChannel();
        await op(ch);
        await ch.close();
      } catch {
        // not there, or the connection is gone
      }
    };
    await channel.close().catch(() => undefined);
    for (const q of queues) await remove((ch) => ch.deleteQueue(q));
    for (const x of ['up', 'down', 'down.unrouted', 'events', 'control']) await remove((ch) => ch.deleteExchange(`${prefix}.${x}`));
    await connection.close().catch(() => undefined);
  }
}
