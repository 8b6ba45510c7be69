import type { AcceptedSocket } from './transport.js';

/** Why an accepted socket was closed without being served. */
export type RejectReason = 'queue_full' | 'wait_timeout' | 'shutdown';

/** How a transport handshake failed. */
export type HandshakeFailure = 'timeout' | 'error';

/** Counters and gauges of an acceptor pool. */
export interface AcceptorPoolStats {
  /** Sockets accepted since the listener started. */
  readonly accepted: number;
  /** Handshakes running now. */
  readonly handshaking: number;
  /** Sockets waiting, paused, for a slot. */
  readonly waiting: number;
  /** Connections counting against `maxConnections` (excludes handshakes and removed ones). */
  readonly counted: number;
  /** Sockets closed unserved, by reason. */
  readonly rejected: Readonly<Record<RejectReason, number>>;
  /** Failed handshakes, by kind. */
  readonly handshakeFailures: Readonly<Record<HandshakeFailure, number>>;
}

/**
 * Admission control between the transport and the connection supervisor (Ranch's acceptors and
 * `max_connections`). Every accepted socket is either handshaken now, held paused in a bounded wait
 * queue, or closed and counted as rejected. A handshake starts only when fewer than
 * `maxHandshakes` are running and handshakes plus counted connections are below `maxConnections`,
 * so no CPU is spent on a connection that could not be served.
 */
export interface AcceptorPool {
  /** Upper bound of handshakes plus counted connections. Raising it serves waiting sockets at once. */
  maxConnections: number;
  /** How many handshakes may run at once now (with `maxHandshakes: 'auto'`, the current window). */
  readonly maxHandshakes: number;
  /** Current counters. */
  readonly stats: AcceptorPoolStats;
  /** Take a freshly accepted socket. */
  admit(socket: AcceptedSocket): void;
  /** A counted connection stopped counting (it closed or was removed from the count). */
  release(): void;
  /** Close every waiting socket and abort running handshakes; admit nothing more. */
  close(): void;
}
