import type { Duplex } from 'node:stream';

/**
 * Where a listener or a connection end is: an IP address and port, or a Unix socket path.
 */
export type SocketAddress =
  | {
      /** The IP version of `address`. */
      readonly family: 'IPv4' | 'IPv6';
      /** The IP address as Node prints it, e.g. `'127.0.0.1'` or `'::1'`. */
      readonly address: string;
      /** The TCP port, 0 to 65535. */
      readonly port: number;
    }
  | {
      /** A Unix domain socket (the TCP transport's `path` option). */
      readonly family: 'unix';
      /** The socket's path (the listener's, for the local end); `''` for a peer, which has no address. */
      readonly path: string;
    }
  | {
      /** An endpoint of a custom transport that uses no socket, e.g. in-memory streams in tests. */
      readonly family: 'memory';
      /** The transport's own name for the endpoint. */
      readonly address: string;
    }
  /** The socket closed before its address was first read (addresses are read lazily, as in Ranch). */
  | {
      /** No address is known: the socket closed before it was first read. */
      readonly family: 'unknown';
    };

/**
 * What a secure transport learned during its handshake. Absent on plain transports.
 */
export interface TlsInfo {
  /** Negotiated protocol version, e.g. `'TLSv1.3'`. */
  readonly protocol: string | null;
  /** Negotiated cipher suite name. */
  readonly cipher: string | null;
  /** The SNI server name the client asked for, if any. */
  readonly servername: string | null;
  /** The ALPN protocol agreed on, if any. */
  readonly alpnProtocol: string | null;
  /** Whether the peer certificate was verified against the configured CAs. */
  readonly authorized: boolean;
  /** Why the peer certificate was not verified, when `authorized` is false and a certificate was sent. */
  readonly authorizationError: string | null;
  /** Whether the session was resumed (ticket or session id) rather than fully negotiated. */
  readonly resumed: boolean;
  /**
   * The peer certificate as Node describes it (`tls.PeerCertificate`), or `null` when the peer
   * sent none. Typed loosely so that the core does not depend on `node:tls`.
   */
  readonly peerCertificate: Readonly<Record<string, unknown>> | null;
}

/**
 * A socket the transport has accepted and not yet handed over. The core holds it paused
 * (nothing is read from it, no handshake starts) until the acceptor pool admits it.
 */
export interface AcceptedSocket {
  /** Peer address as seen at accept time, when known. */
  readonly remoteAddress: string | undefined;
  /** Peer port as seen at accept time, when known. */
  readonly remotePort: number | undefined;
  /** Close the socket at once. Safe to call more than once, before, during or after the handshake. */
  destroy(): void;
  /**
   * Whether the socket is closed already (its peer reset it, or it was destroyed), if the
   * transport can tell: a `net.Socket` is destroyed as soon as a read fails, a turn or more before
   * its `'close'`. The acceptor pool looks at it before a handshake or a hand-over.
   */
  readonly destroyed?: boolean;
}

/**
 * A connection once its transport handshake has completed: a byte stream plus what is known
 * about both ends. The stream must be in paused mode; the core starts reading it.
 */
export interface TransportConnection {
  /** The byte stream. Writes go to the peer; reads come from it. */
  readonly stream: Duplex;
  /** The local end. */
  readonly local: SocketAddress;
  /** The peer end. */
  readonly remote: SocketAddress;
  /** TLS details, for secure transports. */
  readonly tls: TlsInfo | null;
  /** Turn TCP keep-alive on or off, where the transport has it. */
  setKeepAlive?(enable: boolean, initialDelayMs?: number): void;
  /** Turn Nagle's algorithm off or on, where the transport has it. */
  setNoDelay?(noDelay: boolean): void;
}

/**
 * A listening endpoint opened by a transport.
 */
export interface TransportServer {
  /** The bound address (with the real port when port 0 was asked for). */
  address(): SocketAddress;
  /** Stop accepting and release the listening socket. Accepted sockets are not touched. */
  close(): Promise<void>;
}

/**
 * Callbacks a transport calls while it listens.
 */
export interface TransportListenHandlers {
  /** A new socket was accepted. It must not be read from until {@link Transport.handshake}. */
  onSocket(socket: AcceptedSocket): void;
  /** A non-fatal error on the listening socket (for example `EMFILE` while accepting). */
  onError(error: Error): void;
}

/** An accepted socket ready to leave this process: see {@link Transport.detach}. */
export interface DetachedSocket {
  /** The socket object to send with the IPC message (its handle goes along). */
  readonly raw: object;
  /** Bytes read from the peer and not yet given to corral, to pass on after what corral read; `undefined` if none. */
  readonly rest: Buffer | undefined;
}

/**
 * The behaviour a transport implements (Ranch's `ranch_transport`): open a listening socket,
 * hand over accepted sockets without reading them, and run the handshake on request.
 *
 * corral ships `tcp` (also Unix sockets) and `tls`; any object with this shape plugs in
 * unchanged. Only transports import `node:net` or `node:tls`.
 */
