import type { FramingOption } from './framing/framer.js';
import type { SourcePrefix } from './limits/source-key.js';
import type { AccessRule } from './limits/access-rules.js';
import type { RateLimit } from './limits/token-bucket.js';
import type { Protocol } from './protocol.js';
import type { Transport } from './transport.js';
import type { TcpTransportOptions } from './transports/tcp-options.js';
import type { TlsTransportOptions } from './transports/tls.js';


/**
 * Everything `startListener` accepts: the {@link ListenerSettings} and the protocol with its
 * options. Only `name` and `protocol` are required — and `protocolOptions` when the protocol's
 * class or factory takes options that cannot be `undefined`. `O` is the protocol's options type,
 * `State` its per-connection state (`Connection.data`); both are inferred from `protocol`.
 */
export type ListenerOptions<O = unknown, State = unknown> = ListenerSettings & ProtocolSettings<O, State>;

/**
 * The protocol and its options. `protocolOptions` is optional when the protocol takes none (or
 * accepts `undefined`), required otherwise: `startListener({ protocol: Greeter })` with a
 * `Greeter` whose constructor needs `{ greeting: string }` does not type-check.
 */
export type ProtocolSettings<O, State> = undefined extends O
  ? {
      /** The protocol handler: an object, a class, or a factory (see {@link Protocol}). */
      protocol: Protocol<O, State>;
      /** Passed to class constructors and factories; replace at run time with `setProtocolOptions`. */
      protocolOptions?: O;
    }
  : {
      /** The protocol handler: an object, a class, or a factory (see {@link Protocol}). */
      protocol: Protocol<O, State>;
      /** Passed to class constructors and factories; replace at run time with `setProtocolOptions`. */
      protocolOptions: O;
    };

/**
 * Every listener option but the protocol and its options. Only `name` is required; every default
 * is listed here and in the listeners guide.
 */
