/**
 * The benchmark servers' own account of how busy they were: every 200 ms, from their start, a
 * sample of their CPU time (`process.cpuUsage()`) and event-loop use
 * (`performance.eventLoopUtilization()`), both cumulative. A scenario asks for the trace
 * (stdin `trace`, answered `{"samples":[…]}`) after a run and reads any interval of it with {@link usageBetween}, e.g. from a
 * storm's start until its last device was back, without talking to the server while it works.
 */
import { performance } from 'node:perf_hooks';

/** One sample: [wall-clock ms, CPU µs (user + system), event loop active ms, event loop idle ms], all cumulative but the first. */
export type UsageSample = [at: number, cpuUs: number, activeMs: number, idleMs: number];

/** Sample now. */
export function usageNow(): UsageSample {
  const cpu = process.cpuUsage();
  const elu = performance.eventLoopUtilization();
  return [Date.now(), cpu.user + cpu.system, elu.active, elu.idle];
}

/** Samples every `intervalMs` for as long as the process lives (the timer does not keep it alive). */
export class UsageTrace {
  readonly #samples: UsageSample[] = [usageNow()];

  constructor(intervalMs = 200) {
    setInterval(() => this.#samples.push(usageNow()), intervalMs).unref();
  }

  /** Every sample so far, and one taken now. */
  samples(): UsageSample[] {
    return [...this.#samples, usageNow()];
  }
}

/** The trace's cumulative values at wall-clock `at`, interpolated between the samples around it. */
function at(trace: readonly UsageSample[], t: number): [cpuUs: number, activeMs: number, idleMs: number] {
  const after = trace.findIndex((s) => s[0] >= t);
  if (after === -1) {
    const last = trace.at(-1)!;
    return [last[1], last[2], last[3]];
  }
  const b = trace[after]!;
  const a = trace[Math.max(0, after - 1)]!;
  const f = b[0] === a[0] ? 1 : (t - a[0]) / (b[0] - a[0]);
  const mix = (i: 1 | 2 | 3): number => a[i] + (b[i] - a[i]) * Math.max(0, Math.min(1, f));
  return [mix(1), mix(2), mix(3)];
}

/** How busy the server was between wall-clock `from` and `to`: CPU seconds, CPU share of one core, event-loop utilization. */
export function usageBetween(trace: readonly UsageSample[], from: number, to: number): { cpuSeconds: number; cpuShare: number; elu: number } {
  const [c0, a0, i0] = at(trace, from);
  const [c1, a1, i1] = at(trace, to);
  const seconds = Math.max(0.001, (to - from) / 1000);
  const cpuSeconds = (c1 - c0) / 1e6;
  const active = a1 - a0;
  const idle = i1 - i0;
  return { cpuSeconds, cpuShare: cpuSeconds / seconds, elu: active + idle > 0 ? active / (active + idle) : Number.NaN };
}
