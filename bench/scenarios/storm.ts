/**
 * Scenario 3, "Reconnect storm": N TLS devices are connected to the server; then the server cuts
 * every connection at once (it destroys them all; the process and its listening socket stay, as in
 * a network outage) and every device reconnects at once: 5 s deadline per attempt (TCP connect,
 * TLS handshake, first echo), then backoff 1 s × 2ⁿ (capped at 30 s) × random [0.5, 1.5). The same
 * storm runs against corral and against bare Node (one process each, same certificate, same echo),
 * one after the other in the same run. The devices are the native load client
 * (bench/native-client, Go): a Node client would spend more CPU per handshake than the server.
 * It runs at a lower priority than the server (`nice`), so that on two cores it does not take the
 * CPU the server's event loop wants.
 *
 * Measured: time until all are back against the ideal (N × the server CPU one full handshake
 * costs, measured in this run while the devices first connect, before the cut, where no handshake
 * fails: not from the storm itself, whose CPU includes the handshakes it wastes), handshakes
 * completed per second over time, attempts per device, the server's CPU busy share and event-loop
 * utilization until the last device was back, the client's CPU per handshake, the kernel's
 * listen-queue overflows (TcpExt ListenOverflows / ListenDrops), and wasted handshakes: handshakes the server started after that client had given
 * up, matched by (source address, source port). The clients report each failed attempt's address,
 * port and time; the servers record each handshake's start (corral: its TLS transport's
 * handshake(); bare Node: 'connection', where its handshake starts) — the `cut` and `record`
 * options of bench/servers/*-echo.ts. Also run, and reported without a target (full run only):
 * 3 s and 10 s deadlines, and half the devices.
 */
import { readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import { corralSettings, ECHO_SERVERS } from '../lib/echo-server.js';
import { machineBusySeconds } from '../lib/machine-load.js';
import { prepareNativeStorm } from '../lib/native-client.js';
import { tcpExt, tcpExtDelta } from '../lib/netstat.js';
import { cumulative, fmt, median as medianOf, medianBy, ratePerSecond, round, sleep } from '../lib/numbers.js';
import { treeStats } from '../lib/proc-stats.js';
import type { BenchContext, Chart, Scenario, ScenarioResult, Table, TargetCheck } from '../lib/scenario.js';
import { startServer, watchCorralCounters } from '../lib/server-child.js';
import { busyText, STORM_CLIENT_NICE, STORM_CLIENT_NICE_TEXT, type ServerKind, type StormRun, failedText, seconds as s, serverName, summarizeStorm } from '../lib/storm-run.js';
import type { HandshakeRecord } from '../servers/handshake-record.js';
import type { UsageSample } from '../servers/usage-trace.js';

/**
 * corral's configuration: one process, its defaults except the two limits a 16,000-device
 * listener must raise.
 */
const CORRAL = { maxConnections: 30_000 } as const;
const GIVE_UP_MS = 120_000;
const CLIENT_PROCESSES = 2;
const SETUP_RATE = 2000;
const SETUP_IN_FLIGHT = 256;
const COUNTERS = ['ListenOverflows', 'ListenDrops', 'SyncookiesSent'] as const;

/** One storm configuration; only the main one has targets. */
interface Variant {
  id: string;
  label: string;
  devices: number;
  deadlineMs: number;
  gated: boolean;
}

interface Run extends StormRun {
  variant: string;
  deadlineMs: number;
  handshakesStarted: number;
  handshakesCompleted: number;
  handshakesFailed: number;
  /** Handshakes started after the client had given up on that attempt. */
  wasted: number;
  /** Handshakes completed (whenever started) after the client had given up on that attempt. */
  wastedCompleted: number;
  wastedPct: number;
  /** Server CPU from the cut until the last device was back, per handshake completed meanwhile, µs (failed and wasted handshakes included). */
  serverCpuUsPerHandshake: number | null;
  /**
   * Server CPU per handshake of the setup (devices connecting before the cut, at most
   * {@link SETUP_IN_FLIGHT} at a time), µs: what one full handshake costs this
   * server on this machine, measured in this run but not in the storm being judged; `null` when an
   * attempt of the setup failed (then it also paid for failed handshakes).
   */
  setupCpuUsPerHandshake: number | null;
  kernel: Record<string, number>;
  cutMs: number;
  setupFailures: number;
  /** corral: what its info() counters did over the storm. */
  corralCounters?: Record<string, number>;
  /** ms from the cut to the first completed handshake. */
  firstCompletedMs: number | null;
  /** ms after the cut at which each handshake completed (for the chart). */
  completedAt: number[];
}

async function stormOnce(ctx: BenchContext, kind: ServerKind, v: Variant, net: number): Promise<Run> {
  const recordFile = `${os.tmpdir()}/corral-bench-storm-${process.pid}-${kind}.json`;
  const server = await startServer(ECHO_SERVERS[kind], { tls: true, ...(kind === 'corral' ? CORRAL : {}), cut: true, record: recordFile });
  const setupCpu0 = treeStats(server.pid).cpuSeconds;
  const storm = prepareNativeStorm({
    port: server.port,
    net,
    devices: v.devices,
    processes: CLIENT_PROCESSES,
    nice: STORM_CLIENT_NICE,
    setupRate: SETUP_RATE,
    setupInFlight: SETUP_IN_FLIGHT,
    deadlineMs: v.deadlineMs,
    giveUpMs: GIVE_UP_MS,
  });
  try {
    const counters = await watchCorralCounters(server, kind === 'corral');
    ctx.log(`storm/${v.id}/${kind}: connecting ${fmt(v.devices)} devices at ${fmt(SETUP_RATE)}/s`);
    const ready = await storm.ready;
    const setupCpu = treeStats(server.pid).cpuSeconds - setupCpu0;
    await sleep(ctx.quick ? 1000 : 2000); // let the setup's last echoes and GC settle
    await storm.storm();
    const kernel0 = tcpExt();
    const busy0 = machineBusySeconds();
    const t0 = Date.now();
    const cut = await server.ask<{ cut: number; at: number; ms: number }>('cut');
    ctx.log(`storm/${v.id}/${kind}: cut ${fmt(cut.cut)} connections in ${cut.ms} ms; devices reconnecting`);
    const progress = setInterval(() => ctx.log(`storm/${v.id}/${kind}: ${((Date.now() - t0) / 1000).toFixed(0)} s after the cut`), 10_000);
    const result = await storm.done.finally(() => clearInterval(progress));
    const machine = { busySeconds: machineBusySeconds() - busy0, until: Date.now() };
    const kernel = tcpExtDelta(kernel0, tcpExt(), COUNTERS);
    const corralCounters = await counters();
    const trace = (await server.ask<{ samples: UsageSample[] }>('trace')).samples;
    await storm.close();
    await server.stop();
    const records = JSON.parse(readFileSync(recordFile, 'utf8')) as HandshakeRecord[];
    // Failed attempts by (address, port): the wall-clock times the client gave up on them. An
    // attempt whose TCP connect never completed has port 0 and matches no server handshake.
    const gaveUp = new Map<string, number[]>();
    for (const a of result.abandoned) {
      if (a.port === 0) continue;
      const key = `${a.address}:${a.port}`;
      const list = gaveUp.get(key);
      if (list) list.push(a.at);
      else gaveUp.set(key, [a.at]);
    }
    const base = summarizeStorm(kind, result, t0, trace, { machine });
    return {
      ...base,
      variant: v.id,
      deadlineMs: v.deadlineMs,
      ...countHandshakes(base, t0, records, gaveUp),
      kernel,
      cutMs: cut.ms,
      setupFailures: ready.setupFailures,
      // Every device connects once in the setup (a failed attempt is retried until it connects),
      // so it completed `devices` handshakes; a setup with failed attempts also paid for those,
      // and is not a measure of one full handshake.
      setupCpuUsPerHandshake: ready.setupFailures === 0 ? Math.round((setupCpu * 1e6) / v.devices) : null,
      ...(corralCounters ? { corralCounters } : {}),
    };
  } finally {
    await storm.close();
    await server.stop();
    rmSync(recordFile, { force: true });
  }
}

/** What the server's handshake record says about the storm from `t0` on. */
function countHandshakes(base: StormRun, t0: number, records: HandshakeRecord[], gaveUp: Map<string, number[]>) {
  const afterGivingUp = (address: string, port: number, at: number): boolean => gaveUp.get(`${address}:${port}`)?.some((g) => g <= at) ?? false;
  let started = 0;
  let completed = 0;
  let completedUntilBack = 0;
  let failed = 0;
  let wasted = 0;
  let wastedCompleted = 0;
  const completedAt: number[] = [];
  // Both servers record `start` when a handshake starts, `open` when one completes and `fail`
  // when one fails; corral also `reject` for sockets it closed unserved (no handshake).
  for (const [k, address, port, start, end] of records) {
    if (start < t0) continue; // the setup's handshakes
    if (k === 'start') {
      started++;
      if (afterGivingUp(address, port, start)) wasted++;
    } else if (k === 'open') {
      completed++;
      completedAt.push(end - t0);
      if (end - t0 <= base.lastBackMs) completedUntilBack++;
      if (afterGivingUp(address, port, end)) wastedCompleted++;
    } else if (k === 'fail') failed++;
  }
  return {
    handshakesStarted: started,
    handshakesCompleted: completed,
    handshakesFailed: failed,
    wasted,
    wastedCompleted,
    wastedPct: (wasted / Math.max(1, started)) * 100,
    serverCpuUsPerHandshake: completedUntilBack > 0 ? Math.round((base.serverCpuSeconds * 1e6) / completedUntilBack) : null,
    firstCompletedMs: completedAt.length ? completedAt.reduce((a, b) => Math.min(a, b), Infinity) : null,
    completedAt,
  };
}

const pct = (v: number): string => `${Math.round(v * 100)}%`;

export const scenario: Scenario = {
  id: 'storm',
  budgetSeconds: { quick: 60, full: 2400 },
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    const devices = ctx.quick ? 2000 : 16_000;
    const repeats = ctx.quick ? 1 : 3;
    const variants: Variant[] = [
      { id: 'main', label: `${fmt(devices)} devices, 5 s deadline`, devices, deadlineMs: 5000, gated: true },
      ...(ctx.quick
        ? []
        : [
            { id: 'deadline-3s', label: `${fmt(devices)} devices, 3 s deadline`, devices, deadlineMs: 3000, gated: false },
            { id: 'deadline-10s', label: `${fmt(devices)} devices, 10 s deadline`, devices, deadlineMs: 10_000, gated: false },
            { id: 'half', label: `${fmt(devices / 2)} devices, 5 s deadline`, devices: devices / 2, deadlineMs: 5000, gated: false },
          ]),
    ];
    const loadBefore = os.loadavg();

    // corral's settings as it reports them (its defaults, whatever they are now, plus the two raised limits).
    const settings = await corralSettings(CORRAL);

    const runs: Run[] = [];
    let net = 60;
    for (const v of variants) {
      for (let i = 0; i < repeats; i++) {
        for (const kind of ['corral', 'bare'] as const) {
          const r = await stormOnce(ctx, kind, v, net);
          net = net >= 100 ? 60 : net + CLIENT_PROCESSES;
          runs.push(r);
          ctx.log(
            `storm/${v.id}/${kind} run ${i + 1}/${repeats}: ${fmt(r.back)}/${fmt(r.devices)} back in ${s(r.allBackMs)}, ${r.attemptsPerDevice.toFixed(2)} attempts/device, ` +
              `wasted ${fmt(r.wasted)} (${r.wastedPct.toFixed(1)}%), server ${r.serverCpuUsPerHandshake ?? '–'} µs/handshake, busy ${pct(r.serverBusyShare)}, client ${r.clientCpuUsPerHandshake ?? '–'} µs/handshake`,
          );
          await sleep(1000);
        }
      }
    }
    const median = (variant: string, kind: ServerKind): Run => medianBy(runs.filter((r) => r.variant === variant && r.server === kind), (r) => r.allBackMs);
    const corral = median('main', 'corral');
    const bare = median('main', 'bare');
    // The cost of a full handshake on this machine: each server's CPU per handshake of its setups
    // (no handshake failed or was wasted there), median over the main storm's runs; the cheaper
    // server's. Not the storm's own CPU per handshake: that includes the handshakes a storm
    // wastes, so an ideal taken from it would flatter the server it was taken from.
    const setupCost = (kind: ServerKind): number | null => {
      const c = runs.filter((r) => r.variant === 'main' && r.server === kind && r.setupCpuUsPerHandshake !== null).map((r) => r.setupCpuUsPerHandshake!);
      return c.length ? medianOf(c) : null;
    };
    const costs = [setupCost('corral'), setupCost('bare')].filter((c): c is number => c !== null);
    const perHandshakeUs = costs.length ? Math.min(...costs) : Number.NaN;
    const idealFor = (n: number): number => (n * perHandshakeUs) / 1000;
    const ideal = idealFor(devices);
    const limit = 1.2 * ideal;
    const x = (r: Run): number | null => (r.allBackMs === null ? null : round(r.allBackMs / idealFor(r.devices), 2));

    const corralConfig = `corral, one process: maxConnections ${fmt(CORRAL.maxConnections)}, otherwise its defaults; backlog 4,096`;
    const bareConfig = 'bare Node tls.createServer, one process, backlog 4,096';
    const ofRuns = repeats > 1 ? ` (median of ${repeats} runs by time until all back)` : '';
    const table: Table = {
      title:
        `Reconnect storm: ${fmt(devices)} TLS devices cut at once by the server (all connections destroyed, process and listening socket kept), all reconnect at once; ` +
        `5 s deadline per attempt, backoff 1 s × 2ⁿ (cap 30 s) × [0.5, 1.5)${ofRuns}. Ideal: N × ${fmt(perHandshakeUs)} µs of server CPU per full handshake = ${(ideal / 1000).toFixed(1)} s`,
      columns: [
        'server',
        'back',
        'all back after',
        '× ideal',
        'attempts per device',
        'max attempts',
        'failed attempts (by reason)',
        'handshakes started',
        'completed',
        'wasted: started after the client gave up',
        'completed after the client gave up',
        'first handshake after the cut',
        'ListenOverflows / ListenDrops',
        'server CPU until all back',
        'server CPU µs per completed handshake (storm, failed ones included)',
        'server CPU µs per handshake of the setup (none failed)',
        'server CPU busy until all back (% of one core)',
        'event-loop utilization until all back',
        'client CPU µs per handshake',
        'client CPU until all back (cores)',
        'other processes (cores)',
      ],
      rows: [corral, bare].map((r) => [
        r.server === 'corral' ? corralConfig : bareConfig,
        `${fmt(r.back)} / ${fmt(r.devices)}`,
        s(r.allBackMs),
        x(r),
        round(r.attemptsPerDevice, 2),
        r.maxAttempts,
        failedText(r),
        r.handshakesStarted,
        r.handshakesCompleted,
        `${fmt(r.wasted)} (${r.wastedPct.toFixed(1)}%)`,
        `${fmt(r.wastedCompleted)} (${((r.wastedCompleted / Math.max(1, r.handshakesCompleted)) * 100).toFixed(1)}%)`,
        s(r.firstCompletedMs),
        `${fmt(r.kernel.ListenOverflows ?? 0)} / ${fmt(r.kernel.ListenDrops ?? 0)}`,
        `${r.serverCpuSeconds.toFixed(1)} s`,
        r.serverCpuUsPerHandshake,
        r.setupCpuUsPerHandshake,
        Math.round(r.serverBusyShare * 100),
        round(r.serverElu, 2),
        r.clientCpuUsPerHandshake,
        round(r.clientCores, 2),
        r.otherCores === null ? null : round(r.otherCores, 2),
      ]),
    };
    const tables: Table[] = [table];
    if (variants.length > 1) {
      tables.push({
        title: `The same storm at other deadlines and sizes (reported, no target)${ofRuns}; ideal = devices × ${fmt(perHandshakeUs)} µs`,
        columns: ['storm', 'server', 'back', 'all back after', '× ideal', 'corral ÷ bare', 'attempts per device', 'failed attempts (by reason)', 'wasted', 'server busy (% of one core)', 'event-loop utilization', 'all back after, each run'],
        rows: variants.flatMap((v) =>
          (['corral', 'bare'] as const).map((kind) => {
            const r = median(v.id, kind);
            const other = median(v.id, kind === 'corral' ? 'bare' : 'corral');
            return [
              v.label,
              serverName(kind),
              `${fmt(r.back)} / ${fmt(r.devices)}`,
              s(r.allBackMs),
              x(r),
              kind === 'corral' && r.allBackMs !== null && other.allBackMs ? round(r.allBackMs / other.allBackMs, 2) : null,
              round(r.attemptsPerDevice, 2),
              failedText(r),
              `${r.wastedPct.toFixed(1)}%`,
              Math.round(r.serverBusyShare * 100),
              round(r.serverElu, 2),
              runs
                .filter((q) => q.variant === v.id && q.server === kind)
                .map((q) => s(q.allBackMs))
                .join(', '),
            ];
          }),
        ),
      });
    }
    if (corral.corralCounters) {
      tables.push({
        title: 'corral during the storm: its info() counters that changed (after − before)',
        columns: ['counter', 'change'],
        rows: Object.entries(corral.corralCounters).map(([k, v]) => [k, v]),
      });
    }
    const binMs = ctx.quick ? 250 : 1000;
    const charts: Chart[] = [
      {
        title: `Handshakes completed per second after the cut (${fmt(devices)} devices)`,
        xLabel: 'seconds after the cut',
        yLabel: 'handshakes completed per second',
        series: [corral, bare].map((r) => ({ name: serverName(r.server), points: ratePerSecond(r.completedAt, binMs) })),
      },
      {
        title: `Devices back after the cut (${fmt(devices)} devices)`,
        xLabel: 'seconds after the cut',
        yLabel: 'devices back',
        series: [
          ...[corral, bare].map((r) => ({ name: serverName(r.server), points: cumulative(r.backAt, binMs) })),
          { name: 'ideal (N × CPU per handshake)', points: [[0, 0], [round(ideal / 1000, 2), devices]] as [number, number][], reference: true },
        ],
      },
    ];

    const firstTry = Math.round((5000 * 1000) / perHandshakeUs);
    const why =
      busyText(corral, bare) +
      (devices > firstTry
        ? `${fmt(devices)} devices need ${(ideal / 1000).toFixed(1)} s of handshakes, longer than the 5 s deadline: at most ~${fmt(firstTry)} can be served on a first attempt, ` +
          'so the rest fail and come back only after their backoff (0.5–1.5 s, then 1–3 s, 2–6 s, …), in waves (see the chart). '
        : '') +
      `The client spent ${corral.clientCpuUsPerHandshake ?? '–'} µs of CPU per handshake on the same two cores.`;
    const close =
      'What would close it: more handshake capacity (corral with workers spreads handshakes over cores), cheaper reconnects (TLS session resumption: see the resumption storm), ' +
      'or clients whose deadline covers the backlog (≥ N × CPU per handshake). The workload was not tuned.';
    const corralMet = corral.allBackMs !== null && corral.allBackMs <= limit;
    const targets: TargetCheck[] = [
      {
        target: `all devices back within 1.2 × N × CPU per full handshake = ${(limit / 1000).toFixed(1)} s (N ${fmt(devices)}, ${fmt(perHandshakeUs)} µs)`,
        measured: `corral ${s(corral.allBackMs)} (${x(corral) ?? '–'}× ideal); bare Node ${s(bare.allBackMs)} (${x(bare) ?? '–'}×)`,
        met: corralMet,
        ...(corralMet
          ? {}
          : {
              note:
                corral.allBackMs === null
                  ? `${fmt(devices - corral.back)} devices did not come back within ${GIVE_UP_MS / 1000} s. ${why} ${close}`
                  : `Missed by ${((corral.allBackMs - limit) / 1000).toFixed(1)} s (${round(corral.allBackMs / limit, 2)}× the limit). ${why} ${close}`,
            }),
      },
      {
        target: '≤ 1.1 attempts per device',
        measured: `corral ${corral.attemptsPerDevice.toFixed(2)}; bare Node ${bare.attemptsPerDevice.toFixed(2)}`,
        met: corral.attemptsPerDevice <= 1.1,
        ...(corral.attemptsPerDevice <= 1.1
          ? {}
          : {
              note:
                `Missed by ${round(corral.attemptsPerDevice / 1.1, 2)}×: every device the server cannot serve within its first 5 s needs a second attempt ` +
                `(${fmt(corral.failedAttempts)} attempts failed: ${failedText(corral)}). ${close}`,
            }),
      },
      ...admissionTargets(corral, bare, ideal, why, close),
      {
        target: 'wasted handshakes (started after the client gave up) ≤ 1% of handshakes started',
        measured: `corral ${fmt(corral.wasted)} of ${fmt(corral.handshakesStarted)} (${corral.wastedPct.toFixed(2)}%); bare Node ${fmt(bare.wasted)} of ${fmt(bare.handshakesStarted)} (${bare.wastedPct.toFixed(2)}%)`,
        met: corral.wastedPct <= 1,
        ...(corral.wastedPct <= 1
          ? {}
          : {
              note:
                `Missed by ${(corral.wastedPct - 1).toFixed(2)} points. corral serves a waiting socket without knowing whether its client is still there ` +
                '(its ClientHello sits unread in the kernel), so a socket whose client gave up is still served when the queue reaches it.',
            }),
      },
    ];

    return {
      id: 'storm',
      title: 'Reconnect storm',
      config: {
        devices,
        cut: 'the server destroys every connection at once (stdin `cut`): no restart, the listening socket stays',
        deadlineMs: 5000,
        backoff: '1 s × 2ⁿ, capped at 30 s, × random [0.5, 1.5)',
        giveUpAfterMs: GIVE_UP_MS,
        client: `native load client (bench/native-client, Go crypto/tls), ${CLIENT_PROCESSES} processes, one source address per device (127.60–101.x.y); setup at ${fmt(SETUP_RATE)}/s, ${SETUP_IN_FLIGHT} in flight; ${STORM_CLIENT_NICE_TEXT}`,
        runs: repeats > 1 ? `${repeats} per server and storm, corral and bare Node alternating; the tables show the median run` : '1 per server and storm',
        corral: corralConfig,
        corralOptions: CORRAL,
        corralSettings: `as corral's info() reports them: ${settings.text}`,
        bare: bareConfig,
        ideal: `devices × the server CPU one full handshake costs: server CPU over the setup (every device connecting before the cut, ${SETUP_IN_FLIGHT} in flight, none failed) ÷ its handshakes, median of the main storm's runs, the cheaper of the two servers in this run (${fmt(perHandshakeUs)} µs). Not the storm's own CPU per completed handshake, which includes what the storm wastes`,
        wastedDefinition:
          "server handshakes started after the client had abandoned that attempt, matched by source address and port; corral: when its TLS transport's handshake() is called (after the wait queue); bare Node: the accept ('connection'), where its handshake starts. Also shown: handshakes completed after the client gave up, whenever they started",
        busy: 'server CPU (process.cpuUsage) and event-loop utilization (performance.eventLoopUtilization) from the cut until the last device was back, sampled by the server every 200 ms',
        kernelCounters: 'TcpExt deltas from /proc/net/netstat over the storm, for the whole network namespace',
      },
      tables,
      charts,
      targets,
      raw: {
        loadAverage: { before: loadBefore, after: os.loadavg() },
        corralInfoAtStart: settings.info,
        serverCpuUsPerFullHandshake: perHandshakeUs,
        idealMs: ideal,
        runs: runs.map(({ completedAt, backAt, ...r }) => ({
          ...r,
          handshakesPerSecond: ratePerSecond(completedAt, 1000),
          backPerSecond: ratePerSecond(backAt, 1000),
        })),
      },
    };
  },
};

