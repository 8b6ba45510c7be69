/**
 * Scenario 4, overload: new TLS clients arrive open-loop (arrivals never wait for earlier ones) at
 * 1×, 2× and 3× the TLS handshake capacity measured in scenario 1, for a fixed time per level. Each
 * client has 5 s for connect, handshake and one echoed line, then closes. Goodput is the rate of
 * clients served within their deadline. The question is whether a server keeps serving about its
 * capacity however much more is offered, or spends its CPU on clients that will give up (a server
 * that starts every handshake it accepts risks falling behind every client's deadline at once).
 */
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import type { ListenerInfo } from '../../src/index.js';
import type { ArrivalClientCommand, ArrivalClientConfig, ArrivalClientMessage } from '../lib/arrival-client.js';
import { type EchoServer, type ServerKind, startEchoServer, waitIdle } from '../lib/echo-server.js';
import { forkClient } from '../lib/fork-client.js';
import type { BenchContext, Chart, Scenario, ScenarioResult, Table, TargetCheck } from '../lib/scenario.js';
import { machineBusySeconds } from '../lib/machine-load.js';
import { tcpExt } from '../lib/netstat.js';
import { fmt, percentile } from '../lib/numbers.js';
import { startSteadyClient } from '../lib/steady.js';

const CLIENT = fileURLToPath(new URL('../lib/arrival-client.ts', import.meta.url));
const DEADLINE = 5000;
/** Sockets one arrival process may hold at once: under the 20,000-descriptor limit with room to spare. */
const MAX_OPEN_PER_PROCESS = 14_000;
/** corral with the adaptive handshake window, run for comparison in the full run: what `'auto'` would change here. */
const COMPARE = { label: "corral, maxHandshakes 'auto'", listener: { maxHandshakes: 'auto' } };
/** The first second of each level is the ramp (queues filling); goodput is counted after it. */
const WARMUP_MS = 1000;

/** What one server did at one offered load. */
export interface LevelRun {
  /** Which server configuration: `bare`, `corral` (defaults), or the full run's comparison. */
  server: string;
  multiple: number;
  offeredPerSecond: number;
  /** Arrivals actually started per second (the clients may fall behind the offered rate). */
  arrivedPerSecond: number;
  goodputPerSecond: number;
  goodputOfCapacity: number;
  successes: number;
  timedOut: number;
  failed: Record<string, number>;
  latencyP50Ms: number;
  latencyP99Ms: number;
  /** Server CPU over the window, in cores (1 = one core busy all the time). */
  serverCores: number;
  /** The arrival clients' CPU over the window, in cores. */
  clientCores: number;
  /** Cores used by processes other than this server and its load clients (shared machine). */
  otherCores: number;
  /** Connects dropped because a listen queue was full (whole machine, TcpExt ListenOverflows). */
  listenOverflows: number;
  /** Server CPU per client served within its deadline, µs. */
  serverCpuUsPerGoodHandshake: number;
  clientProcesses: number;
  clientMaxOpen: number;
  clientMaxLagMs: number;
  /** corral only: sockets it closed unserved during the window, by reason. */
  rejected?: Record<string, number>;
  /** corral only: share of twice-a-second samples in which every handshake slot (maxHandshakes) was taken. */
  slotsFullShare?: number;
  /** corral only: the longest wait queue sampled. */
  maxWaiting?: number;
  /** corral only: the widest handshake window sampled (`info().maxHandshakes`). */
  widestWindow?: number;
}

/**
 * Run the arrival clients for one level. `atWindowEnd` is called when the window closes, before the
 * clients close what they still hold (which would count as failed handshakes on the server).
 */