export interface Transport {
  /** A short name for logs and `info()`, e.g. `'tcp'`. */
  readonly name: string;
  /** Whether connections carry {@link TlsInfo}. */
  readonly secure: boolean;
  /**
   * Open the listening socket. Rejects with an error that names the address when it cannot bind
   * (`EADDRINUSE`, `EACCES`, ...).
   */
  listen(handlers: TransportListenHandlers): Promise<TransportServer>;
  /**
   * Run the transport handshake on an accepted socket and resolve with the connection.
   * Must reject (never hang) if the socket is destroyed meanwhile: the core enforces
   * `handshakeTimeout` by calling {@link AcceptedSocket.destroy}.
   */
  handshake(socket: AcceptedSocket): Promise<TransportConnection> | TransportConnection;
  /**
   * Whether the client always speaks first on this transport (TLS: the ClientHello). It is the
   * default of the listener's `clientFirst` option: the acceptor pool then reads each socket's first
   * message before the socket takes any slot (see `ListenerOptions.clientFirst`).
   */
  readonly clientFirst?: boolean;
  /**
   * How long the client's first message is, judged from the bytes read so far: its total length in
   * bytes once `head` says it, `0` while `head` is too short to tell, `-1` when the bytes cannot
   * start a valid first message (the socket is then closed as `malformed`). Without it, any byte
   * completes the first message.
   */
  firstMessageLength?(head: Buffer): number;
  /**
   * Whether a peer that ends its side before the handshake has left for good (TLS: a client never
   * half-closes before its handshake, so an early end is a client that gave up, e.g. at its
   * deadline). Then corral keeps reading a socket while it waits for a handshake slot, and drops it
   * the moment its peer leaves instead of spending a handshake on it. Leave it unset where a client
   * may send a request and half-close at once (a plain TCP protocol): such a socket is then not
   * read while it waits.
   */
  readonly earlyEndIsDeparture?: boolean;
  /**
   * Read an accepted socket before its handshake: call `onData` with each chunk the peer sends and
   * `onEnd` once if the peer ends or resets the socket, until {@link Transport.unread} (or
   * `destroy`). Needed for client-first admission.
   */
  readFirstBytes?(socket: AcceptedSocket, onData: (chunk: Buffer) => void, onEnd: () => void): void;
  /**
   * Stop reading (after {@link Transport.readFirstBytes}, or on a socket adopted from another
   * process) and put `head` back, so that the handshake reads it first.
   */
  unread?(socket: AcceptedSocket, head: Buffer): void;
  /**
   * Replace options that apply to new connections (for TLS: certificates, SNI contexts).
   * Optional; transports without run-time options omit it.
   */
  update?(options: Readonly<Record<string, unknown>>): void;

  // ---- process sharing, used by worker pools (`workers` option); all optional -------------------

  /**
   * Bind the listening socket without watching it, for a primary process to hand to workers
   * (distribution `'shared'`). The primary never accepts on it; it only keeps the kernel socket
   * and its backlog alive while workers come and go.
   */
  createSharedHandle?(): Promise<SharedListenHandle>;
  /**
   * Check that no socket holds the port now, by binding it without `SO_REUSEPORT` and releasing it
   * at once: before the workers of distribution `'reuseport'` bind it (at start and resume), and
   * before `acceptors` > 1 sockets do, each with `SO_REUSEPORT`. On Linux a socket with
   * `SO_REUSEPORT` joins any other such socket of the same user on its port: without this check a
   * second copy of a service would share the first one's port, and its connections, silently.
   * Rejects with a `ListenError` (`CORRAL_ADDRESS_IN_USE`) if it is held. Not checked: a port of 0
   * (picked by the kernel), and a transport with `reusePort: true` (sharing asked for). A check,
   * not a lock: two copies started at the same moment can both pass it.
   */
  claimPort?(): Promise<void>;
  /** Listen on a handle received from the primary (distribution `'shared'`). */
  listenOnHandle?(handle: object, handlers: TransportListenHandlers): Promise<TransportServer>;
  /**
   * Hand an accepted socket over to another process (distribution `'primary'`): `raw` is the
   * socket object to send. Reads stop at once, so what the peer sends next stays in the kernel for
   * the new owner; `rest` is what had been read meanwhile and not yet given to corral (it goes
   * along after what corral read).
   */
  detach?(socket: AcceptedSocket): DetachedSocket;
  /** Take over a raw socket received from another process (distribution `'primary'`). */
  adopt?(socket: object): AcceptedSocket;
}

/**
 * A bound listening socket that a primary process holds for its workers.
 */
export interface SharedListenHandle {
  /** The raw handle, sent to workers over IPC. */
  readonly handle: object;
  /** The bound address. */
  readonly address: SocketAddress;
  /** Release the primary's copy of the socket. */
  close(): void;
}
