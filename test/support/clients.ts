import net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';

/** Wait for one event, rejecting on `error` (unless the awaited event is `error`). */
export function once<T = unknown>(emitter: NodeJS.EventEmitter, event: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onEvent = (value: T): void => {
      emitter.off('error', onError);
      resolve(value);
    };
    const onError = (err: Error): void => {
      emitter.off(event, onEvent);
      reject(err);
    };
    emitter.once(event, onEvent);
    if (event !== 'error') emitter.once('error', onError);
  });
}

/** Connect with TCP and wait until connected. */
export async function connectTcp(port: number, host = '127.0.0.1'): Promise<net.Socket> {
  const socket = net.connect({ port, host });
  await once(socket, 'connect');
  return socket;
}

/** Connect with TLS (not verifying the self-signed test certificate) and wait for the handshake. */
export async function connectTls(port: number, options: tls.ConnectionOptions = {}): Promise<tls.TLSSocket> {
  const socket = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false, ...options });
  await once(socket, 'secureConnect');
  return socket;
}

/**
 * A line-oriented client over any duplex stream: `send` writes a line, `line()` resolves with the
 * next line received, `closed` resolves when the stream closes.
 */
export class LineClient {
  private buffer = '';
  private lines: string[] = [];
  private waiters: { resolve: (l: string) => void; reject: (e: Error) => void }[] = [];
  private ended = false;
  readonly closed: Promise<void>;

  constructor(readonly stream: Duplex) {
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      this.buffer += chunk;
      let i: number;
      while ((i = this.buffer.indexOf('\n')) !== -1) {
        const line = this.buffer.slice(0, i).replace(/\r$/, '');
        this.buffer = this.buffer.slice(i + 1);
        const w = this.waiters.shift();
        if (w) w.resolve(line);
        else this.lines.push(line);
      }
    });
    stream.on('error', () => {});
    this.closed = new Promise((resolve) => {
      stream.on('close', () => {
        this.ended = true;
        for (const w of this.waiters.splice(0)) w.reject(new Error('connection closed'));
        resolve();
      });
    });
  }

  send(line: string): void {
    this.stream.write(`${line}\n`);
  }

  line(): Promise<string> {
    const l = this.lines.shift();
    if (l !== undefined) return Promise.resolve(l);
    if (this.ended) return Promise.reject(new Error('connection closed'));
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  async request(line: string): Promise<string> {
    this.send(line);
    return this.line();
  }

  end(): void {
    this.stream.end();
  }

  destroy(): void {
    this.stream.destroy();
  }
}

/**
 * A real ClientHello record, as Node's TLS client sends it: one is captured from a client talking
 * to a plain TCP server (which then closes), so a test can send it, or part of it, by hand.
 */
export async function captureClientHello(options: tls.ConnectionOptions = {}): Promise<Buffer> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const hello = new Promise<Buffer>((resolve) => {
      server.once('connection', (s) => {
        let buf = Buffer.alloc(0);
        s.on('data', (d: Buffer) => {
          buf = Buffer.concat([buf, d]);
          // One handshake record: 5-byte header, then the announced length.
          if (buf.length >= 5 && buf.length >= 5 + buf.readUInt16BE(3)) {
            s.destroy();
            resolve(buf.subarray(0, 5 + buf.readUInt16BE(3)));
          }
        });
      });
    });
    const client = tls.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', rejectUnauthorized: false, ...options });
    client.on('error', () => {});
    const bytes = await hello;
    client.destroy();
    if (bytes[0] !== 0x16) throw new Error('captured bytes are not a TLS handshake record');
    return bytes;
  } finally {
    server.close();
  }
}