async function arrivals<T>(
  port: number,
  rate: number,
  durationMs: number,
  netBase: number,
  atStart: () => Promise<void>,
  atWindowEnd: (clientCpuSeconds: number) => Promise<T>,
) {
  const processes = Math.max(2, Math.ceil((rate * (DEADLINE / 1000)) / (MAX_OPEN_PER_PROCESS * 0.85)));
  const children = Array.from({ length: processes }, (_, i) => {
    const cfg: ArrivalClientConfig = {
      port,
      host: '127.0.0.1',
      rate: rate / processes,
      durationMs,
      deadline: DEADLINE,
      net: netBase + i,
      perAddress: 500,
      maxOpen: MAX_OPEN_PER_PROCESS,
    };
    return forkClient<ArrivalClientMessage, ArrivalClientCommand>(CLIENT, 'CORRAL_ARRIVAL_CLIENT', cfg, { name: `arrival client ${i}` });
  });
  try {
    await Promise.all(children.map((c) => c.message('ready')));
    const clientCpu = (): number => children.reduce((a, c) => a + c.cpuSeconds(), 0);
    await atStart();
    const cpu0 = clientCpu();
    const startAt = Date.now() + 200;
    for (const c of children) c.send({ t: 'go', startAt });
    // Just before the window closes (the clients then close what they hold).
    const snapshot = await new Promise<T>((resolve, reject) =>
      setTimeout(() => atWindowEnd(clientCpu() - cpu0).then(resolve, reject), Math.max(0, startAt + durationMs - 20 - Date.now())),
    );
    const results = await Promise.all(children.map((c) => c.message('done')));
    await Promise.all(children.map((c) => c.exited));
    return { processes, results, snapshot };
  } finally {
    for (const c of children) c.kill();
  }
}

function delta(before: ListenerInfo | undefined, after: ListenerInfo | undefined): Record<string, number> | undefined {
  if (!before || !after) return undefined;
  const out: Record<string, number> = {};
  const add = (prefix: string, a: Readonly<Record<string, number>>, b: Readonly<Record<string, number>>): void => {
    for (const [k, v] of Object.entries(a)) {
      const d = v - (b[k] ?? 0);
      if (d > 0) out[`${prefix}${k}`] = d;
    }
  };
  add('', after.rejected, before.rejected);
  add('handshake ', after.handshakeFailures, before.handshakeFailures);
  return out;
}

async function runLevel(ctx: BenchContext, server: EchoServer, label: string, multiple: number, capacity: number, durationMs: number, netBase: number): Promise<LevelRun> {
  const rate = Math.round(capacity * multiple);
  let info0: ListenerInfo | undefined;
  let s0 = server.stats();
  let t0 = 0;
  let busy0 = 0;
  let overflows0 = 0;
  // corral only: how often every handshake slot was taken, and the longest wait queue.
  const samples: { handshaking: number; waiting: number; maxHandshakes: number }[] = [];
  let sampler: NodeJS.Timeout | undefined;
  const start = async (): Promise<void> => {
    info0 = await server.info();
    s0 = server.stats();
    busy0 = machineBusySeconds();
    overflows0 = tcpExt().ListenOverflows ?? 0;
    t0 = performance.now();
    if (info0) {
      sampler = setInterval(() => {
        server.info().then(
          (i) => i && samples.push({ handshaking: i.handshaking, waiting: i.waiting, maxHandshakes: i.maxHandshakes }),
          () => {},
        );
      }, 500);
    }
  };
  const { processes, results, snapshot } = await arrivals(server.port, rate, durationMs, netBase, start, async (clientCpuSeconds) => {
    clearInterval(sampler);
    const stats = server.stats();
    const busy = machineBusySeconds();
    const overflows = (tcpExt().ListenOverflows ?? 0) - overflows0;
    const elapsed = (performance.now() - t0) / 1000;
    return { stats, elapsed, clientCpuSeconds, busy, overflows, info: await server.info() };
  });
  const { stats: s1, elapsed, info: info1 } = snapshot;
  const otherCores = Math.max(0, Number(((snapshot.busy - busy0 - (s1.cpuSeconds - s0.cpuSeconds) - snapshot.clientCpuSeconds) / elapsed).toFixed(2)));
  const windowS = (durationMs - WARMUP_MS) / 1000;
  const completed = results.flatMap((r) => r.completedAt);
  const good = completed.filter((t) => t >= WARMUP_MS && t <= durationMs).length;
  const latencies = results.flatMap((r) => r.latencies);
  const failed: Record<string, number> = {};
  for (const r of results) for (const [k, v] of Object.entries(r.failed)) failed[k] = (failed[k] ?? 0) + v;
  const cpu = s1.cpuSeconds - s0.cpuSeconds;
  const goodput = good / windowS;
  const run: LevelRun = {
    server: label,
    multiple,
    offeredPerSecond: rate,
    arrivedPerSecond: Math.round(results.reduce((a, r) => a + r.started, 0) / (durationMs / 1000)),
    goodputPerSecond: Math.round(goodput),
    goodputOfCapacity: Number((goodput / capacity).toFixed(2)),
    successes: completed.length,
    timedOut: results.reduce((a, r) => a + r.timedOut, 0),
    failed,
    latencyP50Ms: Math.round(percentile(latencies, 50)),
    latencyP99Ms: Math.round(percentile(latencies, 99)),
    serverCores: Number((cpu / elapsed).toFixed(2)),
    clientCores: Number((snapshot.clientCpuSeconds / elapsed).toFixed(2)),
    otherCores,
    listenOverflows: snapshot.overflows,
    serverCpuUsPerGoodHandshake: Math.round((cpu / Math.max(1, completed.length)) * 1e6),
    clientProcesses: processes,
    clientMaxOpen: Math.max(...results.map((r) => r.maxOpen)),
    clientMaxLagMs: Math.max(...results.map((r) => r.maxLagMs)),
  };
  const rejected = delta(info0, info1);
  if (rejected) run.rejected = rejected;
  if (samples.length > 0) {
    run.slotsFullShare = Number((samples.filter((x) => x.handshaking >= x.maxHandshakes).length / samples.length).toFixed(2));
    run.maxWaiting = Math.max(...samples.map((x) => x.waiting));
    run.widestWindow = Math.max(...samples.map((x) => x.maxHandshakes));
  }
  ctx.log(
    `  ${multiple}× ${label}: offered ${rate}/s (arrived ${run.arrivedPerSecond}/s), goodput ${run.goodputPerSecond}/s ` +
      `(${Math.round(run.goodputOfCapacity * 100)}% of capacity), p50 ${run.latencyP50Ms} ms, p99 ${run.latencyP99Ms} ms, ` +
      `${run.timedOut} timed out, failed ${JSON.stringify(failed)}, server ${run.serverCores} cores, clients ${run.clientCores} cores, others ${run.otherCores} cores` +
      (rejected ? `, corral rejected ${JSON.stringify(rejected)}, handshake slots full ${Math.round((run.slotsFullShare ?? 0) * 100)}% of the time, widest window ${run.widestWindow ?? '?'}` : ''),
  );
  return run;
}

