/**
 * Far-away storm: 8,000 TLS devices 300 ms away connect at once to a server that has just started
 * (the way they come back after a restart), with the reconnect storm's 5 s deadline per attempt
 * and backoff 1 s × 2ⁿ (capped at 30 s) × [0.5, 1.5). corral and bare Node, one process each, same
 * certificate, same echo, in the same run.
 *
 * There is no netem here, so distance is emulated in the client (bench/native-client `-delay`):
 * every write of a device reaches the server 300 ms after it was made, so the server waits 300 ms
 * for each flight of the client (ClientHello; Finished with the first line). Two emulations: every
 * write delayed, and every write but the first (a real device sends its ClientHello right after
 * its TCP handshake, so only its later flights arrive late). A server that handles a fixed number
 * of handshakes at a time would be capped near that number ÷ (2 × 0.3 s) per second while its CPU
 * idles; one that starts every handshake at once may miss every deadline at once.
 *
 * A third emulation, reported without a target: devices slow to answer. The ClientHello goes out at
 * once and every later write 1.5 s after it was made: a device that needs 1.5 s to check the
 * server's certificate and compute its key (a small microcontroller) answers the ServerHello that
 * late. A server that closes handshakes waiting that long for their peer to make room for new
 * ClientHellos throws away the signature it already made for each, and serves none of them.
 *
 * Measured: time until all are back, attempts per device, corral ÷ bare; the server's CPU busy
 * share and event-loop utilization until the last device was back, and the client's CPU per
 * handshake.
 */
import { corralSettings, ECHO_SERVERS } from '../lib/echo-server.js';
import { machineBusySeconds } from '../lib/machine-load.js';
import { runNativeStorm } from '../lib/native-client.js';
import { cumulative, fmt, medianBy, round, sleep } from '../lib/numbers.js';
import type { BenchContext, Chart, Scenario, ScenarioResult, Table, TargetCheck } from '../lib/scenario.js';
import { startServer, watchCorralCounters } from '../lib/server-child.js';
import { busyText, STORM_CLIENT_NICE, STORM_CLIENT_NICE_TEXT, type ServerKind, type StormRun, failedText, seconds as s, serverName, summarizeStorm } from '../lib/storm-run.js';
import type { UsageSample } from '../servers/usage-trace.js';

/** corral: its defaults, except the limits 8,000 devices need raised. */
const CORRAL = { maxConnections: 30_000 } as const;
const DELAY_MS = 300;
const DEADLINE_MS = 5000;
const GIVE_UP_MS = 120_000;
const CLIENT_PROCESSES = 2;

/** How distance (or a slow device) is emulated. */
interface Emulation {
  id: 'all-writes' | 'after-hello' | 'slow-device';
  label: string;
  delayMs: number;
  delayFirst: boolean;
  /** Whether the issue's targets apply (the slow device is reported only). */
  gated: boolean;
}

const SLOW_DEVICE_MS = 1500;
const EMULATIONS: readonly Emulation[] = [
  { id: 'all-writes', label: `every write delayed ${DELAY_MS} ms (ClientHello included)`, delayMs: DELAY_MS, delayFirst: true, gated: true },
  { id: 'after-hello', label: `every write but the first delayed ${DELAY_MS} ms (ClientHello at once)`, delayMs: DELAY_MS, delayFirst: false, gated: true },
  {
    id: 'slow-device',
    label: `a slow device: every write but the first delayed ${fmt(SLOW_DEVICE_MS)} ms (it answers the ServerHello ${SLOW_DEVICE_MS / 1000} s late)`,
    delayMs: SLOW_DEVICE_MS,
    delayFirst: false,
    gated: false,
  },
];

interface Run extends StormRun {
  emulation: Emulation['id'];
  /** corral: what its info() counters did over the storm. */
  corralCounters?: Record<string, number>;
}

