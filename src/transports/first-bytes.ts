import type net from 'node:net';
import type { DetachedSocket } from '../transport.js';

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

const NOTHING = Buffer.alloc(0);

/** What of a `net.Socket`'s libuv handle stopping its reads needs (Node internals). */
interface ReadingHandle {
  reading?: boolean;
  readStop?: () => number;
}

/** Stop reading (if reading) and put `head` (if any) back to be read first: see {@link Transport.unread}. @internal */
export function unread(socket: net.Socket, head: Buffer): void {
  const s = socket as ReadingSocket;
  s[firstBytesReader]?.();
  s.pause();
  if (head.length > 0) s.unshift(head);
}

/**
 * A socket leaves this process (distribution `primary`): take what its stream buffer holds and
 * stop its handle's reads. A paused net.Socket still reads from the kernel into that buffer until
 * it is full, and whatever it holds is lost when the handle is sent — only what is returned here
 * goes along, and what the peer sends next stays in the kernel for the worker. See
 * {@link Transport.detach}. @internal
 */
export function detachSocket(socket: net.Socket): DetachedSocket {
  const s = socket as ReadingSocket;
  unread(s, NOTHING);
  const chunks: Buffer[] = [];
  for (let chunk = s.read() as Buffer | null; chunk !== null; chunk = s.read() as Buffer | null) chunks.push(chunk);
  // Then stop the reads (read() may have started them again): libuv reads only in a later phase
  // of the loop, so nothing is read between the two. The socket is never resumed here again.
  const handle = (s as unknown as { _handle?: ReadingHandle | null })._handle;
  if (handle?.reading === true && typeof handle.readStop === 'function') {
    handle.reading = false;
    handle.readStop();
  }
  return { raw: s, rest: chunks.length === 0 ? undefined : Buffer.concat(chunks) };
}
