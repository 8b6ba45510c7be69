/**
 * Scenario 2, "Scale": hold 50,000 TLS connections (quick: 5,000) on corral with worker processes
 * (4; quick: 2) and report memory per connection (server RSS growth over idle ÷ connections, summed
 * over the server's process tree), time to connect all, and failed connects.
 *
 * Bare Node for comparison: one bare process cannot hold 50,000 (20,000 open files per process,
 * hard), so the comparison runs at a size one process can hold — 15,000 (quick: 5,000) — against
 * bare Node and against corral in one process, same certificate, same load. corral-1-process vs
 * bare is then the same size and the same number of processes (corral's own cost per
 * connection); corral-with-workers vs corral-1-process is what the worker pool adds. A bare
 * cluster was not used: it would compare corral's pool with a second pool implementation
 * (node:cluster round-robin) rather than with bare Node; shared/FACTS.md has a bare 6-worker
 * cluster at 100,000 connections (27.7 KiB each) for reference.
 *
 * Load: bench/lib/load.ts, client processes of at most 15,000 connections each with source
 * addresses spread over 127.x.y.z, 1,500 connects per second offered, at most 512 in flight, each
 * connection checked with one echo, then all held while the server is measured.
 */
import os from 'node:os';
import type { ListenerInfo } from '../../src/index.js';
import { ECHO_SERVERS } from '../lib/echo-server.js';
import { openConnections } from '../lib/load.js';
import { fmt, percentile, round, sleep } from '../lib/numbers.js';
import { treeStats } from '../lib/proc-stats.js';
import type { BenchContext, Scenario, ScenarioResult, Table, TargetCheck } from '../lib/scenario.js';
import { startServer } from '../lib/server-child.js';

const RATE = 1500;
const IN_FLIGHT = 512;

interface HoldRun {
  label: string;
  server: 'corral' | 'bare';
  config: string;
  options: Record<string, unknown>;
  connections: number;
  connected: number;
  failed: number;
  errors: Record<string, number>;
  secondsToConnectAll: number;
  connectP50Ms: number;
  connectP99Ms: number;
  processes: number;
  rssIdleMiB: number;
  rssHeldMiB: number;
  rssKiBPerConnection: number;
  cpuUsPerConnection: number;
  corralConnections?: number;
  /** corral's sockets closed unserved and failed handshakes (listener.info()). */
  corralRejected?: ListenerInfo['rejected'];
  corralHandshakeFailures?: ListenerInfo['handshakeFailures'];
  /** Every second while connecting: [s since the first connect, connections held, server RSS MiB]. */
  samples: [number, number, number][];
}

async function hold(ctx: BenchContext, label: string, kind: 'corral' | 'bare', options: Record<string, unknown>, config: string, connections: number): Promise<HoldRun> {
  const server = await startServer(ECHO_SERVERS[kind], { tls: true, ...options }, { startTimeoutMs: 120_000 });
  let load: Awaited<ReturnType<typeof openConnections>> | undefined;
  try {
    await sleep(ctx.quick ? 1000 : 1500); // let start-up work (workers, certificate, JIT) settle before the idle reading
    const idle = treeStats(server.pid);
    ctx.log(`scale/${label}: ${idle.pids.length} processes, ${Math.round(idle.rssKiB / 1024)} MiB idle; opening ${fmt(connections)} TLS connections`);
    let last = Date.now();
    let connectedNow = 0;
    const began = Date.now();
    const samples: [number, number, number][] = [[0, 0, Math.round(idle.rssKiB / 1024)]];
    const sampler = setInterval(() => {
      samples.push([round((Date.now() - began) / 1000, 1), connectedNow, Math.round(treeStats(server.pid).rssKiB / 1024)]);
    }, 1000);
    load = await openConnections({
      port: server.port,
      tls: true,
      connections,
      rate: RATE,
      inFlight: IN_FLIGHT,
      onProgress: (c, f) => {
        connectedNow = c;
        if (Date.now() - last < 10_000) return;
        last = Date.now();
        ctx.log(`scale/${label}: ${fmt(c)} connected, ${fmt(f)} failed`);
      },
    }).finally(() => clearInterval(sampler));
    await sleep(ctx.quick ? 1000 : 2000); // the last echoes and the allocations behind them
    const held = treeStats(server.pid);
    samples.push([round((Date.now() - began) / 1000, 1), load.connected, Math.round(held.rssKiB / 1024)]);
    const info = kind === 'corral' ? await server.ask<ListenerInfo>('info') : undefined;
    const run: HoldRun = {
      label,
      server: kind,
      config,
      options,
      connections,
      connected: load.connected,
      failed: load.failed,
      errors: load.errors,
      secondsToConnectAll: round(load.ms / 1000, 1),
      connectP50Ms: round(percentile(load.latencies, 50), 0),
      connectP99Ms: round(percentile(load.latencies, 99), 0),
      processes: held.pids.length,
      rssIdleMiB: Math.round(idle.rssKiB / 1024),
      rssHeldMiB: Math.round(held.rssKiB / 1024),
      rssKiBPerConnection: round((held.rssKiB - idle.rssKiB) / Math.max(1, load.connected), 1),
      cpuUsPerConnection: Math.round(((held.cpuSeconds - idle.cpuSeconds) / Math.max(1, load.connected)) * 1e6),
      ...(info ? { corralConnections: info.connections, corralRejected: info.rejected, corralHandshakeFailures: info.handshakeFailures } : {}),
      samples,
    };
    ctx.log(`scale/${label}: ${fmt(run.connected)} connected, ${fmt(run.failed)} failed in ${run.secondsToConnectAll} s; ${run.rssKiBPerConnection} KiB per connection`);
    return run;
  } finally {
    // Clients first: the server then has nothing left to drain and stops at once.
    await load?.close();
    await server.stop(20_000);
  }
}

