/**
 * Resumption storm: N TLS devices hold session tickets from a server started with fixed
 * `ticketKeys` on a fixed port; the server process is killed (SIGKILL: every connection drops at
 * once, as in a crash) and started again with the same keys on the same port, and every device
 * storms back offering its ticket: 5 s deadline per attempt, backoff 1 s × 2ⁿ (capped at 30 s)
 * × [0.5, 1.5), refused connects included while the server is down. A resumed TLS 1.3
 * handshake skips the certificate signature, so a server that resumes can take its devices back
 * faster than the full-handshake storm. corral (`transportOptions.ticketKeys`) and bare Node
 * (`tls.createServer({ ticketKeys })`), one process each, in the same run.
 *
 * Measured: the share of devices that came back with a resumed handshake, the time until all are
 * back (from the kill, and from the restarted server's first listen), attempts per device, the
 * server's CPU per handshake, CPU busy share and event-loop utilization after the restart, and the
 * client's CPU per handshake. The devices are the native load client (bench/native-client
 * `storm -reconnect -resume`); crypto/tls would drop a device's ticket after any failed attempt
 * (even a connection reset by the dying server), so the client keeps it until it gets a new one.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { corralSettings, ECHO_SERVERS } from '../lib/echo-server.js';
import { machineBusySeconds } from '../lib/machine-load.js';
import { prepareNativeStorm } from '../lib/native-client.js';
import { cumulative, fmt, medianBy, round, sleep } from '../lib/numbers.js';
import type { BenchContext, Chart, Scenario, ScenarioResult, Table, TargetCheck } from '../lib/scenario.js';
import { startServer } from '../lib/server-child.js';
import { busyText, type ServerKind, type StormRun, failedText, seconds as s, serverName, summarizeStorm } from '../lib/storm-run.js';
import type { UsageSample } from '../servers/usage-trace.js';

/** corral: its defaults, except the limits N devices need raised. */
const CORRAL = { maxConnections: 30_000 } as const;
const DEADLINE_MS = 5000;
const GIVE_UP_MS = 120_000;
const CLIENT_PROCESSES = 2;
const SETUP_RATE = 2000;

interface Run extends StormRun {
  /** From the kill until the restarted server printed its port, ms. */
  downtimeMs: number;
  /** From the restarted server's listen until all were back, ms (null: not all back). */
  allBackAfterListenMs: number | null;
  /** Devices holding a ticket before the kill. */
  ticketsBefore: number;
  /** Server CPU after the restart until all were back, per handshake the devices completed, µs. */
  serverCpuUsPerHandshake: number | null;
}

