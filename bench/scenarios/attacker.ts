/**
 * Attacker: one host opens 2,000 TLS connects a second while a device fleet connects as usual.
 * The question is whether corral's per-source connection rate (`connectionRatePerSource`, a
 * socket over it closed at accept, before any read or handshake) keeps the fleet's service as it
 * was without the attacker, where bare Node spends its CPU on the attacker's handshakes.
 *
 * The fleet (bench/native-client `fleet`): devices arriving 100 a second from 50 source
 * addresses, each one attempt (TCP connect, TLS handshake, one line echoed) within 5 s. The
 * attacker (bench/native-client `attack`): 2,000 connects a second from one address, each a real
 * crypto/tls ClientHello replayed and its answer awaited, then a reset: the server does its whole
 * handshake's crypto for it, the attacker none. In each repeat, each with a fresh server: corral
 * without the attacker (the baseline), corral with it, bare Node with it, bare Node without it.
 */
import os from 'node:os';
import { corralSettings, ECHO_SERVERS } from '../lib/echo-server.js';
import { machineBusySeconds } from '../lib/machine-load.js';
import { type NativeAttackResult, type NativeFleetResult, cpuPerHandshake, runNativeFleet, startNativeAttack } from '../lib/native-client.js';
import { countsText, fmt, fmtMs, median, medianBy, type Percentiles, percentile, round, sleep } from '../lib/numbers.js';
import { treeStats } from '../lib/proc-stats.js';
import type { BenchContext, Chart, Scenario, ScenarioResult, Table, TargetCheck } from '../lib/scenario.js';
import { startServer, watchCorralCounters } from '../lib/server-child.js';
import { type ServerKind, serverName } from '../lib/storm-run.js';

/** corral's per-source limit: 2.5× the fleet's busiest address, 400× under the attacker. */
const RATE_LIMIT = { rate: 5, burst: 10 } as const;
const FLEET_RATE = 100;
const FLEET_ADDRESSES = 50;
const FLEET_DEADLINE_MS = 5000;
const ATTACK_RATE = 2000;
const ATTACK_DEADLINE_MS = 2000;
/** The attack starts this long before the fleet, so the fleet meets it in full swing. */
const ATTACK_LEAD_MS = 1000;
/**
 * The attacker runs at a lower priority than the server and the fleet: a real attacker's process
 * runs on its own machine, while here it shares two cores with the server. Why, with the run at
 * the runner's priority that decided it: the `attacker` row of the configuration below (and the
 * CHANGELOG).
 */
const ATTACKER_NICE = 10;
/** An attack that started fewer than this share of its connects did not offer the load asked for. */
const MIN_ATTACK_SHARE = 0.9;
/** Percentiles drawn in the latency chart. */
const CURVE_AT = [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 99, 99.5, 100] as const;
const FLEET_NET = 240;
const ATTACK_NET = 241;

/** One server, with or without the attacker. */
type Setup = { server: ServerKind; attacked: boolean };
const SETUPS: readonly Setup[] = [
  { server: 'corral', attacked: false },
  { server: 'corral', attacked: true },
  { server: 'bare', attacked: true },
  { server: 'bare', attacked: false },
];
const label = (s: Setup): string => `${serverName(s.server)}, ${s.attacked ? 'attacker' : 'no attacker'}`;

/** What one run measured. */
interface Run extends Setup {
  fleet: NativeFleetResult;
  /** Devices connected within the deadline ÷ devices. */
  goodput: number;
  /** Fleet connect latency over every device, a failed one counted as the deadline, ms. */
  p50: number;
  p99: number;
  /** [percentile, ms] points of the same times, for the chart. */
  curve: [number, number][];
  attack: NativeAttackResult | null;
  /** Server CPU while the fleet ran, in cores. */
  serverCores: number;
  /** The fleet client's CPU over its run and the attacker's while the fleet ran, in cores. */
  fleetClientCores: number;
  attackerCores: number;
  /** Busy cores not in the server or either client while the fleet ran: other processes, the kernel's network work. */
  otherCores: number;
  fleetSeconds: number;
  /** corral: its info() counters that changed over the run. */
  corralCounters?: Record<string, number>;
}

/** Every device's time, a failed one at the deadline (it did not connect within it). */
function deviceTimes(f: NativeFleetResult): number[] {
  return [...f.latencies, ...new Array<number>(Math.max(0, f.devices - f.succeeded)).fill(FLEET_DEADLINE_MS)];
}

