/**
 * Gateway silent-socket flood: while a set of silent sockets (TCP connect, then nothing) is held
 * open against the bundled gateway (examples/amqp-gateway, one process, embedded broker, its own
 * default settings), real devices (bench/native-client `probe -gateway hello`) connect one after
 * the other — TCP connect, TLS handshake, hello with the device's token → welcome — and their
 * latency is compared with the same probe against an unloaded gateway in the same run.
 *
 * The hostile sets (bench/native-client `silent`): none (the baseline), 200 and 2,000 silent
 * sockets from 100 source addresses; a socket the gateway closes is reopened at once, as an
 * attacker would. A fresh gateway for every set and run, so memory growth is over an idle one.
 * Targets: the probe's p99 with 200 and with 2,000 silent sockets ≤ 2 × its unloaded p99, over
 * ≥ 200 samples (full run).
 */
import { randomBytes } from 'node:crypto';
import { startGateway } from '../lib/gateway-process.js';
import { holdSilent, runNativeProbe, type ProbeResult, type SilentResult } from '../lib/native-client.js';
import { countsText, fmt, fmtMs, medianBy, round, sleep } from '../lib/numbers.js';
import { treeStats } from '../lib/proc-stats.js';
import type { BenchContext, Scenario, ScenarioResult, Table, TargetCheck } from '../lib/scenario.js';

interface HostileSet {
  id: string;
  label: string;
  count: number;
  addresses: number;
}

const SETS: readonly HostileSet[] = [
  { id: 'none', label: 'none (unloaded)', count: 0, addresses: 0 },
  { id: 'silent-200', label: '200 silent, 100 addresses', count: 200, addresses: 100 },
  { id: 'silent-2000', label: '2,000 silent, 100 addresses', count: 2000, addresses: 100 },
];
const PROBE_DEADLINE_MS = 10_000;
const HOSTILE_NET = 183;
const PROBE_NET = 182;
const RATIO_TARGET = 2;
/** Devices that say hello to a fresh gateway before anything is measured. */
const WARMUP = 30;

interface Run {
  set: string;
  probe: ProbeResult;
  probeTruncated: boolean;
  /** Gateway RSS growth while the set was held, over the idle gateway, KiB. */
  rssGrowthKiB: number;
  heldForMs: number;
  hostile: SilentResult | null;
  holdingOpen: number;
}

async function once(ctx: BenchContext, set: HostileSet, o: { samples: number; intervalMs: number; probeSeconds: number; minHoldMs: number }): Promise<Run> {
  const secret = randomBytes(32).toString('hex');
  const gateway = await startGateway({ secret, prefix: 'bench-silent', nodeId: 'gw-bench' });
  let peers: ReturnType<typeof holdSilent> | undefined;
  let rssMax = 0;
  const sampler = setInterval(() => (rssMax = Math.max(rssMax, treeStats(gateway.pid).rssKiB)), 250);
  try {
    await sleep(1000); // start-up work (certificate) behind it
    // Warm-up devices, not counted, before any silent socket: the first hellos of a fresh gateway
    // pay for its JIT, in every set alike.
    await runNativeProbe({
      port: gateway.port,
      net: PROBE_NET,
      samples: WARMUP,
      deadlineMs: PROBE_DEADLINE_MS,
      maxSeconds: 30,
      gateway: 'hello',
      gatewaySecret: secret,
      devicePrefix: 'warmup',
    });
    await sleep(200);
    const rss0 = gateway.stats().rssKiB;
    rssMax = rss0;
    let holdingOpen = 0;
    let heldFrom = Date.now();
    if (set.count > 0) {
      peers = holdSilent({ port: gateway.port, net: HOSTILE_NET, count: set.count, addresses: set.addresses, kind: 'silent', seconds: 600, maxSeconds: 900 });
      const timeout = new Promise<never>((_, reject) =>
        setTimeout(() => reject(new Error(`gateway-silent-flood/${set.id}: the silent sockets were not all opened within 60 s`)), 60_000).unref(),
      );
      holdingOpen = (await Promise.race([peers.holding, timeout])).open;
      heldFrom = Date.now();
      await sleep(300);
    }
    const probe = await runNativeProbe({
      port: gateway.port,
      net: PROBE_NET,
      samples: o.samples,
      intervalMs: o.intervalMs,
      deadlineMs: PROBE_DEADLINE_MS,
      maxSeconds: o.probeSeconds,
      gateway: 'hello',
      gatewaySecret: secret,
      devicePrefix: 'probe',
    });
    if (set.count > 0) await sleep(Math.max(0, heldFrom + o.minHoldMs - Date.now()));
    const heldForMs = Date.now() - heldFrom;
    const hostile = peers ? await peers.stop() : null;
    peers = undefined;
    rssMax = Math.max(rssMax, gateway.stats().rssKiB);
    const run: Run = { set: set.id, probe, probeTruncated: probe.truncated, rssGrowthKiB: Math.max(0, rssMax - rss0), heldForMs, hostile, holdingOpen };
    ctx.log(
      `gateway-silent-flood/${set.id}: hello → welcome p50 ${probe.p50} ms, p99 ${probe.p99} ms, max ${probe.max} ms, ${probe.samples} samples${probe.truncated ? ' (cut short)' : ''}, ` +
        `failed ${JSON.stringify(probe.failed)}; RSS +${fmt(run.rssGrowthKiB)} KiB` +
        (hostile ? `; silent: ${hostile.opened} opened, ${hostile.closedByServer} closed by the gateway (held p50 ${hostile.heldMs?.p50 ?? '–'} ms)` : ''),
    );
    return run;
  } finally {
    clearInterval(sampler);
    if (peers) await peers.stop().catch(() => undefined);
    await gateway.stop();
  }
}



