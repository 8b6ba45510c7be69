import type { AcceptorPoolStats } from '../acceptor-pool/acceptor-pool-stats.js';
import type { ListenerInfo, ListenerTotals, WorkerInfo } from '../listener.js';

/** Counters of nothing yet. @internal */
export const NO_TOTALS: ListenerTotals = {
  accepted: 0,
  opened: 0,
  closed: 0,
  gaveUp: 0,
  overflows: 0,
  rejected: {
    queue_full: 0,
    wait_timeout: 0,
    shutdown: 0,
    silent_timeout: 0,
    source_limit: 0,
    silent_limit: 0,
    malformed: 0,
    denied: 0,
    rate_limited: 0,
    address_limit: 0,
    proxy_invalid: 0,
    proxy_timeout: 0,
    proxy_untrusted: 0,
  },
  handshakeFailures: { timeout: 0, stalled: 0, error: 0 },
  handlerCrashes: 0,
  handlerRestarts: 0,
  descriptorBackoffs: 0,
};

/** The counters of an `info()` that only grow. @internal */
export function totalsOf(info: ListenerInfo): ListenerTotals {
  const { accepted, opened, closed, gaveUp, overflows, rejected, handshakeFailures, handlerCrashes, handlerRestarts, descriptorBackoffs } = info;
  return { accepted, opened, closed, gaveUp, overflows, rejected, handshakeFailures, handlerCrashes, handlerRestarts, descriptorBackoffs };
}

/** Each counter's larger value of `a` (if any) and `b`: for two readings of one process's totals. @internal */
export function maxTotals(a: ListenerTotals | undefined, b: ListenerTotals): ListenerTotals {
  if (a === undefined) return b;
  const out = {} as Record<string, unknown>;
  for (const key of Object.keys(b) as (keyof ListenerTotals)[]) {
    const x = a[key];
    const y = b[key];
    out[key] = typeof y === 'number' ? Math.max(x as number, y) : maxCounts(x as Readonly<Record<string, number>>, y);
  }
  return out as unknown as ListenerTotals;
}

function maxCounts(a: Readonly<Record<string, number>>, b: Readonly<Record<string, number>>): Record<string, number> {
  const out: Record<string, number> = { ...a };
  for (const k of Object.keys(b)) out[k] = Math.max(a[k] ?? 0, b[k]!);
  return out;
}

/** The sum of several listeners' totals. @internal */
export function addTotals(list: readonly ListenerTotals[]): ListenerTotals {
  return {
    accepted: sum(list.map((t) => t.accepted)),
    opened: sum(list.map((t) => t.opened)),
    closed: sum(list.map((t) => t.closed)),
    gaveUp: sum(list.map((t) => t.gaveUp)),
    overflows: sum(list.map((t) => t.overflows)),
    rejected: addCounts(list.map((t) => t.rejected)),
    handshakeFailures: addCounts(list.map((t) => t.handshakeFailures)),
    handlerCrashes: sum(list.map((t) => t.handlerCrashes)),
    handlerRestarts: sum(list.map((t) => t.handlerRestarts)),
    descriptorBackoffs: sum(list.map((t) => t.descriptorBackoffs)),
  };
}

/** The sum of some numbers. @internal */
export function sum(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

function addCounts<K extends string>(list: readonly Readonly<Record<K, number>>[]): Record<K, number> {
  const out: Partial<Record<K, number>> = {};
  for (const r of list) for (const k of Object.keys(r) as K[]) out[k] = (out[k] ?? 0) + r[k];
  return out as Record<K, number>;
}

/** One worker as the primary sees it when `info()` is asked. @internal */
export interface WorkerReport {
  /** The worker's entry in `info().workers`, without its listener's answer. */
  readonly worker: Omit<WorkerInfo, 'listener'>;
  /** The worker's own `info()`, or `undefined` if it has no process or did not answer in time. */
  readonly info: ListenerInfo | undefined;
  /** The worker's counters as last reported (used when it did not answer). */
  readonly reported: ListenerTotals | undefined;
}

/** The primary's own acceptor pool (distribution `primary`): its stats and its overflows. @internal */
export interface DispatchStats {
  readonly stats: AcceptorPoolStats;
  readonly overflows: number;
}

/**
 * A worker pool's `info()`: the fields that describe the listener (`base`), the gauges summed over
 * the workers' answers, and the totals of exited workers (`retired`), live ones (their answer, or
 * else their last report) and the primary's own acceptor pool (distribution `primary`). @internal
 */
export function poolInfo(
  base: Pick<ListenerInfo, 'name' | 'status' | 'role' | 'distribution' | 'transport' | 'address' | 'maxConnections' | 'maxHandshakes' | 'admission'>,
  answers: readonly WorkerReport[],
  retired: ListenerTotals,
  dispatch: DispatchStats | undefined,
  /** The primary's own times out of descriptors (distribution `primary`: it accepts). */
  descriptorBackoffs: number,
): ListenerInfo {
  const infos = answers.flatMap((a) => (a.info ? [a.info] : []));
  const g = dispatch?.stats;
  const totals = addTotals([
    retired,
    ...answers.flatMap((a) => (a.info ? [a.info] : a.reported ? [a.reported] : [])),
    ...(g && dispatch ? [{ ...NO_TOTALS, rejected: g.rejected, handshakeFailures: g.handshakeFailures, gaveUp: g.gaveUp, overflows: dispatch.overflows }] : []),
    { ...NO_TOTALS, descriptorBackoffs },
  ]);
  return {
    ...base,
    refusing: infos.some((i) => i.refusing),
    overflows: totals.overflows,
    // Distribution primary: the primary's pool holds every slot (its leases cover the workers' handshakes).
    active: g ? g.counted : sum(infos.map((i) => i.active)),
    connections: sum(infos.map((i) => i.connections)),
    silent: sum(infos.map((i) => i.silent)) + (g?.silent ?? 0),
    handshaking: sum(infos.map((i) => i.handshaking)),
    waiting: sum(infos.map((i) => i.waiting)) + (g?.waiting ?? 0),
    // Distribution primary: the workers count the sockets passed to them again; the primary's own
    // count is the one of sockets accepted.
    accepted: g ? g.accepted : totals.accepted,
    gaveUp: totals.gaveUp,
    opened: totals.opened,
    closed: totals.closed,
    rejected: totals.rejected,
    handshakeFailures: totals.handshakeFailures,
    handlerCrashes: totals.handlerCrashes,
    handlerRestarts: totals.handlerRestarts,
    descriptorBackoffs: totals.descriptorBackoffs,
    // A worker's connection count from its answer when it answered (fresher than its last report).
    workers: answers.map((a) => ({ ...a.worker, connections: a.info?.connections ?? a.worker.connections, listener: a.info })),
  };
}
