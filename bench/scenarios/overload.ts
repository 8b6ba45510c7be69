/**
 * Scenario 4, overload: new TLS clients arrive open-loop (arrivals never wait for earlier ones) at
 * 3× the server's handshake capacity (and 1× in the full run), for a fixed time per level. Each
 * client has 5 s for TCP connect, TLS handshake and one echoed line, then closes. Goodput is the
 * rate of clients served within their deadline. The question is whether a server keeps serving
 * about its capacity however much more is offered, or spends its CPU on clients that will give up.
 *
 * Capacity is bare Node's closed-loop rate, measured here in the same run with the same native
 * client (bench/native-client `capacity`): connect, handshake, echo, close, again, 64 at a time.
 * The arrivals are bench/native-client `overload` processes, each arrival a fresh source address,
 * paced by a 1 ms clock; an arrival that would start more than 200 ms after it was due is skipped rather than
 * started in a burst, and a level where fewer than 95% of the offered arrivals started is void:
 * the client, not the server, was what it measured.
 */
import os from 'node:os';
import { corralSettings, ECHO_SERVERS } from '../lib/echo-server.js';
import { machineBusySeconds } from '../lib/machine-load.js';
import { cpuPerHandshake, runNativeCapacity, runNativeOverload, type NativeCapacityResult, type NativeOverloadResult } from '../lib/native-client.js';
import { tcpExt } from '../lib/netstat.js';
import { countsText, fmt, median, medianBy, round, sleep } from '../lib/numbers.js';
import { treeStats } from '../lib/proc-stats.js';
import type { BenchContext, Chart, Scenario, ScenarioResult, Table, TargetCheck } from '../lib/scenario.js';
import { startServer, watchCorralCounters } from '../lib/server-child.js';
import { type ServerKind, serverName } from '../lib/storm-run.js';

const DEADLINE_MS = 5000;
/** The first second of each level is the ramp (queues filling); goodput is counted after it. */
const WARMUP_MS = 1000;
/** A level whose started arrivals fall below this share of the offered ones is void. */
const MIN_STARTED = 0.95;
const CAPACITY_CONCURRENCY = 64;

/** What one server did at one offered load. */
export interface LevelRun {
  server: ServerKind;
  multiple: number;
  offeredPerSecond: number;
  client: NativeOverloadResult;
  /** started ÷ offered. */
  startedShare: number;
  /** Fewer than 95% of the offered arrivals started: the level measured the client. */
  void: boolean;
  goodputPerSecond: number;
  goodputOfCapacity: number;
  /** Server CPU over the level, in cores (1 = one core busy all the time). */
  serverCores: number;
  /** The arrival clients' CPU over the level, in cores. */
  clientCores: number;
  /** Cores used by other processes meanwhile (shared machine). */
  otherCores: number;
  /** Connects dropped because a listen queue was full (whole machine, TcpExt ListenOverflows). */
  listenOverflows: number;
  /** Server CPU per client served within its deadline, µs. */
  serverCpuUsPerGoodClient: number | null;
  /** corral: its info() counters that changed over the level. */
  corralCounters?: Record<string, number>;
}

/** Bare Node's closed-loop handshakes per second with the native client (median of `repeats`). */
async function measureCapacity(ctx: BenchContext, repeats: number): Promise<{ perSecond: number; runs: NativeCapacityResult[] }> {
  const runs: NativeCapacityResult[] = [];
  for (let i = 0; i < repeats; i++) {
    const server = await startServer(ECHO_SERVERS.bare, { tls: true });
    try {
      await sleep(500);
      const r = await runNativeCapacity({ port: server.port, net: 45, concurrency: CAPACITY_CONCURRENCY, seconds: ctx.quick ? 4 : 10, warmupMs: WARMUP_MS, deadlineMs: DEADLINE_MS });
      if (r.completed === 0) throw new Error(`capacity: no TLS connection succeeded (${JSON.stringify(r.failed)})`);
      runs.push(r);
      ctx.log(`  capacity run ${i + 1}/${repeats}: ${round(r.handshakesPerSecond, 0)} handshakes/s (client ${cpuPerHandshake(r) ?? '–'} µs/handshake)`);
    } finally {
      await server.stop();
    }
  }
  return { perSecond: Math.round(median(runs.map((r) => r.handshakesPerSecond))), runs };
}

