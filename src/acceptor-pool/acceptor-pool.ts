import { CorralError } from '../errors.js';
import type { AcceptorPoolStats, HandshakeFailure, RejectReason } from './acceptor-pool-stats.js';
import type { AdmissionPolicy, Overflow } from '../options.js';
import type { AccessRules } from '../limits/access-rules.js';
import { SourceGate } from '../limits/source-gate.js';
import type { SourcePrefix } from '../limits/source-key.js';
import { type RateLimit, TokenBucket } from '../limits/token-bucket.js';
import { parseProxyHeader } from '../proxy-header/parse.js';
import type { ProxyHeader } from '../proxy-header/header.js';
import type { AcceptedSocket, Transport, TransportConnection } from '../transport.js';
import { Lease } from './lease.js';
import { type ProxyHeaderSettings, ProxyWaits } from './proxy-waits.js';
import { type SilentCloseReason, SilentSockets } from './silent-sockets.js';
import { WaitQueue } from './wait-queue.js';
import { isThenable } from '../is-thenable.js';


/** The acceptor pool's share of the resolved listener options. @internal */
export interface AcceptorPoolOptions {
  readonly maxConnections: number;
  readonly maxHandshakes: number;
  readonly handshakeBatch: number;
  readonly handshakeTimeout: number;
  readonly maxWaiting: number;
  readonly waitTimeout: number;
  readonly admission: AdmissionPolicy;
  readonly adaptiveTarget: number;
  readonly overflow: Overflow;
  readonly clientFirst: boolean;
  readonly silentTimeout: number;
  readonly maxSilent: number;
  readonly maxSilentPerSource: number;
  readonly sourcePrefix: SourcePrefix;
  /** Read a PROXY protocol header first, from trusted peers; `undefined`: never. */
  readonly proxyHeader: ProxyHeaderSettings | undefined;
  /** Ordered allow/deny rules over client addresses; `undefined`: allow all. */
  readonly access: AccessRules | undefined;
  /** Handshakes started per second, over the listener (sockets over it wait their turn). */
  readonly connectionRate: RateLimit | undefined;
  /** Connects per second per source (sockets over it are closed, `rate_limited`). */
  readonly connectionRatePerSource: RateLimit | undefined;
  /** Most sockets one source holds at once (`Infinity`: no cap). */
  readonly maxConnectionsPerAddress: number;
}

/** A client's address as corral sees it: the socket's peer, or the one its PROXY header names. @internal */
export interface ClientAddress {
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;
}

/**
 * The last step of admission: run the transport handshake here, or pass the socket — still
 * unhandshaken, with the bytes read from it — to another process (a worker pool's `primary`
 * distribution). A dispatch returns `false` when no process could take the socket. @internal
 */
export type Handoff =
  | { readonly kind: 'handshake' }
  | {
      readonly kind: 'dispatch';
      dispatch(socket: AcceptedSocket, head: Buffer | undefined, lease: Lease, proxy: ProxyHeader | undefined): boolean;
    };

/** What the pool reports to its listener. @internal */
export interface AcceptorPoolEvents {
  /**
   * A handshake completed; `lease` holds its slot of `maxConnections` until released; `proxy` is
   * the PROXY header the connection began with, if any.
   */
  handshaken(conn: TransportConnection, lease: Lease, startedAt: number, proxy: ProxyHeader | undefined): void;
  handshakeFailed(socket: AcceptedSocket, kind: HandshakeFailure, error: Error): void;
  rejected(socket: AcceptedSocket, reason: RejectReason, detail?: string): void;
  /** A lease was released: a connection stopped counting against `maxConnections`. */
  released(): void;
  /** Any gauge changed (for `waitForConnections` and load reports). */
  changed(): void;
  /**
   * Whether a `rejected`/`handshakeFailed` report would carry the peer's address; if so the pool
   * reads it at accept, while it can still be read. (With client-first admission it always does.)
   */
  wantsPeerAddress(): boolean;
  /**
   * The wait queue overflowed (`true`: a socket found it full) or has room again (`false`: down to
   * three quarters of `maxWaiting`, or with `maxWaiting` 0 a slot is free). Called on each edge only.
   */
  overflowed(full: boolean): void;
}

/**
 * A socket on its way through the pool: silent, then waiting for a slot. A client-first socket is
 * read all along — for its first message while silent, and while it waits to learn whether its
 * peer gives up (a client past its deadline closes its end; the socket then leaves the queue
 * instead of costing a handshake).
 */
