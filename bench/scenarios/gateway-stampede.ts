/**
 * Gateway stampede: N devices (16,000; quick 1,000) connect at once to the bundled gateway
 * (examples/amqp-gateway, `--workers 2`, on RabbitMQ) and, in the same run, the same fleet to
 * corral's line-echo server with 2 workers — the gateway's cost over corral alone.
 *
 * The devices are the native load client's cold storm (bench/native-client `storm`, Go
 * crypto/tls), one source address per device (127.x.y.z), spread over several client processes:
 * 5 s deadline per attempt, then backoff 1 s × 2ⁿ (capped at 30 s) × random [0.5, 1.5), as in the
 * reconnect storm. Against the gateway an attempt is TCP connect + TLS handshake + hello →
 * welcome + one msg → its ack (`-gateway msg`: the device counts as connected only once its
 * message is acked, which the gateway does once RabbitMQ confirmed it into a queue); against the
 * echo server it is TCP connect + TLS handshake + one line echoed. Devices that are connected
 * hold their connection until every device is connected (or has given up), and the server is
 * measured holding them.
 *
 * Measured: time until every device is connected (from the storm's start), attempts per device,
 * failed attempts by reason, and memory per device: RSS growth over the idle server, summed over
 * its process tree (primary and workers), ÷ devices connected, read ~2 s after the last one
 * connected. Also reported: the server's CPU per device. Targets: gateway all-connected ≤ 1.25 ×
 * the echo server's (same run), gateway RSS per device ≤ 40 KiB.
 *
 * RabbitMQ at AMQP_URL (default amqp://guest:guest@127.0.0.1:5672); the gateway gets its URL and
 * its device secret (random, per run) in its environment, and declares its topology under a
 * prefix of its own (`--uplink-queue <prefix>.backend`, so every message is routed and acked); all
 * of it is deleted after each run. Unreachable RabbitMQ: a full run fails, a quick run skips.
 */
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { ECHO_SERVERS } from '../lib/echo-server.js';
import { deleteGatewayTopology, type GatewayProcess, startGateway } from '../lib/gateway-process.js';
import { redact } from '../lib/gateway-uplink.js';
import { cpuPerHandshake, type NativeStormResult, startNativeStorm } from '../lib/native-client.js';
import { cumulative, fmt, medianBy, round, sleep } from '../lib/numbers.js';
import { rabbitCpuSeconds, type TreeStats, treeStats } from '../lib/proc-stats.js';
import type { BenchContext, Chart, Scenario, ScenarioResult, Table, TargetCheck } from '../lib/scenario.js';
import { requireRabbit } from '../lib/rabbit-required.js';
import { startServer } from '../lib/server-child.js';

const WORKERS = 2;
/**
 * Both servers' connection limit: the gateway's default (--max-connections), which corral splits
 * over the workers (30,000 each), far above a worker's share of the fleet even when the kernel
 * spreads connections unevenly.
 */
const MAX_CONNECTIONS = 60_000;
const DEADLINE_MS = 5000;
const GIVE_UP_MS = 120_000;
const NODE_ID = 'gw-bench';
/** The client processes' second octets: run r uses FIRST_NET + (r mod 4) × processes, + 0…processes − 1. */
const FIRST_NET = 160;
const TIME_TARGET = 1.25;
const RSS_TARGET_KIB = 40;

type Target = 'echo' | 'gateway';

interface Run {
  server: Target;
  devices: number;
  connected: number;
  /** ms from the storm's start until the last device was connected; null: not all were. */
  allConnectedMs: number | null;
  lastConnectedMs: number;
  attemptsPerDevice: number;
  maxAttempts: number;
  failedAttempts: number;
  failedBy: Record<string, number>;
  /** Failed attempts by stage (connect, handshake, echo; gateway: welcome, ack). */
  failedAt: Record<string, number>;
  rssIdleMiB: number;
  rssHeldMiB: number;
  rssKiBPerDevice: number;
  /** Largest RSS sampled (every 250 ms) from the start until the reading, MiB. */
  rssPeakMiB: number;
  serverCpuUsPerDevice: number;
  /** CPU of the local RabbitMQ (beam.smp) over the same span, µs per device; null if it does not run here. */
  brokerCpuUsPerDevice: number | null;
  serverProcesses: number;
  clientCpuUsPerHandshake: number | null;
  truncated: boolean;
  /** ms from the storm's start at which each device was connected. */
  connectedAt: number[];
}