/** A port free now (bound and released), to restart a server on. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

async function once(ctx: BenchContext, kind: ServerKind, devices: number, netOctet: number): Promise<Run> {
  const port = await freePort();
  const config = { tls: true, port, ticketKeys: randomBytes(48).toString('hex'), ...(kind === 'corral' ? CORRAL : {}) };
  let server = await startServer(ECHO_SERVERS[kind], config);
  const storm = prepareNativeStorm({
    port,
    net: netOctet,
    devices,
    processes: CLIENT_PROCESSES,
    setupRate: SETUP_RATE,
    deadlineMs: DEADLINE_MS,
    giveUpMs: GIVE_UP_MS,
    resume: true,
  });
  try {
    ctx.log(`resumption-storm/${kind}: connecting ${fmt(devices)} devices at ${fmt(SETUP_RATE)}/s`);
    const ready = await storm.ready;
    await sleep(ctx.quick ? 1000 : 2000);
    await storm.storm();
    const busy0 = machineBusySeconds();
    const killedAt = Date.now();
    process.kill(server.pid, 'SIGKILL');
    await server.stop();
    server = await startServer(ECHO_SERVERS[kind], config);
    const listening = Date.now();
    ctx.log(`resumption-storm/${kind}: killed and restarted on port ${port} in ${listening - killedAt} ms; devices reconnecting`);
    const result = await storm.done;
    const machine = { busySeconds: machineBusySeconds() - busy0, until: Date.now() };
    const trace = (await server.ask<{ samples: UsageSample[] }>('trace')).samples;
    const base = summarizeStorm(kind, result, killedAt, trace, { machine, usageFrom: listening });
    const handshakes = result.stormCost.fullHandshakes + result.stormCost.resumedHandshakes;
    return {
      ...base,
      downtimeMs: listening - killedAt,
      allBackAfterListenMs: base.allBackMs === null ? null : base.allBackMs - (listening - killedAt),
      ticketsBefore: ready.resumable,
      serverCpuUsPerHandshake: handshakes > 0 ? Math.round((base.serverCpuSeconds * 1e6) / handshakes) : null,
    };
  } finally {
    await storm.close();
    await server.stop();
  }
}

const pct = (n: number, of: number): string => `${((n / Math.max(1, of)) * 100).toFixed(1)}%`;

export const scenario: Scenario = {
  id: 'resumption-storm',
  budgetSeconds: { quick: 60, full: 900 },
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    const devices = ctx.quick ? 2000 : 16_000;
    const repeats = ctx.quick ? 1 : 3;
    const settings = await corralSettings(CORRAL);
    const runs: Run[] = [];
    let netOctet = 170;
    for (let i = 0; i < repeats; i++) {
      for (const kind of ['corral', 'bare'] as const) {
        const r = await once(ctx, kind, devices, netOctet);
        netOctet = netOctet >= 190 ? 170 : netOctet + CLIENT_PROCESSES;
        runs.push(r);
        ctx.log(
          `resumption-storm/${kind} run ${i + 1}/${repeats}: ${fmt(r.back)}/${fmt(r.devices)} back, ${pct(r.resumedDevices, r.devices)} resumed, ` +
            `all back ${s(r.allBackMs)} after the kill (${s(r.allBackAfterListenMs)} after the restart's listen), ${r.attemptsPerDevice.toFixed(2)} attempts/device, ` +
            `server ${r.serverCpuUsPerHandshake ?? '–'} µs/handshake, client ${r.clientCpuUsPerHandshake ?? '–'} µs/handshake`,
        );
        await sleep(1000);
      }
    }
    const median = (kind: ServerKind): Run => medianBy(runs.filter((r) => r.server === kind), (r) => r.allBackAfterListenMs);
    const corral = median('corral');
    const bare = median('bare');
    const ofRuns = repeats > 1 ? ` (median of ${repeats} runs by time from the restart's listen until all back)` : '';
    const tables: Table[] = [
      {
        title:
          `Resumption storm: ${fmt(devices)} TLS devices holding session tickets; the server process is killed and restarted with the same ticket keys on the same port, ` +
          `and every device reconnects offering its ticket; 5 s deadline per attempt, backoff 1 s × 2ⁿ (cap 30 s) × [0.5, 1.5)${ofRuns}`,
        columns: [
          'server',
          'back',
          'resumed',
          'down (kill to listen)',
          'all back after the kill',
          'all back after the listen',
          'corral ÷ bare (after the listen)',
          'attempts per device',
          'failed attempts (by reason)',
          'server CPU µs per handshake after the restart',
          'server busy after the restart (% of one core)',
          'event-loop utilization',
          'client CPU µs per handshake',
          'other processes (cores)',
          'after the listen, each run',
        ],
        rows: [corral, bare].map((r) => [
          serverName(r.server),
          `${fmt(r.back)} / ${fmt(r.devices)}`,
          `${fmt(r.resumedDevices)} (${pct(r.resumedDevices, r.devices)})`,
          `${(r.downtimeMs / 1000).toFixed(1)} s`,
          s(r.allBackMs),
          s(r.allBackAfterListenMs),
          r.server === 'corral' && r.allBackAfterListenMs !== null && bare.allBackAfterListenMs ? round(r.allBackAfterListenMs / bare.allBackAfterListenMs, 2) : null,
          round(r.attemptsPerDevice, 2),
          failedText(r),
          r.serverCpuUsPerHandshake,
          Math.round(r.serverBusyShare * 100),
          round(r.serverElu, 2),
          r.clientCpuUsPerHandshake,
          r.otherCores === null ? null : round(r.otherCores, 2),
          runs
            .filter((q) => q.server === r.server)
            .map((q) => s(q.allBackAfterListenMs))
            .join(', '),
        ]),
      },
    ];
    const binMs = ctx.quick ? 250 : 1000;
    const charts: Chart[] = [
      {
        title: `Devices back after the kill (${fmt(devices)} devices with tickets)`,
        xLabel: 'seconds after the kill',
        yLabel: 'devices back',
        series: [corral, bare].map((r) => ({ name: serverName(r.server), points: cumulative(r.backAt, binMs) })),
      },
    ];
    const resumedShare = corral.resumedDevices / Math.max(1, corral.devices);
    const faster = corral.allBackAfterListenMs !== null && bare.allBackAfterListenMs !== null && corral.allBackAfterListenMs <= bare.allBackAfterListenMs;
    const targets: TargetCheck[] = [
      {
        target: 'resumption storm: ≥ 99% of devices resume their TLS session with corral',
        measured: `corral ${pct(corral.resumedDevices, corral.devices)} (${fmt(corral.resumedDevices)} of ${fmt(corral.devices)}); bare Node ${pct(bare.resumedDevices, bare.devices)}`,
        met: resumedShare >= 0.99,
        ...(resumedShare >= 0.99
          ? {}
          : {
              note:
                `Missed by ${((0.99 - resumedShare) * 100).toFixed(1)} points: ${fmt(corral.devices - corral.resumedDevices)} devices did a full handshake ` +
                `(${fmt(corral.ticketsBefore)} held a ticket before the kill; ${fmt(corral.devices - corral.back)} did not come back).`,
            }),
      },
      {
        target: 'resumption storm: corral back no later than bare Node (from the restarted server’s listen)',
        measured: `corral ${s(corral.allBackAfterListenMs)}, bare Node ${s(bare.allBackAfterListenMs)}`,
        met: faster,
        ...(faster
          ? {}
          : {
              note:
                `Missed${corral.allBackAfterListenMs !== null && bare.allBackAfterListenMs ? ` at ${round(corral.allBackAfterListenMs / bare.allBackAfterListenMs, 2)}× bare Node's time` : ': not all devices came back'}. ` +
                `${busyText(corral, bare)}Attempts per device: corral ${corral.attemptsPerDevice.toFixed(2)}, bare Node ${bare.attemptsPerDevice.toFixed(2)}; ` +
                `failed attempts: corral ${failedText(corral)}, bare Node ${failedText(bare)}. The devices that found the server down wait out their backoff, whatever the server.`,
            }),
      },
    ];
    return {
      id: 'resumption-storm',
      title: 'Resumption storm: devices come back with their session tickets',
      config: {
        devices,
        outage: 'the server process is killed (SIGKILL) once every device holds its connection and a ticket, and started again at once with the same ticket keys on the same port',
        ticketKeys: '48 random bytes per run; corral: transportOptions.ticketKeys; bare Node: tls.createServer({ ticketKeys })',
        deadlineMs: DEADLINE_MS,
        backoff: '1 s × 2ⁿ, capped at 30 s, × random [0.5, 1.5); a refused connect (server down) counts as a failed attempt',
        giveUpAfterMs: GIVE_UP_MS,
        client: `native load client (bench/native-client storm -reconnect -resume), ${CLIENT_PROCESSES} processes, one source address and one session cache per device; a failed attempt keeps the device's ticket; setup at ${fmt(SETUP_RATE)}/s`,
        runs: repeats > 1 ? `${repeats} per server, corral and bare Node alternating; the table shows the median run` : '1 per server',
        corral: `one process: maxConnections ${fmt(CORRAL.maxConnections)}, ticketKeys, otherwise its defaults (as info() reports them: ${settings.text})`,
        bare: 'tls.createServer({ ticketKeys }), one process, backlog 4,096',
        restart: 'the restarted server is a new Node process loading its code (corral from its built dist/, the server script through tsx), so its downtime differs; the target counts from its listen',
      },
      tables,
      charts,
      targets,
      raw: { corralInfoAtStart: settings.info, runs: runs.map(({ backAt, ...r }) => ({ ...r, backPerSecond: cumulative(backAt, 1000) })) },
    };
  },
};
