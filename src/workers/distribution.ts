import os from 'node:os';
import { InvalidOptionError } from '../errors.js';
import type { Distribution } from '../options.js';
import { openFileLimit } from '../listeners/descriptor-guard.js';
import { supportsReusePort } from '../transports/reuse-port.js';


/** The distribution used when none is given: `reuseport` where the runtime has it, else `shared`. */
export function defaultDistribution(unixSocket: boolean): Distribution {
  return !unixSocket && supportsReusePort() ? 'reuseport' : 'shared';
}

/** Descriptors a worker keeps for itself beyond connections and waiting sockets. */
const RESERVED_FDS = 256;

/**
 * How many workers `'auto'` starts: at least one per core (`os.availableParallelism()`), and
 * enough that each worker's share of `maxConnections`, plus its waiting sockets and a reserve,
 * fits under the per-process open-file limit.
 */
export function autoWorkerCount(maxConnections: number, maxWaiting: number, fdLimit = openFileLimit()): number {
  const cores = os.availableParallelism();
  if (!Number.isFinite(maxConnections) || fdLimit === undefined) return cores;
  const perWorker = fdLimit - RESERVED_FDS - Math.min(maxWaiting, fdLimit / 4);
  const needed = Math.ceil(maxConnections / Math.max(1, perWorker));
  return Math.max(cores, needed);
}

/** Validate the `workers` option. @internal */
export function checkWorkers(value: unknown): number | 'auto' | undefined {
  if (value === undefined) return undefined;
  if (value === 'auto') return 'auto';
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 256) {
    throw new InvalidOptionError('workers', `must be an integer from 1 to 256 or 'auto', got ${JSON.stringify(value)}`);
  }
  return value;
}
