import type net from 'node:net';
import { randomBytes } from 'node:crypto';
import tls from 'node:tls';
import { CorralError, InvalidOptionError } from '../errors.js';
import type {
  AcceptedSocket,
  DetachedSocket,
  SharedListenHandle,
  TlsInfo,
  Transport,
  TransportConnection,
  TransportListenHandlers,
  TransportServer,
} from '../transport.js';
import { detachSocket, readFirstBytes, unread } from './first-bytes.js';
import { ignoreSocketError, SocketEnds } from './socket-ends.js';
import { TcpTransport } from './tcp.js';
import { TCP_KEYS, type TcpTransportOptions } from './tcp-options.js';
import { checkTicketKeys, sessionIdContextFor, TICKET_KEY_BYTES, useTicketKeys } from './ticket-keys.js';

/** Secure-context settings accepted per SNI name: key and certificate, and optionally a CA. */
export type SniContextOptions = Pick<tls.SecureContextOptions, 'key' | 'cert' | 'ca' | 'pfx' | 'passphrase'>;

/**
 * Options of the `tls` transport: the TCP options plus Node's secure-context options.
 * Defaults differ from Node in one place: `minVersion` is `'TLSv1.2'`.
 */
export interface TlsTransportOptions extends TcpTransportOptions, Omit<tls.SecureContextOptions, 'ticketKeys'> {
  /**
   * Session-ticket keys, 48 bytes each (16 name, 16 HMAC secret, 16 AES key). The first encrypts
   * new tickets; every key in the list decrypts, and a ticket under an older key is accepted and
   * renewed under the first — so a key can be replaced without sending every returning client
   * through a full handshake. Give the same keys to every process and every restart of a listener
   * so that tickets stay valid across them (load them from the environment or a secret file; a
   * leaked key exposes the sessions of TLS 1.2 tickets made with it). Default: random keys made at
   * start (kept across suspend/resume and certificate reloads, shared by the workers of a pool).
   */
  ticketKeys?: Buffer | readonly Buffer[];
  /** Ask clients for a certificate (mutual TLS). Default false. */
  requestCert?: boolean;
  /** With `requestCert`, refuse clients whose certificate does not verify against `ca`. Default true. */
  rejectUnauthorized?: boolean;
  /** ALPN protocols offered, most preferred first. */
  ALPNProtocols?: string[];
  /** Certificates per SNI server name; names not listed get the default `key`/`cert`. */
  sni?: Record<string, SniContextOptions>;
  /** Full control of SNI: called with the name the client asked for. Overrides `sni`. */
  SNICallback?: (servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void) => void;
}

const TLS_KEYS = [
  ...TCP_KEYS,
  'requestCert',
  'rejectUnauthorized',
  'ALPNProtocols',
  'sni',
  'SNICallback',
  // tls.SecureContextOptions
  'ca',
  'cert',
  'key',
  'pfx',
  'passphrase',
  'sigalgs',
  'ciphers',
  'clientCertEngine',
  'crl',
  'dhparam',
  'ecdhCurve',
  'honorCipherOrder',
  'privateKeyEngine',
  'privateKeyIdentifier',
  'maxVersion',
  'minVersion',
  'secureOptions',
  'secureProtocol',
  'sessionIdContext',
  'ticketKeys',
  'sessionTimeout',
];

/** TLS details read from a server-side `TLSSocket`; the peer certificate is read on first use. */
class TlsDetails implements TlsInfo {
  readonly protocol: string | null;
  readonly cipher: string | null;
  readonly servername: string | null;
  readonly alpnProtocol: string | null;
  readonly authorized: boolean;
  readonly authorizationError: string | null;
  readonly resumed: boolean;
  private cert: Readonly<Record<string, unknown>> | null | undefined = undefined;

  constructor(private readonly socket: tls.TLSSocket) {
    this.protocol = socket.getProtocol();
    this.cipher = socket.getCipher()?.name ?? null;
    const sn = (socket as { servername?: string | false }).servername;
    this.servername = typeof sn === 'string' ? sn : null;
    this.alpnProtocol = typeof socket.alpnProtocol === 'string' ? socket.alpnProtocol : null;
    this.authorized = socket.authorized;
    const ae = socket.authorizationError as unknown;
    this.authorizationError = ae == null ? null : String(ae instanceof Error ? ((ae as { code?: string }).code ?? ae.message) : ae);
    this.resumed = socket.isSessionReused();
  }

  get peerCertificate(): Readonly<Record<string, unknown>> | null {
    if (this.cert === undefined) {
      // Cast: Node types the certificate as an interface; corral hands it over as a plain record.
      const c = this.socket.getPeerCertificate(true) as unknown as Record<string, unknown> | null;
      this.cert = c && Object.keys(c).length > 0 ? c : null;
    }
    return this.cert;
  }
}