interface Ready {
  readonly socket: AcceptedSocket;
  /** The bytes read from it so far, to put back before its handshake. */
  head: Buffer | undefined;
  /** Where `head` grows once a second read arrives (doubling, so a trickle is copied O(n), not O(n²)). */
  store: Buffer | undefined;
  /** The length of its first message, once its first bytes tell (the store need not grow past it while silent). */
  need: number | undefined;
  /** The slot another process holds for it (distribution `primary`), released when it is done here. */
  readonly upstream: Lease | undefined;
  /** Still being read (until its handshake starts, or it sent more than a waiting socket may). */
  reading: boolean;
  /**
   * Where it is: waiting for its PROXY header, silent, arrived in this turn, in the wait queue, or
   * gone on (started, closed).
   */
  stage: 'proxy' | 'silent' | 'arrived' | 'queued' | 'done';
  /** The PROXY header it began with. */
  proxy: ProxyHeader | undefined;
}

const EMPTY = Buffer.alloc(0);

/** `admitClient`'s address when it is the socket's own peer, not yet read (a syscall). */
const OWN_ADDRESS = Symbol('own address');

/** Most bytes read from a socket before its handshake (its first message and what followed). */
const MAX_HEAD = 16 * 1024 + 5 + 4096;

/**
 * Add a read to what was read from a socket: the first read is kept as it is; later ones are
 * copied into a store that doubles when full, so a peer sending a byte at a time costs O(n)
 * copying, not a copy of everything so far per read.
 */
function append(ready: Ready, chunk: Buffer): Buffer {
  const head = ready.head;
  if (head === undefined || head.length === 0) {
    ready.head = chunk;
    return chunk;
  }
  const length = head.length + chunk.length;
  let store = ready.store;
  // `head` may be a view into the store (earlier appends) or not (the first read, or what
  // followed a PROXY header).
  const inStore = store !== undefined && head.buffer === store.buffer && head.byteOffset === store.byteOffset;
  if (!inStore || store!.length < length) {
    // Doubling, but never past the first message's length while it is incomplete, nor past
    // MAX_HEAD, unless this read itself goes past them.
    const cap = ready.need !== undefined && ready.need > length ? ready.need : MAX_HEAD;
    store = Buffer.allocUnsafe(Math.max(length, Math.min(2 * head.length, cap), 1024));
    head.copy(store, 0);
    ready.store = store;
  }
  chunk.copy(store!, head.length);
  ready.head = store!.subarray(0, length);
  return ready.head;
}

/** A running handshake. */
interface Handshake {
  readonly startedAt: number;
  readonly upstream: Lease | undefined;
  readonly proxy: ProxyHeader | undefined;
}

/**
 * The acceptor pool of one listener in one process (Ranch's acceptors and `max_connections`): the
 * one owner of admission. Every accepted socket goes forward through three stages and leaves each
 * either served or closed and counted:
 *
 * 1. **Silent** (client-first transports, e.g. TLS): corral reads the socket until the peer's first
 *    message is complete — for TLS the first record, the ClientHello — bounded by `silentTimeout`,
 *    `maxSilentPerSource` and `maxSilent` ({@link SilentSockets}). A silent socket holds no slot.
 * 2. **Waiting**: the socket, paused, with what it sent, waits in the bounded, policy-ordered
 *    {@link WaitQueue} (`maxWaiting`, `waitTimeout`, `admission`) for a slot.
 * 3. **Handshake**: a handshake starts when fewer than `maxHandshakes` run and handshakes plus
 *    counted connections are below `maxConnections`, and at most `handshakeBatch` start in one
 *    turn of the event loop. With the ClientHello already read, starting a TLS handshake *is* the
 *    CPU-heavy step (OpenSSL answers it within the same turn); the batch bounds how long the loop
 *    is away from the I/O of connections and of handshakes waiting for their peer.
 *    `maxHandshakes` bounds the handshakes past their ClientHello — waiting for the peer's second
 *    flight — by memory, and `handshakeTimeout` bounds each.
 *
 * A completed handshake gets a {@link Lease} on its slot of `maxConnections`; the connection
 * releases it, once, when it closes or leaves the count. @internal
 */
