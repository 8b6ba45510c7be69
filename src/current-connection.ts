import { AsyncLocalStorage } from 'node:async_hooks';

/** The listener and connection a piece of handler code runs for. */
export interface ConnectionContext {
  /** Name of the listener that accepted the connection. */
  readonly listener: string;
  /** The connection's id, as in {@link Connection.id} and {@link ConnectionInfo.id}. */
  readonly connection: string;
}

/**
 * Carries the {@link ConnectionContext} through a handler's hooks and everything they start
 * (timers, promises). Enabled in worker processes, where an uncaught exception is logged with the
 * connection it came from; a stand-alone listener does not pay for it.
 * @internal
 */
export const connectionStorage = new AsyncLocalStorage<ConnectionContext>();

/**
 * The connection the calling code runs for, when known: inside handler hooks (and what they
 * start) of listeners running in worker processes. `undefined` elsewhere.
 */
export function currentConnection(): ConnectionContext | undefined {
  return connectionStorage.getStore();
}
