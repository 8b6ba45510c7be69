import { Duplex } from 'node:stream';
import type { AcceptedSocket, Transport, TransportConnection, TransportListenHandlers, TransportServer } from '../../src/index.js';

/**
 * Two connected in-memory streams: what one end writes, the other reads. Ending one side ends the
 * other's readable side; destroying one destroys both.
 */
export function duplexPair(): [Duplex, Duplex] {
  let left!: Duplex;
  let right!: Duplex;
  const make = (peer: () => Duplex): Duplex =>
    new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        const p = peer();
        if (!p.destroyed) p.push(chunk);
        cb();
      },
      final(cb) {
        const p = peer();
        if (!p.destroyed) p.push(null);
        cb();
      },
      destroy(err, cb) {
        const p = peer();
        if (!p.destroyed) p.destroy();
        cb(err);
      },
    });
  left = make(() => right);
  right = make(() => left);
  return [left, right];
}

interface MemorySocket extends AcceptedSocket {
  readonly stream: Duplex;
}

let nextId = 1;

/** How to stop reading the first bytes of a memory stream. */
const readers = new WeakMap<Duplex, () => void>();

/**
 * A test-only transport over in-memory streams, written against corral's public `Transport`
 * interface only. It proves that a third transport plugs into the core unchanged.
 */
export class MemoryTransport implements Transport {
  readonly name = 'memory';
  readonly secure = false;
  readonly address = `memory-${nextId++}`;
  private handlers: TransportListenHandlers | undefined;
  private peers = 0;

  listen(handlers: TransportListenHandlers): Promise<TransportServer> {
    this.handlers = handlers;
    return Promise.resolve({
      address: () => ({ family: 'memory', address: this.address }),
      close: async () => {
        this.handlers = undefined;
      },
    });
  }

  /** Client-first admission over memory streams: read the first chunks, then put them back. */
  readFirstBytes(socket: MemorySocket, onData: (chunk: Buffer) => void, onEnd: () => void): void {
    const stream = socket.stream;
    const end = (): void => {
      stream.off('data', onData);
      onEnd();
    };
    readers.set(stream, () => {
      stream.off('data', onData);
      stream.off('end', end);
      stream.off('close', end);
    });
    stream.on('data', onData);
    stream.once('end', end);
    stream.once('close', end);
  }

  unread(socket: MemorySocket, head: Buffer): void {
    readers.get(socket.stream)?.();
    readers.delete(socket.stream);
    socket.stream.pause();
    if (head.length > 0) socket.stream.unshift(head);
  }

  handshake(socket: MemorySocket): TransportConnection {
    if (socket.stream.destroyed) throw new Error('memory socket closed before handshake');
    socket.stream.pause();
    return {
      stream: socket.stream,
      local: { family: 'memory', address: this.address },
      remote: { family: 'memory', address: `${this.address}/peer-${socket.remotePort}` },
      tls: null,
    };
  }

  /** Open a client connection; throws `ECONNREFUSED` when not listening (as a closed port would). */
  connect(): Duplex {
    const handlers = this.handlers;
    if (handlers === undefined) throw Object.assign(new Error('connect ECONNREFUSED memory'), { code: 'ECONNREFUSED' });
    const [client, server] = duplexPair();
    const port = ++this.peers;
    const socket: MemorySocket = {
      stream: server,
      remoteAddress: this.address,
      remotePort: port,
      destroy: () => server.destroy(),
    };
    handlers.onSocket(socket);
    return client;
  }
}
