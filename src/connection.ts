import type { ProxyHeader } from './proxy-header/header.js';
import type { SocketAddress, TlsInfo } from './transport.js';

/**
 * One live connection, as a protocol handler sees it. Handed to every `ProtocolHandler` hook.
 * `State` is the type of {@link Connection.data}, the handler's own per-connection state.
 */
export interface Connection<State = unknown> {
  /** Unique within the listener (and, with workers, across its processes). */
  readonly id: string;
  /** Name of the listener that accepted it. */
  readonly listener: string;
  /**
   * The local end. Read from the socket on first use and kept (a syscall that most connections
   * never need; Ranch's `sockname` is a call too). Once the socket has closed — in `onClose`,
   * whatever closed it — an address never read before can no longer be read and is
   * `{ family: 'unknown' }` (Node's `socket.localAddress` is `undefined` then). Read it in
   * `onReady` if `onClose` will want it.
   */
  readonly local: SocketAddress;
  /**
   * The client's end: the peer's, read on first use and kept, like `local` (Ranch's `peername`) —
   * or, when the connection began with a PROXY header from a trusted proxy (`proxyHeader`), the
   * client address and port the header names.
   */
  readonly remote: SocketAddress;
  /**
   * The PROXY header the connection began with (`proxyHeader`), and the proxy it came through;
   * `null` when it began without one.
   */
  readonly proxy: ConnectionProxy | null;
  /** TLS details (peer certificate, SNI servername, ALPN protocol), or `null` on plain transports. */
  readonly tls: TlsInfo | null;
  /** When the handshake completed (milliseconds since the epoch). */
  readonly openedAt: number;
  /** How many times a transient handler was restarted on this connection. */
  readonly restarts: number;
  /** Whether `close()` or `destroy()` has been called or the connection has ended. */
  readonly closed: boolean;
  /** Whether the connection still counts against `maxConnections`. */
  readonly counted: boolean;
  /** Bytes queued for the peer and not yet handed to the kernel. */
  readonly bufferedAmount: number;
  /** Whether the peer has ended its side (it sends no more; replies still reach it). */
  readonly peerEnded: boolean;
  /**
   * The handler's own per-connection state, `undefined` until the handler sets it (useful with a
   * shared handler object, typed through `ProtocolHandler<State>`). A transient restart starts
   * the fresh handler with `data` reset to `undefined`: state that survives a crash may be what
   * caused it.
   */
  data: State | undefined;
  /**
   * Small, serializable facts about the connection (a device id, a user name) that
   * `listener.connections()` reports, from every worker process. Keep it to a few entries.
   */
  readonly meta: Record<string, ConnectionMetaValue>;

  /**
   * Queue bytes for the peer. Returns `false` when the send buffer is over its high-water mark:
   * wait for {@link Connection.drained} before sending more. A handler that keeps sending past
   * `maxSendBuffer` gets its connection closed (reason `send_buffer_full`). Returns `false` and
   * drops the data once the connection is closed.
   */
  send(data: string | Uint8Array): boolean;
  /** Like {@link Connection.send}, wrapping `payload` with the listener's framing (`line` adds the line ending). */
  sendFrame(payload: string | Uint8Array): boolean;
  /** Resolves when the send buffer has drained (or the connection has closed). */
  drained(): Promise<void>;
  /**
   * Close gracefully: stop delivering frames, flush what was sent, end the stream. The socket is
   * destroyed if the flush takes longer than the listener's `shutdownTimeout`. Resolves once closed.
   * Sends after this return `false`.
   */
  close(): Promise<void>;
  /** Close at once, dropping anything unsent. */
  destroy(error?: Error): void;
  /** Stop reading from the peer (TCP pushes back). */
  pause(): void;
  /** Resume reading after {@link Connection.pause}. */
  resume(): void;
  /**
   * Set the idle timeout in milliseconds (`0` turns it off). By default any byte read or sent
   * restarts it; with `{ resetOn: 'read' }` only bytes from the peer do ("a peer silent for `ms`"),
   * so a connection the handler keeps writing to still times out when the peer has gone quiet.
   */
  setIdleTimeout(ms: number, options?: { resetOn?: 'io' | 'read' }): void;
  /** Turn TCP keep-alive on or off, where the transport has it. */
  setKeepAlive(enable: boolean, initialDelayMs?: number): void;
  /** Turn Nagle's algorithm off (`true`) or on, where the transport has it. */
  setNoDelay(noDelay?: boolean): void;
  /**
   * Stop counting this connection against `maxConnections` (Ranch's `remove_connection`), e.g. for
   * a long-lived, mostly idle subscription that should not block new clients. Idempotent.
   */
  removeFromCount(): void;
}

/** A value in {@link Connection.meta}. */
export type ConnectionMetaValue = string | number | boolean | null;

/** How a connection reached corral through a proxy that sent a PROXY header. */
export interface ConnectionProxy {
  /** The header as parsed (its `raw` bytes included). */
  readonly header: ProxyHeader;
  /** The proxy's end of the socket (the load balancer). */
  readonly peer: SocketAddress;
}

/**
 * A snapshot of one connection, as `listener.connections()` returns it.
 */
export interface ConnectionInfo {
  /** The connection's id: unique within the listener, across its worker processes too. */
  readonly id: string;
  /** Name of the listener that accepted it. */
  readonly listener: string;
  /** The local end ({@link Connection.local}); `{ family: 'unknown' }` if never read before the socket closed. */
  readonly local: SocketAddress;
  /** The client's end ({@link Connection.remote}); `{ family: 'unknown' }` if never read before the socket closed. */
  readonly remote: SocketAddress;
  /** The proxy's end, when the connection began with a PROXY header ({@link Connection.proxy}); else `null`. */
  readonly proxyPeer: SocketAddress | null;
  /** What the TLS handshake negotiated, or `null` on plain transports. A subset of {@link TlsInfo}. */
  readonly tls: {
    /** Negotiated protocol version, e.g. `'TLSv1.3'`. */
    readonly protocol: string | null;
    /** The SNI server name the client asked for, or `null` if it sent none. */
    readonly servername: string | null;
    /** The ALPN protocol agreed on, or `null` if none was. */
    readonly alpnProtocol: string | null;
  } | null;
  /** When the handshake completed, in milliseconds since the epoch. */
  readonly openedAt: number;
  /** Bytes received from the peer and passed to the framing so far (the plaintext, for TLS). */
  readonly bytesRead: number;
  /**
   * Bytes queued for the peer with `send`/`sendFrame` so far (the plaintext, for TLS), whether or
   * not they have reached the kernel yet. Sends refused once the connection closed are not counted.
   */
  readonly bytesWritten: number;
  /** Whether the connection still counts against `maxConnections` (`false` after `removeFromCount()`). */
  readonly counted: boolean;
  /** How many times a transient handler was restarted on this connection. */
  readonly restarts: number;
  /** The id of the process that holds the connection (a worker's, for a worker pool). */
  readonly pid: number;
  /** A copy of {@link Connection.meta}. */
  readonly meta: Readonly<Record<string, ConnectionMetaValue>>;
}

