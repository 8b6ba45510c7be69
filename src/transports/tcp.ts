import net from 'node:net';
import { ListenError } from '../errors.js';
import type {
  AcceptedSocket,
  DetachedSocket,
  SharedListenHandle,
  SocketAddress,
  Transport,
  TransportConnection,
  TransportListenHandlers,
  TransportServer,
} from '../transport.js';
import { detachSocket, readFirstBytes, unread } from './first-bytes.js';
import { createSharedHandle } from './shared-handle.js';
import { addressOf, ignoreSocketError, SocketEnds } from './socket-ends.js';
import { checkTcpOptions, TCP_KEYS, type TcpTransportOptions } from './tcp-options.js';

export type { TcpTransportOptions } from './tcp-options.js';


/** The connection of an accepted TCP or Unix socket. Addresses are read lazily. */
class TcpConnection extends SocketEnds implements TransportConnection {
  readonly tls = null;
  constructor(
    readonly stream: net.Socket,
    unixPath: string | undefined,
  ) {
    super(stream, unixPath);
  }
}

/** The listening socket(s) of a TCP transport: one, or `acceptors` on one port. @internal */
class TcpServer implements TransportServer {
  private readonly servers: readonly net.Server[];
  constructor(...servers: [net.Server, ...net.Server[]]) {
    this.servers = servers;
  }

  address(): SocketAddress {
    const a = this.servers[0]!.address();
    if (a === null) throw new Error('server is not listening');
    if (typeof a === 'string') return { family: 'unix', path: a };
    return addressOf(a.address, a.port, a.family);
  }

  close(): Promise<void> {
    // server.close() releases the listening socket at once; its callback would also wait for
    // every accepted connection, which the supervisor owns, so do not wait for it.
    return new Promise((resolve) => {
      for (const server of this.servers) server.close();
      setImmediate(resolve);
    });
  }
}

/**
 * The TCP transport (also Unix sockets). Accepted sockets are paused from the start
 * (`pauseOnConnect`), so nothing is read until the acceptor pool admits them; its handshake is
 * immediate.
 */
export class TcpTransport implements Transport {
  readonly name: string = 'tcp';
  readonly secure: boolean = false;
  /** TCP carries any protocol, and in some the server speaks first: client-first admission is opt-in. */
  readonly clientFirst: boolean = false;
  /** The port actually bound the first time, reused by later `listen` calls (suspend/resume). */
  private boundPort: number | undefined;

  constructor(
    /**
     * The options it was made with, as given (and checked), for subclasses. The port bound for
     * `port: 0` is not written back here.
     */
    protected readonly options: TcpTransportOptions = {},
  ) {
    checkTcpOptions(options as Record<string, unknown>, 'transportOptions', TCP_KEYS);
  }

  /** The Unix socket path it binds, if it binds one (its peers have no address). @internal */
  get unixPath(): string | undefined {
    return this.options.path;
  }

  /** `host:port` or the socket path, for messages. */
  describe(): string {
    const o = this.options;
    if (o.path !== undefined) return o.path;
    const host = o.host ?? '::';
    const port = this.boundPort ?? o.port ?? 0;
    return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  }

  async listen(handlers: TransportListenHandlers): Promise<TransportServer> {
    const acceptors = this.options.acceptors ?? 1;
    // Several acceptors bind the port with SO_REUSEPORT, which would join another process's such
    // socket on it; `reusePort: true` asks for exactly that (claimPort then checks nothing),
    // `acceptors` alone does not.
    if (acceptors > 1) await this.claimPort();
    const first = await this.listenOne(handlers, acceptors > 1);
    const servers: [net.Server, ...net.Server[]] = [first];
    try {
      // The others bind the port the first one got (`port: 0` included), each with SO_REUSEPORT.
      for (let i = 1; i < acceptors; i++) servers.push(await this.listenOne(handlers, true));
    } catch (err) {
      for (const server of servers) server.close();
      throw err;
    }
    return new TcpServer(...servers);
  }