export const scenario: Scenario = {
  id: 'gateway-silent-flood',
  budgetSeconds: { quick: 90, full: 1500 },
  async run(ctx: BenchContext): Promise<ScenarioResult> {
    const repeats = ctx.quick ? 1 : 3;
    const o = ctx.quick
      ? { samples: 100, intervalMs: 5, probeSeconds: 15, minHoldMs: 0 }
      : // 300 samples 10 ms apart take ≥ 3 s; hold each set at least 12 s, past the 10 s silent and hello timeouts.
        { samples: 300, intervalMs: 10, probeSeconds: 60, minHoldMs: 12_000 };
    const runs: Run[] = [];
    for (let i = 0; i < repeats; i++) {
      for (const set of SETS) {
        runs.push(await once(ctx, set, o));
        await sleep(300);
      }
    }
    const median = (set: string): Run => medianBy(runs.filter((r) => r.set === set), (r) => r.probe.p99);
    const base = median('none');
    const ofRuns = repeats > 1 ? ` Median of ${repeats} runs by p99.` : '';
    const tables: Table[] = [
      {
        title:
          `Device latency (TCP connect + TLS handshake + hello → welcome, ms) while each set of silent sockets is held; ${fmt(o.samples)} sequential devices ${o.intervalMs} ms apart, ` +
          `${PROBE_DEADLINE_MS / 1000} s deadline each (a failed sample counts with the time it took to fail).${ofRuns}`,
        columns: ['silent sockets', 'p50', 'p90', 'p99', 'max', 'p99 ÷ unloaded p99', 'failed samples', 'samples', 'p99, each run'],
        rows: SETS.map((set) => {
          const r = median(set.id);
          return [
            set.label,
            fmtMs(r.probe.p50),
            fmtMs(r.probe.p90),
            fmtMs(r.probe.p99),
            fmtMs(r.probe.max),
            set.count > 0 && base.probe.p99 > 0 ? round(r.probe.p99 / base.probe.p99, 2) : null,
            countsText(r.probe.failed),
            `${r.probe.samples}${r.probeTruncated ? ` (cut short after ${o.probeSeconds} s)` : ''}`,
            runs
              .filter((q) => q.set === set.id)
              .map((q) => fmtMs(q.probe.p99))
              .join(', '),
          ];
        }),
      },
      {
        title:
          'The silent sockets: gateway memory growth while they were held, and what the gateway did with them. Held before close: from the TCP connect to the ' +
          'gateway closing the socket, over the sockets it closed (each is reopened at once); none closed: it kept them all for as long as they were held',
        columns: ['silent sockets', 'held for', 'gateway RSS growth', 'opened', 'closed by the gateway (how)', 'reopened', 'held before close p50 / p90 / max (ms)', 'failed opens'],
        rows: SETS.filter((set) => set.count > 0).map((set) => {
          const r = median(set.id);
          const h = r.hostile!;
          const how = Object.entries(h.closedHow)
            .map(([k, v]) => `${fmt(v)} ${k}`)
            .join(', ');
          const failedOpens = Object.entries(h.openFailures)
            .map(([k, v]) => `${fmt(v)} ${k}`)
            .join(', ');
          return [
            set.label,
            `${(r.heldForMs / 1000).toFixed(1)} s`,
            `${fmt(r.rssGrowthKiB / 1024, 1)} MiB`,
            h.opened,
            h.closedByServer > 0 ? `${fmt(h.closedByServer)} (${how})` : 'none',
            h.reopened,
            h.heldMs ? `${fmtMs(h.heldMs.p50)} / ${fmtMs(h.heldMs.p90)} / ${fmtMs(h.heldMs.max)}` : 'none closed',
            failedOpens || '0',
          ];
        }),
      },
    ];
    const targets: TargetCheck[] = SETS.filter((set) => set.count > 0).map((set) => {
      const r = median(set.id);
      const ratio = base.probe.p99 > 0 ? r.probe.p99 / base.probe.p99 : Number.POSITIVE_INFINITY;
      const enough = r.probe.samples >= o.samples && !r.probeTruncated && !base.probeTruncated;
      const met = enough && ratio <= RATIO_TARGET;
      const h = r.hostile;
      return {
        target: `${set.label}: devices' hello → welcome p99 ≤ ${RATIO_TARGET}× its unloaded p99 (gateway defaults, ≥ 200 samples)`,
        measured: `p99 ${fmtMs(r.probe.p99)} ms against ${fmtMs(base.probe.p99)} ms unloaded (${Number.isFinite(ratio) ? round(ratio, 2) : '–'}×), ${fmt(r.probe.samples)} samples`,
        met,
        ...(met
          ? {}
          : {
              note:
                (ratio > RATIO_TARGET ? `Missed at ${Number.isFinite(ratio) ? round(ratio, 2) : '–'}× (limit ${RATIO_TARGET}×). ` : '') +
                (enough ? '' : `The probe was cut short after ${o.probeSeconds} s (${r.probe.samples} samples; unloaded ${base.probe.samples}). `) +
                `Failed samples: ${countsText(r.probe.failed)}; p50 ${fmtMs(r.probe.p50)} ms, p90 ${fmtMs(r.probe.p90)} ms, max ${fmtMs(r.probe.max)} ms. ` +
                (h ? `The gateway closed ${fmt(h.closedByServer)} of the silent sockets while they were held (${h.heldMs ? `after ${fmtMs(h.heldMs.p50)} ms at the median` : 'none'}); they were reopened at once.` : ''),
            }),
      };
    });
    return {
      id: 'gateway-silent-flood',
      title: 'Gateway silent-socket flood: device hello → welcome latency while silent sockets are held',
      config: {
        gateway: `examples/amqp-gateway, one process, embedded broker, its default settings (corral listener defaults as the gateway sets them); a fresh gateway for every set and run, warmed by ${WARMUP} devices (hello → welcome, not counted) before the silent sockets open`,
        silent: `bench/native-client silent: TCP connect, nothing sent, from 100 source addresses (127.${HOSTILE_NET}.x.y); a socket the gateway closes is reopened at once (at most once per 100 ms per socket)`,
        probe: `bench/native-client probe -gateway hello: ${fmt(o.samples)} sequential devices ${o.intervalMs} ms apart, each its own device id, TCP connect + TLS handshake + hello (HMAC token) → welcome within ${PROBE_DEADLINE_MS / 1000} s, from 250 source addresses (127.${PROBE_NET}.x.y); cut short after ${o.probeSeconds} s, the attempt then in progress counting as failed ('unfinished')`,
        hold: o.minHoldMs > 0 ? `each set is held at least ${o.minHoldMs / 1000} s, and until the probe is done` : 'each set is held until the probe is done',
        rss: 'gateway RSS (/proc, its process tree) sampled every 250 ms while the set is held; growth = the largest sample − the idle gateway',
        runs: repeats > 1 ? `${repeats} rounds of the three sets; the tables show the median run by p99` : '1 per set',
        ...(ctx.quick ? { quick: `${o.samples} samples per set (the full run: ${300}, 3 rounds, each set held ≥ 12 s)` } : {}),
      },
      tables,
      charts: [],
      targets,
      raw: { runs: runs.map((r) => ({ ...r, probe: { ...r.probe, latencies: undefined } })) },
    };
  },
};