async function runLevel(ctx: BenchContext, kind: ServerKind, multiple: number, capacity: number, seconds: number, net: number): Promise<LevelRun> {
  const rate = Math.round(capacity * multiple);
  const server = await startServer(ECHO_SERVERS[kind], { tls: true });
  try {
    await sleep(500);
    const counters = await watchCorralCounters(server, kind === 'corral');
    const cpu0 = treeStats(server.pid).cpuSeconds;
    const busy0 = machineBusySeconds();
    const overflows0 = tcpExt().ListenOverflows ?? 0;
    const t0 = performance.now();
    const client = await runNativeOverload({ port: server.port, net, rate, seconds, deadlineMs: DEADLINE_MS, warmupMs: WARMUP_MS });
    const elapsed = (performance.now() - t0) / 1000;
    const cpu = treeStats(server.pid).cpuSeconds - cpu0;
    const busy = machineBusySeconds() - busy0;
    const listenOverflows = (tcpExt().ListenOverflows ?? 0) - overflows0;
    const corralCounters = await counters();
    const clientCpu = client.cost.cpuUs / 1e6;
    const goodput = client.good / (client.goodWindowMs / 1000);
    const startedShare = client.started / Math.max(1, client.offered);
    const run: LevelRun = {
      server: kind,
      multiple,
      offeredPerSecond: rate,
      client,
      startedShare,
      void: startedShare < MIN_STARTED,
      goodputPerSecond: Math.round(goodput),
      goodputOfCapacity: goodput / capacity,
      serverCores: cpu / elapsed,
      clientCores: clientCpu / elapsed,
      otherCores: Math.max(0, (busy - cpu - clientCpu) / elapsed),
      listenOverflows,
      serverCpuUsPerGoodClient: client.succeeded > 0 ? Math.round((cpu * 1e6) / client.succeeded) : null,
      ...(corralCounters ? { corralCounters } : {}),
    };
    ctx.log(
      `  ${multiple}× ${kind}: offered ${rate}/s, started ${Math.round(startedShare * 100)}%${run.void ? ' (VOID)' : ''}, goodput ${run.goodputPerSecond}/s ` +
        `(${Math.round(run.goodputOfCapacity * 100)}% of capacity), p50 ${client.latency?.p50 ?? '–'} ms, p99 ${client.latency?.p99 ?? '–'} ms, failed ${JSON.stringify(client.failed)}, ` +
        `server ${run.serverCores.toFixed(2)} cores, clients ${run.clientCores.toFixed(2)}, others ${run.otherCores.toFixed(2)}`,
    );
    return run;
  } finally {
    await server.stop();
  }
}


