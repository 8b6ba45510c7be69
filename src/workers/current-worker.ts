import { WORKER_ENV, WORKER_INDEX_ENV } from './ipc.js';

/** Which worker of which listener this process is. */
export interface WorkerIdentity {
  /** The listener this process is a worker of. */
  readonly listener: string;
  /** The worker's slot, from 0; a restarted worker keeps the slot of the one it replaces. */
  readonly index: number;
}

/**
 * In a worker process of a listener with `workers`, which worker this is; `undefined` in a primary
 * or a process without workers. Known before `startListener` is called, so an application can name
 * per-worker resources (a queue, a log file) after its slot.
 */
export function currentWorker(): WorkerIdentity | undefined {
  const listener = process.env[WORKER_ENV];
  if (listener === undefined) return undefined;
  return { listener, index: Number(process.env[WORKER_INDEX_ENV] ?? '0') };
}