export class AcceptorPool {
  private limit: number;
  private readonly silent: SilentSockets | undefined;
  /** Sockets from a trusted proxy whose PROXY header is still on its way. */
  private readonly proxyWaits: ProxyWaits<Ready> | undefined;
  /** The per-source rules (access, rate, cap). */
  private readonly gate: SourceGate;
  /** The sources sockets hold a place of (`maxConnectionsPerAddress`), given back when each is done. */
  private readonly sources = new Map<AcceptedSocket, string>();
  /** The client address of sockets that began with a PROXY header naming one. */
  private readonly proxied = new WeakMap<AcceptedSocket, ClientAddress>();
  /** `connectionRate`: handshakes started per second. */
  private readonly rate: TokenBucket | undefined;
  private rateTimer: NodeJS.Timeout | undefined = undefined;
  private readonly queue: WaitQueue<Ready>;
  /** Handshakes running, oldest first. */
  private readonly inFlight = new Map<AcceptedSocket, Handshake>();
  private idleWaiters: (() => void)[] = [];
  private expiryTimer: NodeJS.Timeout | undefined = undefined;
  private closed = false;
  /** A socket found the queue full, and it has not had room since. */
  private overflowing = false;
  /** Handshakes started in this turn of the event loop, and the turn's end. */
  private startedThisTurn = 0;
  private turnEnd: NodeJS.Immediate | undefined = undefined;
  /**
   * Sockets whose first message arrived in this turn of the event loop, in order, and those of the
   * turn before (`ripe`). They join the wait queue (or start) at the end of the turn after the one
   * they arrived in, once another read of the socket has come in: a client that gave up while its
   * connect sat in the kernel's accept queue (its deadline ran, the server had not accepted yet)
   * has its ClientHello and its end waiting together, libuv delivers the end on the read after the
   * ClientHello's, and the socket is dropped instead of costing a handshake.
   */
  private arrived: Ready[] = [];
  private ripe: Ready[] = [];
  /** Of both, the ones still there (not gone). */
  private arrivedCount = 0;
  private accepted = 0;
  private leases = 0;
  private gaveUp = 0;
  private readonly rejected: Record<RejectReason, number> = {
    queue_full: 0,
    wait_timeout: 0,
    shutdown: 0,
    silent_timeout: 0,
    source_limit: 0,
    silent_limit: 0,
    malformed: 0,
    denied: 0,
    rate_limited: 0,
    address_limit: 0,
    proxy_invalid: 0,
    proxy_timeout: 0,
    proxy_untrusted: 0,
  };
  private readonly failures: Record<HandshakeFailure, number> = { timeout: 0, stalled: 0, error: 0 };
  private stallTimer: NodeJS.Timeout | undefined = undefined;
  /** Handshakes closed to make room (their failure is `stalled`). */
  private readonly stalled = new WeakSet<AcceptedSocket>();

  constructor(
    private readonly transport: Transport,
    private readonly options: AcceptorPoolOptions,
    private readonly handoff: Handoff,
    private readonly events: AcceptorPoolEvents,
  ) {
    this.limit = options.maxConnections;
    this.queue = new WaitQueue(options.maxWaiting, options.admission, options.adaptiveTarget);
    this.gate = new SourceGate(options);
    this.rate = options.connectionRate ? new TokenBucket(options.connectionRate, Date.now()) : undefined;
    if ((options.clientFirst || options.proxyHeader) && (transport.readFirstBytes === undefined || transport.unread === undefined)) {
      throw new CorralError('CORRAL_UNSUPPORTED', `transport ${transport.name} cannot read a socket's first bytes (clientFirst, proxyHeader)`);
    }
    if (options.proxyHeader) this.proxyWaits = new ProxyWaits(options.proxyHeader.timeout, (ready) => this.rejectReady(ready, 'proxy_timeout'));
    if (options.clientFirst) {
      this.silent = new SilentSockets(options, { closed: (socket, reason) => this.rejectClosed(socket, reason) });
    }
  }

  get maxConnections(): number {
    return this.limit;
  }

  /** Raising it serves waiting sockets at once; lowering it closes nothing. */
  set maxConnections(n: number) {
    this.limit = n;
    this.pump();
  }

  get stats(): AcceptorPoolStats {
    return {
      accepted: this.accepted,
      silent: (this.silent?.size ?? 0) + (this.proxyWaits?.size ?? 0),
      handshaking: this.inFlight.size,
      waiting: this.queue.length + this.arrivedCount,
      counted: this.leases,
      rejected: { ...this.rejected },
      gaveUp: this.gaveUp,
      handshakeFailures: { ...this.failures },
    };
  }

