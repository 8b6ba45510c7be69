import { InvalidOptionError } from '../errors.js';
import { supportsReusePort } from './reuse-port.js';

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
  /**
   * Listening sockets this process opens on its port, all with `SO_REUSEPORT` (Ranch's
   * `num_acceptors`). Node accepts one connection per listening socket per turn of the event loop,
   * so a process whose turns are long (busy with its connections' work) accepts at most this many
   * connections per turn; the kernel spreads connects over the sockets by a hash of their
   * addresses. Default 1. More than 1 needs Node >= 22.12 on Linux and a TCP port (not `path`),
   * and applies to the sockets a process binds itself (a listener without workers, each worker with
   * distribution `reuseport`, the primary with `primary`), not to a socket shared from a primary
   * (`shared`). See docs/limits.md, "Accepting".
   */
  acceptors?: number;
  /** TCP keep-alive on accepted connections. Default false. */
  keepAlive?: boolean;
  /** Idle time before the first keep-alive probe, in ms. */
  keepAliveInitialDelay?: number;
  /** Disable Nagle's algorithm on accepted connections. Default false. */
  noDelay?: boolean;
}

/** The options of the TCP transport's socket, shared by the TLS transport. @internal */
export const TCP_KEYS = [
  'port',
  'host',
  'path',
  'backlog',
  'ipv6Only',
  'reusePort',
  'acceptors',
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
  const { acceptors } = options;
  if (acceptors !== undefined && (!Number.isInteger(acceptors) || (acceptors as number) < 1 || (acceptors as number) > 64)) {
    throw new InvalidOptionError(`${prefix}.acceptors`, `must be an integer from 1 to 64, got ${String(acceptors)}`);
  }
  const noReusePort = supportsReusePort() ? undefined : `Node >= 22.12 on Linux (this is ${process.version} on ${process.platform})`;
  if (((acceptors as number | undefined) ?? 1) > 1) {
    if (path !== undefined) throw new InvalidOptionError(`${prefix}.acceptors`, 'more than 1 needs a TCP port, not a Unix socket path');
    if (noReusePort) throw new InvalidOptionError(`${prefix}.acceptors`, `more than 1 needs SO_REUSEPORT: ${noReusePort}`);
  }
  if (options.reusePort === true && noReusePort) {
    throw new InvalidOptionError(`${prefix}.reusePort`, `needs ${noReusePort}`);
  }
}
