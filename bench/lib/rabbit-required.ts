/**
 * The RabbitMQ a gateway scenario needs: a full run fails without it; a quick run (a smoke check,
 * possibly on a machine without RabbitMQ) skips the scenario and reports why.
 */
import { probeRabbit, redact } from './gateway-uplink.js';
import type { BenchContext, ScenarioResult } from './scenario.js';

/** The scenario that needs RabbitMQ: its id, its title, and the target a skip leaves unmeasured. */
export interface RabbitScenario {
  readonly id: string;
  readonly title: string;
  readonly target: string;
}

/**
 * RabbitMQ at `AMQP_URL` (default the local broker, guest): `{ url }` once it accepted a
 * connection; when it did not, `{ skipped }` (the scenario's result) in quick mode, a throw otherwise.
 */
export async function requireRabbit(ctx: BenchContext, scenario: RabbitScenario): Promise<{ url: string } | { skipped: ScenarioResult }> {
  const url = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
  try {
    await probeRabbit(url);
    return { url };
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    if (!ctx.quick) throw new Error(`${scenario.id} needs RabbitMQ: ${redact(url)} unreachable (${message}). Start RabbitMQ or set AMQP_URL.`);
    ctx.log(`${scenario.id}: skipped: RabbitMQ at ${redact(url)} unreachable (${message})`);
    return {
      skipped: {
        id: scenario.id,
        title: `${scenario.title} (skipped)`,
        config: { amqpUrl: redact(url), skipped: true },
        tables: [],
        charts: [],
        targets: [
          {
            target: scenario.target,
            measured: 'not measured: RabbitMQ unreachable',
            met: false,
            note: `Skipped in quick mode: RabbitMQ at ${redact(url)} did not accept a connection (${message}). Start it, or set AMQP_URL; a full run fails instead of skipping.`,
          },
        ],
        raw: { skipped: true, error: message },
      },
    };
  }
}
