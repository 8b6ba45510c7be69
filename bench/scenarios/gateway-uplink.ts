/**
 * Scenario 5, "Gateway uplink": 10,000 simulated TLS devices (quick: 500) send 50 messages each
 * through the bundled gateway (examples/amqp-gateway, one process, on corral) to the local
 * RabbitMQ with publisher confirms; a device's message counts once the gateway has acked it, which
 * it does only once RabbitMQ confirmed it. Side by side, in the same run and against the same
 * broker: raw amqplib with publisher confirms (1,000 in flight, persistent, durable queue, the
 * same message shape) — the ceiling any gateway's uplink can reach on this machine.
 *
 * The profile is docs/gateway.md's "burst": devices connect at 1,000 per second and each sends its
 * 50 messages at once (the gateway pipelines up to 16 unconfirmed per device). The gated run
 * drives the devices with the native client (bench/native-client uplink: the simulator's
 * devices, messages, one TLS record per message, retries and summary, in Go), so that the two
 * shared cores go to the gateway and RabbitMQ; a second run with the gateway's Node simulator is
 * reported beside it.
 *
 * RabbitMQ is found at AMQP_URL (default amqp://guest:guest@127.0.0.1:5672). If it is unreachable,
 * a full run fails with that error (a benchmark that silently measured nothing would mislead);
 * a quick run (a smoke check, possibly on a machine without RabbitMQ) skips itself and returns a
 * result whose target is marked not met, with a note saying why.
 */
import os from 'node:os';
import amqplib from 'amqplib';
import { runRawPublisher, type RawPublisherResult } from '../lib/amqp-raw-publisher.js';
import { type GatewayUplinkReport, redact, runGatewayUplink } from '../lib/gateway-uplink.js';
import { fmt, fmtMs, round, sleep } from '../lib/numbers.js';
import { requireRabbit } from '../lib/rabbit-required.js';
import type { BenchContext, Chart, Scenario, ScenarioResult, TargetCheck } from '../lib/scenario.js';

const IN_FLIGHT = 1000;
const MSGS_PER_DEVICE = 50;
const CONNECT_RATE = 1000;
/** µs, or a dash when not measured (RabbitMQ not on this machine). */
const us = (v: number | null): string => (v === null ? '–' : `${fmt(v)} µs`);

/** Declare an exchange and a durable queue bound to all of it, run the raw publisher, delete both. */
async function rawCeiling(url: string, messages: number, devices: number): Promise<RawPublisherResult> {
  const prefix = `bench-raw-${process.pid}-${Date.now().toString(36)}`;
  const exchange = `${prefix}.up`;
  const queue = `${prefix}.backend`;
  const connection = await amqplib.connect(url);
  try {
    const ch = await connection.createChannel();
    await ch.assertExchange(exchange, 'topic', { durable: true });
    await ch.assertQueue(queue, { durable: true });
    await ch.bindQueue(queue, exchange, '#');
    try {
      const result = await runRawPublisher({ url, exchange, messages, inFlight: IN_FLIGHT, devices });
      const held = (await ch.checkQueue(queue)).messageCount;
      if (held !== result.acked) throw new Error(`raw publisher: ${result.acked} confirmed but ${held} in the queue`);
      return result;
    } finally {
      await ch.deleteQueue(queue).catch(() => undefined);
      await ch.deleteExchange(exchange).catch(() => undefined);
    }
  } finally {
    await connection.close().catch(() => undefined);
  }
}

/** A latency for the table, as the other scenarios print one (a dash if unknown). */
const latency = (ms: number | null | undefined): string => (ms === null || ms === undefined ? '–' : `${fmtMs(ms)} ms`);