const seriesName = (r: HoldRun): string =>
  r.server === 'bare' ? 'bare Node, 1 process' : r.label.endsWith('workers') ? `corral, ${r.label.split('-')[1]} workers` : 'corral, 1 process';

export const scenario: Scenario = {
  id: 'scale',
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    const loadBefore = os.loadavg();
    const target = ctx.quick ? 5000 : 50_000;
    const workers = ctx.quick ? 2 : 4;
    const compare = ctx.quick ? 3000 : 15_000;
    const maxConnections = Math.ceil(target * 1.2);
    const corralWorkers = { maxConnections, workers };
    const corralSingle = { maxConnections: Math.ceil(compare * 1.2) };
    const workersConfig = `corral, ${workers} workers (distribution ${Number(process.versions.node.split('.')[0]) >= 22 ? 'reuseport' : 'shared'}, the Node ${process.versions.node.split('.')[0]} default), maxConnections ${fmt(maxConnections)} in total, otherwise defaults`;
    const singleConfig = `corral, one process, maxConnections ${fmt(corralSingle.maxConnections)}, otherwise defaults`;
    const bareConfig = 'bare Node tls.createServer, one process';

    const runs: HoldRun[] = [];
    runs.push(await hold(ctx, `corral-${workers}-workers`, 'corral', corralWorkers, workersConfig, target));
    await sleep(500);
    runs.push(await hold(ctx, 'corral-1-process', 'corral', corralSingle, singleConfig, compare));
    await sleep(500);
    runs.push(await hold(ctx, 'bare-1-process', 'bare', {}, bareConfig, compare));
    const [big, single, bare] = runs as [HoldRun, HoldRun, HoldRun];

    const why =
      `Why two sizes: one process may hold at most 20,000 open files (hard limit here), so bare Node cannot hold the issue's 50,000 in one process. ` +
      `The comparison with bare Node runs at ${fmt(compare)}, a size one process holds, against corral in one process (same size, same process count); ` +
      `corral with ${workers} workers at ${fmt(target)} is the target run. A bare node:cluster was not used: it would compare corral's worker pool with node:cluster's, not with bare Node.`;
    const table: Table = {
      title: `Holding TLS connections: memory and time per connection. ${why}`,
      columns: [
        'server (configuration)',
        'connections',
        'connected / failed',
        'time to connect all',
        'connect + first echo p50 / p99',
        'server processes',
        'server RSS idle → holding',
        'RSS per connection',
        'CPU per connection (handshake + one echo)',
      ],
      rows: runs.map((r) => [
        r.config,
        r.connections,
        `${fmt(r.connected)} / ${fmt(r.failed)}`,
        `${r.secondsToConnectAll} s`,
        `${fmt(r.connectP50Ms)} ms / ${fmt(r.connectP99Ms)} ms`,
        r.processes,
        `${fmt(r.rssIdleMiB)} MiB → ${fmt(r.rssHeldMiB)} MiB`,
        `${r.rssKiBPerConnection} KiB`,
        `${fmt(r.cpuUsPerConnection)} µs`,
      ]),
    };
    const ratios: Table = {
      title:
        `corral against bare Node at ${fmt(compare)} connections, one process each` +
        (single.failed > 0
          ? `. corral's ${fmt(single.failed)} failed connects were closed unserved after waiting 5 s (wait_timeout ${fmt(single.corralRejected?.wait_timeout ?? 0)}): ` +
            'when the server falls behind the offered rate, the default admission policy (adaptive) serves the newest sockets first and lets the oldest ' +
            'time out, where bare Node serves every one late (these clients wait up to 30 s); admission fifo would serve them all'
          : ''),
      columns: ['', 'corral', 'bare Node', 'corral ÷ bare'],
      rows: [
        ['RSS per connection (KiB)', single.rssKiBPerConnection, bare.rssKiBPerConnection, round(single.rssKiBPerConnection / bare.rssKiBPerConnection, 2)],
        ['CPU per connection (µs)', single.cpuUsPerConnection, bare.cpuUsPerConnection, round(single.cpuUsPerConnection / bare.cpuUsPerConnection, 2)],
        ['time to connect all (s)', single.secondsToConnectAll, bare.secondsToConnectAll, round(single.secondsToConnectAll / bare.secondsToConnectAll, 2)],
        ['failed connects', single.failed, bare.failed, null],
      ],
    };
    const met = big.connected === target && big.failed === 0;
    const targets: TargetCheck[] = [
      {
        target: `${fmt(target)} concurrent TLS connections, zero failed${ctx.quick ? ' (quick mode; the issue\'s target is 50,000)' : ''}`,
        measured: `${fmt(big.connected)} held, ${fmt(big.failed)} failed, over ${workers} workers in ${big.secondsToConnectAll} s; ${big.rssKiBPerConnection} KiB per connection`,
        met,
        ...(met
          ? {}
          : {
              note:
                `${fmt(target - big.connected)} not connected (client errors: ${Object.entries(big.errors)
                  .map(([k, v]) => `${k} ${v}`)
                  .join(', ')}; corral closed unserved: ${JSON.stringify(big.corralRejected ?? {})}, handshake failures: ${JSON.stringify(big.corralHandshakeFailures ?? {})}). ` +
                `Connects are offered at ${fmt(RATE)}/s with ${IN_FLIGHT} in flight and a 30 s client timeout, not retried; clients and server share the cores. ` +
                'Why: when the machine cannot keep up with the offered rate, a queue stands in a worker, and the default admission policy (adaptive) then serves ' +
                'the newest sockets first; the oldest wait until waitTimeout (default 5 s) closes them (wait_timeout), where bare Node would have served them late. ' +
                'That is corral shedding load by design, for clients whose deadline is shorter than the queue. These clients wait 30 s: with admission fifo (or a ' +
                'waitTimeout near the clients\' timeout) they would all have been served — a 5,000-connection probe over 2 workers on the same load: fifo 0 failed, ' +
                'adaptive 124. The workload was not changed to meet the target.',
            }),
      },
    ];
    return {
      id: 'scale',
      title: 'Scale: holding many TLS connections',
      config: {
        target,
        workers,
        compareAt: compare,
        corralWorkers: { ...corralWorkers, description: workersConfig },
        corralSingle: { ...corralSingle, description: singleConfig },
        bare: bareConfig,
        load: `bench/lib/load.ts: ${fmt(RATE)} connects/s offered, ${IN_FLIGHT} in flight, ≤ 15,000 per client process, sources 127.10+.x.y, one echo per connection, ECDSA P-256 certificate`,
        memory: 'server RSS (VmRSS summed over the process tree) holding − idle, ÷ connections; read 2 s after the last connect',
        why,
      },
      tables: [table, ratios],
      charts: [
        {
          title: 'Connections held while connecting',
          xLabel: 'seconds since the first connect',
          yLabel: 'connections held',
          series: runs.map((r) => ({ name: seriesName(r), points: r.samples.map(([t, c]) => [t, c] as [number, number]) })),
        },
        {
          title: 'Server memory against connections held (the slope is the memory per connection)',
          xLabel: 'connections held',
          yLabel: 'server RSS, MiB (process tree)',
          series: runs.map((r) => ({ name: seriesName(r), points: r.samples.map(([, c, m]) => [c, m] as [number, number]) })),
        },
      ],
      targets,
      raw: { loadAverage: { before: loadBefore, after: os.loadavg() }, runs },
    };
  },
};
