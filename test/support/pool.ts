import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { ListenerOptions } from '../../src/index.js';

const FIXTURE = fileURLToPath(new URL('../fixtures/pool.ts', import.meta.url));

interface PoolEvent {
  event: string;
  detail?: unknown;
  port?: number;
}

/** What test/fixtures/pool.ts runs with: listener options and the fixture's own switches. */
export type PoolConfig = Partial<ListenerOptions> & {
  tls?: boolean;
  /** Answer a drain's shutdown request with `shutdown <epoch ms>`, then close. */
  announceShutdown?: boolean;
  /** A single-process listener instead of a worker pool. */
  single?: boolean;
  badDeployFile?: string;
};

/**
 * Runs test/fixtures/pool.ts (a worker-pool echo server) as a child process and drives its
 * primary listener through JSON commands on stdin.
 */
export class Pool {
  readonly child: ChildProcess;
  port = 0;
  stderr = '';
  readonly events: PoolEvent[] = [];
  readonly exited: Promise<number | null>;
  private nextId = 1;
  private replies = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private eventWaiters: { match: (e: PoolEvent) => boolean; resolve: (e: PoolEvent) => void }[] = [];

  private constructor(config: PoolConfig) {
    this.child = spawn(process.execPath, ['--import', 'tsx', FIXTURE], {
      env: { ...process.env, POOL_CONFIG: JSON.stringify(config) },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.stderr += d;
    });
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      let msg: { id?: number; ok?: boolean; value?: unknown; error?: string } & PoolEvent;
      try {
        msg = JSON.parse(line);
      } catch {
        return;
      }
      if (msg.id !== undefined) {
        const r = this.replies.get(msg.id);
        this.replies.delete(msg.id);
        if (msg.ok) r?.resolve(msg.value);
        else r?.reject(new Error(msg.error));
        return;
      }
      this.events.push(msg);
      this.eventWaiters = this.eventWaiters.filter((w) => {
        if (!w.match(msg)) return true;
        w.resolve(msg);
        return false;
      });
    });
    this.exited = new Promise((resolve) => this.child.on('exit', (code) => resolve(code)));
  }

  /** Start a pool and wait until its primary prints `listening`. */
  static async start(config: PoolConfig = {}): Promise<Pool> {
    const pool = new Pool(config);
    const listening = pool.waitEvent('listening', 60_000);
    const early = pool.exited.then(async (code) => {
      // Its last words may still be in the pipe at 'exit': read stderr to its end first.
      if (!pool.child.stderr!.readableEnded) await once(pool.child.stderr!, 'end');
      throw new Error(`pool exited (${code}) before listening: ${pool.stderr}`);
    });
    const e = await Promise.race([listening, early]);
    pool.port = e.port!;
    return pool;
  }

  /** Resolve on the first event (past or future) named `name` that `match` accepts. */
  waitEvent(name: string, timeout = 30_000, match: (e: PoolEvent) => boolean = () => true, after = 0): Promise<PoolEvent> {
    const m = (e: PoolEvent): boolean => e.event === name && match(e);
    const past = this.events.slice(after).find(m);
    if (past) return Promise.resolve(past);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${name} event within ${timeout} ms; stderr: ${this.stderr}`)), timeout);
      this.eventWaiters.push({
        match: m,
        resolve: (e) => {
          clearTimeout(timer);
          resolve(e);
        },
      });
    });
  }

  command<T = unknown>(cmd: string, arg?: unknown): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.replies.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.child.stdin!.write(`${JSON.stringify({ id, cmd, arg })}\n`);
    });
  }

  /** Stop the listener and wait for the primary to exit. */
  async stop(timeout?: number): Promise<unknown> {
    const result = await this.command('stop', timeout === undefined ? {} : { timeout });
    await this.exited;
    return result;
  }

  /** Kill the whole pool (primary first; workers follow when their IPC channel closes). */
  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

/** Whether a process with this pid is alive. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
