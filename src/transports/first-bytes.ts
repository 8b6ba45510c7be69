import type net from 'node:net';

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
