/**
 * A benchmark server in a child process (bench/servers/*.ts): configured by BENCH_SERVER (JSON),
 * prints `{"port":…}` once listening, answers stdin lines (`info`, and whatever else the server
 * knows) with one JSON line each, and stops when its stdin ends. `stop()` waits for it to exit and
 * then kills whatever is left of its process tree (workers included), so a scenario leaves nothing
 * running even when a server hangs.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { buildCorral } from './build.js';
import { nodeCommand } from './node-command.js';
import { counterDelta } from './numbers.js';
import { treeStats } from './proc-stats.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** A benchmark server started by {@link startServer}. */
export interface ServerChild {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly port: number;
  /** Send one stdin line and resolve with the next JSON line the server prints. */
  ask<T = unknown>(line: string, timeoutMs?: number): Promise<T>;
  /** End stdin, wait up to `graceMs` for the server to exit, then SIGKILL its whole process tree. */
  stop(graceMs?: number): Promise<void>;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

/** Every process below (and including) `pid`, read from /proc. */
function tree(pid: number): number[] {
  try {
    return treeStats(pid).pids;
  } catch {
    return [pid];
  }
}

function killTree(pids: readonly number[]): void {
  for (const p of pids) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/**
 * Kill `child`'s process tree if this process exits while it still runs: a last resort for a
 * scenario that throws, or a runner that exits when a scenario overruns its budget.
 */
export function killOnExit(child: ChildProcess): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const c of live) if (c.pid !== undefined && c.exitCode === null && c.signalCode === null) killTree(tree(c.pid));
    });
  }
  live.add(child);
  child.once('exit', () => live.delete(child));
}

/** Options of {@link startServer}. */
export interface StartServerOptions {
  /** How long it may take to print its port. Default 60 s. */
  startTimeoutMs?: number;
  /** Pin the server to these CPUs (`taskset -c`), e.g. `'0'`. */
  cpus?: string;
}

/** Start `script` (relative to the repository root, or absolute) with BENCH_SERVER = `config`. */
export async function startServer(script: string, config: unknown, o: StartServerOptions = {}): Promise<ServerChild> {
  buildCorral();
  const { command, args } = nodeCommand(script, o.cpus);
  const child = spawn(command, args, {
    cwd: ROOT,
    env: { ...process.env, BENCH_SERVER: JSON.stringify(config) },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  killOnExit(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.stdin!.on('error', () => {}); // EPIPE if it died
  const lines = createInterface({ input: child.stdout! });
  const queue: string[] = [];
  const waiters: ((line: string) => void)[] = [];
  lines.on('line', (line) => {
    if (!line.startsWith('{')) return; // stray output (warnings, logs)
    const w = waiters.shift();
    if (w) w(line);
    else queue.push(line);
  });
  const next = (timeoutMs: number, what: string): Promise<string> =>
    new Promise<string>((resolve, reject) => {
      const queued = queue.shift();
      if (queued !== undefined) return resolve(queued);
      const timer = setTimeout(() => reject(new Error(`${script}: no answer to ${what} within ${timeoutMs} ms`)), timeoutMs);
      const onExit = (): void => reject(new Error(`${script} exited (code ${child.exitCode}, signal ${child.signalCode}) before answering ${what}`));
      child.once('exit', onExit);
      waiters.push((line) => {
        clearTimeout(timer);
        child.off('exit', onExit);
        resolve(line);
      });
    });

  const stop = async (graceMs = 15_000): Promise<void> => {
    if (child.pid === undefined) return;
    const pids = tree(child.pid);
    if (child.exitCode === null && child.signalCode === null) {
      child.stdin!.end();
      const timer = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), graceMs).unref());
      await Promise.race([exited, timer]);
    }
    // Workers exit when their primary goes; anything still there after the grace period is killed.
    killTree([...new Set([...pids, ...tree(child.pid)])].filter((p) => p !== child.pid || child.exitCode === null));
    await Promise.race([exited, new Promise((r) => setTimeout(r, 2000).unref())]);
  };

  let port: number;
  try {
    port = (JSON.parse(await next(o.startTimeoutMs ?? 60_000, 'start')) as { port: number }).port;
  } catch (err) {
    await stop(0);
    throw err;
  }
  return {
    child,
    pid: child.pid!,
    port,
    ask: async <T>(line: string, timeoutMs = 30_000): Promise<T> => {
      child.stdin!.write(`${line}\n`);
      return JSON.parse(await next(timeoutMs, line)) as T;
    },
    stop,
  };
}

/**
 * Watch a corral server's `info()` counters: asks now, and the returned function asks again and
 * resolves with what changed ({@link counterDelta}). For a bare server (`corral` false) nothing is
 * asked and it resolves with `undefined`.
 */
export async function watchCorralCounters(server: ServerChild, corral: boolean): Promise<() => Promise<Record<string, number> | undefined>> {
  if (!corral) return async () => undefined;
  const before = await server.ask('info');
  return async () => counterDelta(before, await server.ask('info'));
}