  /** Take a freshly accepted socket. */
  admit(socket: AcceptedSocket): void {
    this.accepted++;
    if (this.closed) {
      this.reject(socket, 'shutdown');
      return;
    }
    // Read the peer address while the socket is open: a net.Socket remembers it once read, but
    // one destroyed before it was read reports undefined, and `reject`/`handshakeError` events
    // (emitted after the socket is closed) would lose it. It costs a getpeername(2) per accept, so
    // only when someone listens for those events or a rule needs it.
    const proxy = this.options.proxyHeader;
    if (proxy !== undefined || this.gate.active || this.events.wantsPeerAddress()) {
      void socket.remoteAddress;
      void socket.remotePort;
    }
    const ready: Ready = { socket, head: undefined, store: undefined, need: undefined, upstream: undefined, reading: false, stage: 'queued', proxy: undefined };
    if (proxy !== undefined) {
      if (proxy.trusted.contains(socket.remoteAddress)) {
        // A load balancer: its header comes first, and names the client every rule is about.
        ready.stage = 'proxy';
        this.proxyWaits!.add(socket, ready, Date.now());
        if (this.proxyWaits!.size > this.options.maxSilent) {
          // Bounded as silent sockets are (and apart from them): the oldest goes.
          const oldest = this.proxyWaits!.oldest()!;
          this.proxyWaits!.remove(oldest.socket);
          this.rejectReady(oldest, 'silent_limit');
          if (oldest === ready) return;
        }
        this.read(ready);
        this.events.changed();
        return;
      }
      if (proxy.required) {
        // Anyone else could claim any address in a header: only trusted peers may send one.
        this.reject(socket, 'proxy_untrusted');
        return;
      }
    }
    this.admitClient(ready, OWN_ADDRESS);
  }

  /**
   * The client is known (`address`: the socket's own peer — read only if a rule needs it — or the
   * one its PROXY header named; with `exempt`, the proxy itself): apply the per-source rules, then
   * admit the socket to the silent stage, or to the queue.
   */
  private admitClient(ready: Ready, address: string | undefined | typeof OWN_ADDRESS, exempt = false): void {
    const { socket } = ready;
    if (!exempt) {
      const verdict = this.gate.admit(() => (address === OWN_ADDRESS ? socket.remoteAddress : address), Date.now());
      if ('refused' in verdict) {
        this.rejectReady(ready, verdict.refused);
        return;
      }
      if (verdict.source !== undefined) this.sources.set(socket, verdict.source);
    }
    if (this.silent !== undefined) {
      if (!this.silent.add(socket, Date.now(), exempt ? null : address === OWN_ADDRESS ? undefined : address)) return;
      ready.stage = 'silent';
      if (!ready.reading) this.read(ready);
      // Bytes that came with the PROXY header (the ClientHello, often): judge them now.
      if (ready.head !== undefined && ready.head.length > 0) this.onFirstMessageBytes(ready, ready.head);
      this.events.changed();
      return;
    }
    // Not client-first: what came after a PROXY header is put back before the handshake.
    this.stopReading(ready);
    this.enqueue(ready);
  }

  /** Start reading a socket before its handshake. */
  private read(ready: Ready): void {
    ready.reading = true;
    this.transport.readFirstBytes!(
      ready.socket,
      (chunk) => this.onBytes(ready, chunk),
      () => this.onPeerGone(ready),
    );
  }

  /** The client's address as corral sees it (from its PROXY header, when it sent one). */
  clientOf(socket: AcceptedSocket): ClientAddress {
    return this.proxied.get(socket) ?? socket;
  }

  /** Bytes from a socket being read: its PROXY header, its first message, or more while it waits. */
  private onBytes(ready: Ready, chunk: Buffer): void {
    const head = append(ready, chunk);
    if (ready.stage === 'proxy') {
      this.onProxyBytes(ready, head);
      return;
    }
    if (!this.silent?.has(ready.socket)) {
      // It waits for a slot, its first message complete.
      if (head.length > MAX_HEAD) this.overread(ready);
      return;
    }
    this.onFirstMessageBytes(ready, head);
  }