async function once(ctx: BenchContext, setup: Setup, devices: number): Promise<Run> {
  // TCP_NODELAY on both: with Nagle, ~1% of echoes wait ~40 ms for the client's delayed ACK of the
  // session tickets, which would set the fleet's p99 whatever the attacker does.
  const config = setup.server === 'corral' ? { tls: true, noDelay: true, connectionRatePerSource: RATE_LIMIT } : { tls: true, noDelay: true };
  const server = await startServer(ECHO_SERVERS[setup.server], config);
  let attack: ReturnType<typeof startNativeAttack> | undefined;
  try {
    await sleep(500);
    const counters = await watchCorralCounters(server, setup.server === 'corral');
    if (setup.attacked) {
      // Bounded by time too: longer than the fleet can take, stopped as soon as it is done.
      const seconds = ATTACK_LEAD_MS / 1000 + devices / FLEET_RATE + FLEET_DEADLINE_MS / 1000 + 5;
      attack = startNativeAttack({ port: server.port, net: ATTACK_NET, rate: ATTACK_RATE, seconds, deadlineMs: ATTACK_DEADLINE_MS, nice: ATTACKER_NICE });
      await sleep(ATTACK_LEAD_MS);
    }
    const cpu0 = treeStats(server.pid).cpuSeconds;
    const attackerCpu0 = attack?.cpuSeconds() ?? 0;
    const busy0 = machineBusySeconds();
    const t0 = performance.now();
    const fleet = await runNativeFleet({ port: server.port, net: FLEET_NET, devices, rate: FLEET_RATE, addresses: FLEET_ADDRESSES, deadlineMs: FLEET_DEADLINE_MS });
    const elapsed = (performance.now() - t0) / 1000;
    const cpu = treeStats(server.pid).cpuSeconds - cpu0;
    const attackerCpu = (attack?.cpuSeconds() ?? 0) - attackerCpu0;
    const busy = machineBusySeconds() - busy0;
    const attackResult = attack ? await attack.stop() : null;
    attack = undefined;
    const corralCounters = await counters();
    const times = deviceTimes(fleet);
    const fleetCpu = fleet.cpuUs / 1e6;
    const run: Run = {
      ...setup,
      fleet: { ...fleet, latencies: [] },
      goodput: fleet.succeeded / devices,
      p50: percentile(times, 50),
      p99: percentile(times, 99),
      curve: CURVE_AT.map((p) => [p, round(percentile(times, p), 1)]),
      attack: attackResult,
      serverCores: cpu / elapsed,
      fleetClientCores: fleetCpu / Math.max(0.001, fleet.seconds),
      attackerCores: attackerCpu / elapsed,
      otherCores: Math.max(0, (busy - cpu - fleetCpu - attackerCpu) / elapsed),
      fleetSeconds: elapsed,
      ...(corralCounters ? { corralCounters } : {}),
    };
    ctx.log(
      `  ${label(setup)}: fleet p50 ${round(run.p50, 1)} ms, p99 ${round(run.p99, 1)} ms, goodput ${round(run.goodput * 100, 1)}% (${fmt(fleet.succeeded)}/${fmt(devices)}, failed ${JSON.stringify(fleet.failed)}), ` +
        `server ${run.serverCores.toFixed(2)} cores` +
        (attackResult ? `; attacker ${fmt(attackResult.started)} connects (${fmt(attackResult.startedPerSecond)}/s) ${JSON.stringify(attackResult.outcomes)}, ${run.attackerCores.toFixed(2)} cores` : '') +
        (run.corralCounters?.['rejected.rate_limited'] ? `; rate_limited ${fmt(run.corralCounters['rejected.rate_limited'])}` : ''),
    );
    return run;
  } finally {
    if (attack) await attack.stop().catch(() => undefined);
    await server.stop();
  }
}

const pct = (v: number): string => `${round(v * 100, 1)}%`;


/** The attack offered what was asked (its client kept up). */
const attackFull = (r: Run): boolean => r.attack !== null && r.attack.started >= MIN_ATTACK_SHARE * ATTACK_RATE * r.attack.seconds;

