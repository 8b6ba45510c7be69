import type { EventEmitter } from 'node:events';
import type { Connection, ConnectionInfo } from './connection.js';
import type { HandlerHook } from './protocol.js';
import type { CloseReason } from './protocol.js';
import type { SocketAddress } from './transport.js';
import type { AcceptorPoolStats, HandshakeFailure, RejectReason } from './acceptor-pool/acceptor-pool-stats.js';
import type { AccessRule } from './limits/access-rules.js';
import type { AdmissionPolicy, AlarmEvent, Distribution } from './options.js';

/**
 * Where a listener is in its life.
 *
 * - `running`: accepting.
 * - `suspended`: the listening socket is closed (new connects are refused by the kernel); live
 *   connections keep running; `resume()` reopens the same address.
 * - `draining`: a drain is under way.
 * - `stopped`: everything is closed and the name is free again.
 */
export type ListenerStatus = 'running' | 'suspended' | 'draining' | 'stopped';

/** A snapshot of a listener's state and counters, as `info()` returns it. */
export interface ListenerInfo extends Omit<AcceptorPoolStats, 'counted'> {
  /** The name the listener is registered under. */
  readonly name: string;
  /** Where the listener is in its life: `running`, `suspended`, `draining` or `stopped`. */
  readonly status: ListenerStatus;
  /** `single` (one process), `primary` (of a worker pool, aggregating its workers) or `worker`. */
  readonly role: ListenerRole;
  /** How workers share the port, or `null` without workers. */
  readonly distribution: Distribution | null;
  /** Transport name (`'tcp'`, `'tls'`, ...). */
  readonly transport: string;
  /** The bound address. */
  readonly address: SocketAddress;
  /**
   * The current limit of counted connections plus handshakes (`Infinity`: none). For a primary, the
   * total over its workers; for a worker, its share of that total (`Infinity` with distribution
   * `primary`, where the primary holds the total).
   */
  readonly maxConnections: number;
  /** Handshakes that may be in progress at once in one process (`maxHandshakes`). */
  readonly maxHandshakes: number;
  /** Which waiting socket is served next when a slot frees (`admission`: `fifo`, `lifo` or `adaptive`). */
  readonly admission: AdmissionPolicy;
  /**
   * `overflow: 'refuse'`: the wait queue overflowed and the listening socket is closed until it has
   * room (for a primary: in any worker).
   */
  readonly refusing: boolean;
  /** Times the wait queue overflowed (a socket found it full), since start. */
  readonly overflows: number;
  /** Connections counting against `maxConnections`, plus handshakes in progress. */
  readonly active: number;
  /** Live connections, counted or not. */
  readonly connections: number;
  /** Connections that completed their handshake since start. */
  readonly opened: number;
  /** Connections closed since start. */
  readonly closed: number;
  /** Handler hooks that threw or rejected. */
  readonly handlerCrashes: number;
  /** Fresh handlers started after a crash (`restart: 'transient'`). */
  readonly handlerRestarts: number;
  /**
   * Times the listener stopped accepting for a back-off because the process was about to run out
   * of file descriptors, or did (`EMFILE`/`ENFILE`): new connects are refused or wait in the
   * backlog meanwhile; live connections are untouched.
   */
  readonly descriptorBackoffs: number;
  /** Each worker (pid, connections, restarts), for a primary; empty otherwise. */
  readonly workers: readonly WorkerInfo[];
}

/**
 * The counters of {@link ListenerInfo} that only grow. A worker pool's primary keeps those of
 * worker processes that exited, so its totals never go backwards when workers are replaced
 * (increments in the last ~20 ms before a worker died can be missing, never those an `info()` has
 * already shown).
 */
export type ListenerTotals = Pick<
  ListenerInfo,
  | 'accepted'
  | 'opened'
  | 'closed'
  | 'gaveUp'
  | 'overflows'
  | 'rejected'
  | 'handshakeFailures'
  | 'handlerCrashes'
  | 'handlerRestarts'
  | 'descriptorBackoffs'
>;

/** What `info()` says of one worker. */
export interface WorkerInfo {
  /** The worker's slot, from 0; a restarted worker keeps the slot of the one it replaces. */
  readonly index: number;
  /**
   * The id of the slot's current process, or `undefined` while it has none (between a death and
   * its restart, or once stopped).
   */
  readonly pid: number | undefined;
  /**
   * `starting`: the slot's first process is starting; `ready`: it accepts; `restarting`: its process
   * died and a new one is on its way (not yet accepting); `retiring`: it is being replaced by a
   * rolling restart and drains; `stopped`: it has exited for good.
   */
  readonly status: 'starting' | 'ready' | 'retiring' | 'restarting' | 'stopped';
  /** Live connections, as last reported. */
  readonly connections: number;
  /** Times this worker slot was restarted after its process died. */
  readonly restarts: number;
  /** The worker's own listener info, when it answered in time. */
  readonly listener: ListenerInfo | undefined;
}

