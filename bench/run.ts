/**
 * The benchmark runner: corral against bare Node, scenario by scenario, in one run.
 *
 *   npm run bench                          # full: bench/results/<date>.json and docs/benchmarks.md
 *   npm run bench -- --quick               # small sizes, well under a minute per scenario: bench/results/quick.json only
 *   npm run bench -- --only steady-state,overload
 *   npm run bench -- --render bench/results/2026-01-31.json   # only redraw docs/benchmarks.md from saved results
 *
 * (or `node --import tsx bench/run.ts …`). Scenarios run one after the other, in the order below,
 * each within a time budget. A scenario that throws or overruns is reported and makes the run exit
 * with status 1, after everything measured so far is written; timings never fail a run.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { type BenchResults, type MachineInfo, renderReport, writeReport } from './lib/report.js';
import type { BenchContext, Scenario, ScenarioResult } from './lib/scenario.js';

/**
 * Every scenario, in running order, with its default time budget (quick and full), in seconds; a
 * scenario's own `budgetSeconds` takes precedence. Budgets catch a hung scenario: each scenario's
 * quick run is meant to take well under a minute on a 2-core machine. The storm, far-away storm,
 * resumption storm, silent-peer flood, overload, attacker, gateway-stampede and gateway-silent-flood
 * scenarios load the server with the native client (bench/native-client, built with Go on first use:
 * apt-get install -y golang-go).
 */
const SCENARIOS: readonly { id: string; file: string; budget: { quick: number; full: number } }[] = [
  { id: 'steady-state', file: 'scenarios/steady-state.ts', budget: { quick: 60, full: 900 } },
  { id: 'scale', file: 'scenarios/scale.ts', budget: { quick: 60, full: 1200 } },
  { id: 'storm', file: 'scenarios/storm.ts', budget: { quick: 60, full: 2400 } },
  { id: 'far-away-storm', file: 'scenarios/far-away-storm.ts', budget: { quick: 60, full: 1800 } },
  { id: 'resumption-storm', file: 'scenarios/resumption-storm.ts', budget: { quick: 60, full: 900 } },
  { id: 'silent-flood', file: 'scenarios/silent-flood.ts', budget: { quick: 60, full: 1500 } },
  { id: 'overload', file: 'scenarios/overload.ts', budget: { quick: 75, full: 900 } },
  { id: 'attacker', file: 'scenarios/attacker.ts', budget: { quick: 60, full: 480 } },
  { id: 'gateway-uplink', file: 'scenarios/gateway-uplink.ts', budget: { quick: 60, full: 900 } },
  { id: 'gateway-stampede', file: 'scenarios/gateway-stampede.ts', budget: { quick: 90, full: 2400 } },
  { id: 'gateway-silent-flood', file: 'scenarios/gateway-silent-flood.ts', budget: { quick: 90, full: 1500 } },
];

const HERE = fileURLToPath(new URL('./', import.meta.url));
const ROOT = fileURLToPath(new URL('../', import.meta.url));

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    render: { type: 'string' },
  },
});

if (values.render) {
  // Redraw the page from saved results (after a change to the report's layout); nothing is run.
  const saved = JSON.parse(readFileSync(values.render, 'utf8')) as BenchResults;
  const written = writeReport(saved, ROOT);
  process.stderr.write(`wrote ${written.map((f) => f.slice(ROOT.length)).join(', ')}\n`);
  process.exit(0);
}

const quick = values.quick ?? false;
const only = values.only?.split(',').map((s) => s.trim()).filter(Boolean);
if (only) {
  const unknown = only.filter((id) => !SCENARIOS.some((s) => s.id === id));
  if (unknown.length > 0) {
    process.stderr.write(`unknown scenario ${unknown.join(', ')}; known: ${SCENARIOS.map((s) => s.id).join(', ')}\n`);
    process.exit(2);
  }
}

const began = Date.now();
const stamp = (): string => `${((Date.now() - began) / 1000).toFixed(1).padStart(6)} s`;
const ctx: BenchContext = {
  quick,
  log: (message) => process.stderr.write(`[bench ${stamp()}] ${message}\n`),
};

function machine(): MachineInfo {
  const cpus = os.cpus();
  return {
    date: new Date().toISOString(),
    cores: os.availableParallelism(),
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    memoryGiB: Number((os.totalmem() / 2 ** 30).toFixed(1)),
    node: process.versions.node,
    openssl: process.versions.openssl,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
  };
}

const results: BenchResults = {
  machine: machine(),
  quick,
  durationSeconds: 0,
  scenarios: [],
  errors: [],
  skipped: [],
};

