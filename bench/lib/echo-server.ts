/**
 * Start one of the two benchmark line-echo servers (bench/servers/corral-echo.ts or bare-echo.ts)
 * as a child process, optionally pinned to CPUs with `taskset`, and read its cost from /proc.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createInterface, type Interface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { ListenerInfo } from '../../src/index.js';
import { type TreeStats, treeStats } from './proc-stats.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SCRIPTS = {
  corral: fileURLToPath(new URL('../servers/corral-echo.ts', import.meta.url)),
  bare: fileURLToPath(new URL('../servers/bare-echo.ts', import.meta.url)),
};

/** Which server: corral, or the bare node:net / node:tls one it is compared with. */
export type ServerKind = keyof typeof SCRIPTS;

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

/** True when `taskset` (util-linux) can be run here. */
export function hasTaskset(): boolean {
  try {
    execFileSync('taskset', ['-c', '0', 'true'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * The command that runs `node --import tsx <script>`, pinned with `taskset -c <cpus>` when asked.
 * `taskset` execs node, so the child's pid is node's and an IPC channel passes through.
 */
export function nodeCommand(script: string, cpus?: string): { command: string; args: string[] } {
  const nodeArgs = ['--import', 'tsx', script];
  return cpus === undefined ? { command: process.execPath, args: nodeArgs } : { command: 'taskset', args: ['-c', cpus, process.execPath, ...nodeArgs] };
}

/** Start a server and wait until it listens. */
export async function startEchoServer(o: EchoServerOptions): Promise<EchoServer> {
  const { command, args } = nodeCommand(SCRIPTS[o.kind], o.cpus);
  const env = { ...process.env, BENCH_SERVER: JSON.stringify({ tls: o.tls, ...(o.kind === 'corral' ? (o.listener ?? {}) : {}) }) };
  const child: ChildProcess = spawn(command, args, { cwd: ROOT, env, stdio: ['pipe', 'pipe', 'inherit'] });
  const lines: Interface = createInterface({ input: child.stdout! });
  const queue: string[] = [];
  const waiters: ((line: string) => void)[] = [];
  lines.on('line', (line) => {
    const w = waiters.shift();
    if (w) w(line);
    else queue.push(line);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const nextLine = (what: string): Promise<string> =>
    new Promise<string>((resolve, reject) => {
      const queued = queue.shift();
      if (queued !== undefined) return resolve(queued);
      const timer = setTimeout(() => reject(new Error(`${o.kind} echo server: no ${what} within 30 s`)), 30_000);
      waiters.push((line) => {
        clearTimeout(timer);
        resolve(line);
      });
      void exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`${o.kind} echo server exited (code ${child.exitCode}) while waiting for ${what}`));
      });
    });
  let port: number;
  try {
    port = (JSON.parse(await nextLine('port')) as { port: number }).port;
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  return {
    kind: o.kind,
    pid: child.pid!,
    port,
    stats: () => treeStats(child.pid!),
    info: async () => {
      if (o.kind !== 'corral') return undefined;
      child.stdin!.write('info\n');
      return JSON.parse(await nextLine('info')) as ListenerInfo;
    },
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.stdin!.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
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