/**
 * The cold-storm targets of the admission work (work-based admission): corral no slower than bare
 * Node and within 1.10× ideal, its event loop busy ≥ 90% until the last device is back, and no more
 * attempts per device than bare Node's.
 */
function admissionTargets(corral: Run, bare: Run, idealMs: number, why: string, close: string): TargetCheck[] {
  const c = corral.allBackMs;
  const b = bare.allBackMs;
  const vsBare = c !== null && b !== null && c <= b;
  const vsIdeal = c !== null && c <= 1.1 * idealMs;
  const busy = corral.serverElu >= 0.9;
  const attempts = corral.attemptsPerDevice <= bare.attemptsPerDevice;
  const miss = (met: boolean, note: string): { note?: string } => (met ? {} : { note });
  return [
    {
      target: 'cold storm: corral all back no later than bare Node',
      measured: `corral ${s(c)}, bare Node ${s(b)}${c !== null && b ? ` (${round(c / b, 2)}×)` : ''}`,
      met: vsBare,
      ...miss(vsBare, `Missed. ${why}`),
    },
    {
      target: `cold storm: corral all back within 1.10 × ideal = ${((1.1 * idealMs) / 1000).toFixed(1)} s`,
      measured: `corral ${s(c)} (${c === null ? '–' : round(c / idealMs, 2)}× ideal)`,
      met: vsIdeal,
      ...miss(vsIdeal, `Missed${c === null ? '' : ` by ${((c - 1.1 * idealMs) / 1000).toFixed(1)} s`}. ${why} ${close}`),
    },
    {
      target: "cold storm: corral's event loop busy ≥ 90% until the last device is back",
      measured: `event-loop utilization ${round(corral.serverElu, 2)} (bare Node ${round(bare.serverElu, 2)}); server CPU ${Math.round(corral.serverBusyShare * 100)}% of one core`,
      met: busy,
      ...miss(busy, `Missed by ${Math.round((0.9 - corral.serverElu) * 100)} points. ${why}`),
    },
    {
      target: "cold storm: corral's attempts per device ≤ bare Node's",
      measured: `corral ${corral.attemptsPerDevice.toFixed(2)}, bare Node ${bare.attemptsPerDevice.toFixed(2)}`,
      met: attempts,
      ...miss(attempts, `Missed by ${(corral.attemptsPerDevice - bare.attemptsPerDevice).toFixed(2)} attempts per device (${fmt(corral.failedAttempts)} failed: ${failedText(corral)}).`),
    },
  ];
}