/** The capacity when scenario 1 did not run: bare Node's TLS handshakes per second, measured now. */
async function measureCapacity(ctx: BenchContext): Promise<number> {
  const server = await startEchoServer({ kind: 'bare', tls: true });
  try {
    await waitIdle(server, 3000);
    const client = await startSteadyClient({ port: server.port, tls: true, connections: ctx.quick ? 1000 : 4000, rate: 3000, inFlight: 512, lines: 0, net: 45 });
    await client.close();
    const c = client.connect;
    if (c.connected === 0) throw new Error(`capacity: no TLS connection succeeded (${JSON.stringify(c.errors)})`);
    return Math.round(c.connected / (c.ms / 1000));
  } finally {
    await server.stop();
  }
}

function failedText(r: LevelRun): string {
  const parts = Object.entries(r.failed).map(([k, v]) => `${v} ${k}`);
  return parts.length ? parts.join(', ') : '0';
}

export const scenario: Scenario = {
  id: 'overload',
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    let capacity = ctx.capacity?.tlsHandshakesPerSecond;
    let capacitySource = 'bare Node’s TLS handshakes per second in scenario 1 of this run (one process)';
    if (!capacity) {
      capacity = await measureCapacity(ctx);
      capacitySource = 'bare Node’s TLS handshakes per second, measured by this scenario as scenario 1 does (scenario 1 did not run)';
      ctx.log(`  capacity: ${capacity} TLS handshakes per second (measured here)`);
    }
    const durationMs = ctx.quick ? 5000 : 20_000;
    const multiples = [1, 2, 3];
    // The servers, in the order each level runs them. The full run adds corral with the adaptive
    // handshake window (maxHandshakes 'auto'), for comparison only (the target is checked on the
    // defaults).
    const configs: { label: string; kind: ServerKind; listener?: Record<string, unknown> }[] = [
      { label: 'bare', kind: 'bare' },
      { label: 'corral', kind: 'corral', listener: {} },
      ...(ctx.quick ? [] : [{ label: COMPARE.label, kind: 'corral' as const, listener: COMPARE.listener }]),
    ];
    const servers = new Map<string, EchoServer>();
    const runs: LevelRun[] = [];
    try {
      for (const c of configs) servers.set(c.label, await startEchoServer({ kind: c.kind, tls: true, ...(c.listener ? { listener: c.listener } : {}) }));
      // A fresh range of source addresses per run (127.150–222.x.y), apart from the other scenarios' ranges.
      let net = 150;
      for (const multiple of multiples) {
        for (const c of configs) {
          const server = servers.get(c.label)!;
          // Every server, not only this one: the previous one may still be working off its backlog.
          await Promise.all([...servers.values()].map((s) => waitIdle(s, ctx.quick ? 8000 : 20_000)));
          runs.push(await runLevel(ctx, server, c.label, multiple, capacity, durationMs, net));
          net += 8;
        }
      }
    } finally {
      await Promise.all([...servers.values()].map((s) => s.stop()));
    }

    const of = (label: string, m: number): LevelRun => runs.find((r) => r.server === label && r.multiple === m)!;
    const compare = !ctx.quick;
    const tables: Table[] = [
      {
        title:
          `Goodput at 1×, 2× and 3× capacity (${capacity} TLS handshakes/s); ${durationMs / 1000} s per level, 5 s deadline per client; ` +
          `unpinned. corral: default options${compare ? `; last columns: ${COMPARE.label}, for comparison` : ''}`,
        columns: [
          'offered',
          'bare node:tls goodput/s',
          'corral goodput/s',
          'corral ÷ bare',
          'bare % of capacity',
          'corral % of capacity',
          ...(compare ? [`${COMPARE.label}: goodput/s`, `${COMPARE.label}: % of capacity`] : []),
        ],
        rows: multiples.map((m) => {
          const b = of('bare', m);
          const c = of('corral', m);
          const x = compare ? of(COMPARE.label, m) : undefined;
          return [
            `${m}× (${b.offeredPerSecond}/s)`,
            b.goodputPerSecond,
            c.goodputPerSecond,
            b.goodputPerSecond > 0 ? Number((c.goodputPerSecond / b.goodputPerSecond).toFixed(2)) : null,
            Math.round(b.goodputOfCapacity * 100),
            Math.round(c.goodputOfCapacity * 100),
            ...(x ? [x.goodputPerSecond, Math.round(x.goodputOfCapacity * 100)] : []),
          ];
        }),
      },
      {
        title:
          'What the clients saw, per level and server. Arrived: arrivals started per second; clock behind: how late the clients ' +
          'started arrivals at worst (an open-loop client that falls behind starts the late ones at once, as a burst)',
        columns: ['offered', 'server', 'arrived/s', 'client clock behind, worst (ms)', 'goodput/s', 'p50 ms (served)', 'p99 ms (served)', 'timed out', 'failed early'],
        rows: runs.map((r) => [
          `${r.multiple}×`,
          r.server,
          r.arrivedPerSecond,
          r.clientMaxLagMs,
          r.goodputPerSecond,
          r.latencyP50Ms,
          r.latencyP99Ms,
          r.timedOut,
          failedText(r),
        ]),
      },
      {
        title: 'Where the CPU went, per level and server (the machine has ' + os.availableParallelism() + ' cores)',
        columns: [
          'offered',
          'server',
          'server CPU (cores)',
          'load clients CPU (cores)',
          'other processes (cores)',
          'server CPU µs per client served',
          'listen queue overflows (whole machine)',
          'closed unserved by corral',
          'corral: all handshake slots taken (% of samples)',
          'corral: longest wait queue',
          'corral: widest handshake window',
        ],
        rows: runs.map((r) => [
          `${r.multiple}×`,
          r.server,
          r.serverCores,
          r.clientCores,
          r.otherCores,
          r.serverCpuUsPerGoodHandshake,
          r.listenOverflows,
          r.rejected ? Object.entries(r.rejected).map(([k, v]) => `${v} ${k}`).join(', ') || '0' : '—',
          r.slotsFullShare === undefined ? null : Math.round(r.slotsFullShare * 100),
          r.maxWaiting ?? null,
          r.widestWindow ?? null,
        ]),
      },
    ];
    const series = (label: string, name: string) => ({ name, points: multiples.map((m) => [of(label, m).offeredPerSecond, of(label, m).goodputPerSecond] as const) });
    const charts: Chart[] = [
      {
        title: 'Goodput vs offered load (TLS, 5 s deadline)',
        xLabel: 'offered new clients per second',
        yLabel: 'served within deadline per second',
        series: [
          series('corral', 'corral (defaults)'),
          series('bare', 'bare node:tls'),
          ...(compare ? [series(COMPARE.label, COMPARE.label)] : []),
          { name: 'ideal: min(offered, capacity)', points: [[0, 0], [capacity, capacity], [capacity * 3, capacity]], reference: true },
        ],
      },
    ];
    const c3 = of('corral', 3);
    const share = c3.goodputOfCapacity;
    const targets: TargetCheck[] = [
      {
        target: 'overload at 3×: corral goodput ≥ 90% of capacity',
        measured: `${Math.round(share * 100)}% (${c3.goodputPerSecond} of ${capacity}/s; bare ${Math.round(of('bare', 3).goodputOfCapacity * 100)}%)`,
        met: share >= 0.9,
        ...(share >= 0.9
          ? {}
          : {
              note:
                `missed by ${Math.round((0.9 - share) * 100)} points. During the 3× level the server used ${c3.serverCores} cores, the load ` +
                `clients ${c3.clientCores} and other processes on the machine ${c3.otherCores} (of ${os.availableParallelism()}); the clients' ` +
                `arrival clock fell up to ${c3.clientMaxLagMs} ms behind. A handshake keeps its slot until the client answers, so ` +
                `CPU-starved clients hold slots longer: all ${c3.widestWindow ?? 128} slots were taken in ${Math.round((c3.slotsFullShare ?? 0) * 100)}% of the samples. ` +
                `corral accepted and closed ${c3.rejected ? Object.entries(c3.rejected).map(([k, v]) => `${v} ${k}`).join(', ') || 'no' : 'no'} ` +
                `arrivals it could not serve, and refused ${fmt(c3.failed.ECONNREFUSED ?? 0)} more while its wait queue was full ` +
                '(overflow \'refuse\': the kernel refuses them before any TLS work). ' +
                (compare ? `With maxHandshakes 'auto' (same run, for comparison; widest window ${of(COMPARE.label, 3).widestWindow ?? '?'}) corral served ${Math.round(of(COMPARE.label, 3).goodputOfCapacity * 100)}% at 3×. ` : '') +
                'Capacity is measured with the clients at 1× load; at 3× the clients themselves take most of the two cores, so no server ' +
                'here can reach its 1× capacity (bare Node did not either), and the level\'s result moves by tens of points from run to ' +
                'run with how the scheduler splits the cores between server and clients. What would close it: a load client on other ' +
                'cores or another machine, so that overload measures the server and not the machine.',
            }),
      },
    ];
    return {
      id: 'overload',
      title: 'Overload: open-loop TLS arrivals at 1×, 2× and 3× capacity',
      config: {
        corral: 'one process, framing \'line\', default options (maxConnections 1024, maxHandshakes 128, overflow refuse, maxWaiting 4096, waitTimeout 5000 ms, admission adaptive with adaptiveTarget 100 ms, handshakeTimeout 5000 ms)',
        ...(compare ? { comparison: `${COMPARE.label}: the same corral with ${JSON.stringify(COMPARE.listener)}, for comparison only (the target is checked on the defaults)` } : {}),
        bare: 'tls.createServer, one process, same line framing, no limits',
        capacity: `${capacity} TLS handshakes/s: ${capacitySource}`,
        load:
          `open-loop arrivals for ${durationMs / 1000} s per level from ${Math.max(...runs.map((r) => r.clientProcesses))} client processes at most, ` +
          `each holding under ${MAX_OPEN_PER_PROCESS.toLocaleString('en-US')} sockets (source addresses rotating over 127.150–${150 + 8 * runs.length - 7}.x.y); ` +
          'each client: TCP connect, TLS handshake, one line echoed, close; ' +
          `gives up after ${DEADLINE / 1000} s`,
        goodput: `clients served within their deadline, per second, counted from ${WARMUP_MS / 1000} s into the level to its end`,
        order: `levels 1×, 2×, 3×; at each level ${configs.map((c) => c.label).join(', then ')}; every server idle before each run starts`,
        pinning: 'none: server and load client share both cores (the load client must offer 3× what the server can serve)',
      },
      tables,
      charts,
      targets,
      raw: { capacity, durationMs, deadline: DEADLINE, warmupMs: WARMUP_MS, runs },
    };
  },
};
