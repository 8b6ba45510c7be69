import type net from 'node:net';
import type { SocketAddress } from '../transport.js';

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

/** Swallows errors on sockets nobody reads yet (a reset while waiting must not crash the process). @internal */
export function ignoreSocketError(): void {}

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