  /** Bytes of a socket from a trusted proxy, before its header is complete. */
  private onProxyBytes(ready: Ready, head: Buffer): void {
    const result = parseProxyHeader(head, { mode: this.options.proxyHeader!.required ? 'required' : 'optional' });
    if (result.status === 'incomplete') return;
    this.proxyWaits!.remove(ready.socket);
    if (result.status === 'invalid') {
      this.rejectReady(ready, 'proxy_invalid', `${result.reason}: ${result.message}`);
      return;
    }
    if (result.status === 'absent') {
      // 'optional': the trusted peer connected for itself (a health check, say); it is exempt.
      this.admitClient(ready, undefined, true);
      return;
    }
    const header = result.header;
    ready.proxy = header;
    ready.head = head.length > result.length ? head.subarray(result.length) : undefined;
    if (header.command === 'proxy' && (header.transport === 'tcp4' || header.transport === 'tcp6' || header.transport === 'udp4' || header.transport === 'udp6')) {
      this.proxied.set(ready.socket, { remoteAddress: header.source.address, remotePort: header.source.port });
      this.admitClient(ready, header.source.address);
    } else {
      // LOCAL (the proxy's own check), UNKNOWN or a Unix client: no client address, and the proxy is exempt.
      this.admitClient(ready, undefined, true);
    }
  }

  /** Bytes of a silent socket: is its first message complete? */
  private onFirstMessageBytes(ready: Ready, head: Buffer): void {
    const need = this.transport.firstMessageLength === undefined ? 1 : this.transport.firstMessageLength(head);
    if (need > 0) ready.need = need;
    if (need < 0) {
      this.silent!.close(ready.socket, 'malformed');
      return;
    }
    if (need === 0 || head.length < need) {
      if (head.length > MAX_HEAD) this.silent!.close(ready.socket, 'malformed');
      return;
    }
    if (head.length > MAX_HEAD && this.transport.earlyEndIsDeparture === true) {
      // The read that completed its first message brought far more (a read can be 64 KiB).
      this.silent!.close(ready.socket, 'malformed');
      return;
    }
    this.silent!.remove(ready.socket);
    // Where an early end is not a departure (a request followed by a half-close), stop reading now:
    // the end must reach the connection, not be taken for a client that left.
    if (this.transport.earlyEndIsDeparture !== true) {
      this.stopReading(ready);
      this.enqueue(ready);
      return;
    }
    ready.stage = 'arrived';
    this.arrived.push(ready);
    this.arrivedCount++;
    this.scheduleTurnEnd();
  }

  /**
   * A waiting socket sent more than {@link MAX_HEAD} in all. Where the peer waits for the server
   * after its first message (TLS: a client sends nothing after its ClientHello and a
   * ChangeCipherSpec until the ServerHello), that is not a client: close it (`malformed`), so what
   * a waiting socket holds stays bounded. Elsewhere stop reading it; the kernel keeps the rest, and
   * TCP pushes back.
   */
  private overread(ready: Ready): void {
    if (this.transport.earlyEndIsDeparture !== true) {
      this.stopReading(ready);
      return;
    }
    ready.reading = false;
    this.leaveWaiting(ready);
    ready.head = undefined;
    ready.store = undefined;
    this.rejectReady(ready, 'malformed');
    this.checkRoom();
    this.events.changed();
  }

  /** Take a waiting socket out of its stage: arrived this turn (counted), or in the queue. */
  private leaveWaiting(ready: Ready): void {
    if (ready.stage === 'arrived') this.arrivedCount--;
    else if (ready.stage === 'queued') this.queue.delete(ready);
  }

  /** The peer ended or reset a socket being read: it gave up, silent or waiting. */
  private onPeerGone(ready: Ready): void {
    ready.reading = false;
    switch (ready.stage) {
      case 'proxy':
        this.proxyWaits!.remove(ready.socket);
        break;
      case 'silent':
        // Not silent any more but still at this stage: corral closed it (timeout, a limit,
        // malformed bytes, shutdown) and counted it as rejected; its own close is not a departure.
        if (!this.silent!.remove(ready.socket)) {
          ready.stage = 'done';
          return;
        }
        break;
      case 'arrived':
      case 'queued':
        this.leaveWaiting(ready);
        break;
      case 'done':
        return;
    }
    ready.stage = 'done';
    ready.socket.destroy();
    this.releaseSource(ready.socket);
    // A socket the primary passed (distribution `primary`) holds its slot there until now.
    ready.upstream?.release();
    this.gaveUp++;
    this.events.changed();
  }

  /** Stop reading a socket; what was read stays in `ready.head`. */
  private stopReading(ready: Ready): void {
    if (!ready.reading) return;
    ready.reading = false;
    this.transport.unread!(ready.socket, EMPTY);
  }