export interface ListenerSettings {
  /** Unique name of the listener in this process (Ranch's `Ref`). */
  name: string;
  /** `'tcp'` (default), `'tls'`, or any object implementing {@link Transport}. */
  transport?: 'tcp' | 'tls' | Transport;
  /** Options of the `'tcp'` or `'tls'` transport. Not allowed with a transport object. */
  transportOptions?: TcpTransportOptions | TlsTransportOptions;
  /** How bytes are split into frames for `onFrame`. Default `'raw'` (one frame per chunk read). */
  framing?: FramingOption;
  /**
   * Most connections at once, counting handshakes in progress. Sockets beyond it wait in the wait
   * queue (TCP sockets unread; TLS sockets read only to notice a peer that leaves or sends too much).
   * `Infinity` for no limit. Default 1024 (as Ranch).
   */
  maxConnections?: number;
  /**
   * Most transport handshakes in progress at once, per listener and process: handshakes that have
   * started (for TLS: the ClientHello was handed to OpenSSL, which answered it) and wait for their
   * peer. A bound on memory, not on CPU (see `handshakeBatch` for that): a handshake waiting for a
   * far-away or slow peer costs no CPU. When every slot is taken and a ClientHello waits, the
   * handshake that has waited longest for its peer is closed if that is over a fifth of
   * `handshakeTimeout` (`handshakeFailures.stalled`); only when this, not `maxConnections`, is the
   * limit reached. Default 8192: ~53 KB each, ~430 MB per listener and process if all are taken.
   * Filling them within `handshakeTimeout` takes about as many ClientHellos a second as one core
   * answers (measured here), so devices that take seconds to answer the ServerHello are served at
   * the CPU's rate instead of being closed as stalled; a peer sending that many from many addresses
   * can pin that memory. See docs/limits.md.
   */
  maxHandshakes?: number;
  /**
   * Most handshakes started in one turn of the event loop, per listener. Starting a TLS handshake
   * whose ClientHello has arrived is its CPU-heavy step (about half a millisecond here), so this
   * bounds how long the loop is away from the I/O of live connections and of handshakes finishing.
   * Default 8.
   */
  handshakeBatch?: number;
  /** Longest a transport handshake may take once started, in ms, before the socket is closed. Default 5000. */
  handshakeTimeout?: number;
  /**
   * Admit a socket only once its peer has sent its first message (TLS: the complete first record,
   * the ClientHello). Until then the socket is *silent*: corral reads it, but it holds no slot and
   * counts against none of `maxHandshakes`, `maxConnections` or `maxWaiting`, so peers that connect
   * and say nothing cannot keep real clients out. Default: `true` for TLS (a TLS client always
   * speaks first), `false` for TCP and Unix sockets (with a protocol in which the server speaks
   * first, a client-first listener would wait for ever: turn it on only when your clients speak
   * first).
   */
  clientFirst?: boolean;
  /**
   * Longest a socket may stay silent (see `clientFirst`), in ms, before it is closed. Default
   * 10000. Each socket's deadline is drawn at random from the last quarter of it, so that sockets
   * opened together are not closed (and reopened) together.
   */
  silentTimeout?: number;
  /**
   * Most silent sockets per listener and process; over it, the one silent longest is closed
   * (`rejected.silent_limit`). Default 8192.
   */
  maxSilent?: number;
  /**
   * Most silent sockets from one source (one IPv4 address, one IPv6 /64: see `sourcePrefix`), per
   * listener and process; over it, that source's oldest silent socket is closed
   * (`rejected.source_limit`). A source needs about its connect rate times the time its clients
   * take to send their first message: 1,024 covers 3,400 connects a second from behind one NAT at
   * 300 ms, or a busy load client. `Infinity` for none. Default 1024.
   */
  maxSilentPerSource?: number;
  /** How peer addresses are grouped into sources for per-source bounds. Default `{ ipv4: 32, ipv6: 64 }`. */
  sourcePrefix?: Partial<SourcePrefix>;
  /**
   * Read a PROXY protocol header (v1 or v2, as HAProxy's `send-proxy`/`send-proxy-v2` send it)
   * before anything else on connections from the peers in {@link ListenerSettings.proxyHeaderFrom}:
   * the client it names becomes `conn.remote`, and every per-source rule (`access`,
   * `connectionRatePerSource`, `maxConnectionsPerAddress`, `maxSilentPerSource`) and every event
   * use it. `true`: those peers must send one (a connection without is closed, `proxy_invalid`),
   * and any other peer is refused (`proxy_untrusted`). `'optional'`: those peers may send one; other
   * peers connect directly and a header from them is not read (it fails their handshake). The
   * proxy's own address is exempt from per-source rules. Default `false`. See docs/edge.md.
   */
  proxyHeader?: boolean | 'optional';
  /**
   * The peers whose PROXY headers are believed: IPv4/IPv6 CIDRs or addresses of your load
   * balancers. Required with `proxyHeader` — a header from anyone else could claim any address.
   */
  proxyHeaderFrom?: readonly string[];
  /** Longest wait for a trusted peer's PROXY header, in ms, before the socket is closed (`proxy_timeout`). Default 3000. */
  proxyHeaderTimeout?: number;
  /**
   * Ordered allow/deny rules over client addresses, first match wins, no match allows:
   * `['allow 10.0.0.0/8', 'deny all']`. Checked at accept (after the PROXY header), before any
   * byte is read; a denied socket is closed (`denied`). Replace at run time with
   * `listener.setAccessRules()`. Default: none.
   */
  access?: readonly AccessRule[];
  /**
   * Most handshakes (or hand-overs to a worker) started per second over the listener (over a pool:
   * in total), with a burst: sockets over the rate wait their turn in the wait queue (bounded by `waitTimeout`,
   * `maxWaiting`) instead of being closed. Default: none. See docs/edge.md.
   */
  connectionRate?: RateLimit;
  /**
   * Most connects per second from one source (IPv4 address, IPv6 prefix), with a burst: a socket
   * over it is closed at once (`rate_limited`), before any handshake. Default: none.
   */
  connectionRatePerSource?: RateLimit;
  /**
   * Most sockets one source (IPv4 address, IPv6 prefix; see `sourcePrefix`) holds at once, from
   * admission until its connection closes or is removed from the count; one more is closed
   * (`address_limit`). `Infinity` for none. Default `Infinity`.
   */
  maxConnectionsPerAddress?: number;
  /**
   * Alarms on the number of live connections (Ranch's `alarms`): each fires its `callback`, the
   * listener's `alarm` event and the `corral:listener:alarm` channel when the count reaches its
   * `threshold`, at most once per `cooldown`. Over a pool, the primary watches the total.
   */
  alarms?: Readonly<Record<string, ConnectionAlarm>>;
  /**
   * Most sockets whose first message has arrived waiting for a handshake slot, per listener and
   * process; what happens to one more is `overflow`'s choice. Default 16384: a burst of devices
   * that the server can still serve within their deadline (8,000 at once, ~1,600 handshakes a
   * second, a 5 s deadline) must not overflow it. Each waiting socket holds a file descriptor.
   */
  maxWaiting?: number;
  /** Longest a socket may wait for a slot, in ms, before it is closed. Default 5000. */
  waitTimeout?: number;
  /** Order in which waiting sockets are served. Default `'adaptive'`. */
  admission?: AdmissionPolicy;
  /** With `admission: 'adaptive'`: the queueing delay, in ms, past which newest-first applies. Default 100. */
  adaptiveTarget?: number;
  /**
   * What happens to connects while the wait queue is full. `'refuse'` (default): the listening socket
   * is closed at the first socket that finds the queue full and reopened once the queue is down to
   * three quarters of `maxWaiting` (or, with `maxWaiting: 0`, once a slot is free); meanwhile the
   * kernel refuses connects before a TLS byte is spent on either side — or, for a worker sharing
   * the primary's socket (`distribution: 'shared'`), they wait in the backlog; with
   * `distribution: 'primary'` the primary's socket is never closed (its wait queue is the whole
   * pool's): sockets beyond are closed as with `'close'`, and `info().refusing` stays false. `'close'`: every
   * such socket is accepted and closed (`rejected.queue_full`). `'drop-oldest'`: the socket that
   * has waited longest is closed (`rejected.queue_full`) to make room for the new one, which is the
   * one a newest-first queue serves next. See docs/limits.md.
   */
  overflow?: Overflow;
  /**
   * How long a graceful close may take, in ms: the drain deadline of `stop()` and the flush bound of
   * `close()` and of framing errors. Default 5000.
   */
  shutdownTimeout?: number;
  /**
   * How many connections per second a drain asks to shut down (with jitter), so that a deploy does
   * not make every client reconnect at once. The drain deadline is `timeout` plus n ÷ `drainRate`.
   * Applies to `drain`, `stop` and rolling restarts of workers. `Infinity`: all at once. Default 1000.
   */
  drainRate?: number;
  /** Idle timeout of every connection, in ms (`0`: none). Handlers can change it per connection. Default 0. */
  idleTimeout?: number;
  /** Most bytes queued for one peer before its connection is closed (`send_buffer_full`). Default 1 MiB. */
  maxSendBuffer?: number;
  /** What a handler crash does to its connection. Default `'temporary'`. */
  restart?: RestartStrategy;
  /** With `restart: 'transient'`: restarts allowed within `period` ms on one connection. Default 3. */
  maxRestarts?: number;
  /** With `restart: 'transient'`: the restart-intensity window in ms. Default 5000. */
  period?: number;
  /**
   * Run the listener over this many worker processes (`'auto'`: enough for the cores and for
   * `maxConnections` under the open-file limit). The entry script is re-run in each worker, where
   * the same `startListener` call joins the primary's listener. Default: no workers.
   */
  workers?: number | 'auto';
  /** How workers share the port. Default `'reuseport'` where supported (Node >= 22.12, Linux), else `'shared'`. */
  distribution?: Distribution;
  /** Supervision of worker processes: OTP restart intensity and restart backoff. */
  workerRestarts?: WorkerRestartOptions;
  /**
   * With workers and TLS, when `transportOptions.ticketKeys` is not given: every this many ms, give
   * new tickets a fresh key (`0`: never). Tickets made under the key before it still resume, and are
   * renewed under the new one, until the next rotation; older ones get a full handshake. Default 0.
   */
  ticketKeyRotation?: number;
  /** The script workers run. Default: this process's entry script (`process.argv[1]`). */
  workerScript?: string;
  /** Arguments for the worker script. Default: this process's (`process.argv.slice(2)`). */
  workerArgs?: string[];
}

