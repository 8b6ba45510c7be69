import { fileURLToPath } from 'node:url';
import { MAX_PER_PROCESS } from './client-config.js';
import { type ForkedClient, forkClient } from './fork-client.js';
import type { LoadClientConfig, LoadClientMessage } from './load-client.js';
import { shareOf, sums } from './numbers.js';

const CLIENT = fileURLToPath(new URL('./load-client.ts', import.meta.url));

/** What a whole load run achieved. */
export interface LoadResult {
  connected: number;
  failed: number;
  errors: Record<string, number>;
  /** Time until the last process finished connecting, in ms. */
  ms: number;
  /** Connect-to-first-echo latency of each successful connection, in ms. */
  latencies: number[];
}

/** Options of {@link openConnections}. */
export interface LoadOptions {
  port: number;
  host?: string;
  tls: boolean;
  connections: number;
  /** Total connection attempts per second over all processes. */
  rate: number;
  /** Client processes (at least enough to stay under MAX_PER_PROCESS each). */
  processes?: number;
  inFlight?: number;
  connectTimeout?: number;
  onProgress?: (connected: number, failed: number) => void;
}

/**
 * Open `connections` connections from several client processes and hold them. Resolves once every
 * process has finished connecting; call `close()` on the result to close them all.
 */
export async function openConnections(o: LoadOptions): Promise<LoadResult & { close(): Promise<void> }> {
  const processes = Math.max(o.processes ?? 1, Math.ceil(o.connections / MAX_PER_PROCESS));
  const children: ForkedClient<LoadClientMessage>[] = [];
  const progress = new Map<number, { connected: number; failed: number }>();
  const results = await Promise.all(
    Array.from({ length: processes }, (_, i) => {
      const cfg: LoadClientConfig = {
        port: o.port,
        host: o.host ?? '127.0.0.1',
        tls: o.tls,
        count: shareOf(o.connections, processes, i),
        rate: o.rate / processes,
        inFlight: Math.max(1, Math.floor((o.inFlight ?? 512) / processes)),
        net: 10 + i,
        perAddress: 1000,
        connectTimeout: o.connectTimeout ?? 30_000,
      };
      const client = forkClient<LoadClientMessage>(CLIENT, 'CORRAL_LOAD_CLIENT', cfg, { name: `load client ${i}` });
      children.push(client);
      client.on('progress', (m) => {
        progress.set(i, m);
        if (o.onProgress) {
          const total = sums(progress.values(), ['connected', 'failed']);
          o.onProgress(total.connected, total.failed);
        }
      });
      return client.message('done');
    }),
  );
  const errors: Record<string, number> = {};
  for (const r of results) for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
  return {
    connected: results.reduce((a, r) => a + r.connected, 0),
    failed: results.reduce((a, r) => a + r.failed, 0),
    errors,
    ms: Math.max(...results.map((r) => r.ms)),
    latencies: results.flatMap((r) => r.latencies),
    close: async () => {
      await Promise.all(children.map((c) => c.close(30_000)));
    },
  };
}