/** A TLS connection: the ends and socket options are the raw socket's. */
class TlsConnection extends SocketEnds implements TransportConnection {
  readonly tls: TlsInfo;
  constructor(
    readonly stream: tls.TLSSocket,
    raw: net.Socket,
    unixPath: string | undefined,
  ) {
    super(raw, unixPath);
    this.tls = new TlsDetails(stream);
  }
}

/** The raw socket plus, once the handshake starts, its TLS wrapper; destroying it destroys both. */
class TlsAcceptedSocket implements AcceptedSocket {
  tlsSocket: tls.TLSSocket | undefined = undefined;
  constructor(readonly raw: net.Socket) {}
  get remoteAddress(): string | undefined {
    return this.raw.remoteAddress;
  }
  get remotePort(): number | undefined {
    return this.raw.remotePort;
  }
  get destroyed(): boolean {
    return this.raw.destroyed;
  }
  destroy(): void {
    this.tlsSocket?.destroy();
    this.raw.destroy();
  }
}

/**
 * The TLS transport. It accepts raw TCP sockets (paused) and runs the TLS handshake itself when the
 * acceptor pool admits a socket, so corral decides how many handshakes run at once and how long
 * each may take. Client certificates are verified as `tls.Server` does: with `requestCert` and
 * `rejectUnauthorized` (the default), an unverified client fails the handshake.
 */
export class TlsTransport implements Transport {
  readonly name: string = 'tls';
  readonly secure: boolean = true;
  private readonly tcp: TcpTransport;
  /** Made on first use: a worker pool's primary, which never handshakes, never makes one. */
  private context: tls.SecureContext | undefined = undefined;
  private tlsOptions: TlsTransportOptions;
  /** The client always speaks first (its ClientHello): the acceptor pool reads it before any slot is taken. */
  readonly clientFirst: boolean = true;
  /** A TLS client that ends its side before the handshake has given up. */
  readonly earlyEndIsDeparture: boolean = true;
  private sniContexts = new Map<string, tls.SecureContext>();
  /** Given, or made at start: kept across certificate reloads so that tickets stay valid. */
  private ticketKeys: Buffer[];
  /** Whether the options set `sessionIdContext` (else the listener's name gives it). */
  private sessionIdContextGiven: boolean;

  /**
   * Checks `options` and builds the secure context, so that bad keys or certificates fail here.
   * `internal.front` (corral's own use): check only, and make the context on first use — for a
   * worker pool's primary, which accepts and reads ClientHellos but never handshakes.
   */
  constructor(options: TlsTransportOptions, internal: { readonly front?: boolean } = {}) {
    const { tcp, rest } = splitOptions(options);
    this.tcp = new TcpTransport(tcp);
    this.ticketKeys = checkTicketKeys(rest.ticketKeys) ?? [randomBytes(TICKET_KEY_BYTES)];
    this.sessionIdContextGiven = rest.sessionIdContext !== undefined;
    // Until a listener names it (useListenerName): a context of no listener in particular.
    this.tlsOptions = { ...rest, sessionIdContext: rest.sessionIdContext ?? sessionIdContextFor('') };
    checkTlsKeys(this.tlsOptions);
    if (!internal.front) this.context = this.build(this.tlsOptions);
  }

  /**
   * Give this transport the session id context of the listener named `listenerName`
   * ({@link sessionIdContextFor}), unless its options set one — as `transport: 'tls'` has. The
   * listener that uses a transport object calls it: without it, every `TlsTransport` object shares
   * one context, and two listeners with the same `ticketKeys` but different trust settings
   * (`ca`, `requestCert`) would resume each other's sessions, a client certificate verified by one
   * counting as verified by the other. @internal
   */
  useListenerName(listenerName: string): void {
    const sessionIdContext = sessionIdContextFor(listenerName);
    if (this.sessionIdContextGiven || this.tlsOptions.sessionIdContext === sessionIdContext) return;
    this.tlsOptions = { ...this.tlsOptions, sessionIdContext };
    if (this.context !== undefined) this.context = this.build(this.tlsOptions);
  }

  /** The secure context for new handshakes, made on first use. */
  private get secureContext(): tls.SecureContext {
    return (this.context ??= this.build(this.tlsOptions));
  }

