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
import { deleteGatewayTopology, type GatewayProcess, startGateway } from './gateway-process.js';
import { buildNativeClient } from './native-client.js';
import { rabbitCpuSeconds, treeStats } from './proc-stats.js';
import { killOnExit } from './server-child.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
// The compiled simulator, as users run it (`corral-simulate`); the gateway: bench/lib/gateway-process.ts.
const SIMULATE = fileURLToPath(new URL('../../examples/amqp-gateway/bin/corral-simulate.mjs', import.meta.url));

export interface GatewayUplinkOptions {
  url: string;
  devices: number;
  msgsPerDevice: number;
  /** Devices connecting per second (simulator --rate). */
  rate: number;
  /** ms between one device's messages (simulator --interval; 0: all at once). */
  interval: number;
  /**
   * Who drives the devices: `simulator` (default), the gateway's own Node simulator as users run
   * it; `native`, bench/native-client `uplink` (Go): the same devices, the same messages (one TLS
   * record each), the same retries and the same summary, for a fraction of the simulator's CPU on
   * the cores the gateway shares. `native` needs `interval` 0.
   */
  client?: 'simulator' | 'native';
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
  client: 'simulator' | 'native';
  connected: number;
  failed: number;
  /** Why the client's connect attempts failed or its connections were lost, by cause (as the client names them). */
  clientErrors: Record<string, number>;
  acked: number;
  nacked: number;
  inBackEndQueue: number;
  uplinkAckedPerSecond: number | null;
  ackLatencyP50Ms: number | null;
  ackLatencyP99Ms: number | null;
  gatewayCpuSeconds: number;
  gatewayCpuUsPerAckedMessage: number;
  /** RabbitMQ's CPU (beam.smp on this machine) over the simulator run, µs per acked message; null if it does not run here. */
  brokerCpuUsPerAckedMessage: number | null;
  /** The client's CPU (the simulator's process tree, or the native client, last read ≤ 250 ms before it exited), µs per acked message. */
  simulatorCpuUsPerAckedMessage: number;
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
  const nodeId = 'gw-bench';
  const secret = 'bench-secret';
  const connection = await amqplib.connect(o.url);
  const channel = await connection.createChannel();
  const backEnd = `${prefix}.backend`;
  let gateway: GatewayProcess | undefined;
  let simulator: ChildProcess | undefined;
  try {
    gateway = await startGateway({ secret, url: o.url, prefix, nodeId, workers: o.workers, maxConnections: o.devices + 1000, startTimeoutMs: 60_000 });

    // The back end: one durable queue bound to every uplink, so every publish is routed and confirmed.
    await channel.assertQueue(backEnd, { durable: true });
    await channel.bindQueue(backEnd, `${prefix}.up`, '#');

    // The secret in the environment, never on a command line (where `ps` shows it).
    const env: NodeJS.ProcessEnv = { ...process.env, CORRAL_GATEWAY_SECRET: secret };
    const client = o.client ?? 'simulator';
    if (client === 'native' && o.interval !== 0) throw new Error('the native uplink client sends every message at once (interval 0)');
    // Both print progress lines "[t s] connected C/N, acks A/M, ..." on stderr and a JSON summary on stdout.
    const [command, args] =
      client === 'native'
        ? [buildNativeClient(), ['uplink', '-port', String(gateway.port), '-devices', String(o.devices), '-msgs', String(o.msgsPerDevice),
            '-rate', String(o.rate), '-device-prefix', 'dev', '-net', '190', '-max-seconds', String(o.timeoutS ?? 600)]]
        : [process.execPath, [SIMULATE, '--port', String(gateway.port), '--devices', String(o.devices), '--msgs', String(o.msgsPerDevice),
            '--rate', String(o.rate), '--interval', String(o.interval), '--json', '--timeout', String(o.timeoutS ?? 600)]];
    const before = gateway.stats();
    const brokerBefore = rabbitCpuSeconds();
    const began = Date.now();
    simulator = spawn(command, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    killOnExit(simulator);
    // Its CPU, read until it exits (a child's CPU cannot be read once it is gone).
    const sim = simulator;
    let simulatorCpu = 0;
    const simSampler = setInterval(() => (simulatorCpu = Math.max(simulatorCpu, treeStats(sim.pid!).cpuSeconds)), 250);
    let summaryLine = '';
    const progress: [number, number, number][] = [];
    createInterface({ input: simulator.stdout! }).on('line', (line) => {
      if (line.startsWith('{')) summaryLine = line;
    });
    createInterface({ input: simulator.stderr! }).on('line', (line) => {
      const m = /\[([\d.]+) s\] connected (\d+)\/\d+, acks (\d+)\//.exec(line);
      if (m) progress.push([Number(m[1]), Number(m[2]), Number(m[3])]);
      log(line);
    });
    await exited(simulator).finally(() => clearInterval(simSampler));
    const simulatorSeconds = (Date.now() - began) / 1000;
    const after = gateway.stats();
    const brokerAfter = rabbitCpuSeconds();
    if (!summaryLine) throw new Error(`the simulator exited with ${simulator.exitCode} without a summary`);
    const summary = JSON.parse(summaryLine) as {
      acks: number; nacks: number; connected: number; failed: number; p50Ms: number | null; p99Ms: number | null;
      msgsPerSecond: number | null; complete: boolean; cpuUs?: number; errors?: Record<string, number>;
    };
    // The native client reports its own CPU up to its summary; the sampler's last reading may be older.
    if (typeof summary.cpuUs === 'number') simulatorCpu = Math.max(simulatorCpu, summary.cpuUs / 1e6);
    const held = (await channel.checkQueue(backEnd)).messageCount;
    const corral = gateway.adminUrl ? await corralCounters(gateway.adminUrl) : undefined;
    return {
      devices: o.devices,
      msgsPerDevice: o.msgsPerDevice,
      workers: o.workers ?? 0,
      client,
      connected: summary.connected,
      failed: summary.failed,
      clientErrors: summary.errors ?? {},
      acked: summary.acks,
      nacked: summary.nacks,
      inBackEndQueue: held,
      uplinkAckedPerSecond: summary.msgsPerSecond,
      ackLatencyP50Ms: summary.p50Ms,
      ackLatencyP99Ms: summary.p99Ms,
      gatewayCpuSeconds: Number((after.cpuSeconds - before.cpuSeconds).toFixed(1)),
      gatewayCpuUsPerAckedMessage: Math.round(((after.cpuSeconds - before.cpuSeconds) / Math.max(1, summary.acks)) * 1e6),
      brokerCpuUsPerAckedMessage:
        brokerBefore === undefined || brokerAfter === undefined ? null : Math.round(((brokerAfter - brokerBefore) / Math.max(1, summary.acks)) * 1e6),
      simulatorCpuUsPerAckedMessage: Math.round((simulatorCpu / Math.max(1, summary.acks)) * 1e6),
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
    // SIGTERM drains (devices are gone by now); what is left after 20 s is killed.
    await gateway?.stop();
    await channel.close().catch(() => undefined);
    await connection.close().catch(() => undefined);
    await deleteGatewayTopology(o.url, prefix, nodeId, o.workers ?? 0, [backEnd]);
  }
}