/** How the primary supervises worker processes. */
export interface WorkerRestartOptions {
  /** Restarts allowed within `period` ms; one more stops the listener with a fatal error. Default 5. */
  maxRestarts?: number;
  /** The restart-intensity window, in ms. Default 60000. */
  period?: number;
  /** Delay before the first restart, doubled for each further restart in the window. Default 100 ms. */
  initialDelay?: number;
  /** Longest restart delay, in ms. Default 5000. */
  maxDelay?: number;
}

/**
 * In which order waiting sockets get a handshake slot.
 *
 * - `fifo`: oldest first. Fair, but after a stampede it spends every slot on the sockets most
 *   likely to have been given up on by their clients.
 * - `lifo`: newest first. The socket served is the one whose client is most likely still waiting;
 *   the oldest wait until `waitTimeout` closes them.
 * - `adaptive`: oldest first while the queue is short-lived (its oldest socket has waited less than
 *   `adaptiveTarget` ms), newest first once a standing queue has formed. The default.
 */
export type AdmissionPolicy = 'fifo' | 'lifo' | 'adaptive';

/** What a listener does with connects while its wait queue is full: see `ListenerOptions.overflow`. */
export type Overflow = 'refuse' | 'close' | 'drop-oldest';

/**
 * What happens to a connection whose handler crashed (a hook threw or rejected).
 *
 * - `temporary` (default, as in Ranch): the connection is closed.
 * - `transient`: after a crash in `onReady`, `onFrame` or `onIdle`, a fresh handler is created for
 *   the same connection (a new instance for classes and factories; `conn.data` is reset for a shared
 *   object) and runs `onReady` with `conn.restarts` incremented, then the next frame; the frame being
 *   handled when it crashed is dropped. After `maxRestarts` restarts within `period` ms, or after a
 *   crash in any other hook, the connection is closed.
 */