/** One worker's answer to {@link Listener.askWorkers}. */
export type WorkerAnswer<T> =
  | {
      /** The worker's slot. */
      readonly index: number;
      /** The worker's process id. */
      readonly pid: number | undefined;
      /** It answered. */
      readonly ok: true;
      /** What its handler returned (or resolved with). */
      readonly value: T;
    }
  | {
      /** The worker's slot. */
      readonly index: number;
      /** The worker's process id. */
      readonly pid: number | undefined;
      /** It did not answer. */
      readonly ok: false;
      /** Why: no handler for the topic, the handler threw, or no answer in time. */
      readonly error: string;
    };

/** Which part a listener object plays: a stand-alone listener, a pool's primary, or one of its workers. */
export type ListenerRole = 'single' | 'primary' | 'worker';

/** A worker process event of a primary listener. */
export interface WorkerEvent {
  /** The worker's slot, from 0; a restarted worker keeps the slot of the one it replaces. */
  readonly index: number;
  /**
   * The process id: of the process now in the slot for `workerReady` and `workerCrash`, of the
   * process that exited for `workerExit`. `undefined` if the process could not be started.
   */
  readonly pid: number | undefined;
}

/** What `drain()` (and `stop()`) did. */
export interface DrainResult {
  /** Live connections when the drain began, plus those whose handshake finished during it. */
  readonly connections: number;
  /** Of those, closed before the deadline with everything they were asked to send flushed. */
  readonly closedGracefully: number;
  /**
   * Of those, force-closed at the deadline, or destroyed before it with bytes still unsent (a
   * peer that did not read within `shutdownTimeout` of the close, an error, a full send buffer).
   */
  readonly forced: number;
  /** Sockets closed unserved: waiting for a slot, silent, waiting for a PROXY header, or in a handshake the deadline cut. */
  readonly abandoned: number;
  /** How long the drain took, in ms. */
  readonly durationMs: number;
}

/** Comparison used by `waitForConnections`, as in Ranch. */
export type ConnectionCountOp = '>' | '>=' | '==' | '<=' | '<';

/** A handler crash, as the `handlerCrash` event reports it. */
export interface HandlerCrashEvent {
  /** The connection's id ({@link Connection.id}). */
  readonly id: string;
  /** The hook that threw or rejected. */
  readonly hook: HandlerHook;
  /** What the hook threw or rejected with, as is (not necessarily an `Error`). */
  readonly error: unknown;
  /**
   * Whether a fresh handler was granted the connection. It takes over after `onCrash` settles,
   * unless the connection is closing by then (see `CrashInfo.restarted`).
   */
  readonly restarted: boolean;
}

/** A failed handshake, as the `handshakeError` event reports it. */
export interface HandshakeErrorEvent {
  /**
   * How the handshake failed: `timeout` (`handshakeTimeout` passed), `stalled` (closed to make room
   * for a waiting ClientHello) or `error`.
   */
  readonly kind: HandshakeFailure;
  /**
   * What went wrong: for `error`, the transport's own error (wrapped in a `CorralError` with code
   * `CORRAL_HANDSHAKE_FAILED` if it was not an `Error`); for `timeout` and `stalled`, a `CorralError`
   * with code `CORRAL_HANDSHAKE_TIMEOUT`.
   */
  readonly error: Error;
  /**
   * The client — the peer, or the client its PROXY header named — read when the socket was
   * accepted, if a listener for this event (or a subscriber of its diagnostics channel), a
   * per-source rule or `proxyHeader` needed it then: the read costs a syscall per accept, and once
   * the socket is closed it cannot be read. `undefined` otherwise.
   */
  readonly remoteAddress: string | undefined;
  /** The peer's port, read together with `remoteAddress` and under the same condition. */
  readonly remotePort: number | undefined;
}