/** A table row for one gateway run (`client` names who drove the devices, in the CPU column). */
function gatewayRow(config: string, gw: GatewayUplinkReport, rawPerSecond: number, client: string): (string | number)[] {
  const rate = gw.uplinkAckedPerSecond ?? 0;
  return [
    config,
    `${fmt(gw.acked)} / ${fmt(gw.nacked)}`,
    fmt(gw.inBackEndQueue),
    fmt(Math.round(rate)),
    round((rate / rawPerSecond) * 100, 0),
    `${fmt(gw.gatewayCpuUsPerAckedMessage)} µs (gateway tree) + ${us(gw.brokerCpuUsPerAckedMessage)} (RabbitMQ) + ${fmt(gw.simulatorCpuUsPerAckedMessage)} µs (${client})`,
    `${latency(gw.ackLatencyP50Ms)} / ${latency(gw.ackLatencyP99Ms)}`,
    `${fmt(gw.connected)} / ${fmt(gw.failed)}`,
    gw.corral ? `${fmt(gw.corral.rejected.wait_timeout ?? 0)} / ${fmt(Object.values(gw.corral.handshakeFailures).reduce((a, b) => a + b, 0))}` : 'unread',
  ];
}

export const scenario: Scenario = {
  id: 'gateway-uplink',
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    const rabbit = await requireRabbit(ctx, { id: 'gateway-uplink', title: 'Gateway uplink through RabbitMQ', target: 'gateway uplink ≥ 70% of raw amqplib publisher confirms (same broker, same run)' });
    if ('skipped' in rabbit) return rabbit.skipped;
    const { url } = rabbit;
    const loadBefore = os.loadavg();
    const devices = ctx.quick ? 500 : 10_000;
    const messages = devices * MSGS_PER_DEVICE;
    // The raw run sends at least 50,000 messages: fewer would measure mostly its start.
    const rawMessages = Math.max(messages, 50_000);

    ctx.log(`gateway-uplink: raw amqplib publisher, ${fmt(rawMessages)} persistent messages, ${IN_FLIGHT} in flight`);
    const raw = await rawCeiling(url, rawMessages, devices);
    ctx.log(`gateway-uplink: raw ${fmt(raw.perSecond)} msgs/s, p50 ${raw.p50Ms} ms, p99 ${raw.p99Ms} ms`);
    await sleep(1000);

    // The gated run drives the devices with the native client (bench/native-client uplink), so
    // that the gateway and RabbitMQ, not the devices, are what the shared cores spend on; the
    // gateway's own Node simulator follows, reported as before.
    const gatewayRun = async (client: 'native' | 'simulator'): Promise<GatewayUplinkReport> => {
      ctx.log(`gateway-uplink: gateway, ${fmt(devices)} TLS devices × ${MSGS_PER_DEVICE} messages (${client} client)`);
      let lastLog = 0;
      const report = await runGatewayUplink({
        url,
        devices,
        msgsPerDevice: MSGS_PER_DEVICE,
        rate: CONNECT_RATE,
        interval: 0,
        client,
        timeoutS: ctx.quick ? 60 : 600,
        log: (line) => {
          if (Date.now() - lastLog < 10_000) return;
          lastLog = Date.now();
          ctx.log(`gateway-uplink: ${line}`);
        },
      });
      const rate = report.uplinkAckedPerSecond ?? 0;
      ctx.log(`gateway-uplink: gateway (${client} client) ${fmt(rate)} msgs/s (${round((rate / raw.perSecond) * 100, 0)}% of raw), ${fmt(report.acked)} acked`);
      return report;
    };
    const gw = await gatewayRun('native');
    await sleep(1000);
    const gwSim = await gatewayRun('simulator');
    const gwRate = gw.uplinkAckedPerSecond ?? 0;
    const simRate = gwSim.uplinkAckedPerSecond ?? 0;

    const ratio = gwRate / raw.perSecond;
    const gatewayBase =
      `gateway (examples/amqp-gateway) in one process on corral (TLS, line framing, maxConnections ${fmt(devices + 1000)}, gateway defaults: ` +
      'maxInflightPerDevice 16, 64 MiB uplink buffer), publisher confirms on one channel';
    const gatewayConfig = `${gatewayBase}; devices driven by the native client (bench/native-client uplink, Go, one process)`;
    const simulatorConfig = `${gatewayBase}; devices driven by the gateway's Node simulator (corral-simulate, one process)`;
    const rawConfig = `raw amqplib, one process, confirm channel, ${fmt(IN_FLIGHT)} in flight, persistent, mandatory, topic exchange → one durable queue`;
    // The gateway's peak: the best window of acks (the simulator's progress, ~1 per second).
    const window = ctx.quick ? 2 : 5;
    let peak = 0;
    for (let i = 0; i < gw.progress.length; i++) {
      for (let j = i + 1; j < gw.progress.length; j++) {
        const dt = gw.progress[j]![0] - gw.progress[i]![0];
        if (dt >= window) {
          peak = Math.max(peak, (gw.progress[j]![2] - gw.progress[i]![2]) / dt);
          break;
        }
      }
    }
    const ackSeries = (progress: GatewayUplinkReport['progress']): [number, number][] => {
      const out: [number, number][] = [];
      for (let i = 1; i < progress.length; i++) {
        const [t1, , a1] = progress[i]!;
        const [t0, , a0] = progress[i - 1]!;
        if (t1 > t0) out.push([round(t1, 1), Math.round((a1 - a0) / (t1 - t0))]);
      }
      return out;
    };
    const charts: Chart[] = [
      {
        title: 'Confirmed uplink messages per second',
        xLabel: 'seconds since the first publish (raw) / the simulator started (gateway)',
        yLabel: 'messages acked per second',
        series: [
          { name: 'gateway, native client (TLS devices → corral → RabbitMQ)', points: ackSeries(gw.progress) },
          { name: 'gateway, Node simulator', points: ackSeries(gwSim.progress) },
          { name: 'raw amqplib (the ceiling)', points: raw.series },
        ],
      },
      {
        title: 'Devices connected to the gateway',
        xLabel: 'seconds since the simulator started',
        yLabel: 'devices connected',
        series: [
          { name: 'gateway, native client', points: gw.progress.map(([t, c]) => [t, c] as [number, number]) },
          { name: 'gateway, Node simulator', points: gwSim.progress.map(([t, c]) => [t, c] as [number, number]) },
        ],
      },
    ];
    const allConnected = gw.progress.find(([, c]) => c >= devices);
    const allConnectedS = allConnected ? allConnected[0] : null;
    const met = ratio >= 0.7;
    const targets: TargetCheck[] = [
      {
        target: 'gateway uplink ≥ 70% of raw amqplib publisher confirms (same broker, same run)',
        measured: `gateway ${fmt(gwRate)} msgs/s = ${round(ratio * 100, 0)}% of raw ${fmt(raw.perSecond)} msgs/s${peak > 0 ? ` (gateway's best ${window} s: ${fmt(Math.round(peak))} msgs/s = ${round((peak / raw.perSecond) * 100, 0)}%)` : ''}`,
        met,
        ...(met
          ? {}
          : {
              note:
                `Missed by ${round((0.7 - ratio) * 100, 0)} points (${round(0.7 / Math.max(ratio, 1e-9), 1)}× short). ` +
                (peak > 0
                  ? `The gateway's best ${window} s reached ${round((peak / raw.perSecond) * 100, 0)}% of raw; over the whole run messages flow only from ` +
                    `connected devices, and devices connect while messages flow (${
                      allConnectedS !== null
                        ? `the last one after ${allConnectedS.toFixed(0)} s`
                        : gw.connected === devices
                          ? 'all of them during the run'
                          : `${fmt(devices - gw.connected)} never did`
                    }${
                      gw.failed > 0
                        ? `; ${fmt(gw.failed)} connect attempts failed and were retried with backoff${
                            gw.corral ? `, corral having closed ${fmt(gw.corral.rejected.wait_timeout ?? 0)} sockets that waited more than 5 s for a handshake slot while the cores were busy with messages` : ''
                          }`
                        : ''
                    }). `
                  : '') +
                `The raw publisher is one process doing nothing but publish; the gateway run puts three CPU-heavy programs on the same 2 cores: ` +
                `the devices' client (${fmt(devices)} TLS clients; ${fmt(gw.simulatorCpuUsPerAckedMessage)} µs per message with the native client, ` +
                `${fmt(gwSim.simulatorCpuUsPerAckedMessage)} µs with the Node simulator), the gateway (a TLS handshake, hello, authentication and a RabbitMQ binding per device, then ` +
                `per message: TLS decryption, JSON parsing and validation, a publish with headers, and an encrypted ack line) and RabbitMQ, which the raw run has ` +
                `to itself. Gateway CPU per acked message is ${fmt(gw.gatewayCpuUsPerAckedMessage)} µs (TLS handshakes included) against ` +
                `${fmt(raw.cpuUsPerMessage)} µs for the raw publisher. What would close it: the devices' client on other cores or another machine; ` +
                'the gateway over worker processes (--workers: each worker publishes on its own connection); devices that connect ' +
                'before they send (the burst profile overlaps the two).',
            }),
      },
    ];
    return {
      id: 'gateway-uplink',
      title: 'Gateway uplink through RabbitMQ, against raw amqplib',
      config: {
        amqpUrl: redact(url),
        devices,
        msgsPerDevice: MSGS_PER_DEVICE,
        connectRate: CONNECT_RATE,
        profile: 'burst: each device sends its 50 messages at once (simulator --interval 0)',
        gateway: gatewayConfig,
        gatewaySimulator: `${simulatorConfig} — reported, not gated: the simulator costs the shared cores ${fmt(gwSim.simulatorCpuUsPerAckedMessage)} µs per message, ${fmt(simRate)} msgs/s = ${round((simRate / raw.perSecond) * 100, 0)}% of raw`,
        raw: rawConfig,
        rawMessages,
        rateDefinition:
          "gateway: acks ÷ (last answer − first message sent), from the devices' client (the devices' connect phase overlaps it); raw: confirms ÷ (last confirm − first publish)",
        cpu: 'gateway: /proc, the gateway process tree (TLS handshakes included) over the simulator run; simulator: /proc, its process tree, last read ≤ 250 ms before it exited; RabbitMQ: /proc, its beam.smp process, over the same spans; raw: process.cpuUsage() of the publishing process over the publish loop',
      },
      tables: [
        {
          title: `Uplink through RabbitMQ with publisher confirms: ${fmt(devices)} TLS devices × ${MSGS_PER_DEVICE} messages through the gateway, against raw amqplib on the same broker in the same run`,
          columns: [
            'path (configuration)',
            'messages acked / nacked',
            'in the back-end queue',
            'acked msgs/s',
            '% of raw',
            'CPU per acked message',
            'ack latency p50 / p99',
            'devices connected / failed connect attempts',
            'corral: closed unserved after 5 s waiting / handshakes failed',
          ],
          rows: [
            [rawConfig, `${fmt(raw.acked)} / ${fmt(raw.nacked)}`, fmt(raw.acked), fmt(Math.round(raw.perSecond)), 100, `${fmt(raw.cpuUsPerMessage)} µs (publisher) + ${us(raw.brokerCpuUsPerMessage)} (RabbitMQ)`, `${latency(raw.p50Ms)} / ${latency(raw.p99Ms)}`, '–', '–'],
            gatewayRow(gatewayConfig, gw, raw.perSecond, 'native client'),
            gatewayRow(simulatorConfig, gwSim, raw.perSecond, 'simulator'),
          ],
        },
      ],
      charts,
      targets,
      raw: { loadAverage: { before: loadBefore, after: os.loadavg() }, raw, gateway: gw, gatewaySimulator: gwSim, gatewayPeak: { windowSeconds: window, perSecond: Math.round(peak) } },
    };
  },
};