  async claimPort(): Promise<void> {
    const o = this.options;
    const port = this.boundPort ?? o.port ?? 0;
    // `reusePort: true` asks to share the port with other processes: nothing to check.
    if (o.path !== undefined || port === 0 || o.reusePort === true) return;
    const probe = net.createServer();
    await new Promise<void>((resolve, reject) => {
      probe.once('error', (err) => reject(new ListenError(this.describe(), err)));
      probe.listen({ port, host: o.host, ipv6Only: o.ipv6Only ?? false, exclusive: true }, () => resolve());
    });
    await new Promise<void>((resolve) => probe.close(() => resolve()));
  }

  /** Open one listening socket (with SO_REUSEPORT when `reusePort` or the options say so). */
  private listenOne(handlers: TransportListenHandlers, reusePort: boolean): Promise<net.Server> {
    const o = this.options;
    const server = this.server(handlers);
    return new Promise((resolve, reject) => {
      const onListenError = (err: Error): void => {
        server.close();
        reject(new ListenError(this.describe(), err));
      };
      server.once('error', onListenError);
      const listenOptions: net.ListenOptions & { reusePort?: boolean } =
        o.path !== undefined
          ? { path: o.path, backlog: o.backlog ?? 1024 }
          : {
              port: this.boundPort ?? o.port ?? 0,
              host: o.host,
              backlog: o.backlog ?? 1024,
              ipv6Only: o.ipv6Only ?? false,
              ...(o.reusePort || reusePort ? { reusePort: true } : {}),
            };
      server.listen(listenOptions, () => {
        server.off('error', onListenError);
        server.on('error', (err) => handlers.onError(err));
        const a = server.address();
        if (a !== null && typeof a !== 'string') this.boundPort = a.port;
        resolve(server);
      });
    });
  }

  readFirstBytes(socket: AcceptedSocket, onData: (chunk: Buffer) => void, onEnd: () => void): void {
    readFirstBytes(socket as net.Socket, onData, onEnd);
  }

  unread(socket: AcceptedSocket, head: Buffer): void {
    unread(socket as net.Socket, head);
  }

  handshake(accepted: AcceptedSocket): TransportConnection {
    const socket = accepted as net.Socket;
    socket.off('error', ignoreSocketError);
    return new TcpConnection(socket, this.unixPath);
  }

  /** Build the `net.Server` every listen path shares: paused accepted sockets, errors routed. */
  private server(handlers: TransportListenHandlers): net.Server {
    const o = this.options;
    const server = net.createServer({
      pauseOnConnect: true,
      // The core decides what a peer's FIN means (onRemoteClose may still answer), not Node.
      allowHalfOpen: true,
      noDelay: o.noDelay ?? false,
      keepAlive: o.keepAlive ?? false,
      keepAliveInitialDelay: o.keepAliveInitialDelay ?? 0,
    });
    server.on('connection', (socket: net.Socket) => {
      socket.on('error', ignoreSocketError);
      handlers.onSocket(socket);
    });
    return server;
  }

  createSharedHandle(): Promise<SharedListenHandle> {
    try {
      return Promise.resolve(
        createSharedHandle(this.options, this.boundPort, this.describe(), (port) => {
          this.boundPort = port;
        }),
      );
    } catch (err) {
      return Promise.reject(err);
    }
  }

  listenOnHandle(handle: object, handlers: TransportListenHandlers): Promise<TransportServer> {
    const server = this.server(handlers);
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(new ListenError(this.describe(), err));
      server.once('error', onError);
      server.listen(handle as net.ListenOptions, this.options.backlog ?? 1024, () => {
        server.off('error', onError);
        server.on('error', (err) => handlers.onError(err));
        resolve(new TcpServer(server));
      });
    });
  }

  detach(socket: AcceptedSocket): DetachedSocket {
    return detachSocket(socket as net.Socket);
  }

  adopt(socket: object): AcceptedSocket {
    const s = socket as net.Socket;
    s.on('error', ignoreSocketError);
    s.pause();
    return s;
  }
}