export const scenario: Scenario = {
  id: 'attacker',
  budgetSeconds: { quick: 60, full: 480 },
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    const repeats = ctx.quick ? 1 : 3;
    const fleetSeconds = ctx.quick ? 5 : 20;
    const devices = FLEET_RATE * fleetSeconds;
    const settings = await corralSettings({ connectionRatePerSource: RATE_LIMIT });
    const runs: Run[] = [];
    for (let i = 0; i < repeats; i++) {
      for (const setup of SETUPS) {
        runs.push(await once(ctx, setup, devices));
        await sleep(300);
      }
    }
    const of = (s: Setup): Run[] => runs.filter((r) => r.server === s.server && r.attacked === s.attacked);
    /** The median run of a setup by p99 (its row in the tables). */
    const mid = (s: Setup): Run => medianBy(of(s), (r) => r.p99);
    const p99 = (s: Setup): number => median(of(s).map((r) => r.p99));
    const goodput = (s: Setup): number => median(of(s).map((r) => r.goodput));
    const ofRuns = repeats > 1 ? ` Median of ${repeats} runs.` : '';
    const base = p99({ server: 'corral', attacked: false });

    const tables: Table[] = [
      {
        title:
          `The fleet: ${fmt(devices)} devices, ${FLEET_RATE} a second from ${FLEET_ADDRESSES} source addresses, one attempt each (TCP connect, TLS handshake, one line echoed) within ${FLEET_DEADLINE_MS / 1000} s. ` +
          `Latency in ms over every device, a failed one counted as the deadline; goodput: devices connected within the deadline.${ofRuns}`,
        columns: ['server', 'attacker', 'p50', 'p99', 'p99 ÷ corral without attacker', 'goodput', 'failed', 'p99, each run', 'goodput, each run'],
        rows: SETUPS.map((s) => {
          const r = mid(s);
          return [
            serverName(s.server),
            s.attacked ? `${fmt(ATTACK_RATE)} connects/s` : 'none',
            fmtMs(median(of(s).map((q) => q.p50))),
            fmtMs(p99(s)),
            base > 0 ? round(p99(s) / base, 2) : null,
            pct(goodput(s)),
            countsText(r.fleet.failed),
            of(s).map((q) => fmtMs(q.p99)).join(', '),
            of(s).map((q) => pct(q.goodput)).join(', '),
          ];
        }),
      },
      {
        title:
          'Where the fleet’s time went, over the devices that connected (the median run of each): the TCP connect, then the TLS handshake, then the echo; ms, p50 / p99 of each part',
        columns: ['server', 'attacker', 'TCP connect', 'TLS handshake', 'echo', 'client clock late (worst, ms)'],
        rows: SETUPS.map((s) => {
          const f = mid(s).fleet;
          const part = (p: Percentiles | null): string => (p ? `${fmtMs(p.p50)} / ${fmtMs(p.p99)}` : '–');
          return [serverName(s.server), s.attacked ? 'yes' : 'no', part(f.stages.connect), part(f.stages.handshake), part(f.stages.echo), fmtMs(f.maxLagMs)];
        }),
      },
      {
        title:
          `The attacker, from one address: connects started (asked: ${fmt(ATTACK_RATE)} a second, from ${ATTACK_LEAD_MS / 1000} s before the fleet until it was done) and what each met within ${ATTACK_DEADLINE_MS / 1000} s. ` +
          'Answered: the server did the handshake (sent its first flight, its signature made); closed: the server closed it before answering. Closed after: from the TCP connect to the close',
        columns: ['server', 'connects (per second)', 'answered', 'closed unanswered', 'refused', 'deadline', 'error', 'closed after p50 / p99 (ms)', 'answered after p50 / p99 (ms)', 'corral: rejected.rate_limited'],
        rows: SETUPS.filter((s) => s.attacked).map((s) => {
          const r = mid(s);
          const a = r.attack!;
          const o = a.outcomes;
          return [
            serverName(s.server),
            `${fmt(a.started)} (${fmt(a.startedPerSecond)}/s)${attackFull(r) ? '' : ' short of the rate asked'}`,
            fmt(o.answered ?? 0),
            fmt(o.closed ?? 0),
            fmt(o.refused ?? 0),
            fmt(o.deadline ?? 0),
            fmt(o.error ?? 0),
            a.closedAfterMs ? `${fmtMs(a.closedAfterMs.p50)} / ${fmtMs(a.closedAfterMs.p99)}` : 'none closed',
            a.answeredAfterMs ? `${fmtMs(a.answeredAfterMs.p50)} / ${fmtMs(a.answeredAfterMs.p99)}` : 'none answered',
            r.corralCounters ? fmt(r.corralCounters['rejected.rate_limited'] ?? 0) : '—',
          ];
        }),
      },
      {
        title:
          `Where the CPU went while the fleet ran (the machine has ${os.availableParallelism()} cores; the median run of each). ` +
          'Server CPU per attack connect: the server’s CPU over its run without the attacker subtracted, per connect the attacker started meanwhile. ' +
          'Rest of the machine: busy CPU (/proc/stat) not in the server or either client: other processes, and the kernel’s network work, which no process is charged for',
        columns: ['server', 'attacker', 'server CPU (cores)', 'server CPU µs per attack connect', 'attacker CPU (cores)', 'fleet client CPU (cores)', 'fleet client µs per handshake', 'rest of the machine (cores)', 'corral: info() counters that changed'],
        rows: SETUPS.map((s) => {
          const r = mid(s);
          const quiet = mid({ server: s.server, attacked: false });
          const perConnect =
            r.attack && r.attack.startedPerSecond > 0 ? Math.round(((r.serverCores - quiet.serverCores) * 1e6) / r.attack.startedPerSecond) : null;
          return [
            serverName(s.server),
            s.attacked ? 'yes' : 'no',
            round(r.serverCores, 2),
            perConnect,
            s.attacked ? round(r.attackerCores, 2) : '—',
            round(r.fleetClientCores, 2),
            cpuPerHandshake(r.fleet),
            round(r.otherCores, 2),
            r.corralCounters
              ? Object.entries(r.corralCounters)
                  .map(([k, v]) => `${k} ${fmt(v)}`)
                  .join(', ') || '0'
              : '—',
          ];
        }),
      },
    ];

    const charts: Chart[] = [
      {
        title: 'Fleet connect latency by percentile (a failed device at the 5 s deadline)',
        xLabel: 'percentile of devices',
        yLabel: 'connect + handshake + echo, ms',
        series: SETUPS.map((s) => ({ name: label(s), points: mid(s).curve })),
      },
      {
        title: 'The same, without bare Node under the attacker (whose scale hides the rest)',
        xLabel: 'percentile of devices',
        yLabel: 'connect + handshake + echo, ms',
        series: SETUPS.filter((s) => s.server === 'corral' || !s.attacked).map((s) => ({ name: label(s), points: mid(s).curve })),
      },
    ];

    const ca = { server: 'corral', attacked: true } as const;
    const cb = { server: 'corral', attacked: false } as const;
    const ba = { server: 'bare', attacked: true } as const;
    const caRun = mid(ca);
    const full = of(ca).every(attackFull);
    const p99Ratio = base > 0 ? p99(ca) / base : Infinity;
    const goodputRatio = goodput(cb) > 0 ? goodput(ca) / goodput(cb) : 0;
    const shortNote = full
      ? ''
      : ` The attack fell short of ${fmt(ATTACK_RATE)} connects a second against corral (${of(ca)
          .map((r) => fmt(r.attack?.startedPerSecond ?? 0))
          .join(', ')}/s): the client, not the server, set its rate.`;
    const why =
      `With the attacker corral used ${caRun.serverCores.toFixed(2)} cores (${mid(cb).serverCores.toFixed(2)} without), the attacker ${caRun.attackerCores.toFixed(2)}, ` +
      `the fleet client ${caRun.fleetClientCores.toFixed(2)} and the rest of the machine ${caRun.otherCores.toFixed(2)} of ${os.availableParallelism()}; ` +
      `the fleet's failures: ${countsText(caRun.fleet.failed)}; corral's counters: ${Object.entries(caRun.corralCounters ?? {})
        .map(([k, v]) => `${k} ${fmt(v)}`)
        .join(', ')}.`;
    const p99Met = full && p99Ratio <= 1.5;
    const goodputMet = full && goodputRatio >= 0.95;
    const betterP99 = p99(ca) < p99(ba);
    const betterGoodput = goodput(ca) > goodput(ba) || (goodput(ca) === 1 && goodput(ba) === 1);
    const targets: TargetCheck[] = [
      {
        target: 'attacker at 2,000 connects/s: the fleet’s connect p99 with corral ≤ 1.5× corral’s without the attacker',
        measured: `${fmtMs(p99(ca))} ms against ${fmtMs(base)} ms (${round(p99Ratio, 2)}×)`,
        met: p99Met,
        ...(p99Met ? {} : { note: `Missed${full ? ` at ${round(p99Ratio, 2)}×` : ''}.${shortNote} ${why}` }),
      },
      {
        target: 'attacker at 2,000 connects/s: the fleet’s goodput with corral ≥ 95% of corral’s without the attacker',
        measured: `${pct(goodput(ca))} against ${pct(goodput(cb))} (${pct(goodputRatio)})`,
        met: goodputMet,
        ...(goodputMet ? {} : { note: `Missed${full ? ` at ${pct(goodputRatio)}` : ''}.${shortNote} ${why}` }),
      },
      {
        target: 'attacker at 2,000 connects/s: corral’s fleet p99 lower than bare Node’s under the same attacker, and its goodput higher (or both 100%)',
        measured: `p99 ${fmtMs(p99(ca))} ms against ${fmtMs(p99(ba))} ms; goodput ${pct(goodput(ca))} against ${pct(goodput(ba))}${goodput(ca) === goodput(ba) ? ' (equal)' : ''}`,
        met: betterP99 && betterGoodput,
        ...(betterP99 && betterGoodput
          ? {}
          : {
              note:
                `Missed on ${[betterP99 ? '' : 'p99', betterGoodput ? '' : 'goodput'].filter(Boolean).join(' and ')}. ` +
                `bare Node used ${mid(ba).serverCores.toFixed(2)} cores and answered ${fmt(mid(ba).attack?.outcomes.answered ?? 0)} of the attacker's connects. ${why}`,
            }),
      },
    ];

    return {
      id: 'attacker',
      title: 'Attacker: one host at 2,000 connects a second while a fleet connects',
      config: {
        corral:
          `one process, its defaults plus noDelay and connectionRatePerSource { rate: ${RATE_LIMIT.rate}, burst: ${RATE_LIMIT.burst} } (as info() reports them: ${settings.text}). ` +
          `Why that limit: the fleet's busiest address connects ${FLEET_RATE / FLEET_ADDRESSES} times a second, evenly, so it stays at ${round((FLEET_RATE / FLEET_ADDRESSES / RATE_LIMIT.rate) * 100, 0)}% of the rate and never empties its bucket; ` +
          `a NAT whose devices reconnect together after an outage fits the burst of ${RATE_LIMIT.burst}; the attacker, at ${fmt(ATTACK_RATE)} a second, is ${fmt(ATTACK_RATE / RATE_LIMIT.rate)} times over it, ` +
          `so all but ${RATE_LIMIT.rate} of its connects a second are closed at accept, before a byte is read`,
        bare: 'tls.createServer, one process, backlog 4,096, no limits',
        'TCP_NODELAY':
          'set on both servers’ sockets (corral transportOptions.noDelay, tls.createServer noDelay): with Nagle’s algorithm on (Node’s default), about 1% of echoes waited ~40 ms for the client’s delayed ACK of the TLS session tickets, in every setup alike, which set the fleet’s p99 whatever the attacker did',
        fleet:
          `bench/native-client fleet: ${fmt(devices)} devices, ${FLEET_RATE} a second for ${fleetSeconds} s, device i from address i mod ${FLEET_ADDRESSES} (127.${FLEET_NET}.1.1–${FLEET_ADDRESSES}), ` +
          `each one attempt (TCP connect, TLS handshake, one line echoed, close) within ${FLEET_DEADLINE_MS / 1000} s, no retry; a run ends when every device has connected or failed`,
        attacker:
          `bench/native-client attack: ${fmt(ATTACK_RATE)} TCP connects a second from one address (127.${ATTACK_NET}.1.1), paced by a 1 ms clock (a connect more than 200 ms late is skipped), ` +
          `each sending a real crypto/tls ClientHello (captured once, replayed: the attacker spends no crypto, the server all of a handshake's) and waiting up to ${ATTACK_DEADLINE_MS / 1000} s for the answer, ` +
          `then closing with a reset (so no TIME_WAIT socket holds one of its ports); from ${ATTACK_LEAD_MS / 1000} s before the fleet starts until it is done; at nice ${ATTACKER_NICE} ` +
          '(a real attacker’s process runs on another machine and cannot delay the server’s event loop for a core; its connects still cost the server what they cost. At the runner’s priority it took half a core here and corral’s fleet p99 went from 8.9 to 21.8 ms, 2.45×, 2026-12-07; both servers alike)',
        'p99 and goodput':
          `p99 over every device, a device that failed counted as the ${FLEET_DEADLINE_MS / 1000} s deadline; goodput = devices connected within the deadline ÷ devices. ` +
          'Targets compare medians over the runs; they need the attacker to have started at least 90% of its connects against corral (otherwise the client set the attack’s rate)',
        order: `${repeats} repeat(s) of: ${SETUPS.map(label).join('; ')}; a fresh server for every run`,
        pinning: 'none: the server, the fleet client and the attacker share both cores (the attacker at a lower priority)',
      },
      tables,
      charts,
      targets,
      raw: {
        corralInfoAtStart: settings.info,
        rateLimit: RATE_LIMIT,
        fleet: { rate: FLEET_RATE, addresses: FLEET_ADDRESSES, deadlineMs: FLEET_DEADLINE_MS, devices, seconds: fleetSeconds },
        attack: { rate: ATTACK_RATE, deadlineMs: ATTACK_DEADLINE_MS, leadMs: ATTACK_LEAD_MS },
        runs,
      },
    };
  },
};