  /**
   * The length of a TLS client's first record, from its 5-byte header: a handshake record
   * (content type 22) of TLS 1.x (major version 3) holding a ClientHello (handshake type 1), at most
   * 2^14 bytes long. Anything else is not a TLS client (`-1`).
   */
  firstMessageLength(head: Buffer): number {
    if (head.length >= 1 && head[0] !== 0x16) return -1;
    if (head.length >= 2 && head[1] !== 0x03) return -1;
    if (head.length >= 6 && head[5] !== 0x01) return -1;
    if (head.length < 5) return 0;
    const length = head.readUInt16BE(3);
    if (length === 0 || length > 16384) return -1;
    return 5 + length;
  }

  readFirstBytes(socket: AcceptedSocket, onData: (chunk: Buffer) => void, onEnd: () => void): void {
    readFirstBytes((socket as TlsAcceptedSocket).raw, onData, onEnd);
  }

  unread(socket: AcceptedSocket, head: Buffer): void {
    unread((socket as TlsAcceptedSocket).raw, head);
  }

  private build(o: TlsTransportOptions): tls.SecureContext {
    checkTlsKeys(o);
    const { requestCert: _r, rejectUnauthorized: _u, ALPNProtocols: _a, sni, SNICallback: _s, ticketKeys: _k, ...contextOptions } = o;
    const keys = this.ticketKeys;
    const make = (extra: tls.SecureContextOptions = {}): tls.SecureContext => {
      const context = tls.createSecureContext({ minVersion: 'TLSv1.2', ...contextOptions, ...extra, ticketKeys: keys[0] });
      if (keys.length > 1) useTicketKeys(context, keys);
      return context;
    };
    let context: tls.SecureContext;
    try {
      context = make();
      this.sniContexts = new Map(Object.entries(sni ?? {}).map(([name, opts]) => [name.toLowerCase(), make(opts)]));
    } catch (err) {
      if (err instanceof InvalidOptionError) throw err;
      throw new InvalidOptionError('transportOptions', `do not make a valid TLS context: ${(err as Error).message}`);
    }
    return context;
  }

  /**
   * Replace certificates and other TLS settings for new connections; live connections keep theirs.
   * Session-ticket keys carry over unless `ticketKeys` is among the new options.
   */
  update(options: Readonly<Record<string, unknown>>): void {
    const given = options as TlsTransportOptions;
    const keys = checkTicketKeys(given.ticketKeys) ?? this.ticketKeys;
    const before = this.ticketKeys;
    this.ticketKeys = keys;
    try {
      this.context = this.build({ ...this.tlsOptions, ...given });
    } catch (err) {
      this.ticketKeys = before;
      throw err;
    }
    this.tlsOptions = { ...this.tlsOptions, ...given };
    if (given.sessionIdContext !== undefined) this.sessionIdContextGiven = true;
  }

  /** `host:port` or the socket path, for messages. */
  describe(): string {
    return this.tcp.describe();
  }

  listen(handlers: TransportListenHandlers): Promise<TransportServer> {
    return this.tcp.listen({
      onSocket: (raw) => handlers.onSocket(new TlsAcceptedSocket(raw as net.Socket)),
      onError: handlers.onError,
    });
  }

  createSharedHandle(): Promise<SharedListenHandle> {
    return this.tcp.createSharedHandle();
  }

  claimPort(): Promise<void> {
    return this.tcp.claimPort();
  }

  listenOnHandle(handle: object, handlers: TransportListenHandlers): Promise<TransportServer> {
    return this.tcp.listenOnHandle(handle, {
      onSocket: (raw) => handlers.onSocket(new TlsAcceptedSocket(raw as net.Socket)),
      onError: handlers.onError,
    });
  }

  detach(socket: AcceptedSocket): DetachedSocket {
    return detachSocket((socket as TlsAcceptedSocket).raw);
  }

  adopt(socket: object): AcceptedSocket {
    return new TlsAcceptedSocket(this.tcp.adopt(socket) as net.Socket);
  }

