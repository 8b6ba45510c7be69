/**
 * How a benchmark server talks to the process that started it (bench/lib/server-child.ts): its
 * config is JSON in the BENCH_SERVER environment variable; it prints `{"port":…}` once listening;
 * it answers known stdin lines with one JSON line each and stops when its stdin ends. Every
 * server answers `usage` (its CPU and event-loop use now) and `trace` (sampled every 200 ms since
 * its start; see bench/servers/usage-trace.ts).
 */
import { createInterface } from 'node:readline';

/** What both echo servers read from BENCH_SERVER (the corral server also takes listener options). */
export interface EchoServerConfig {
  tls?: boolean;
  /**
   * Track every connection and answer the stdin line `cut` by destroying them all at once
   * (the reconnect storm's outage); the listening socket stays.
   */
  cut?: boolean;
  /** Record every handshake (see bench/servers/handshake-record.ts) and write them to this file when stdin ends. */
  record?: string;
  /** Listen on this port (default: any free one), e.g. to restart on the same port. */
  port?: number;
  /** TLS session ticket keys, 48 bytes as hex: a restarted server with the same keys resumes its tickets. */
  ticketKeys?: string;
  /**
   * Set TCP_NODELAY on every accepted socket (default: Node's, Nagle on). Without it an echo
   * written while the TLS 1.3 session tickets are still unacknowledged can wait for the client's
   * delayed ACK, ~40 ms, on a few per cent of connections.
   */
  noDelay?: boolean;
}

/** The server's config: BENCH_SERVER parsed, `{}` when unset. */
export function readConfig<T extends object = object>(): EchoServerConfig & T {
  return JSON.parse(process.env.BENCH_SERVER ?? '{}') as EchoServerConfig & T;
}

/** Tell the parent the server listens on `port`. */
export function announcePort(port: number): void {
  process.stdout.write(`${JSON.stringify({ port })}\n`);
}

/**
 * Answer each stdin line that names one of `commands` with its result as one JSON line (other
 * lines are ignored); call `onEnd` when stdin ends.
 */
export function answerStdin(commands: Readonly<Record<string, () => unknown>>, onEnd: () => void | Promise<void>): void {
  const rl = createInterface({ input: process.stdin });
  rl.on('line', async (line) => {
    if (!Object.hasOwn(commands, line)) return;
    process.stdout.write(`${JSON.stringify(await commands[line]!())}\n`);
  });
  rl.on('close', () => void onEnd());
}
