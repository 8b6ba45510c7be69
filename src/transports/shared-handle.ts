import net from 'node:net';
import util from 'node:util';
import { ListenError } from '../errors.js';
import type { SharedListenHandle, SocketAddress } from '../transport.js';
import { addressOf } from './socket-ends.js';
import type { TcpTransportOptions } from './tcp-options.js';

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

/**
 * Bind a listening socket without watching it, for a worker pool's primary to hand to its workers
 * (distribution `shared`), the way Node's own cluster primary does it: through the undocumented
 * `net._createServerHandle`, since Node has no public way to bind a socket without accepting on it.
 * `boundPort` is a port bound before (kept across suspend/resume); `bound` is told the port bound.
 * @internal
 */
export function createSharedHandle(
  o: TcpTransportOptions,
  boundPort: number | undefined,
  describe: string,
  bound: (port: number | undefined) => void,
): SharedListenHandle {
  // Node's own cluster primary binds handles this way (net._createServerHandle): bound, not
  // watched, so the primary never accepts; workers call listen() on their copies.
  // Cast: `_createServerHandle` is internal to Node and absent from its types.
  const create = (net as unknown as { _createServerHandle?: CreateServerHandle })._createServerHandle;
  if (typeof create !== 'function') throw new ListenError(describe, new Error('this Node.js has no net._createServerHandle'));
  let result: number | RawServerHandle;
  if (o.path !== undefined) {
    result = create(o.path, -1, -1, undefined, 0);
  } else {
    const host = o.host ?? null;
    const type = host === null ? 6 : net.isIPv6(host) ? 6 : net.isIPv4(host) ? 4 : 0;
    if (type === 0) throw new ListenError(describe, new Error('distribution "shared" needs a numeric host address'));
    result = create(host, boundPort ?? o.port ?? 0, type, undefined, o.ipv6Only ? 1 : 0);
  }
  if (typeof result === 'number') {
    const code = util.getSystemErrorName(result);
    throw new ListenError(describe, Object.assign(new Error(code), { code }));
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
    const err = handle.getsockname?.(out) ?? 0;
    if (err !== 0 || out.port === undefined || out.port === 0) {
      // libuv defers a bind's EADDRINUSE to listen() (uv__tcp_bind keeps it as the handle's
      // `delayed_error`, which uv_tcp_getsockname returns), and only that error: the handle comes
      // back unbound. That deferred error stays in this process; a worker's listen() on its copy of
      // the descriptor would bind it to a random port on every interface instead of failing.
      handle.close();
      const code = err !== 0 ? util.getSystemErrorName(err) : 'EADDRINUSE';
      throw new ListenError(describe, Object.assign(new Error(code), { code }));
    }
    address = addressOf(out.address, out.port, out.family);
    bound(out.port);
  }
  return { handle, address, close: () => handle.close() };
}
