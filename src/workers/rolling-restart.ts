import { CorralError } from '../errors.js';
import type { DrainResult } from '../listener.js';
import type { WorkerProcess } from './worker-process.js';
import { exitWithin, type WorkerSupervisor } from './worker-supervisor.js';

/** How long a rolling restart waits for a new worker to accept. */
const REPLACEMENT_READY_MS = 60_000;

/** What a rolling restart needs from its pool. @internal */
export interface RollingRestartOptions {
  readonly listener: string;
  /** Connections the retiring worker asks to shut down per second (it drains alone). */
  readonly drainRate: number;
  /** How long a retiring worker may take to drain `connections` at `rate` and answer, in ms. */
  drainBudget(rate: number): number;
  /** How long a stopped worker may take to exit before it is killed, in ms. */
  readonly exitGrace: number;
  /** Whether the pool is stopping (the restart gives up). */
  stopping(): boolean;
  /** A slot got its new worker (the pool re-checks where it may dispatch). */
  swapped(): void;
  /** A retiring worker exited (the pool re-checks connection counts). */
  retired(): void;
}

/**
 * Replace every worker of a pool, one at a time (a deploy): start the new process, wait until it
 * accepts, put it in the slot, then stop the old one at the whole `drainRate` and wait for it to
 * exit. With distribution `shared` or `primary` no connect is refused meanwhile. A new worker that
 * exits or is not ready within a minute fails the restart and is killed; the old one keeps
 * serving. @internal
 */
export class RollingRestart {
  /** The new worker being started, until it joins its slot. */
  private starting: WorkerProcess | undefined = undefined;

  constructor(
    private readonly workers: WorkerSupervisor,
    private readonly options: RollingRestartOptions,
  ) {}

  async run(): Promise<void> {
    const o = this.options;
    for (let i = 0; i < this.workers.count; i++) {
      if (o.stopping()) return;
      const fresh = await this.startReplacement(this.workers.at(i));
      if (fresh === undefined) return; // the pool is stopping
      const old = this.workers.swap(fresh);
      o.swapped();
      if (old.child) {
        const rate = o.drainRate;
        await old.request<DrainResult>({ op: 'stop', timeout: undefined, rate }, o.drainBudget(rate)).catch(() => undefined);
        await exitWithin(old, o.exitGrace);
      }
      // Connections the old worker still counted (distribution primary) were released on its exit.
      o.retired();
    }
  }

  /** Kill the worker being started, if any (the pool stops), and wait for it to exit. */
  async abort(): Promise<void> {
    const starting = this.starting;
    starting?.kill();
    await starting?.whenExited();
  }

  private async startReplacement(old: WorkerProcess): Promise<WorkerProcess | undefined> {
    const name = this.options.listener;
    let failed: ((e: Error) => void) | undefined;
    const failure = new Promise<never>((_, reject) => {
      failed = reject;
    });
    const fresh = old.replacement({
      ...this.workers.processEvents,
      // Until it joins its slot, an exit is a failed deploy, not a crash to restart.
      exit: (_w, code, signal) =>
        failed?.(
          new CorralError(
            'CORRAL_WORKERS_FAILED',
            `corral: listener ${name}: the new worker ${old.index} exited (${signal ? `signal ${signal}` : `exit code ${code}`}) before it was ready; the old worker keeps serving`,
          ),
        ),
    });
    this.starting = fresh;
    const timer = setTimeout(
      () => failed?.(new CorralError('CORRAL_WORKERS_FAILED', `corral: listener ${name}: the new worker ${old.index} was not ready within ${REPLACEMENT_READY_MS} ms; the old worker keeps serving`)),
      REPLACEMENT_READY_MS,
    );
    try {
      fresh.spawn();
      await Promise.race([fresh.whenReady(), failure]);
    } catch (err) {
      fresh.kill();
      await fresh.whenExited();
      throw err;
    } finally {
      clearTimeout(timer);
      failed = undefined;
      this.starting = undefined;
    }
    if (this.options.stopping()) {
      fresh.kill();
      await fresh.whenExited();
      return undefined;
    }
    return fresh;
  }
}
