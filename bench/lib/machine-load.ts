/**
 * Busy CPU time of the whole machine, from /proc/stat, so a scenario can say how much of the
 * machine processes other than its server and its load client used while it measured (on a
 * shared machine, the usual reason two runs disagree).
 */
import { readFileSync } from 'node:fs';

const TICKS = 100; // USER_HZ on Linux

/** CPU seconds all cores have spent busy (everything but idle and iowait) since boot. */
export function machineBusySeconds(): number {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
    // cpu  user nice system idle iowait irq softirq steal guest guest_nice
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    const busy = f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + f[7]!;
    return busy / TICKS;
  } catch {
    return Number.NaN;
  }
}

/** Measures, between `start()` and `stop()`, the cores used by everything except `ours()`. */
export class OtherLoad {
  private busy0 = 0;
  private ours0 = 0;
  private t0 = 0;

  constructor(private readonly ours: () => number) {}

  start(): void {
    this.busy0 = machineBusySeconds();
    this.ours0 = this.ours();
    this.t0 = performance.now();
  }

  /** Cores (CPU seconds per second) used by other processes since `start()`, never below 0. */
  stop(): number {
    const seconds = (performance.now() - this.t0) / 1000;
    const other = machineBusySeconds() - this.busy0 - (this.ours() - this.ours0);
    return seconds > 0 ? Math.max(0, Number((other / seconds).toFixed(2))) : Number.NaN;
  }
}
