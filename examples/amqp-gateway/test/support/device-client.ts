/**
 * A device for tests: a real TLS connection to the gateway that sends JSON lines and waits for the
 * gateway's messages by type.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { GatewayMessage } from '../../src/device-protocol.js';

/** A gateway message of one type. */
export type Received<T extends GatewayMessage['type']> = Extract<GatewayMessage, { type: T }>;

interface Waiter {
  readonly type: string;
  readonly resolve: (m: GatewayMessage) => void;
  readonly reject: (err: Error) => void;
}

/** Every client opened, so `closeAllDevices` can clean up after a test. */
const open = new Set<DeviceClient>();

/** One device connection. */
export class DeviceClient {
  /** Every message received, in order. */
  readonly received: GatewayMessage[] = [];
  /** Resolves when the socket has closed. */
  readonly closed: Promise<void>;
  /** Lines the client could not parse (there should be none). */
  readonly garbage: string[] = [];
  private readonly taken = new Set<number>();
  private readonly waiters: Waiter[] = [];
  private buffer = '';
  private ended = false;

  private constructor(readonly socket: tls.TLSSocket) {
    open.add(this);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', () => {}); // resets after an error line are expected; `closed` tells
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        this.ended = true;
        open.delete(this);
        for (const w of this.waiters.splice(0)) w.reject(new Error(`connection closed before a ${w.type} (received ${this.describe()})`));
        resolve();
      }),
    );
  }

  /** Connect over TLS (certificates are not checked: the gateway's is self-signed). */
  static connect(port: number, host = '127.0.0.1', localAddress?: string): Promise<DeviceClient> {
    return new Promise((resolve, reject) => {
      // From `localAddress` (a device's own address), over a TCP socket of its own: tls.connect has no such option.
      const socket = localAddress === undefined
        ? tls.connect({ port, host, rejectUnauthorized: false })
        : tls.connect({ socket: net.connect({ port, host, localAddress }), rejectUnauthorized: false });
      socket.once('secureConnect', () => {
        socket.off('error', reject);
        resolve(new DeviceClient(socket));
      });
      socket.once('error', reject);
    });
  }

  /** Connect and send a hello; resolves with the welcome. */
  static async hello(port: number, device: string, token: string, localAddress?: string): Promise<{ client: DeviceClient; welcome: Received<'welcome'> }> {
    const client = await DeviceClient.connect(port, '127.0.0.1', localAddress);
    client.send({ type: 'hello', device, token });
    return { client, welcome: await client.next('welcome') };
  }

  /** Send one JSON line. */
  send(message: unknown): void {
    this.socket.write(`${JSON.stringify(message)}\n`);
  }

  /** Send raw text (a line ending is not added). */
  sendRaw(data: string | Buffer): void {
    this.socket.write(data);
  }

  /**
   * The next message of `type` not yet taken by an earlier `next` of that type (already received,
   * or the next to arrive). Rejects if the connection closes first.
   */
  next<T extends GatewayMessage['type']>(type: T): Promise<Received<T>> {
    for (let i = 0; i < this.received.length; i++) {
      if (!this.taken.has(i) && this.received[i]!.type === type) {
        this.taken.add(i);
        return Promise.resolve(this.received[i] as Received<T>);
      }
    }
    if (this.ended) return Promise.reject(new Error(`connection closed before a ${type} (received ${this.describe()})`));
    return new Promise((resolve, reject) => this.waiters.push({ type, resolve: resolve as (m: GatewayMessage) => void, reject }));
  }

  /** The error the gateway sent, and the close that follows it. */
  async expectError(): Promise<Received<'error'>> {
    const error = await this.next('error');
    await this.closed;
    return error;
  }

  /** Messages of one type received so far. */
  all<T extends GatewayMessage['type']>(type: T): Received<T>[] {
    return this.received.filter((m): m is Received<T> => m.type === type);
  }

  /** Close from the device's side. */
  async close(): Promise<void> {
    if (!this.ended) this.socket.end();
    await this.closed;
  }

  /** Reset the connection. */
  destroy(): void {
    this.socket.destroy();
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).replace(/\r$/, '');
      this.buffer = this.buffer.slice(nl + 1);
      let message: GatewayMessage;
      try {
        message = JSON.parse(line) as GatewayMessage;
      } catch {
        this.garbage.push(line);
        continue;
      }
      const index = this.received.push(message) - 1;
      const w = this.waiters.findIndex((x) => x.type === message.type);
      if (w >= 0) {
        this.taken.add(index);
        this.waiters.splice(w, 1)[0]!.resolve(message);
      }
    }
  }

  private describe(): string {
    return JSON.stringify(this.received.map((m) => m.type));
  }
}

/** Close every client still open (afterEach). */
export async function closeAllDevices(): Promise<void> {
  await Promise.all([...open].map((c) => {
    c.destroy();
    return c.closed;
  }));
}
