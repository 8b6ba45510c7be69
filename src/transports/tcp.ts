import net from 'node:net';
import util from 'node:util';
import { InvalidOptionError, ListenError } from '../errors.js';
import type {
  AcceptedSocket,
  SharedListenHandle,
  SocketAddress,
  Transport,
  TransportConnection,
  TransportListenHandlers,
  TransportServer,
} from '../transport.js';

/** Options of the `tcp` transport (also Unix sockets, with `path`). */
export interface TcpTransportOptions {
  /** TCP port; `0` (the default) picks a free one, which is then kept across `suspend`/`resume`. */
  port?: number;
  /** Address to bind, e.g. `'127.0.0.1'` or `'::1'`. Default: all addresses, as `net.Server#listen`. */
  host?: string;
  /** Bind a Unix socket at this path instead of a TCP port. A stale file there makes `listen` fail. */
  path?: string;
  /** Kernel accept queue length. Default 1024. */
  backlog?: number;
  /** With an IPv6 `host`, accept IPv6 only (no IPv4-mapped addresses). */
  ipv6Only?: boolean;
  /** `SO_REUSEPORT`: several listening sockets on one port (Linux, Node >= 22.12). */
  reusePort?: boolean;
  /** TCP keep-alive on accepted connections. Default false. */
  keepAlive?: boolean;
  /** Idle time before the first keep-alive probe, in ms. */
  keepAliveInitialDelay?: number;
  /** Disable Nagle's algorithm on accepted connections. Default false. */
  noDelay?: boolean;
}

const TCP_KEYS = [
  'port',
  'host',
  'path',
  'backlog',
  'ipv6Only',
  'reusePort',
  'keepAlive',
  'keepAliveInitialDelay',
  'noDelay',
] as const;

/** Check the TCP options in `options` (under the name `prefix`), rejecting keys not in `allowed`. @internal */
export function checkTcpOptions(options: Record<string, unknown>, prefix: string, allowed: readonly string[]): void {
  for (const key of Object.keys(options)) {
    if (!allowed.includes(key)) {
      throw new InvalidOptionError(`${prefix}.${key}`, 'is not a known option', 'CORRAL_UNKNOWN_OPTION');
    }
  }
  const { port, host, path, backlog } = options;
  if (port !== undefined && (!Number.isInteger(port) || (port as number) < 0 || (port as number) > 65535)) {
    throw new InvalidOptionError(`${prefix}.port`, `must be an integer from 0 to 65535, got ${String(port)}`);
  }
  if (host !== undefined && (typeof host !== 'string' || host === '')) {
    throw new InvalidOptionError(`${prefix}.host`, 'must be a non-empty string');
  }
  if (path !== undefined && (typeof path !== 'string' || path === '')) {
    throw new InvalidOptionError(`${prefix}.path`, 'must be a non-empty string');
  }
  if (path !== undefined && (port !== undefined || host !== undefined)) {
    throw new InvalidOptionError(`${prefix}.path`, 'cannot be combined with port or host');
  }
  if (backlog !== undefined && (!Number.isInteger(backlog) || (backlog as number) < 1)) {
    throw new InvalidOptionError(`${prefix}.backlog`, `must be a positive integer, got ${String(backlog)}`);
  }
  for (const flag of ['ipv6Only', 'reusePort', 'keepAlive', 'noDelay'] as const) {
    if (options[flag] !== undefined && typeof options[flag] !== 'boolean') {
      throw new InvalidOptionError(`${prefix}.${flag}`, 'must be a boolean');
    }
  }
  if (options.reusePort === true && !supportsReusePort()) {
    throw new InvalidOptionError(`${prefix}.reusePort`, `needs Node >= 22.12 on Linux (this is ${process.version} on ${process.platform})`);
  }
}

/** Whether this runtime can listen with `SO_REUSEPORT`. */
export function supportsReusePort(): boolean {
  if (process.platform !== 'linux') return false;
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
  return major > 22 || (major === 22 && minor >= 12);
}

/** Describe a socket end as a {@link SocketAddress}. @internal */
export function addressOf(address: string | undefined, port: number | undefined, family: string | undefined): SocketAddress {
  if (address === undefined) return { family: 'unix', path: '' };
  return { family: family === 'IPv6' ? 'IPv6' : 'IPv4', address, port: port ?? 0 };
}

/**
 * One end of an accepted socket: its address, `unix` for a Unix socket (which has no peer address),
 * or `unknown` when a TCP socket closed before the address was first read. @internal
 */
function endOf(address: string | undefined, port: number | undefined, family: string | undefined, unix: boolean): SocketAddress {
  if (address !== undefined) return addressOf(address, port, family);
  return unix ? { family: 'unix', path: '' } : { family: 'unknown' };
}

/** Swallows errors on sockets nobody reads yet (a reset while waiting must not crash the process). */
function ignoreError(): void {}

/** How to stop reading a socket's first bytes: its listeners, kept on the socket while it is read. */
const firstBytesReader = Symbol('corral.firstBytesReader');
type ReadingSocket = net.Socket & { [firstBytesReader]?: () => void };