/** `promise`, or a rejection after `seconds` (the scenario's processes are left to their own cleanup). */
async function within<T>(promise: Promise<T>, seconds: number, id: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${id} overran its ${seconds} s budget`)), seconds * 1000);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

// A stray rejection inside a scenario must not end the run before its results are written.
process.on('unhandledRejection', (reason) => {
  const message = reason instanceof Error ? reason.message : String(reason);
  ctx.log(`unhandled rejection: ${reason instanceof Error ? (reason.stack ?? message) : message}`);
  results.errors.push({ id: 'runner', message: `unhandled rejection: ${message}` });
});

let overran = false;
for (const entry of SCENARIOS) {
  if (only && !only.includes(entry.id)) continue;
  const path = `${HERE}${entry.file}`;
  if (!existsSync(path)) {
    ctx.log(`${entry.id}: skipped, bench/${entry.file} does not exist yet`);
    results.skipped.push({ id: entry.id, reason: `bench/${entry.file} does not exist yet` });
    continue;
  }
  const t0 = Date.now();
  try {
    const mod = (await import(pathToFileURL(path).href)) as { scenario?: Scenario };
    if (!mod.scenario || typeof mod.scenario.run !== 'function') throw new Error(`bench/${entry.file} does not export a scenario`);
    const budgets = mod.scenario.budgetSeconds ?? entry.budget;
    // A quick run's budget is doubled: it catches a hung scenario, and the smoke check must not fail
    // because CI shares a busy machine (a loaded 2-core machine took 60 s for steady-state's quick run).
    const budget = quick ? 2 * budgets.quick : budgets.full;
    ctx.log(`${entry.id}: starting (budget ${budget} s)`);
    const result: ScenarioResult = await within(mod.scenario.run(ctx), budget, entry.id);
    results.scenarios.push({ ...result, seconds: Math.round((Date.now() - t0) / 1000), ranAt: new Date(t0).toISOString() });
    const missed = result.targets.filter((t) => !t.met);
    ctx.log(`${entry.id}: done in ${((Date.now() - t0) / 1000).toFixed(0)} s; targets met ${result.targets.length - missed.length}/${result.targets.length}`);
  } catch (err) {
    const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
    ctx.log(`${entry.id}: FAILED: ${message}`);
    results.errors.push({ id: entry.id, message: err instanceof Error ? err.message : String(err) });
    if (/overran its/.test(message)) {
      // Its processes may still be loading the machine: measuring anything more would be wrong.
      overran = true;
      break;
    }
  }
}
if (overran) ctx.log('stopping: a scenario overran its budget, the remaining scenarios were not run');
results.durationSeconds = Math.round((Date.now() - began) / 1000);

// Write what we have.
const resultsDir = `${HERE}results`;
mkdirSync(resultsDir, { recursive: true });
let file: string;
let report: BenchResults = results;
if (quick) {
  file = `${resultsDir}/quick.json`;
} else {
  file = `${resultsDir}/${results.machine.date.slice(0, 10)}.json`;
  // A partial full run (--only) replaces its scenarios in the newest full results (today's, or the
  // last day's when today has none) and keeps the others, each with the date it ran.
  const newest = readdirSync(resultsDir)
    .filter((f) => /^\d{4}-\d{2}-\d{2}\.json$/.test(f) && f <= `${results.machine.date.slice(0, 10)}.json`)
    .sort()
    .at(-1);
  if (only && newest !== undefined) {
    const earlier = JSON.parse(readFileSync(`${resultsDir}/${newest}`, 'utf8')) as BenchResults;
    const ran = new Set([...results.scenarios.map((s) => s.id), ...results.errors.map((e) => e.id)]);
    report = {
      ...results,
      scenarios: SCENARIOS.flatMap((s) => {
        const now = results.scenarios.find((r) => r.id === s.id);
        if (now) return [now];
        const before = earlier.scenarios.find((r) => r.id === s.id);
        return before && !ran.has(s.id) ? [{ ...before, ranAt: before.ranAt ?? earlier.machine.date }] : [];
      }),
      errors: results.errors,
      skipped: results.skipped.filter((s) => !earlier.scenarios.some((r) => r.id === s.id)),
    };
  }
}
writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
ctx.log(`wrote ${file.slice(ROOT.length)}`);
if (!quick) {
  const written = writeReport(report, ROOT);
  ctx.log(`wrote ${written.map((f) => f.slice(ROOT.length)).join(', ')}`);
} else {
  // Render anyway (not written), so a quick run also checks that the report can be drawn.
  renderReport(report);
}
const missed = report.scenarios.flatMap((s) => s.targets.filter((t) => !t.met).map((t) => `${s.id}: ${t.target}: ${t.measured}`));
if (missed.length > 0) ctx.log(`targets missed (timings never fail the run):\n  ${missed.join('\n  ')}`);
ctx.log(`finished in ${results.durationSeconds} s${results.errors.length ? `; ${results.errors.length} scenario(s) failed` : ''}`);
process.exit(results.errors.length > 0 ? 1 : 0);
