import { CorralError } from './errors.js';
import type { DrainResult, Listener } from './listener.js';
import { planListener } from './listener-plan.js';
import { ProcessListener } from './listeners/process-listener.js';
import { WorkerPoolListener } from './listeners/worker-pool-listener.js';
import type { ListenerOptions } from './options.js';
import { WORKER_ENV } from './workers/ipc.js';
import { PoolWorker } from './workers/pool-worker.js';

/**
 * The listener registry lives on `globalThis` under a registered symbol, so a process has exactly
 * one registry even if corral were loaded twice (ESM and CommonJS, or two copies in node_modules).
 */
const REGISTRY_KEY = Symbol.for('corral.listeners.v1');

interface Registry {
  /** Listeners by name; `null` while a listener with that name is starting. */
  readonly byName: Map<string, Listener | null>;
}

function registry(): Registry {
  const g = globalThis as { [REGISTRY_KEY]?: Registry };
  return (g[REGISTRY_KEY] ??= { byName: new Map() });
}

/**
 * Start a named listener: validate the options, open the listening socket, and register the name.
 * Rejects with an `InvalidOptionError` naming a bad option, a `ListenError` naming an address that
 * cannot be bound, or `CORRAL_LISTENER_EXISTS` when the name is taken.
 */
export async function startListener<O = undefined, State = unknown>(options: ListenerOptions<O, State>): Promise<Listener> {
  const plan = planListener(options as ListenerOptions<unknown>);
  const reg = registry();
  if (reg.byName.has(plan.name)) {
    throw new CorralError('CORRAL_LISTENER_EXISTS', `corral: a listener named ${JSON.stringify(plan.name)} is already running`);
  }
  const workerOf = process.env[WORKER_ENV];
  if (plan.workers !== undefined && workerOf !== undefined && workerOf !== plan.name) {
    throw new CorralError(
      'CORRAL_LISTEN_FAILED',
      `corral: this is a worker process of listener ${JSON.stringify(workerOf)}; start listener ${JSON.stringify(plan.name)} with workers from the primary only`,
    );
  }
  reg.byName.set(plan.name, null);
  let listener: ProcessListener | WorkerPoolListener;
  try {
    if (plan.workers === undefined) {
      listener = new ProcessListener(plan, plan.transport.build());
      await listener.start();
    } else if (workerOf === plan.name) {
      listener = await PoolWorker.start(plan);
    } else {
      listener = new WorkerPoolListener(plan);
      await listener.start();
    }
  } catch (err) {
    reg.byName.delete(plan.name);
    throw err;
  }
  listener.onStopped = () => {
    if (reg.byName.get(plan.name) === listener) reg.byName.delete(plan.name);
  };
  reg.byName.set(plan.name, listener);
  return listener;
}

/** The running listener with this name, or `undefined`. */
export function getListener(name: string): Listener | undefined {
  return registry().byName.get(name) ?? undefined;
}

/**
 * Stop the listener with this name (see `Listener.stop`). Rejects with `CORRAL_LISTENER_NOT_FOUND`
 * when there is none.
 */
export async function stopListener(name: string, options?: { timeout?: number }): Promise<DrainResult> {
  const listener = getListener(name);
  if (listener === undefined) {
    throw new CorralError('CORRAL_LISTENER_NOT_FOUND', `corral: no listener named ${JSON.stringify(name)}`);
  }
  return listener.stop(options);
}

/** Every running listener, in the order they started. */
export function listeners(): Listener[] {
  return [...registry().byName.values()].filter((l): l is Listener => l !== null);
}