export type RestartStrategy = 'temporary' | 'transient';

/**
 * How worker processes share one port.
 *
 * - `reuseport`: every worker opens its own listening socket with `SO_REUSEPORT` and the kernel
 *   spreads connections evenly; nothing passes through the primary. Needs Node >= 22.12 on Linux.
 *   A worker that closes its socket (rolling restart) resets the connections still queued on it
 *   unless `net.ipv4.tcp_migrate_req` is 1.
 * - `shared`: the primary binds one socket and hands it to every worker; all accept from it. A
 *   worker at its share of `maxConnections` closes its copy and sleeps while the primary keeps the
 *   socket and its backlog: connects wait in the kernel instead of being accepted and held.
 *   The kernel spreads connections unevenly over workers.
 * - `primary`: the primary accepts and passes each socket, before any byte is read, to the worker
 *   with the fewest connections. Exact `maxConnections` and even spreading, at the cost of an IPC
 *   hand-off per connection.
 */
export type Distribution = 'reuseport' | 'shared' | 'primary';

/** One alarm of `ListenerSettings.alarms`. */
export interface ConnectionAlarm {
  /** Fire when live connections reach this many. */
  readonly threshold: number;
  /** Fire again only after this many ms. Default 5000. */
  readonly cooldown?: number;
  /** Called when it fires (a throw is ignored: the `alarm` event and channel still go out). */
  readonly callback?: (event: AlarmEvent) => void;
}

/** What an alarm says when it fires. */
export interface AlarmEvent {
  /** The listener. */
  readonly listener: string;
  /** The alarm's name (its key in `alarms`). */
  readonly name: string;
  /** The alarm's threshold. */
  readonly threshold: number;
  /** Live connections when it fired. */
  readonly connections: number;
}
