/**
 * Run one scenario alone and print its ScenarioResult as JSON on stdout (progress on stderr):
 *
 *   node --import tsx bench/scenarios/run-one.ts storm --quick
 *
 * For trying a scenario while working on it; bench/run.ts runs the suite and writes the report.
 */
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import type { BenchContext, Scenario } from '../lib/scenario.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { quick: { type: 'boolean', default: false } },
});
const id = positionals[0];
if (!id || !/^[a-z-]+$/.test(id)) {
  process.stderr.write('usage: node --import tsx bench/scenarios/run-one.ts <scenario id> [--quick]\n');
  process.exit(2);
}
const began = Date.now();
const ctx: BenchContext = {
  quick: values.quick ?? false,
  log: (m) => process.stderr.write(`[${id} ${((Date.now() - began) / 1000).toFixed(1).padStart(6)} s] ${m}\n`),
};
const mod = (await import(pathToFileURL(new URL(`./${id}.ts`, import.meta.url).pathname).href)) as { scenario: Scenario };
const result = await mod.scenario.run(ctx);
process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
ctx.log(`done in ${((Date.now() - began) / 1000).toFixed(1)} s`);
process.exit(0);