  /**
   * Take a socket that another process accepted, read the first message of (`head`) and holds a
   * slot for (`upstream`): a worker of the `primary` distribution. It goes straight to the wait
   * queue; `upstream` is released once, when the socket is rejected, its handshake fails, or its
   * connection stops counting.
   */
  admitDispatched(socket: AcceptedSocket, head: Buffer | undefined, upstream: Lease, proxy: ProxyHeader | undefined): void {
    this.accepted++;
    if (proxy?.command === 'proxy' && proxy.source !== undefined && 'address' in proxy.source) {
      this.proxied.set(socket, { remoteAddress: proxy.source.address, remotePort: proxy.source.port });
    }
    this.enqueue({ socket, head, store: undefined, need: undefined, upstream, reading: false, stage: 'queued', proxy });
  }

  /** Replace the access rules (`undefined`: allow all); sockets admitted already stay. */
  setAccess(rules: AccessRules | undefined): void {
    this.gate.setAccess(rules);
  }

  /** Close every silent and waiting socket and abort running handshakes; admit nothing more. */
  close(): void {
    this.closed = true;
    if (this.turnEnd !== undefined) clearImmediate(this.turnEnd);
    this.turnEnd = undefined;
    clearTimeout(this.stallTimer);
    this.stallTimer = undefined;
    clearTimeout(this.rateTimer);
    this.rateTimer = undefined;
    this.clear();
  }

  /** Close every silent and waiting socket (rejected as `shutdown`) and abort running handshakes. */
  clear(): void {
    this.rejectWaiting();
    for (const socket of [...this.inFlight.keys()]) socket.destroy();
  }

  /** Close every silent and waiting socket (rejected as `shutdown`); let running handshakes finish. */
  rejectWaiting(): void {
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    this.expiryTimer = undefined;
    this.silent?.clear((socket) => this.reject(socket, 'shutdown', false));
    this.proxyWaits?.clear((ready) => this.rejectReady(ready, 'shutdown'));
    this.arrivedCount = 0;
    const unserved = [...this.ripe.splice(0), ...this.arrived.splice(0), ...this.queue.clear()];
    for (const ready of unserved) if (ready.stage !== 'done') this.rejectReady(ready, 'shutdown');
    this.checkRoom();
    this.events.changed();
  }

