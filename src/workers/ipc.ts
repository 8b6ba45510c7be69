import type { ConnectionInfo } from '../connection.js';
import type { AccessRule } from '../limits/access-rules.js';
import type { DrainResult, ListenerInfo, ListenerTotals } from '../listener.js';
import type { SocketAddress } from '../transport.js';

/** Environment variable naming the listener a worker process serves. @internal */
export const WORKER_ENV = 'CORRAL_WORKER_LISTENER';
/** Environment variable holding a worker's index. @internal */
export const WORKER_INDEX_ENV = 'CORRAL_WORKER_INDEX';

/** What the primary tells a worker to run with. @internal */
export interface WorkerConfig {
  readonly index: number;
  readonly generation: number;
  /** This worker's share of `maxConnections` (`Infinity` in `primary` distribution). */
  readonly maxConnections: number;
  /** Shared TLS session-ticket keys (48 bytes each, the current one first), for TLS transports. */
  readonly ticketKeys: readonly Uint8Array[] | undefined;
  /** Protocol options set at run time with `setProtocolOptions`, if any. */
  readonly protocolOptions?: { readonly value: unknown };
  /** Whether the worker should accept now (false while the primary has paused accepting). */
  readonly accepting: boolean;
  /** Whether the pool is suspended: the worker starts without a listening socket until `resume`. */
  readonly suspended: boolean;
  /** The listener's address, as the primary bound it (or `undefined` until a worker binds it). */
  readonly address: SocketAddress | undefined;
  /** Access rules set at run time with `setAccessRules`, if any. */
  readonly access: readonly AccessRule[] | undefined;
  /** Transport options set at run time with `updateTransport`, in order. */
  readonly transportUpdate: Readonly<Record<string, unknown>> | undefined;
}

/** A request from the primary to one worker; answered by a {@link WorkerReply} with the same id. @internal */
export type WorkerCommand =
  | { op: 'info' }
  | { op: 'connections' }
  | { op: 'setMaxConnections'; n: number }
  | { op: 'setProtocolOptions'; value: unknown }
  | { op: 'setTicketKeys'; keys: readonly Uint8Array[] }
  | { op: 'setAccess'; rules: readonly AccessRule[] }
  /** The application's question (`askWorkers`), answered by its handler (`answer`). */
  | { op: 'ask'; topic: string; payload: unknown }
  | { op: 'updateTransport'; options: Readonly<Record<string, unknown>> }
  | { op: 'accepting'; on: boolean }
  | { op: 'suspend' }
  | { op: 'resume' }
  | { op: 'drain'; timeout: number | undefined; rate: number }
  | { op: 'stop'; timeout: number | undefined; rate: number };

/** Messages from the primary to a worker. @internal */
export type ToWorker =
  | { t: 'start'; config: WorkerConfig }
  | { t: 'handle' }
  /**
   * A socket (the message's handle) for the worker to serve (distribution `primary`), with the
   * bytes the primary read from it; `id` names it in the `released` message when it is done.
   */
  | { t: 'socket'; id: number; head: Buffer | undefined; proxy: Uint8Array | undefined }
  | { t: 'cmd'; id: number; cmd: WorkerCommand };

/** Messages from a worker to the primary. @internal */
export type FromWorker =
  | { t: 'hello'; listener: string; pid: number }
  | { t: 'ready'; address: SocketAddress }
  | { t: 'need-handle' }
  /** The worker's load and its counters that only grow (coalesced, at most every ~20 ms). */
  | { t: 'load'; connections: number; counted: number; totals: ListenerTotals }
  /** These sockets' connections are done (or never began): the primary releases their slots. */
  | { t: 'released'; ids: number[] }
  | { t: 'reply'; id: number; ok: true; value: unknown }
  | { t: 'reply'; id: number; ok: false; error: string }
  | { t: 'crash-report'; message: string }
  /** The worker could not listen (`reuseport`: bind its own socket; `shared`: listen on the primary's handle): its `ListenError`'s address, system code and cause's message. */
  | { t: 'listen-failed'; address: string; syscallCode: string | undefined; message: string };