export const scenario: Scenario = {
  id: 'overload',
  budgetSeconds: { quick: 75, full: 900 },
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    const repeats = ctx.quick ? 1 : 3;
    const seconds = ctx.quick ? 5 : 20;
    const multiples = ctx.quick ? [3] : [1, 3];
    const settings = await corralSettings({});
    const cap = await measureCapacity(ctx, repeats);
    const capacity = cap.perSecond;
    ctx.log(`  capacity: ${capacity} TLS handshakes per second (bare Node, native closed loop)`);

    const runs: LevelRun[] = [];
    let net = 150;
    for (const multiple of multiples) {
      for (let i = 0; i < repeats; i++) {
        for (const kind of ['bare', 'corral'] as const) {
          runs.push(await runLevel(ctx, kind, multiple, capacity, seconds, net));
          net = net >= 230 ? 150 : net + 4;
          await sleep(500);
        }
      }
    }
    /** The median valid run of a server at a level; null when every run was void. */
    const of = (kind: ServerKind, m: number): LevelRun | null => {
      const valid = runs.filter((r) => r.server === kind && r.multiple === m && !r.void);
      return valid.length ? medianBy(valid, (r) => r.goodputPerSecond) : null;
    };
    /** The median run whether void or not, for the tables. */
    const shown = (kind: ServerKind, m: number): LevelRun => of(kind, m) ?? medianBy(runs.filter((r) => r.server === kind && r.multiple === m), (r) => r.goodputPerSecond);
    const cell = (r: LevelRun | null, f: (r: LevelRun) => number): number | string => (r === null ? 'void' : f(r));
    const ofRuns = repeats > 1 ? `; median of ${repeats} runs (void runs left out)` : '';
    const tables: Table[] = [
      {
        title:
          `Goodput at ${multiples.map((m) => `${m}×`).join(' and ')} capacity (${capacity} TLS handshakes/s); ${seconds} s per level, 5 s deadline per client${ofRuns}. ` +
          'corral: default options. void: fewer than 95% of the offered arrivals started',
        columns: ['offered', 'bare node:tls goodput/s', 'corral goodput/s', 'corral ÷ bare', 'bare % of capacity', 'corral % of capacity'],
        rows: multiples.map((m) => {
          const b = of('bare', m);
          const c = of('corral', m);
          return [
            `${m}× (${Math.round(capacity * m)}/s)`,
            cell(b, (r) => r.goodputPerSecond),
            cell(c, (r) => r.goodputPerSecond),
            b && c && b.goodputPerSecond > 0 ? round(c.goodputPerSecond / b.goodputPerSecond, 2) : null,
            cell(b, (r) => Math.round(r.goodputOfCapacity * 100)),
            cell(c, (r) => Math.round(r.goodputOfCapacity * 100)),
          ];
        }),
      },
      {
        title:
          'What the clients saw, per level and server. Started: arrivals begun (an arrival that would have started more than 200 ms after it was due was skipped); ' +
          'clock behind: how late the client started arrivals (worst, and 99th percentile)',
        columns: ['offered', 'server', 'started (% of offered)', 'skipped late', 'clock behind worst / p99 (ms)', 'goodput/s', 'p50 ms (served)', 'p99 ms (served)', 'failed', 'unfinished at the end', 'goodput/s, each run'],
        rows: multiples.flatMap((m) =>
          (['bare', 'corral'] as const).map((kind) => {
            const r = shown(kind, m);
            return [
              `${m}×`,
              serverName(kind),
              `${fmt(r.client.started)} (${Math.round(r.startedShare * 100)}%)${r.void ? ' void' : ''}`,
              r.client.skipped.late,
              `${Math.round(r.client.maxLagMs)} / ${Math.round(r.client.lagP99Ms)}`,
              r.goodputPerSecond,
              r.client.latency ? Math.round(r.client.latency.p50) : null,
              r.client.latency ? Math.round(r.client.latency.p99) : null,
              countsText(r.client.failed),
              r.client.unfinished,
              runs
                .filter((q) => q.server === kind && q.multiple === m)
                .map((q) => `${q.goodputPerSecond}${q.void ? ' (void)' : ''}`)
                .join(', '),
            ];
          }),
        ),
      },
      {
        title: `Where the CPU went, per level and server (the machine has ${os.availableParallelism()} cores)`,
        columns: ['offered', 'server', 'server CPU (cores)', 'load client CPU (cores)', 'client CPU µs per handshake', 'other processes (cores)', 'server CPU µs per client served', 'listen queue overflows (whole machine)', 'corral: info() counters that changed'],
        rows: multiples.flatMap((m) =>
          (['bare', 'corral'] as const).map((kind) => {
            const r = shown(kind, m);
            return [
              `${m}×`,
              serverName(kind),
              round(r.serverCores, 2),
              round(r.clientCores, 2),
              cpuPerHandshake(r.client.cost),
              round(r.otherCores, 2),
              r.serverCpuUsPerGoodClient,
              r.listenOverflows,
              r.corralCounters
                ? Object.entries(r.corralCounters)
                    .map(([k, v]) => `${k} ${fmt(v)}`)
                    .join(', ') || '0'
                : '—',
            ];
          }),
        ),
      },
    ];
    const series = (kind: ServerKind, name: string) => ({
      name,
      points: multiples.flatMap((m) => {
        const r = of(kind, m);
        return r ? [[r.offeredPerSecond, r.goodputPerSecond] as const] : [];
      }),
    });
    const charts: Chart[] = [
      {
        title: 'Goodput vs offered load (TLS, 5 s deadline)',
        xLabel: 'offered new clients per second',
        yLabel: 'served within deadline per second',
        series: [
          series('corral', 'corral (defaults)'),
          series('bare', 'bare node:tls'),
          { name: 'ideal: min(offered, capacity)', points: [[0, 0], [capacity, capacity], [capacity * 3, capacity]], reference: true },
        ],
      },
    ];

    const c3 = of('corral', 3);
    const b3 = of('bare', 3);
    const c3shown = shown('corral', 3);
    const voidNote = (who: string, r: LevelRun): string =>
      `void: the client started only ${Math.round(r.startedShare * 100)}% of the offered ${who} arrivals (${fmt(r.client.skipped.late)} skipped as more than 200 ms late; ` +
      `client ${r.clientCores.toFixed(2)} cores, other processes ${r.otherCores.toFixed(2)} of ${os.availableParallelism()}), so the level measured the client, not the server.`;
    const why = (r: LevelRun): string =>
      `During the 3× level the server used ${r.serverCores.toFixed(2)} cores, the load client ${r.clientCores.toFixed(2)} (${cpuPerHandshake(r.client.cost) ?? '–'} µs per handshake) ` +
      `and other processes ${r.otherCores.toFixed(2)} of ${os.availableParallelism()}; clients failed: ${countsText(r.client.failed)}` +
      (r.corralCounters ? `; corral's counters: ${Object.entries(r.corralCounters).map(([k, v]) => `${k} ${fmt(v)}`).join(', ')}` : '') +
      '. Capacity was measured closed-loop with the same client; open-loop at 3× the client itself takes a larger share of the two cores. ' +
      'Both servers listen with a backlog of 4,096 (for the storms): at 3× it stays full, and what corral accepts has waited seconds in it, out of its sight; ' +
      'ad hoc, a backlog of 128 served more, sooner, but slowed a cold storm from 17.8–21.9 s to 26.5–27.6 s (docs/limits.md, "Choosing backlog").';
    const share = c3 ? c3.goodputOfCapacity : 0;
    const targets: TargetCheck[] = [
      {
        target: 'overload at 3×: corral goodput ≥ 90% of capacity',
        measured: c3 ? `${Math.round(share * 100)}% (${c3.goodputPerSecond} of ${capacity}/s; bare ${b3 ? `${Math.round(b3.goodputOfCapacity * 100)}%` : 'void'})` : 'void',
        met: c3 !== null && share >= 0.9,
        ...(c3 !== null && share >= 0.9 ? {} : { note: c3 === null ? voidNote('corral', c3shown) : `Missed by ${Math.round((0.9 - share) * 100)} points. ${why(c3)}` }),
      },
      {
        target: 'overload at 3×: corral goodput ≥ bare Node’s',
        measured: c3 && b3 ? `corral ${c3.goodputPerSecond}/s, bare Node ${b3.goodputPerSecond}/s (${round(c3.goodputPerSecond / Math.max(1, b3.goodputPerSecond), 2)}×)` : `corral ${c3 ? `${c3.goodputPerSecond}/s` : 'void'}, bare Node ${b3 ? `${b3.goodputPerSecond}/s` : 'void'}`,
        met: c3 !== null && b3 !== null && c3.goodputPerSecond >= b3.goodputPerSecond,
        ...(c3 !== null && b3 !== null && c3.goodputPerSecond >= b3.goodputPerSecond
          ? {}
          : {
              note:
                c3 === null
                  ? voidNote('corral', c3shown)
                  : b3 === null
                    ? voidNote('bare Node', shown('bare', 3))
                    : `Missed by ${fmt(b3.goodputPerSecond - c3.goodputPerSecond)}/s (${round(c3.goodputPerSecond / Math.max(1, b3.goodputPerSecond), 2)}×). ${why(c3)}`,
            }),
      },
    ];
    return {
      id: 'overload',
      title: 'Overload: open-loop TLS arrivals at 3× capacity',
      config: {
        corral: `one process, framing 'line', its default options (as info() reports them: ${settings.text})`,
        bare: 'tls.createServer, one process, same line framing, no limits',
        capacity: `${capacity} TLS handshakes/s: bare Node's closed-loop rate with the native client (bench/native-client capacity: ${CAPACITY_CONCURRENCY} at a time, connect, handshake, echo, close), counted after ${WARMUP_MS / 1000} s, median of ${repeats}`,
        load:
          `open-loop arrivals for ${seconds} s per level (bench/native-client overload, ${Math.max(...runs.map((r) => r.client.processes))} process(es) at most, each under 15,000 sockets), ` +
          `each arrival a fresh source address (127.150–233.x.y): TCP connect, TLS handshake, one line echoed, close; gives up after ${DEADLINE_MS / 1000} s; ` +
          'an arrival that would start more than 200 ms after it was due (read when it starts, not when the 1 ms client clock hands it over) is skipped, not started in a burst',
        void: `a level where fewer than ${MIN_STARTED * 100}% of the offered arrivals started is void (the client could not offer the load)`,
        goodput: `clients served within their deadline, per second, counted from ${WARMUP_MS / 1000} s into the level to its end`,
        order: `levels ${multiples.map((m) => `${m}×`).join(', ')}; at each level bare Node then corral, ${repeats} time(s); a fresh server for every run`,
        pinning: 'none: server and load client share both cores; each client process runs one Go scheduler thread (GOMAXPROCS=1), so that it does not keep more threads runnable than it needs beside the server',
      },
      tables,
      charts,
      targets,
      raw: {
        capacity,
        capacityRuns: cap.runs,
        corralInfoAtStart: settings.info,
        durationSeconds: seconds,
        deadline: DEADLINE_MS,
        warmupMs: WARMUP_MS,
        runs,
      },
    };
  },
};