  /** Resolves once no handshake is running. */
  whenNoHandshakes(): Promise<void> {
    if (this.inFlight.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private settleIdleWaiters(): void {
    if (this.inFlight.size > 0 || this.idleWaiters.length === 0) return;
    for (const w of this.idleWaiters.splice(0)) w();
  }

  private enqueue(ready: Ready): void {
    if (this.closed) {
      this.rejectReady(ready, 'shutdown');
      return;
    }
    if (this.queue.length === 0 && this.canStart()) {
      this.start(ready);
    } else if (this.queue.push(ready, Date.now())) {
      ready.stage = 'queued';
      this.makeRoomForHandshakes();
      this.armExpiry(Date.now());
      this.events.changed();
    } else if (this.options.overflow === 'drop-oldest' && this.queue.length > 0) {
      // Make room: the socket that has waited longest is the one least likely to be served in time.
      this.rejectReady(this.queue.shift()!, 'queue_full');
      this.queue.push(ready, Date.now());
      ready.stage = 'queued';
      this.events.changed();
    } else {
      this.rejectReady(ready, 'queue_full');
      if (!this.overflowing) {
        this.overflowing = true;
        this.events.overflowed(true);
      }
    }
  }

  /** A slot of `maxConnections` and a handshake slot are free, and this turn's batch is not spent. */
  private canStart(): boolean {
    const h = this.inFlight.size;
    return (
      h < this.options.maxHandshakes &&
      h + this.leases < this.limit &&
      this.startedThisTurn < this.options.handshakeBatch &&
      (this.rate === undefined || this.rateAllows())
    );
  }

  /** `connectionRate`: a token is there; otherwise look again when one will be. */
  private rateAllows(): boolean {
    const wait = this.rate!.wait(Date.now());
    if (wait === 0) return true;
    if (this.rateTimer === undefined && !this.closed) {
      this.rateTimer = setTimeout(() => {
        this.rateTimer = undefined;
        this.pump();
      }, wait);
      this.rateTimer.unref();
    }
    return false;
  }

  /** Serve waiting sockets while slots are free. */
  private pump(): void {
    if (!this.closed && this.queue.length > 0) {
      const now = Date.now();
      let served = false;
      while (this.queue.length > 0 && this.canStart()) {
        this.start(this.queue.take(now)!);
        served = true;
      }
      if (this.queue.length > 0) this.makeRoomForHandshakes();
      if (served) this.events.changed();
    }
    this.checkRoom();
  }

  /**
   * Every handshake slot is taken and a ClientHello waits: close the handshake that has waited
   * longest for its peer, if that is over a fifth of `handshakeTimeout` (a peer that sent a
   * ClientHello and went quiet must not keep a live one out for the whole timeout).
   */
  private makeRoomForHandshakes(): void {
    const h = this.inFlight.size;
    if (h < this.options.maxHandshakes || h + this.leases >= this.limit) return;
    const [oldest, { startedAt }] = this.inFlight.entries().next().value!;
    const due = startedAt + this.options.handshakeTimeout / 5 - Date.now();
    if (due < 0) {
      this.stalled.add(oldest);
      oldest.destroy();
    } else if (this.stallTimer === undefined) {
      // Look again when the oldest has waited long enough, if a ClientHello still waits then.
      this.stallTimer = setTimeout(() => {
        this.stallTimer = undefined;
        if (this.queue.length > 0) this.makeRoomForHandshakes();
      }, due + 1);
      this.stallTimer.unref();
    }
  }

  /** After an overflow: report once the queue has room again. */
  private checkRoom(): void {
    if (!this.overflowing) return;
    const max = this.options.maxWaiting;
    const room = this.closed || (max > 0 ? this.queue.length <= Math.floor((max * 3) / 4) : this.canStart());
    if (!room) return;
    this.overflowing = false;
    this.events.overflowed(false);
  }

  /** Count a start against this turn's batch. */
  private noteStart(): void {
    this.startedThisTurn++;
    this.scheduleTurnEnd();
  }

  /**
   * At the end of this turn of the event loop (its check phase): the batch count resets, the
   * sockets that arrived in the turn before join the queue, and waiting sockets are served.
   */
  private scheduleTurnEnd(): void {
    this.turnEnd ??= setImmediate(() => {
      this.turnEnd = undefined;
      this.startedThisTurn = 0;
      const ripe = this.ripe;
      this.ripe = this.arrived;
      this.arrived = [];
      for (const ready of ripe) {
        if (ready.stage !== 'arrived') continue;
        this.arrivedCount--;
        this.enqueue(ready);
      }
      if (this.ripe.length > 0) this.scheduleTurnEnd();
      this.pump();
    });
  }

  private start(ready: Ready): void {
    if (ready.socket.destroyed === true) {
      // Reset (or ended) since it was read: Node destroys such a socket at once but emits its
      // 'close' only in a later phase of the loop. Handing it over now would send a worker a
      // socket without its handle, or start a handshake on nothing. It is out of every stage's
      // count already (taken from the queue, or `arrived` already uncounted by the turn's end).
      ready.stage = 'queued';
      this.onPeerGone(ready);
      return;
    }
    ready.stage = 'done';
    this.rate?.take(Date.now());
    if (this.handoff.kind === 'dispatch') {
      this.dispatch(ready, this.handoff.dispatch);
      return;
    }
    const { socket, upstream, proxy } = ready;
    const startedAt = Date.now();
    this.noteStart();
    this.inFlight.set(socket, { startedAt, upstream, proxy });
    this.putBack(ready);
    let result: Promise<TransportConnection> | TransportConnection;
    try {
      result = this.transport.handshake(socket);
    } catch (err) {
      this.failed(socket, 'error', err, undefined);
      return;
    }
    if (!isThenable<TransportConnection>(result)) {
      this.succeeded(socket, result, startedAt, undefined);
      return;
    }
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      socket.destroy();
    }, this.options.handshakeTimeout);
    result.then(
      (conn) => this.succeeded(socket, conn, startedAt, timer),
      (err: unknown) => this.failed(socket, timedOut ? 'timeout' : this.stalled.has(socket) ? 'stalled' : 'error', err, timer),
    );
  }

  private dispatch(ready: Ready, dispatch: Extract<Handoff, { kind: 'dispatch' }>['dispatch']): void {
    const lease = this.lease(undefined, this.takeSource(ready.socket));
    // What was read goes along with the socket, so nothing is put back here.
    this.stopReading(ready);
    let ok = false;
    let error: unknown;
    try {
      ok = dispatch(ready.socket, ready.head, lease, ready.proxy);
    } catch (err) {
      error = err;
    }
    if (ok) return;
    lease.release();
    ready.socket.destroy();
    this.failures.error++;
    const err = error instanceof Error ? error : new CorralError('CORRAL_HANDSHAKE_FAILED', 'no worker could take the connection');
    this.events.handshakeFailed(ready.socket, 'error', err);
  }

