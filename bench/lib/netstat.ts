import { readFileSync } from 'node:fs';

/**
 * The kernel's TcpExt counters from /proc/net/netstat (ListenOverflows, ListenDrops,
 * SyncookiesSent, …). They count for the whole network namespace, not one process.
 */
export function tcpExt(): Record<string, number> {
  const lines = readFileSync('/proc/net/netstat', 'utf8').split('\n').filter((l) => l.startsWith('TcpExt:'));
  const names = lines[0]?.split(/\s+/).slice(1) ?? [];
  const values = lines[1]?.split(/\s+/).slice(1) ?? [];
  const out: Record<string, number> = {};
  names.forEach((n, i) => {
    if (n) out[n] = Number(values[i]);
  });
  return out;
}

/** `after − before` for the named counters. */
export function tcpExtDelta(before: Record<string, number>, after: Record<string, number>, names: readonly string[]): Record<string, number> {
  return Object.fromEntries(names.map((n) => [n, (after[n] ?? 0) - (before[n] ?? 0)]));
}
