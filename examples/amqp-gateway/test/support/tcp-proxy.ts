/**
 * A loopback TCP proxy to put between a client and a server, so a test can break the client's
 * connections (and only its connections) the way a server restart or a network fault would.
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';

interface Pair {
  readonly client: net.Socket;
  readonly upstream: net.Socket;
}

/**
 * Events: `connection` (a client was connected through), `refused` (a client was turned away
 * while paused).
 */
export class TcpProxy extends EventEmitter<{ connection: []; refused: [] }> {
  private readonly server = net.createServer((client) => this.accept(client));
  private readonly pairs = new Set<Pair>();
  private paused = false;
  /** Clients turned away while paused, so far. */
  refused = 0;

  constructor(private readonly target: { readonly host: string; readonly port: number }) {
    super();
  }

  /** Listen on an ephemeral loopback port; resolves with the port. */
  start(): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => {
        this.server.off('error', reject);
        resolve((this.server.address() as net.AddressInfo).port);
      });
    });
  }

  /** Reset every connection going through (both sides). Returns how many were cut. */
  cut(): number {
    const n = this.pairs.size;
    for (const pair of [...this.pairs]) this.drop(pair);
    return n;
  }

  /** Turn away new connections (accepted, then reset) until `resume()`. */
  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
  }

  /** Resolves once `count` clients in total have been turned away. */
  async refusals(count: number): Promise<void> {
    while (this.refused < count) await new Promise<void>((resolve) => this.once('refused', resolve));
  }

  /** Cut everything and stop listening. */
  close(): Promise<void> {
    this.cut();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: net.Socket): void {
    client.on('error', () => undefined);
    if (this.paused) {
      client.resetAndDestroy();
      this.refused += 1;
      this.emit('refused');
      return;
    }
    const upstream = net.connect(this.target);
    upstream.on('error', () => undefined);
    const pair = { client, upstream };
    this.pairs.add(pair);
    client.pipe(upstream);
    upstream.pipe(client);
    client.once('close', () => this.drop(pair));
    upstream.once('close', () => this.drop(pair));
    this.emit('connection');
  }

  private drop(pair: Pair): void {
    if (!this.pairs.delete(pair)) return;
    if (!pair.client.destroyed) pair.client.resetAndDestroy();
    if (!pair.upstream.destroyed) pair.upstream.resetAndDestroy();
  }
}
