import { CorralError } from './errors.js';
import type { DrainResult, Listener } from './listener.js';
import { LocalListener } from './local-listener.js';
import { type ListenerOptions, resolveListenerOptions } from './options.js';
import { WORKER_ENV } from './workers/ipc.js';
import { PrimaryListener } from './workers/primary-listener.js';
import { startWorkerListener } from './workers/worker-agent.js';

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
  const resolved = resolveListenerOptions(options as ListenerOptions<unknown>);
  const reg = registry();
  if (reg.byName.has(resolved.name)) {
    throw new CorralError('CORRAL_LISTENER_EXISTS', `corral: a listener named ${JSON.stringify(resolved.name)} is already running`);
  }
  const workerOf = process.env[WORKER_ENV];
  if (resolved.workers !== undefined && workerOf !== undefined && workerOf !== resolved.name) {
    throw new CorralError(
      'CORRAL_LISTEN_FAILED',
      `corral: this is a worker process of listener ${JSON.stringify(workerOf)}; start listener ${JSON.stringify(resolved.name)} with workers from the primary only`,
    );
  }
  reg.byName.set(resolved.name, null);
  let listener: LocalListener | PrimaryListener;
  try {
    if (resolved.workers === undefined) {
      listener = new LocalListener(resolved);
      await listener.start();
    } else if (workerOf === resolved.name) {
      listener = await startWorkerListener(options as ListenerOptions<unknown>, resolved);
    } else {
      listener = new PrimaryListener(resolved, options as ListenerOptions<unknown>);
      await listener.start();
    }
  } catch (err) {
    reg.byName.delete(resolved.name);
    throw err;
  }
  listener.onStopped = () => {
    if (reg.byName.get(resolved.name) === listener) reg.byName.delete(resolved.name);
  };
  reg.byName.set(resolved.name, listener);
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