  /** Before a handshake: stop reading the socket and put back what was read from it. */
  private putBack(ready: Ready): void {
    this.stopReading(ready);
    if (ready.head !== undefined) this.transport.unread!(ready.socket, ready.head);
    ready.head = undefined;
    ready.store = undefined;
  }

  /** The source a socket holds a place of, taken off the socket (its lease gives it back now). */
  private takeSource(socket: AcceptedSocket): string | undefined {
    const source = this.sources.get(socket);
    if (source !== undefined) this.sources.delete(socket);
    return source;
  }

  /** A socket is done before its connection began: its source's place is free. */
  private releaseSource(socket: AcceptedSocket): void {
    const source = this.takeSource(socket);
    if (source !== undefined) this.gate.release(source);
  }

  /**
   * A new lease on a slot of `maxConnections`; releasing it releases `upstream` too, and gives
   * back the place `source` holds (`maxConnectionsPerAddress`).
   */
  private lease(upstream: Lease | undefined, source: string | undefined): Lease {
    this.leases++;
    return new Lease(() => {
      this.leases--;
      upstream?.release();
      if (source !== undefined) this.gate.release(source);
      this.events.released();
      this.pump();
      this.events.changed();
    });
  }

  private succeeded(socket: AcceptedSocket, conn: TransportConnection, startedAt: number, timer: NodeJS.Timeout | undefined): void {
    if (timer) clearTimeout(timer);
    const handshake = this.inFlight.get(socket);
    if (handshake === undefined) {
      // Aborted by close() while the handshake was finishing (and reported as failed then).
      conn.stream.destroy();
      return;
    }
    this.inFlight.delete(socket);
    this.events.handshaken(conn, this.lease(handshake.upstream, this.takeSource(socket)), startedAt, handshake.proxy);
    this.settleIdleWaiters();
    this.pump();
    this.events.changed();
  }

  private failed(socket: AcceptedSocket, kind: HandshakeFailure, err: unknown, timer: NodeJS.Timeout | undefined): void {
    if (timer) clearTimeout(timer);
    const handshake = this.inFlight.get(socket);
    this.inFlight.delete(socket);
    handshake?.upstream?.release();
    socket.destroy();
    this.releaseSource(socket);
    this.failures[kind]++;
    this.settleIdleWaiters();
    const error =
      kind === 'timeout'
        ? new CorralError('CORRAL_HANDSHAKE_TIMEOUT', `handshake did not complete within ${this.options.handshakeTimeout} ms`, { cause: err })
        : kind === 'stalled'
          ? new CorralError('CORRAL_HANDSHAKE_TIMEOUT', 'handshake closed: its peer stalled while every handshake slot was taken and a ClientHello waited', { cause: err })
          : err instanceof Error
            ? err
            : new CorralError('CORRAL_HANDSHAKE_FAILED', `handshake failed: ${String(err)}`);
    this.events.handshakeFailed(socket, kind, error);
    this.pump();
    this.events.changed();
  }

  private rejectClosed(socket: AcceptedSocket, reason: SilentCloseReason): void {
    this.releaseSource(socket);
    this.rejected[reason]++;
    this.events.rejected(socket, reason);
    this.events.changed();
  }

  private rejectReady(ready: Ready, reason: RejectReason, detail?: string): void {
    ready.stage = 'done';
    ready.upstream?.release();
    this.reject(ready.socket, reason, true, detail);
  }

  private reject(socket: AcceptedSocket, reason: RejectReason, destroy = true, detail?: string): void {
    if (destroy) socket.destroy();
    this.releaseSource(socket);
    this.rejected[reason]++;
    this.events.rejected(socket, reason, detail);
  }

  private armExpiry(now: number): void {
    if (this.expiryTimer !== undefined) return;
    const oldest = this.queue.oldestSince;
    if (oldest === undefined) return;
    this.expiryTimer = setTimeout(() => this.expire(), Math.max(0, oldest + this.options.waitTimeout - now));
    this.expiryTimer.unref();
  }

  private expire(): void {
    this.expiryTimer = undefined;
    const now = Date.now();
    const expired = this.queue.expire(now - this.options.waitTimeout);
    for (const ready of expired) this.rejectReady(ready, 'wait_timeout');
    if (expired.length > 0) this.events.changed();
    this.checkRoom();
    this.armExpiry(now);
  }
}