async function once(ctx: BenchContext, kind: ServerKind, e: Emulation, devices: number, net: number): Promise<Run> {
  const server = await startServer(ECHO_SERVERS[kind], { tls: true, ...(kind === 'corral' ? CORRAL : {}) });
  try {
    await sleep(500); // let it settle after start
    const counters = await watchCorralCounters(server, kind === 'corral');
    const busy0 = machineBusySeconds();
    const progress = setInterval(() => ctx.log(`far-away-storm/${e.id}/${kind}: storming`), 10_000);
    const result = await runNativeStorm({
      port: server.port,
      net,
      devices,
      processes: CLIENT_PROCESSES,
      nice: STORM_CLIENT_NICE,
      delayMs: e.delayMs,
      delayFirst: e.delayFirst,
      deadlineMs: DEADLINE_MS,
      giveUpMs: GIVE_UP_MS,
    }).finally(() => clearInterval(progress));
    const machine = { busySeconds: machineBusySeconds() - busy0, until: Date.now() };
    const trace = (await server.ask<{ samples: UsageSample[] }>('trace')).samples;
    const corralCounters = await counters();
    return {
      ...summarizeStorm(kind, result, result.epoch, trace, { machine }),
      emulation: e.id,
      ...(corralCounters ? { corralCounters } : {}),
    };
  } finally {
    await server.stop();
  }
}