/** A socket closed unserved, as the `reject` event reports it. */
export interface RejectEvent {
  /** Why the socket was closed unserved (see {@link RejectReason}). */
  readonly reason: RejectReason;
  /**
   * The client — the peer, or the client its PROXY header named — read when the socket was
   * accepted, if a listener for this event (or a subscriber of its diagnostics channel), a
   * per-source rule or `proxyHeader` needed it then: the read costs a syscall per accept, and once
   * the socket is closed it cannot be read. `undefined` otherwise.
   */
  readonly remoteAddress: string | undefined;
  /** The peer's port, read together with `remoteAddress` and under the same condition. */
  readonly remotePort: number | undefined;
  /**
   * More on why, where there is more: for `proxy_invalid`, the PROXY parser's reason and message
   * (e.g. `bad_crc32c: PROXY header: …`).
   */
  readonly detail?: string;
}

/**
 * Events a listener emits. None is named `error`, so an unobserved event never throws.
 */
export interface ListenerEvents {
  /** A connection completed its handshake (emitted before `onReady`). */
  connectionOpen: [info: ConnectionInfo];
  /** A connection closed (after `onClose`). */
  connectionClose: [id: string, reason: CloseReason];
  /** A transport handshake failed, timed out or was closed to make room; no handler was created. */
  handshakeError: [event: HandshakeErrorEvent];
  /** A handler hook threw or rejected; `restarted` says whether a fresh handler took over. */
  handlerCrash: [event: HandlerCrashEvent];
  /** An accepted socket was closed without being served (counted in `info().rejected`). */
  reject: [event: RejectEvent];
  /**
   * A non-fatal error of the listening socket. On `EMFILE`/`ENFILE` (out of file descriptors) the
   * listener has also stopped accepting for a while (counted in `info().descriptorBackoffs`; it
   * usually stops before, see docs/edge.md).
   */
  acceptError: [error: Error];
  /** A connection-count alarm fired (`alarms`); over a pool, the primary's. */
  alarm: [event: AlarmEvent];
  /**
   * The wait queue overflowed (`true`: a socket found it full; with `overflow: 'refuse'` the
   * listening socket is now closed) or has room again (`false`: reopened). Per process.
   */
  queueFull: [full: boolean];
  /** The listening socket was closed by `suspend()` or at the start of a drain; live connections keep running. */
  suspend: [];
  /** `resume()` made the listener `running` again (after `suspend()` or a drain), on the same address. */
  resume: [];
  /** The listener has stopped: every connection is closed and the name is free again. */
  stop: [];
  /** A worker process is accepting (primary only). */
  workerReady: [event: WorkerEvent];
  /** A worker process exited; it is restarted unless the listener is stopping or gave up (primary only). */
  workerExit: [
    event: WorkerEvent & {
      /** The process's exit code, or `null` if a signal ended it (or it never started). */
      readonly code: number | null;
      /** The signal that ended the process (e.g. `'SIGKILL'`), or `null` if it exited by itself (or never started). */
      readonly signal: string | null;
    },
  ];
  /** A worker reported an uncaught error before exiting (primary only). */
  workerCrash: [
    event: WorkerEvent & {
      /**
       * One line naming the worker, whether it was an uncaught exception or an unhandled rejection,
       * and the connection it came from, if known. The error itself is logged on the worker's stderr.
       */
      readonly message: string;
    },
  ];
  /**
   * The listener gave up: workers died more often than `workerRestarts` allows. The listener stops.
   * Without a listener for this event the message goes to stderr and `process.exitCode` is set to 1.
   */
  fatal: [error: Error];
}

/**
 * A named listener (Ranch's listener): a transport endpoint, an acceptor pool and a connection
 * supervisor. Made by `startListener`. Methods that read state return promises so the same API
 * spans worker processes.
 */
