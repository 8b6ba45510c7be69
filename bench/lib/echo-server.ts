/**
 * The two benchmark line-echo servers (bench/servers/corral-echo.ts and bare-echo.ts), started
 * with {@link startServer} (optionally pinned to CPUs with `taskset`), with their cost read from /proc.
 */
import { fileURLToPath } from 'node:url';
import type { ListenerInfo } from '../../src/index.js';
import { type TreeStats, treeStats } from './proc-stats.js';
import { startServer } from './server-child.js';

/** The echo servers' scripts: corral, and the bare node:net / node:tls one it is compared with. */
export const ECHO_SERVERS = {
  corral: fileURLToPath(new URL('../servers/corral-echo.ts', import.meta.url)),
  bare: fileURLToPath(new URL('../servers/bare-echo.ts', import.meta.url)),
};

/** Which server: corral, or the bare node:net / node:tls one it is compared with. */
export type ServerKind = keyof typeof ECHO_SERVERS;

/** A running echo server. */
export interface EchoServer {
  readonly kind: ServerKind;
  readonly pid: number;
  readonly port: number;
  /** CPU and RSS of the server's process tree now. */
  stats(): TreeStats;
  /** corral's `listener.info()`; undefined for the bare server. */
  info(): Promise<ListenerInfo | undefined>;
  /** End its stdin (it stops) and wait for it to exit; SIGKILL after 10 s. */
  stop(): Promise<void>;
}

/** Options of {@link startEchoServer}. */
export interface EchoServerOptions {
  kind: ServerKind;
  tls: boolean;
  /** corral listener options (JSON), e.g. `{ maxConnections: 10000 }`. Ignored by the bare server. */
  listener?: Record<string, unknown>;
  /** Pin the server to these CPUs (`taskset -c`), e.g. `'0'`. */
  cpus?: string;
}

/** Start a server and wait until it listens (at most 30 s). */
export async function startEchoServer(o: EchoServerOptions): Promise<EchoServer> {
  const config = { tls: o.tls, ...(o.kind === 'corral' ? (o.listener ?? {}) : {}) };
  const server = await startServer(ECHO_SERVERS[o.kind], config, { startTimeoutMs: 30_000, ...(o.cpus !== undefined ? { cpus: o.cpus } : {}) });
  return {
    kind: o.kind,
    pid: server.pid,
    port: server.port,
    stats: () => treeStats(server.pid),
    info: async () => (o.kind === 'corral' ? server.ask<ListenerInfo>('info', 30_000) : undefined),
    stop: () => server.stop(10_000),
  };
}

/**
 * Wait until the server's CPU use falls below `threshold` (fraction of one core) over a 200 ms
 * window, or `maxMs` passed: its last accepted handshakes and echoes are then behind it.
 */
export async function waitIdle(server: EchoServer, maxMs = 5000, threshold = 0.05): Promise<void> {
  const end = Date.now() + maxMs;
  let last = server.stats().cpuSeconds;
  while (Date.now() < end) {
    await new Promise((r) => setTimeout(r, 200));
    const now = server.stats().cpuSeconds;
    if (now - last <= 0.2 * threshold + 1e-9) return;
    last = now;
  }
}

/**
 * corral's settings as its `info()` reports them for `listener` options (its defaults filled in,
 * whatever they are now): the scalar fields, as text for a report (those zero or false in a fresh
 * listener are left out: they are its counters and states, not settings), and the whole info.
 * Starts a corral echo server, asks, stops it.
 */
export async function corralSettings(listener: Record<string, unknown>): Promise<{ text: string; info: Record<string, unknown> }> {
  const server = await startServer(ECHO_SERVERS.corral, { tls: true, ...listener }, { startTimeoutMs: 30_000 });
  try {
    const info = await server.ask<Record<string, unknown>>('info', 30_000);
    const text = Object.entries(info)
      .filter(([k, v]) => ['number', 'string', 'boolean'].includes(typeof v) && v !== 0 && v !== false && !['name', 'status', 'role', 'transport'].includes(k))
      .map(([k, v]) => `${k} ${typeof v === 'number' ? v.toLocaleString('en-US') : String(v)}`)
      .join(', ');
    return { text, info };
  } finally {
    await server.stop();
  }
}