interface Server {
  pid: number;
  port: number;
  stats(): TreeStats;
  stop(): Promise<void>;
}

async function startEcho(): Promise<Server> {
  const s = await startServer(ECHO_SERVERS.corral, { tls: true, workers: WORKERS, maxConnections: MAX_CONNECTIONS }, { startTimeoutMs: 120_000 });
  return { pid: s.pid, port: s.port, stats: () => treeStats(s.pid), stop: () => s.stop(20_000) };
}

function summarize(server: Target, r: NativeStormResult): Pick<Run, 'server' | 'devices' | 'connected' | 'allConnectedMs' | 'lastConnectedMs' | 'attemptsPerDevice' | 'maxAttempts' | 'failedAttempts' | 'failedBy' | 'failedAt' | 'connectedAt' | 'truncated' | 'clientCpuUsPerHandshake'> {
  const connectedAt = r.connectedAt.map((t) => t - r.epoch);
  const last = connectedAt.reduce((a, b) => Math.max(a, b), 0);
  const failedBy: Record<string, number> = {};
  const failedAt: Record<string, number> = {};
  for (const a of r.abandoned) {
    failedBy[a.reason] = (failedBy[a.reason] ?? 0) + 1;
    failedAt[a.stage] = (failedAt[a.stage] ?? 0) + 1;
  }
  return {
    server,
    devices: r.devices,
    connected: r.connected,
    allConnectedMs: r.connected === r.devices ? last : null,
    lastConnectedMs: last,
    attemptsPerDevice: r.attempts.reduce((a, b) => a + b, 0) / Math.max(1, r.devices),
    maxAttempts: r.attempts.reduce((a, b) => Math.max(a, b), 0),
    failedAttempts: r.abandoned.length,
    failedBy,
    failedAt,
    connectedAt,
    truncated: r.truncated,
    clientCpuUsPerHandshake: cpuPerHandshake(r.stormCost),
  };
}

async function once(ctx: BenchContext, kind: Target, o: { url: string; devices: number; processes: number; net: number; settleMs: number }): Promise<Run> {
  const secret = randomBytes(32).toString('hex');
  const prefix = `bench-stampede-${process.pid}-${Date.now().toString(36)}`;
  const uplinkQueue = `${prefix}.backend`;
  let server: Server | undefined;
  let storm: ReturnType<typeof startNativeStorm> | undefined;
  let sampler: NodeJS.Timeout | undefined;
  try {
    if (kind === 'gateway') {
      const gw: GatewayProcess = await startGateway({ secret, url: o.url, workers: WORKERS, prefix, nodeId: NODE_ID, uplinkQueue });
      server = { pid: gw.pid, port: gw.port, stats: () => gw.stats(), stop: () => gw.stop() };
    } else {
      server = await startEcho();
    }
    const srv = server;
    await sleep(o.settleMs); // start-up work (workers, certificate, JIT, the broker connections) behind it
    const idle = srv.stats();
    const brokerIdle = rabbitCpuSeconds();
    let peak = idle.rssKiB;
    sampler = setInterval(() => (peak = Math.max(peak, treeStats(srv.pid).rssKiB)), 250);
    ctx.log(`gateway-stampede/${kind}: ${idle.pids.length} processes, ${Math.round(idle.rssKiB / 1024)} MiB idle; ${fmt(o.devices)} devices at once`);
    storm = startNativeStorm({
      port: srv.port,
      net: o.net,
      devices: o.devices,
      processes: o.processes,
      deadlineMs: DEADLINE_MS,
      giveUpMs: GIVE_UP_MS,
      ...(kind === 'gateway' ? { gateway: 'msg' as const, gatewaySecret: secret, devicePrefix: 'stampede' } : {}),
    });
    const t0 = Date.now();
    const progress = setInterval(() => ctx.log(`gateway-stampede/${kind}: ${((Date.now() - t0) / 1000).toFixed(0)} s`), 10_000);
    const result = await storm.done.finally(() => clearInterval(progress));
    await sleep(o.settleMs); // the last acks and the allocations behind them
    const held = srv.stats();
    const brokerHeld = rabbitCpuSeconds();
    clearInterval(sampler);
    sampler = undefined;
    peak = Math.max(peak, held.rssKiB);
    const base = summarize(kind, result);
    return {
      ...base,
      rssIdleMiB: Math.round(idle.rssKiB / 1024),
      rssHeldMiB: Math.round(held.rssKiB / 1024),
      rssKiBPerDevice: round((held.rssKiB - idle.rssKiB) / Math.max(1, result.connected), 1),
      rssPeakMiB: Math.round(peak / 1024),
      serverCpuUsPerDevice: Math.round(((held.cpuSeconds - idle.cpuSeconds) / Math.max(1, result.connected)) * 1e6),
      brokerCpuUsPerDevice:
        brokerIdle === undefined || brokerHeld === undefined ? null : Math.round(((brokerHeld - brokerIdle) / Math.max(1, result.connected)) * 1e6),
      serverProcesses: held.pids.length,
    };
  } finally {
    if (sampler) clearInterval(sampler);
    // Clients first: the server then has nothing left to drain and stops at once.
    await storm?.close();
    await server?.stop();
    if (kind === 'gateway') await deleteGatewayTopology(o.url, prefix, NODE_ID, WORKERS, [uplinkQueue]).catch((err: unknown) => ctx.log(`gateway-stampede: deleting ${prefix}.*: ${String(err)}`));
  }
}