/** Read an accepted socket's first bytes: see {@link Transport.readFirstBytes}. @internal */
export function readFirstBytes(socket: net.Socket, onData: (chunk: Buffer) => void, onEnd: () => void): void {
  const s = socket as ReadingSocket;
  const end = (): void => {
    stop();
    onEnd();
  };
  const stop = (): void => {
    s.off('data', onData);
    s.off('end', end);
    s.off('close', end);
    s[firstBytesReader] = undefined;
  };
  s[firstBytesReader] = stop;
  s.on('data', onData);
  s.on('end', end);
  s.on('close', end);
  s.resume();
}

/** Stop reading (if reading) and put `head` (if any) back to be read first: see {@link Transport.unread}. @internal */
export function unread(socket: net.Socket, head: Buffer): void {
  const s = socket as ReadingSocket;
  s[firstBytesReader]?.();
  s.pause();
  if (head.length > 0) s.unshift(head);
}

/**
 * What a connection over an accepted TCP or Unix socket knows of that socket: its ends (read when
 * asked) and its socket options. The TCP and TLS connections share it. @internal
 */
export class SocketEnds {
  constructor(
    private readonly socket: net.Socket,
    /** The Unix socket path the listener binds, if it binds one. */
    private readonly unixPath: string | undefined,
  ) {}
  get local(): SocketAddress {
    const s = this.socket;
    if (this.unixPath !== undefined) return { family: 'unix', path: this.unixPath };
    return endOf(s.localAddress, s.localPort, s.localFamily, false);
  }
  get remote(): SocketAddress {
    const s = this.socket;
    return endOf(s.remoteAddress, s.remotePort, s.remoteFamily, this.unixPath !== undefined);
  }
  setKeepAlive(enable: boolean, initialDelayMs?: number): void {
    this.socket.setKeepAlive(enable, initialDelayMs);
  }
  setNoDelay(noDelay: boolean): void {
    this.socket.setNoDelay(noDelay);
  }
}

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

/** The listening socket of a TCP transport. @internal */
class TcpServer implements TransportServer {
  constructor(private readonly server: net.Server) {}

  address(): SocketAddress {
    const a = this.server.address();
    if (a === null) throw new Error('server is not listening');
    if (typeof a === 'string') return { family: 'unix', path: a };
    return addressOf(a.address, a.port, a.family);
  }

  close(): Promise<void> {
    // server.close() releases the listening socket at once; its callback would also wait for
    // every accepted connection, which the supervisor owns, so do not wait for it.
    return new Promise((resolve) => {
      this.server.close();
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

  listen(handlers: TransportListenHandlers): Promise<TransportServer> {
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
              ...(o.reusePort ? { reusePort: true } : {}),
            };
      server.listen(listenOptions, () => {
        server.off('error', onListenError);
        server.on('error', (err) => handlers.onError(err));
        const tcpServer = new TcpServer(server);
        const a = tcpServer.address();
        if (a.family === 'IPv4' || a.family === 'IPv6') this.boundPort = a.port;
        resolve(tcpServer);
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
    socket.off('error', ignoreError);
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
      socket.on('error', ignoreError);
      handlers.onSocket(socket);
    });
    return server;
  }

  async createSharedHandle(): Promise<SharedListenHandle> {
    const o = this.options;
    // Node's own cluster primary binds handles this way (net._createServerHandle): bound, not
    // watched, so the primary never accepts; workers call listen() on their copies.
    const create = (net as unknown as { _createServerHandle?: CreateServerHandle })._createServerHandle;
    if (typeof create !== 'function') throw new ListenError(this.describe(), new Error('this Node.js has no net._createServerHandle'));
    let result: number | RawServerHandle;
    if (o.path !== undefined) {
      result = create(o.path, -1, -1, undefined, 0);
    } else {
      const host = o.host ?? null;
      const type = host === null ? 6 : net.isIPv6(host) ? 6 : net.isIPv4(host) ? 4 : 0;
      if (type === 0) throw new ListenError(this.describe(), new Error('distribution "shared" needs a numeric host address'));
      result = create(host, this.boundPort ?? o.port ?? 0, type, undefined, o.ipv6Only ? 1 : 0);
    }
    if (typeof result === 'number') {
      const code = util.getSystemErrorName(result);
      throw new ListenError(this.describe(), Object.assign(new Error(code), { code }));
    }
    const handle = result;
    // No listen() here: libuv would then watch the socket and this process would accept (and drop)
    // connections. The first worker's listen() puts the socket in the LISTEN state; this copy, never
    // watched, keeps it and its backlog alive while workers close and reopen theirs.
    let address: SocketAddress;
    if (o.path !== undefined) {
      address = { family: 'unix', path: o.path };
    } else {
      const out: { address?: string; port?: number; family?: string } = {};
      handle.getsockname?.(out);
      address = addressOf(out.address, out.port, out.family);
      this.boundPort = out.port;
    }
    return { handle, address, close: () => handle.close() };
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

  detach(socket: AcceptedSocket): object {
    return socket as net.Socket;
  }

  adopt(socket: object): AcceptedSocket {
    const s = socket as net.Socket;
    s.on('error', ignoreError);
    s.pause();
    return s;
  }
}

/** The raw TCP/pipe handle `net._createServerHandle` returns. */
interface RawServerHandle {
  getsockname?(out: object): number;
  close(): void;
}

type CreateServerHandle = (
  address: string | null,
  port: number,
  addressType: number,
  fd: number | undefined,
  flags: number,
) => number | RawServerHandle;

export { ignoreError as ignoreSocketError };