  handshake(socket: AcceptedSocket): Promise<TransportConnection> {
    const accepted = socket as TlsAcceptedSocket;
    const raw = accepted.raw;
    const o = this.tlsOptions;
    const requestCert = o.requestCert === true;
    const rejectUnauthorized = o.rejectUnauthorized !== false;
    return new Promise((resolve, reject) => {
      if (raw.destroyed) {
        reject(new CorralError('CORRAL_HANDSHAKE_FAILED', 'socket closed before the TLS handshake'));
        return;
      }
      const socket = new tls.TLSSocket(raw, {
        isServer: true,
        secureContext: this.secureContext,
        requestCert,
        rejectUnauthorized,
        ...(o.ALPNProtocols ? { ALPNProtocols: o.ALPNProtocols } : {}),
        ...(o.SNICallback ? { SNICallback: o.SNICallback } : this.sniContexts.size > 0 ? { SNICallback: this.sniCallback } : {}),
      });
      accepted.tlsSocket = socket;
      const fail = (err?: Error): void => {
        socket.off('secure', onSecure);
        socket.destroy();
        reject(err ?? new CorralError('CORRAL_HANDSHAKE_FAILED', 'socket closed during the TLS handshake'));
      };
      const onError = (err: Error): void => fail(err);
      const onClose = (): void => fail();
      const onSecure = (): void => {
        socket.off('error', onError);
        socket.off('close', onClose);
        socket.off('end', onClose);
        if (requestCert) {
          // Cast: `_handle` (the native TLS wrap) is internal to Node and absent from its types.
          const verifyError = (socket as unknown as { _handle?: { verifyError(): Error | null } })._handle?.verifyError() ?? null;
          if (verifyError) {
            const why = (verifyError as { code?: string }).code ?? verifyError.message;
            // Cast: Node types `authorizationError` as read-only (it is a plain property, set as Node itself sets it).
            (socket as unknown as { authorizationError: string }).authorizationError = why;
            if (rejectUnauthorized) {
              socket.destroy();
              reject(new CorralError('CORRAL_HANDSHAKE_FAILED', `client certificate rejected: ${why}`, { cause: verifyError }));
              return;
            }
          } else {
            socket.authorized = true;
          }
        }
        raw.off('error', ignoreSocketError);
        releaseControl(socket);
        // From here a TLS error is emitted as 'error', and the connection listens for it from the
        // moment this promise settles. An error before that would be uncaught without this
        // listener: it destroys the socket with the error, which Node emits again on the next
        // tick (to the connection, if it listens by then).
        socket.on('error', (err: Error) => {
          if (socket.listenerCount('error') === 1) socket.destroy(err);
        });
        socket.pause();
        resolve(new TlsConnection(socket, raw, this.tcp.unixPath));
      };
      socket.once('secure', onSecure);
      socket.once('error', onError);
      socket.once('close', onClose);
      // With an allowHalfOpen raw socket, a peer's FIN mid-handshake does not close the socket:
      // without this the handshake would hang (holding its slot) until handshakeTimeout.
      socket.once('end', onClose);
    });
  }

  private readonly sniCallback = (servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void): void => {
    cb(null, this.sniContexts.get(servername.toLowerCase()) ?? this.secureContext);
  };
}

/**
 * Let TLS errors after the handshake reach the socket's `'error'` listeners, as `tls.Server` does
 * for the sockets it makes (`_releaseControl`, Node internals): until then Node hands them to the
 * server that owns the socket, and a socket made with `new tls.TLSSocket` has none, so they were
 * dropped — a corrupt record left the connection open with nothing more delivered, and Node's
 * limit on client-initiated renegotiations (`ERR_TLS_SESSION_ATTACK`, more than
 * `tls.CLIENT_RENEG_LIMIT` in `tls.CLIENT_RENEG_WINDOW`) was never enforced. Should a Node version
 * lack the method, the same errors are taken from the event Node emits for them.
 */
function releaseControl(socket: tls.TLSSocket): void {
  // Cast: `_releaseControl` is internal to Node and absent from its types.
  const s = socket as unknown as { _releaseControl?: () => boolean };
  if (typeof s._releaseControl === 'function') s._releaseControl();
  else socket.on('_tlsError', (err: Error) => socket.destroy(err));
}

/** Reject unknown options and a TLS transport without any key. */
function checkTlsKeys(o: TlsTransportOptions): void {
  for (const key of Object.keys(o)) {
    if (!TLS_KEYS.includes(key)) throw new InvalidOptionError(`transportOptions.${key}`, 'is not a known option', 'CORRAL_UNKNOWN_OPTION');
  }
  if (o.key === undefined && o.pfx === undefined && o.SNICallback === undefined && o.sni === undefined) {
    throw new InvalidOptionError('transportOptions.key', 'is required by the tls transport (or pfx, sni, SNICallback)');
  }
}

function splitOptions(options: TlsTransportOptions): { tcp: TcpTransportOptions; rest: TlsTransportOptions } {
  if (options === null || typeof options !== 'object') {
    throw new InvalidOptionError('transportOptions', 'must be an object with at least key and cert for the tls transport');
  }
  const { port, host, path, backlog, ipv6Only, reusePort, acceptors, keepAlive, keepAliveInitialDelay, noDelay, ...rest } = options;
  const tcp: TcpTransportOptions = Object.fromEntries(
    Object.entries({ port, host, path, backlog, ipv6Only, reusePort, acceptors, keepAlive, keepAliveInitialDelay, noDelay }).filter(([, v]) => v !== undefined),
  );
  return { tcp, rest };
}
