/** Small numeric helpers shared by the scenarios. */

/** The p-th percentile (0–100) of `values` (sorted or not); NaN when empty. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))]!;
}

/** The median, 90th and 99th percentiles and the maximum of a set of values. */
export interface Percentiles {
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/** {@link Percentiles} of `values` (null when empty). */
export function percentiles(values: readonly number[]): Percentiles | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const at = (p: number): number => sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))]!;
  return { p50: at(50), p90: at(90), p99: at(99), max: sorted.at(-1)! };
}

/** The median of `values` (of an even count, the upper of the two middle ones); NaN when empty. */
export function median(values: readonly number[]): number {
  return percentile(values, 50);
}

/**
 * The item of `items` whose `key` is the median (of an even count, the upper middle one); `key`
 * null counts as worse than any number (e.g. a storm whose devices did not all come back).
 */
export function medianBy<T>(items: readonly T[], key: (item: T) => number | null): T {
  if (items.length === 0) throw new Error('medianBy: no items');
  const sorted = [...items].sort((a, b) => (key(a) ?? Infinity) - (key(b) ?? Infinity));
  return sorted[Math.floor(sorted.length / 2)]!;
}

/**
 * What changed between two snapshots of a JSON object of counters (e.g. corral's `info()`):
 * every numeric leaf that differs, by its dotted path, as `after − before`. Read without
 * knowing the object's shape, so it survives a renamed or added counter.
 */
export function counterDelta(before: unknown, after: unknown, prefix = ''): Record<string, number> {
  const out: Record<string, number> = {};
  if (typeof after === 'number') {
    const d = after - (typeof before === 'number' ? before : 0);
    if (d !== 0 && prefix) out[prefix] = d;
  } else if (after && typeof after === 'object' && !Array.isArray(after)) {
    for (const [k, v] of Object.entries(after)) {
      const b = before && typeof before === 'object' ? (before as Record<string, unknown>)[k] : undefined;
      Object.assign(out, counterDelta(b, v, prefix ? `${prefix}.${k}` : k));
    }
  }
  return out;
}

/** Round to `digits` decimals. */
export function round(v: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

/** `n` with thousands separators: 16000 → "16,000". */
export function fmt(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

/**
 * Events per second over time: `times` (ms, relative to the origin) counted in bins of `binMs`,
 * as [seconds at the bin's start, events per second] points, from 0 to the last event.
 */
export function ratePerSecond(times: readonly number[], binMs: number): [number, number][] {
  const last = times.reduce((a, b) => Math.max(a, b), 0);
  const bins = new Array<number>(Math.floor(last / binMs) + 1).fill(0);
  for (const t of times) if (t >= 0) bins[Math.floor(t / binMs)]!++;
  return bins.map((n, i) => [round((i * binMs) / 1000, 2), round((n * 1000) / binMs, 1)]);
}

/** Cumulative count over time: how many of `times` (ms) happened by each bin's end, as [s, count]. */
export function cumulative(times: readonly number[], binMs: number): [number, number][] {
  const sorted = [...times].filter((t) => t >= 0).sort((a, b) => a - b);
  const last = sorted.at(-1) ?? 0;
  const out: [number, number][] = [[0, 0]];
  let j = 0;
  for (let end = binMs; end < last + binMs; end += binMs) {
    while (j < sorted.length && sorted[j]! < end) j++;
    out.push([round(end / 1000, 2), j]);
  }
  return out;
}

/** Part `i` of `total` split over `parts` as evenly as whole numbers allow (the first ones get the remainder). */
export function shareOf(total: number, parts: number, i: number): number {
  return Math.floor(total / parts) + (i < total % parts ? 1 : 0);
}

/** The sum of each of `keys` over `records`, e.g. the totals of what several client processes last reported. */
export function sums<K extends string>(records: Iterable<Readonly<Record<K, number>>>, keys: readonly K[]): Record<K, number> {
  const out = Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>;
  for (const r of records) for (const k of keys) out[k] += r[k];
  return out;
}

/** Sleep. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A latency in ms for a table: '–' when unknown, whole ms from 100 up, else one decimal. */
export function fmtMs(v: number | null | undefined): string {
  return v === null || v === undefined || !Number.isFinite(v) ? '–' : v >= 100 ? fmt(Math.round(v)) : String(round(v, 1));
}

/** Counts by reason for a table, e.g. `3 timeout, 1,204 refused`; '0' when there are none. */
export function countsText(counts: Record<string, number>): string {
  const parts = Object.entries(counts).map(([k, v]) => `${fmt(v)} ${k}`);
  return parts.length ? parts.join(', ') : '0';
}