const s = (ms: number | null): string => (ms === null ? 'not all connected' : `${(ms / 1000).toFixed(1)} s`);

function failedText(r: Run): string {
  const parts = (counts: Record<string, number>): string =>
    Object.entries(counts)
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${fmt(v)} ${k}`)
      .join(', ');
  return r.failedAttempts === 0 ? '0' : `${fmt(r.failedAttempts)} (${parts(r.failedBy)}; waiting for: ${parts(r.failedAt)})`;
}

export const scenario: Scenario = {
  id: 'gateway-stampede',
  budgetSeconds: { quick: 90, full: 2400 },
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    const rabbit = await requireRabbit(ctx, { id: 'gateway-stampede', title: 'Gateway stampede', target: `gateway (--workers ${WORKERS}): every device connected within ${TIME_TARGET} × corral's echo server (${WORKERS} workers), same fleet, same run` });
    if ('skipped' in rabbit) return rabbit.skipped;
    const { url } = rabbit;
    const loadBefore = os.loadavg();
    const devices = ctx.quick ? 1000 : 16_000;
    const processes = ctx.quick ? 2 : 4;
    const repeats = ctx.quick ? 1 : 3;
    const settleMs = ctx.quick ? 1000 : 2000;
    const runs: Run[] = [];
    let slot = 0;
    for (let i = 0; i < repeats; i++) {
      for (const kind of ['echo', 'gateway'] as const) {
        const net = FIRST_NET + (slot++ % 4) * processes;
        const r = await once(ctx, kind, { url, devices, processes, net, settleMs });
        runs.push(r);
        ctx.log(
          `gateway-stampede/${kind} run ${i + 1}/${repeats}: ${fmt(r.connected)}/${fmt(r.devices)} connected in ${s(r.allConnectedMs)}, ${r.attemptsPerDevice.toFixed(2)} attempts/device, ` +
            `failed ${failedText(r)}; RSS ${r.rssIdleMiB} → ${r.rssHeldMiB} MiB, ${r.rssKiBPerDevice} KiB/device; server ${fmt(r.serverCpuUsPerDevice)} µs/device, RabbitMQ ${r.brokerCpuUsPerDevice === null ? '–' : fmt(r.brokerCpuUsPerDevice)} µs/device`,
        );
        await sleep(1000);
      }
    }
    const median = (kind: Target): Run => medianBy(runs.filter((r) => r.server === kind), (r) => r.allConnectedMs ?? Number.POSITIVE_INFINITY);
    const echo = median('echo');
    const gw = median('gateway');
    const ratio = echo.allConnectedMs !== null && gw.allConnectedMs !== null && echo.allConnectedMs > 0 ? gw.allConnectedMs / echo.allConnectedMs : null;
    const echoConfig = `corral's line-echo server (bench/servers/corral-echo.ts), ${WORKERS} workers, maxConnections ${fmt(MAX_CONNECTIONS)} (the gateway's default), otherwise corral's defaults`;
    const gatewayConfig = `the gateway (examples/amqp-gateway) with --workers ${WORKERS} on RabbitMQ, --uplink-queue (one durable queue bound to every uplink), otherwise its defaults (--max-connections ${fmt(MAX_CONNECTIONS)})`;
    const ofRuns = repeats > 1 ? ` Median of ${repeats} runs by time until all connected.` : '';
    const tables: Table[] = [
      {
        title:
          `Stampede: ${fmt(devices)} TLS devices connect at once, one source address each, ${processes} client processes; ${DEADLINE_MS / 1000} s deadline per attempt, ` +
          `backoff 1 s × 2ⁿ (cap 30 s) × [0.5, 1.5). Gateway: connected = hello → welcome and one msg acked; echo: one line echoed.${ofRuns}`,
        columns: [
          'server',
          'connected',
          'all connected after',
          'gateway ÷ echo',
          'attempts per device',
          'max attempts',
          'failed attempts (by reason)',
          'server RSS idle → held (MiB)',
          'RSS per device (KiB)',
          'peak RSS (MiB)',
          'server CPU µs per device',
          'RabbitMQ CPU µs per device',
          'client CPU µs per handshake',
          'all connected after, each run',
        ],
        rows: [echo, gw].map((r) => [
          r.server === 'echo' ? echoConfig : gatewayConfig,
          `${fmt(r.connected)} / ${fmt(r.devices)}`,
          s(r.allConnectedMs),
          r.server === 'gateway' && ratio !== null ? round(ratio, 2) : null,
          round(r.attemptsPerDevice, 2),
          r.maxAttempts,
          failedText(r),
          `${fmt(r.rssIdleMiB)} → ${fmt(r.rssHeldMiB)}`,
          r.rssKiBPerDevice,
          r.rssPeakMiB,
          r.serverCpuUsPerDevice,
          r.brokerCpuUsPerDevice,
          r.clientCpuUsPerHandshake,
          runs
            .filter((q) => q.server === r.server)
            .map((q) => s(q.allConnectedMs))
            .join(', '),
        ]),
      },
    ];
    const binMs = ctx.quick ? 250 : 1000;
    const charts: Chart[] = [
      {
        title: `Devices connected after the stampede's start (${fmt(devices)} devices)`,
        xLabel: 'seconds after the start',
        yLabel: 'devices connected',
        series: [echo, gw].map((r) => ({ name: r.server === 'echo' ? `corral echo, ${WORKERS} workers` : `gateway, --workers ${WORKERS}`, points: cumulative(r.connectedAt, binMs) })),
      },
    ];
    const timeMet = ratio !== null && ratio <= TIME_TARGET;
    const rssMet = gw.connected === gw.devices && gw.rssKiBPerDevice <= RSS_TARGET_KIB;
    // Both servers and RabbitMQ share the same cores: what a device costs in all is what bounds how fast a fleet gets in.
    const gwTotal = gw.serverCpuUsPerDevice + (gw.brokerCpuUsPerDevice ?? 0);
    const echoTotal = echo.serverCpuUsPerDevice + (echo.brokerCpuUsPerDevice ?? 0);
    const cpuNote =
      `CPU per device (failed attempts included), on the same ${os.availableParallelism()} cores: gateway ${fmt(gw.serverCpuUsPerDevice)} µs + RabbitMQ ` +
      `${gw.brokerCpuUsPerDevice === null ? '(not local, not measured)' : `${fmt(gw.brokerCpuUsPerDevice)} µs`} = ${fmt(gwTotal)} µs, against ${fmt(echoTotal)} µs for the echo server ` +
      `(${round(gwTotal / Math.max(1, echoTotal), 2)}×; TLS handshakes included). The gateway's attempts failed ${failedText(gw)}, the echo server's ${failedText(echo)}.`;
    const targets: TargetCheck[] = [
      {
        target: `gateway (--workers ${WORKERS}): every device connected (hello, welcome, one acked message) within ${TIME_TARGET} × corral's echo server (${WORKERS} workers), same fleet, same run`,
        measured: `gateway ${s(gw.allConnectedMs)}, echo ${s(echo.allConnectedMs)}${ratio !== null ? ` (${round(ratio, 2)}×)` : ''}`,
        met: timeMet,
        ...(timeMet
          ? {}
          : {
              note:
                ratio === null
                  ? `Not every device was connected within ${GIVE_UP_MS / 1000} s (gateway ${fmt(gw.connected)}/${fmt(gw.devices)}, echo ${fmt(echo.connected)}/${fmt(echo.devices)}). ${cpuNote}`
                  : `Missed at ${round(ratio, 2)}× (limit ${TIME_TARGET}×): ${fmt(((gw.allConnectedMs ?? 0) - TIME_TARGET * (echo.allConnectedMs ?? 0)) / 1000, 1)} s over. ${cpuNote}`,
            }),
      },
      {
        target: `gateway RSS per connected device ≤ ${RSS_TARGET_KIB} KiB (growth over idle, summed over its process tree)`,
        measured: `gateway ${gw.rssKiBPerDevice} KiB (${gw.rssIdleMiB} → ${gw.rssHeldMiB} MiB for ${fmt(gw.connected)} devices); echo ${echo.rssKiBPerDevice} KiB`,
        met: rssMet,
        ...(rssMet
          ? {}
          : {
              note:
                gw.connected !== gw.devices
                  ? `Not every device was connected (${fmt(gw.connected)}/${fmt(gw.devices)}): the memory per device of a partial fleet is not the target's.`
                  : `Missed by ${round(gw.rssKiBPerDevice - RSS_TARGET_KIB, 1)} KiB per device; corral's echo server holds ${echo.rssKiBPerDevice} KiB per device under the same fleet, so ${round(Math.max(0, gw.rssKiBPerDevice - echo.rssKiBPerDevice), 1)} KiB is the gateway's own (its session, the broker bindings of each device, its buffers).`,
            }),
      },
    ];
    return {
      id: 'gateway-stampede',
      title: 'Gateway stampede: a fleet connecting at once, through hello, welcome and one acked message',
      config: {
        devices,
        amqpUrl: redact(url),
        echo: echoConfig,
        gateway: gatewayConfig,
        client: `native load client (bench/native-client storm, Go crypto/tls), ${processes} processes, one source address per device (127.${FIRST_NET}–${FIRST_NET + 4 * processes - 1}.x.y), all devices at once; against the gateway -gateway msg (hello with the device's HMAC token → welcome, then {"type":"msg","id":"m-1","topic":"t","body":1} → its ack), the secret in the client's environment`,
        deadlineMs: DEADLINE_MS,
        backoff: '1 s × 2ⁿ, capped at 30 s, × random [0.5, 1.5)',
        giveUpAfterMs: GIVE_UP_MS,
        cpu: 'server: its process tree, from /proc; RabbitMQ: its beam.smp process, from /proc, over the same span (idle reading to held reading), when it runs on this machine',
        rss: `server RSS summed over its process tree (primary and workers), read after ${settleMs / 1000} s of idle before the stampede and ${settleMs / 1000} s after the last device connected; per device = growth ÷ devices connected. Peak: sampled every 250 ms`,
        runs: repeats > 1 ? `${repeats} per server, echo and gateway alternating; the table shows the median run` : '1 per server',
        ...(ctx.quick ? { quick: `${fmt(devices)} devices (the full run: 16,000 over 4 client processes, 3 runs each)` } : {}),
      },
      tables,
      charts,
      targets,
      raw: {
        loadAverage: { before: loadBefore, after: os.loadavg() },
        runs: runs.map(({ connectedAt, ...r }) => ({ ...r, connectedPerSecond: cumulative(connectedAt, 1000) })),
      },
    };
  },
};
