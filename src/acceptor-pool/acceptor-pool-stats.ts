/**
 * Why an accepted socket was closed without being served:
 *
 * - `queue_full`: it found the wait queue full (`maxWaiting`).
 * - `wait_timeout`: it waited longer than `waitTimeout` for a handshake slot.
 * - `shutdown`: the listener drained or stopped while it waited.
 * - `silent_timeout`, `source_limit`, `silent_limit`: its peer had not sent its first message (see
 *   `clientFirst`) within `silentTimeout`, or it was the oldest silent socket of its source
 *   (`maxSilentPerSource`) or of the listener (`maxSilent`) when a new one came;
 * - `malformed`: its first bytes cannot begin the transport's first message, or (TLS) its peer
 *   sent more than 20,485 bytes before the handshake, which no client does.
 * - `denied`: an access rule denies its client's address (`access`).
 * - `rate_limited`: its source connected faster than `connectionRatePerSource`.
 * - `address_limit`: its source held `maxConnectionsPerAddress` sockets already.
 * - `proxy_invalid`: a trusted proxy sent a PROXY header that is not valid (or none, with
 *   `proxyHeader: true`).
 * - `proxy_timeout`: a trusted proxy's header did not arrive within `proxyHeaderTimeout`.
 * - `proxy_untrusted`: with `proxyHeader: true`, the peer is not a trusted proxy (`proxyHeaderFrom`).
 */
export type RejectReason =
  | 'queue_full'
  | 'wait_timeout'
  | 'shutdown'
  | 'silent_timeout'
  | 'source_limit'
  | 'silent_limit'
  | 'malformed'
  | 'denied'
  | 'rate_limited'
  | 'address_limit'
  | 'proxy_invalid'
  | 'proxy_timeout'
  | 'proxy_untrusted';

/**
 * How a transport handshake failed: `timeout` (`handshakeTimeout` passed), `stalled` (every
 * handshake slot was taken, a ClientHello was waiting, and this handshake had waited longest for
 * its peer — over a fifth of `handshakeTimeout`), or `error`.
 */
export type HandshakeFailure = 'timeout' | 'stalled' | 'error';

/** Counters and gauges of an acceptor pool. */
export interface AcceptorPoolStats {
  /** Sockets accepted since the listener started. */
  readonly accepted: number;
  /** Sockets whose peer has not yet sent its first message (they hold no slot). */
  readonly silent: number;
  /** Handshakes running now. */
  readonly handshaking: number;
  /** Sockets waiting, paused, for a slot. */
  readonly waiting: number;
  /** Connections counting against `maxConnections` (excludes handshakes and removed ones). */
  readonly counted: number;
  /** Sockets closed unserved, by reason. */
  readonly rejected: Readonly<Record<RejectReason, number>>;
  /** Sockets whose peer closed them before sending its first message. */
  readonly gaveUp: number;
  /** Failed handshakes, by kind. */
  readonly handshakeFailures: Readonly<Record<HandshakeFailure, number>>;
}
