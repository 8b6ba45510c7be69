/**
 * A primary's view of its workers' metrics across scrapes (see {@link WorkerMetrics}).
 */
import type { WorkerAnswer } from 'corral';
import { AggregatorRegistry, type MetricObjectWithValues, type MetricValue } from 'prom-client';

/** One process's registry, as `getMetricsAsJSON()` gives it. */
export type MetricsSnapshot = MetricObjectWithValues<MetricValue<string>>[];

/** Metric types whose values only grow: what a worker that exited still counts in the node's sum. */
const CUMULATIVE = new Set(['counter', 'histogram']);

/**
 * The workers' metrics as a primary scrapes them, kept so that the node's counters never go down:
 * a worker that does not answer a scrape (busy, paused) counts with its last answer, and the
 * counters and histograms of a worker that exited are kept (summed into `retired`) instead of
 * leaving the sum. Left out, either looked like a counter reset to Prometheus, whose `increase()`
 * then counted the other workers' whole totals again. What a worker counted after its last answer,
 * if it then died, is lost.
 */
export class WorkerMetrics {
  /** Each worker's last answer, by process id. */
  private readonly last = new Map<number, MetricsSnapshot>();
  /** Counters and histograms of workers that exited, summed. */
  private retired: MetricsSnapshot = [];

  /** The snapshots to aggregate for this scrape, given the workers' answers to it. */
  async merge(answers: readonly WorkerAnswer<MetricsSnapshot>[]): Promise<MetricsSnapshot[]> {
    const present = new Set<number>();
    const parts: MetricsSnapshot[] = [];
    for (const a of answers) {
      if (a.pid === undefined) continue;
      present.add(a.pid);
      if (a.ok) this.last.set(a.pid, a.value);
      const snapshot = this.last.get(a.pid);
      if (snapshot !== undefined) parts.push(snapshot);
    }
    const gone = [...this.last.keys()].filter((pid) => !present.has(pid));
    if (gone.length > 0) {
      // prom-client types `type` as a numeric enum; at run time it is the string ('counter', …).
      const cumulative = gone.map((pid) => this.last.get(pid)!.filter((m) => CUMULATIVE.has(String(m.type))));
      for (const pid of gone) this.last.delete(pid);
      this.retired = (await AggregatorRegistry.aggregate([this.retired, ...cumulative]).getMetricsAsJSON()) as MetricsSnapshot;
    }
    if (this.retired.length > 0) parts.push(this.retired);
    return parts;
  }
}
