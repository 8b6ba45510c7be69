import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { type LoadClientConfig, type LoadClientMessage, MAX_PER_PROCESS } from './load-client.js';

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
  const children: ChildProcess[] = [];
  const progress = new Map<ChildProcess, { connected: number; failed: number }>();
  const results = await Promise.all(
    Array.from({ length: processes }, (_, i) => {
      const count = Math.floor(o.connections / processes) + (i < o.connections % processes ? 1 : 0);
      const cfg: LoadClientConfig = {
        port: o.port,
        host: o.host ?? '127.0.0.1',
        tls: o.tls,
        count,
        rate: o.rate / processes,
        inFlight: Math.max(1, Math.floor((o.inFlight ?? 512) / processes)),
        net: 10 + i,
        perAddress: 1000,
        connectTimeout: o.connectTimeout ?? 30_000,
      };
      const child = fork(CLIENT, [], {
        env: { ...process.env, CORRAL_LOAD_CLIENT: JSON.stringify(cfg) },
        execArgv: ['--import', 'tsx'],
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        serialization: 'advanced',
      });
      children.push(child);
      return new Promise<LoadResult>((resolve, reject) => {
        child.on('message', (m: LoadClientMessage) => {
          if (m.t === 'progress') {
            progress.set(child, m);
            if (o.onProgress) {
              let c = 0;
              let f = 0;
              for (const p of progress.values()) {
                c += p.connected;
                f += p.failed;
              }
              o.onProgress(c, f);
            }
          } else if (m.t === 'done') resolve(m);
        });
        child.on('exit', (code) => reject(new Error(`load client ${i} exited with ${code} before it finished`)));
      });
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
      await Promise.all(
        children.map(
          (c) =>
            new Promise<void>((resolve) => {
              if (c.exitCode !== null) return resolve();
              c.once('exit', () => resolve());
              c.send({ t: 'close' });
              setTimeout(() => c.kill('SIGKILL'), 30_000).unref();
            }),
        ),
      );
    },
  };
}