export const scenario: Scenario = {
  id: 'far-away-storm',
  budgetSeconds: { quick: 60, full: 1800 },
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    const devices = ctx.quick ? 1000 : 8000;
    const repeats = ctx.quick ? 1 : 3;
    const settings = await corralSettings(CORRAL);
    const runs: Run[] = [];
    let net = 110;
    for (const e of EMULATIONS) {
      for (let i = 0; i < repeats; i++) {
        for (const kind of ['corral', 'bare'] as const) {
          const r = await once(ctx, kind, e, devices, net);
          net = net >= 130 ? 110 : net + CLIENT_PROCESSES;
          runs.push(r);
          ctx.log(
            `far-away-storm/${e.id}/${kind} run ${i + 1}/${repeats}: ${fmt(r.back)}/${fmt(r.devices)} back in ${s(r.allBackMs)}, ` +
              `${r.attemptsPerDevice.toFixed(2)} attempts/device, server busy ${Math.round(r.serverBusyShare * 100)}%, ELU ${round(r.serverElu, 2)}, client ${r.clientCpuUsPerHandshake ?? '–'} µs/handshake`,
          );
          await sleep(1000);
        }
      }
    }
    const median = (e: Emulation['id'], kind: ServerKind): Run => medianBy(runs.filter((r) => r.emulation === e && r.server === kind), (r) => r.allBackMs);
    const ratio = (e: Emulation['id']): number | null => {
      const c = median(e, 'corral').allBackMs;
      const b = median(e, 'bare').allBackMs;
      return c !== null && b ? round(c / b, 2) : null;
    };
    const ofRuns = repeats > 1 ? ` (median of ${repeats} runs by time until all back)` : '';
    const tables: Table[] = [
      {
        title: `Far-away storm: ${fmt(devices)} TLS devices ${DELAY_MS} ms away (or slow to answer) connect at once to a freshly started server; 5 s deadline per attempt, backoff 1 s × 2ⁿ (cap 30 s) × [0.5, 1.5)${ofRuns}`,
        columns: [
          'distance emulated',
          'server',
          'back',
          'all back after',
          'corral ÷ bare',
          'attempts per device',
          'max attempts',
          'failed attempts (by reason)',
          'corral: handshakes closed as stalled',
          'server CPU until all back',
          'server busy (% of one core)',
          'event-loop utilization',
          'client CPU µs per handshake',
          'other processes (cores)',
          'all back after, each run',
        ],
        rows: EMULATIONS.flatMap((e) =>
          (['corral', 'bare'] as const).map((kind) => {
            const r = median(e.id, kind);
            return [
              e.label,
              serverName(kind),
              `${fmt(r.back)} / ${fmt(r.devices)}`,
              s(r.allBackMs),
              kind === 'corral' ? ratio(e.id) : null,
              round(r.attemptsPerDevice, 2),
              r.maxAttempts,
              failedText(r),
              kind === 'corral' ? (r.corralCounters?.['handshakeFailures.stalled'] ?? 0) : null,
              `${r.serverCpuSeconds.toFixed(1)} s`,
              Math.round(r.serverBusyShare * 100),
              round(r.serverElu, 2),
              r.clientCpuUsPerHandshake,
              r.otherCores === null ? null : round(r.otherCores, 2),
              runs
                .filter((q) => q.emulation === e.id && q.server === kind)
                .map((q) => s(q.allBackMs))
                .join(', '),
            ];
          }),
        ),
      },
    ];
    const binMs = ctx.quick ? 250 : 1000;
    const charts: Chart[] = EMULATIONS.map((e) => ({
      title: `Devices back after the start, ${fmt(devices)} devices: ${e.label}`,
      xLabel: 'seconds after the start',
      yLabel: 'devices back',
      series: (['corral', 'bare'] as const).map((kind) => ({ name: serverName(kind), points: cumulative(median(e.id, kind).backAt, binMs) })),
    }));

    const targets: TargetCheck[] = EMULATIONS.filter((e) => e.gated).flatMap((e) => {
      const c = median(e.id, 'corral');
      const b = median(e.id, 'bare');
      const r = ratio(e.id);
      const timeMet = r !== null && r <= 0.9;
      const attemptsMet = c.attemptsPerDevice <= b.attemptsPerDevice;
      const why = `${busyText(c, b, `while its admitted handshakes waited ${DELAY_MS} ms for each flight of their clients, or devices waited out their backoff`)}` + `corral's settings: ${settings.text}.`;
      return [
        {
          target: `far away (${e.label}): corral all back ≤ 0.9 × bare Node's time`,
          measured: `corral ${s(c.allBackMs)}, bare Node ${s(b.allBackMs)} (${r ?? '–'}×)`,
          met: timeMet,
          ...(timeMet ? {} : { note: `${r === null ? 'Not all devices came back.' : `Missed: ${r}× against 0.9×.`} ${why}` }),
        },
        {
          target: `far away (${e.label}): corral attempts per device ≤ bare Node's`,
          measured: `corral ${c.attemptsPerDevice.toFixed(2)}, bare Node ${b.attemptsPerDevice.toFixed(2)}`,
          met: attemptsMet,
          ...(attemptsMet ? {} : { note: `Missed by ${(c.attemptsPerDevice - b.attemptsPerDevice).toFixed(2)} attempts per device (corral failed attempts: ${failedText(c)}). ${why}` }),
        },
      ];
    });

    return {
      id: 'far-away-storm',
      title: 'Far-away storm: devices 300 ms away',
      config: {
        devices,
        start: 'all devices connect at once (a few ms apart) to a server started just before, as after a restart',
        distance: `${DELAY_MS} ms, emulated in the client: each write reaches the server ${DELAY_MS} ms after it was made (bench/native-client -delay; no netem here); two emulations with targets, and a slow device (${fmt(SLOW_DEVICE_MS)} ms, reported only), see the table`,
        deadlineMs: DEADLINE_MS,
        backoff: '1 s × 2ⁿ, capped at 30 s, × random [0.5, 1.5)',
        giveUpAfterMs: GIVE_UP_MS,
        client: `native load client (bench/native-client, Go crypto/tls), ${CLIENT_PROCESSES} processes, one source address per device, ${STORM_CLIENT_NICE_TEXT}`,
        runs: repeats > 1 ? `${repeats} per server and emulation, corral and bare Node alternating; the table shows the median run` : '1 per server and emulation',
        corral: `one process: maxConnections ${fmt(CORRAL.maxConnections)}, otherwise its defaults (as info() reports them: ${settings.text})`,
        bare: 'tls.createServer, one process, backlog 4,096',
      },
      tables,
      charts,
      targets,
      raw: { corralInfoAtStart: settings.info, runs: runs.map(({ backAt, ...r }) => ({ ...r, backPerSecond: cumulative(backAt, 1000) })) },
    };
  },
};