export interface Listener extends EventEmitter<ListenerEvents> {
  /** The name it is registered under. */
  readonly name: string;
  /** `single`, `primary` (of a worker pool) or `worker` (inside a worker process). */
  readonly role: ListenerRole;
  /** Where the listener is in its life: `running`, `suspended`, `draining` or `stopped`. */
  readonly status: ListenerStatus;
  /** The bound address (kept while suspended). */
  readonly address: SocketAddress;
  /** The bound TCP port, or `undefined` for Unix sockets and other transports. */
  readonly port: number | undefined;
  /**
   * Upper bound of counted connections plus handshakes. Settable at run time: raising it serves
   * waiting sockets at once; lowering it closes nothing, new sockets wait until below it.
   */
  maxConnections: number;
  /** Close the listening socket; live connections keep running. */
  suspend(): Promise<void>;
  /** Reopen the listening socket on the same address. */
  resume(): Promise<void>;
  /**
   * Stop accepting without refusing ("acceptors sleep, the backlog waits"): connects wait in the
   * kernel backlog, or paused in the wait queue, and are served on {@link Listener.resumeAccepting}.
   * Needs workers with distribution `shared` or `primary`; elsewhere it rejects, since a process
   * cannot stop accepting on a socket it alone holds without closing it (use `suspend`).
   */
  pauseAccepting(): Promise<void>;
  /** Accept again after {@link Listener.pauseAccepting}. */
  resumeAccepting(): Promise<void>;
  /**
   * Rolling restart of the worker processes, one at a time: the new worker accepts before the old
   * one drains at `drainRate`. Rejects on a listener without workers.
   */
  restartWorkers(): Promise<void>;
  /** Replace the protocol options given to handlers of new connections. */
  setProtocolOptions(options: unknown): void;
  /**
   * Replace the access rules (`access`) for new connects, in every process of a pool; live
   * connections stay. Rejects with an `InvalidOptionError` on a bad rule (nothing changes then).
   */
  setAccessRules(rules: readonly AccessRule[]): Promise<void>;
  /**
   * Replace transport options for new connections — for TLS the certificate and key, `sni`
   * contexts, CA, and so on — in every process of a pool, and in workers started later. Live
   * connections keep theirs, and session tickets stay valid (the ticket keys carry over, unless the
   * update gives `ticketKeys`: those then replace the pool's own for good). Rejects
   * if the options do not make a valid context (nothing changes then), or if a worker failed to
   * apply them (that worker keeps the old ones; the message names it).
   */
  updateTransport(options: Readonly<Record<string, unknown>>): Promise<void>;
  /**
   * Ask every worker process for something of the application's (its metrics, its state): each
   * worker's handler for `topic` (set with {@link Listener.answer} in the worker) is called with
   * `payload`, and each answer comes back, with the worker's index and pid — `ok: false` with a
   * message for a worker that has no handler, threw, or did not answer within `timeout` ms
   * (default 5000). A worker whose channel to the primary has closed (it stopped serving and is
   * exiting) is not asked: it holds no connections and could not answer. Payloads and answers
   * cross processes: they must survive the structured clone.
   * On a single-process listener the one "worker" is this process, so code written for a pool
   * runs unchanged. In a worker it rejects (ask from the primary).
   */
  askWorkers<T = unknown>(topic: string, payload?: unknown, options?: { timeout?: number }): Promise<WorkerAnswer<T>[]>;
  /**
   * Answer `topic` when the primary asks ({@link Listener.askWorkers}); `answer` may return a
   * promise. One handler per topic (a second replaces the first). In a pool's primary it answers
   * nothing (its workers do).
   */
  answer(topic: string, answer: (payload: unknown) => unknown): void;
  /** State and counters. */
  info(): Promise<ListenerInfo>;
  /** A snapshot of every live connection (over every worker process, for a primary). */
  connections(): Promise<ConnectionInfo[]>;
  /**
   * The live connections of this listener in this process — the same objects its handlers get —
   * as a live view: iterating it while connections open and close is safe (one that closes during
   * the loop is skipped if not reached yet; one that opens may be visited). For a handler that
   * reaches the others, e.g. to broadcast. Empty in a worker pool's primary, whose connections
   * live in the workers (inside a worker it holds that worker's).
   */
  localConnections(): ReadonlySet<Connection>;
  /**
   * Resolve once the number of live connections compares to `n` as `op` says (Ranch's
   * `wait_for_connections`); reject with a timeout error after `timeout` ms (default 5000).
   */
  waitForConnections(op: ConnectionCountOp, n: number, options?: { timeout?: number }): Promise<void>;
  /**
   * Suspend, close waiting sockets, ask every handler to shut down (`onShutdown`, at `drainRate`
   * connections per second), wait until the deadline — `timeout` ms (default `shutdownTimeout`) plus
   * n ÷ `drainRate` seconds — force-close what is left, and report. `rate` replaces `drainRate` for
   * this drain. Handshakes already under way finish, and their connections are drained too. The
   * listener stays registered and suspended: `resume()` serves again.
   */
  drain(options?: { timeout?: number; rate?: number }): Promise<DrainResult>;
  /**
   * Drain with `shutdownTimeout` (or `timeout`), release everything and unregister the name. During
   * a `drain()`, the sooner of the two deadlines holds: the drain is cut at the stop's.
   */
  stop(options?: { timeout?: number; rate?: number }): Promise<DrainResult>;
}
