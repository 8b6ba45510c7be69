/**
 * One storm against one server, summarised the same way by the three storm scenarios (storm,
 * far-away storm, resumption storm): when the devices came back, how many attempts it took, what
 * the server's CPU and event loop did until the last one was back (from the server's own usage
 * trace, bench/servers/usage-trace.ts), and what the native client spent per handshake.
 */
import type { UsageSample } from '../servers/usage-trace.js';
import { usageBetween } from '../servers/usage-trace.js';
import { type NativeStormResult, cpuPerHandshake } from './native-client.js';
import { fmt } from './numbers.js';

/**
 * The nice increment of the storm scenarios' load client (storm, far-away storm): on two cores its
 * threads otherwise take CPU from the server's event loop (unniced, the server got 75–82% of a core
 * in a cold storm on 2026-12-06), while a storm's ideal is the server's own CPU cost at a full
 * core. Both servers get the same client.
 */
export const STORM_CLIENT_NICE = 10;

/** How a storm scenario's configuration table says so. */
export const STORM_CLIENT_NICE_TEXT = `at nice ${STORM_CLIENT_NICE} (lower priority than the server, so that the server is not short of CPU because of its own load client; both servers alike)`;

/** Which server a run measured. */
export type ServerKind = 'corral' | 'bare';

/** A storm's outcome, every time in ms from the storm's origin (the cut, the kill, the start). */
export interface StormRun {
  server: ServerKind;
  devices: number;
  back: number;
  /** ms until the last device was back; null: not all came back. */
  allBackMs: number | null;
  lastBackMs: number;
  attemptsPerDevice: number;
  maxAttempts: number;
  /** Attempts that failed (the client gave up at the deadline, or it was refused, closed or failed). */
  failedAttempts: number;
  failedBy: Record<string, number>;
  /** Devices back with a resumed TLS handshake. */
  resumedDevices: number;
  /** The client's CPU over the storm per handshake it completed, µs. */
  clientCpuUsPerHandshake: number | null;
  /** The client's CPU over the storm, in cores (CPU seconds per second until the last device was back). */
  clientCores: number;
  /** Cores used meanwhile by processes other than this server and its client (shared machine); null: not measured. */
  otherCores: number | null;
  /** Server CPU from the origin (or `usageFrom`) until the last device was back, seconds. */
  serverCpuSeconds: number;
  /** That CPU as a share of one core (a single-process server can use about one). */
  serverBusyShare: number;
  /** The server's event-loop utilization over the same interval. */
  serverElu: number;
  /** ms from the origin at which each device came back. */
  backAt: number[];
  /** A client process was cut short by its time bound. */
  truncated: boolean;
}

/** Options of {@link summarizeStorm}. */
export interface SummaryOptions {
  /**
   * The machine's busy CPU seconds (bench/lib/machine-load.ts) from the origin to `until` (when
   * the storm ended), to tell what other processes took meanwhile.
   */
  machine?: { busySeconds: number; until: number };
  /** Read the server's CPU and event loop from this wall-clock time on (default: the origin), e.g. once a restarted server listens. */
  usageFrom?: number;
}

/** Summarise a storm measured from wall-clock `origin`, with the server's usage trace. */
export function summarizeStorm(server: ServerKind, r: NativeStormResult, origin: number, trace: readonly UsageSample[], o: SummaryOptions = {}): StormRun {
  const backAt = r.connectedAt.map((t) => t - origin);
  const lastBackMs = backAt.reduce((a, b) => Math.max(a, b), 0);
  const attempts = r.attempts.reduce((a, b) => a + b, 0);
  const failedBy: Record<string, number> = {};
  for (const a of r.abandoned) failedBy[a.reason] = (failedBy[a.reason] ?? 0) + 1;
  const from = o.usageFrom ?? origin;
  const usage = usageBetween(trace, from, Math.max(from + 1, origin + lastBackMs));
  let otherCores: number | null = null;
  const machine = o.machine;
  if (machine && Number.isFinite(machine.busySeconds) && machine.until > origin) {
    const whole = usageBetween(trace, origin, machine.until);
    const other = machine.busySeconds - whole.cpuSeconds - r.stormCost.cpuUs / 1e6;
    otherCores = Math.max(0, other / ((machine.until - origin) / 1000));
  }
  return {
    server,
    devices: r.devices,
    back: r.connected,
    allBackMs: r.connected === r.devices ? lastBackMs : null,
    lastBackMs,
    attemptsPerDevice: attempts / Math.max(1, r.devices),
    maxAttempts: r.attempts.reduce((a, b) => Math.max(a, b), 0),
    failedAttempts: r.abandoned.length,
    failedBy,
    resumedDevices: r.resumedDevices,
    clientCpuUsPerHandshake: cpuPerHandshake(r.stormCost),
    clientCores: r.stormCost.cpuUs / 1e6 / Math.max(0.001, lastBackMs / 1000),
    otherCores,
    serverCpuSeconds: usage.cpuSeconds,
    serverBusyShare: usage.cpuShare,
    serverElu: usage.elu,
    backAt,
    truncated: r.truncated,
  };
}

/** "12.3 s", or "not all back". */
export const seconds = (ms: number | null): string => (ms === null ? 'not all back' : `${(ms / 1000).toFixed(1)} s`);

/** Failed attempts by reason, e.g. "1,234 (1,000 deadline, 234 refused)". */
export function failedText(r: StormRun): string {
  const parts = Object.entries(r.failedBy)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${fmt(v)} ${k}`);
  return parts.length === 0 ? '0' : `${fmt(r.failedAttempts)} (${parts.join(', ')})`;
}

/** The server's name in tables. */
export const serverName = (k: ServerKind): string => (k === 'corral' ? 'corral' : 'bare Node');

/**
 * Why a storm took longer than its ideal, as far as the server's CPU and event loop tell: it had
 * work but not the CPU (shared with the load client), it waited for devices in backoff, or it was
 * the bottleneck.
 */
export function busyText(r: StormRun, other?: StormRun, idle = 'while devices waited out their backoff'): string {
  const pct = (v: number): string => `${Math.round(v * 100)}%`;
  const head =
    `Until its last device was back ${serverName(r.server)}'s server got ${pct(r.serverBusyShare)} of one core while its event loop was busy ${pct(r.serverElu)} of the time` +
    (other ? ` (${serverName(other.server)}: ${pct(other.serverBusyShare)} and ${pct(other.serverElu)})` : '') +
    `; the load client used ${r.clientCores.toFixed(2)} cores meanwhile` +
    (r.otherCores === null ? '. ' : ` and other processes on the machine ${r.otherCores.toFixed(2)}. `);
  if (r.serverElu >= 0.85 && r.serverBusyShare < 0.8) {
    return `${head}The server had work but not the CPU: the machine's cores are shared with the client${r.otherCores !== null && r.otherCores >= 0.2 ? ' and with other work' : ''}. `;
  }
  if (r.serverBusyShare < 0.8) return `${head}The rest of the time it had nothing to do, ${idle}. `;
  return `${head}The server was the bottleneck. `;
}
