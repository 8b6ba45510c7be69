/**
 * The ceiling of uplink through RabbitMQ on this machine: one process publishing with amqplib and
 * publisher confirms, `inFlight` unconfirmed at a time, persistent messages shaped like the
 * gateway's uplinks (same exchange type, routing key, properties, headers and JSON body), into a
 * durable queue bound to every routing key. No TLS, no devices, no JSON parsing: just the publish.
 *
 * `runRawPublisher()` runs it in a child process (this file, forked) so its CPU is its own, and
 * resolves with the rate, the confirm latency and the CPU per confirmed message. The exchange and
 * queue must exist (the caller declares and deletes them).
 */
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import amqplib from 'amqplib';
import { rabbitCpuSeconds } from './proc-stats.js';

export interface RawPublisherConfig {
  url: string;
  exchange: string;
  messages: number;
  inFlight: number;
  /** Routing keys `<device>.telemetry` cycle over this many device ids, as the gateway's would. */
  devices: number;
}

export interface RawPublisherResult {
  acked: number;
  nacked: number;
  /** From the first publish to the last confirm. */
  ms: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  /** The publishing process's CPU (user + system) over the run, per confirmed message. */
  cpuUsPerMessage: number;
  /** RabbitMQ's CPU (beam.smp on this machine) over the publish loop, µs per confirmed message; null if it does not run here. */
  brokerCpuUsPerMessage: number | null;
  /** Confirms per 1 s bin: [s since the first publish, confirms per second]. */
  series: [number, number][];
}

type FromChild = { t: 'done'; result: RawPublisherResult } | { t: 'error'; message: string };

const SELF = fileURLToPath(import.meta.url);

/** Run the raw publisher in a child process. */
export function runRawPublisher(cfg: RawPublisherConfig, timeoutMs = 300_000): Promise<RawPublisherResult> {
  const child = fork(SELF, [], {
    env: { ...process.env, CORRAL_RAW_PUBLISHER: JSON.stringify(cfg) },
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return new Promise<RawPublisherResult>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`raw publisher: not done within ${timeoutMs} ms`));
    }, timeoutMs);
    child.on('message', (m: FromChild) => {
      clearTimeout(timer);
      if (m.t === 'done') resolve(m.result);
      else reject(new Error(`raw publisher: ${m.message}`));
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`raw publisher exited with ${code} before it finished`));
    });
  });
}

async function publishAll(cfg: RawPublisherConfig): Promise<RawPublisherResult> {
  const connection = await amqplib.connect(cfg.url);
  try {
    const channel = await connection.createConfirmChannel();
    channel.on('return', () => {}); // mandatory: nothing should come back (the queue is bound to #)
    const latencies = new Float64Array(cfg.messages);
    const confirmedAt: number[] = [];
    let sent = 0;
    let acked = 0;
    let nacked = 0;
    const cpu0 = process.cpuUsage();
    const broker0 = rabbitCpuSeconds();
    const t0 = performance.now();
    await new Promise<void>((resolve) => {
      const publishOne = (): void => {
        const i = sent++;
        const device = `dev-${(i % cfg.devices) + 1}`;
        const id = `m-${i}`;
        const body = JSON.stringify({ seq: i, at: new Date().toISOString(), temperature: 20 + Math.round(Math.random() * 100) / 10 });
        const at = performance.now();
        channel.publish(
          cfg.exchange,
          `${device}.telemetry`,
          Buffer.from(body),
          {
            persistent: true,
            mandatory: true,
            contentType: 'application/json',
            messageId: id,
            timestamp: Math.floor(Date.now() / 1000),
            headers: { 'device-id': device, 'message-id': id, 'node-id': 'raw-bench', 'publish-id': `raw-${i}` },
          },
          (err: unknown) => {
            const now = performance.now();
            latencies[i] = now - at;
            confirmedAt.push(now - t0);
            if (err) nacked++;
            else acked++;
            if (sent < cfg.messages) publishOne();
            else if (acked + nacked === cfg.messages) resolve();
          },
        );
      };
      for (let k = 0; k < Math.min(cfg.inFlight, cfg.messages); k++) publishOne();
    });
    const ms = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    const broker1 = rabbitCpuSeconds();
    const sorted = Array.from(latencies).sort((a, b) => a - b);
    const pct = (p: number): number => Math.round(sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))]! * 10) / 10;
    const bins = new Array<number>(Math.floor(ms / 1000) + 1).fill(0);
    for (const t of confirmedAt) bins[Math.floor(t / 1000)]!++;
    await channel.close();
    return {
      acked,
      nacked,
      ms: Math.round(ms),
      perSecond: Math.round((acked / ms) * 1000),
      p50Ms: pct(50),
      p99Ms: pct(99),
      cpuUsPerMessage: Math.round((cpu.user + cpu.system) / Math.max(1, acked)),
      brokerCpuUsPerMessage: broker0 === undefined || broker1 === undefined ? null : Math.round(((broker1 - broker0) / Math.max(1, acked)) * 1e6),
      series: bins.map((n, i) => [i, n]),
    };
  } finally {
    await connection.close().catch(() => undefined);
  }
}

if (process.send && process.env.CORRAL_RAW_PUBLISHER) {
  const cfg = JSON.parse(process.env.CORRAL_RAW_PUBLISHER) as RawPublisherConfig;
  process.on('disconnect', () => process.exit(1)); // the parent is gone
  publishAll(cfg).then(
    (result) => process.send!({ t: 'done', result } satisfies FromChild, () => process.exit(0)),
    (err: unknown) => process.send!({ t: 'error', message: err instanceof Error ? err.message : String(err) } satisfies FromChild, () => process.exit(1)),
  );
}
