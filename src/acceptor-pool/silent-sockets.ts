import type { AcceptedSocket } from '../transport.js';
import { type SourcePrefix, sourceKey } from '../limits/source-key.js';

/**
 * Why the acceptor pool closed a socket that was still silent (see {@link SilentSockets}):
 *
 * - `silent_timeout`: its first message did not arrive within `silentTimeout`.
 * - `source_limit`: its source had more than `maxSilentPerSource` silent sockets; the oldest goes.
 * - `silent_limit`: the listener had more than `maxSilent` silent sockets; the oldest goes.
 * - `malformed`: its first bytes are not what the transport expects (TLS: not a handshake record).
 */
export type SilentCloseReason = 'silent_timeout' | 'source_limit' | 'silent_limit' | 'malformed';

/** Bounds of the silent stage. @internal */
export interface SilentSocketsOptions {
  readonly silentTimeout: number;
  readonly maxSilent: number;
  readonly maxSilentPerSource: number;
  readonly sourcePrefix: SourcePrefix;
}

/** What the silent stage reports to its acceptor pool. @internal */
export interface SilentSocketsEvents {
  /** The socket's first message is complete: `head` is every byte read from it. */
  spoke(socket: AcceptedSocket, head: Buffer): void;
  /** The stage closed the socket. */
  closed(socket: AcceptedSocket, reason: SilentCloseReason): void;
  /** The peer ended or reset the socket before its first message was complete (it is destroyed). */
  gaveUp(socket: AcceptedSocket): void;
}

/**
 * How much of a client's first message `head` holds: the message's total length in bytes once
 * `head` says it (it may not be complete yet), `0` while `head` is too short to tell, `-1` when the
 * bytes cannot start a valid first message. @internal
 */
export type MeasureFirstMessage = (head: Buffer) => number;

interface Entry {
  readonly socket: AcceptedSocket;
  readonly source: string | undefined;
  readonly since: number;
  chunks: Buffer[];
  length: number;
}

/**
 * The sockets of one listener whose peer has not yet sent its first message — for TLS, a complete
 * first record (the ClientHello). Such a socket does no work, so it holds no handshake slot and
 * counts against none of `maxHandshakes`, `maxConnections` or `maxWaiting`; it costs a file
 * descriptor and a few hundred bytes, and is bounded by time (`silentTimeout`), per source
 * (`maxSilentPerSource`: per IPv4 address or IPv6 prefix, see `sourceKey`) and in all
 * (`maxSilent`). Over a bound, the oldest silent socket of that source (or of the listener) is
 * closed: a real client speaks within a round trip of its connect, so the socket that has been
 * silent longest is the one least likely to be a client. @internal
 */
export class SilentSockets {
  /** Every silent socket, oldest first (a Map iterates in insertion order). */
  private readonly entries = new Map<AcceptedSocket, Entry>();
  /** Silent sockets by source, oldest first. */
  private readonly bySource = new Map<string, Set<Entry>>();
  private timer: NodeJS.Timeout | undefined = undefined;

  constructor(
    private readonly options: SilentSocketsOptions,
    /** Reads a socket's first bytes (`Transport.readFirstBytes`). */
    private readonly read: (socket: AcceptedSocket, onData: (chunk: Buffer) => void, onEnd: () => void) => void,
    private readonly measure: MeasureFirstMessage | undefined,
    private readonly events: SilentSocketsEvents,
  ) {}

  /** Silent sockets now. */
  get size(): number {
    return this.entries.size;
  }

  /** Start reading a freshly accepted socket's first bytes. */
  add(socket: AcceptedSocket, now: number): void {
    const source = sourceKey(socket.remoteAddress, this.options.sourcePrefix);
    const entry: Entry = { socket, source, since: now, chunks: [], length: 0 };
    this.entries.set(socket, entry);
    if (source !== undefined) {
      let group = this.bySource.get(source);
      if (group === undefined) this.bySource.set(source, (group = new Set()));
      group.add(entry);
      if (group.size > this.options.maxSilentPerSource) this.close(group.values().next().value!, 'source_limit');
    }
    if (this.entries.size > this.options.maxSilent) this.close(this.entries.values().next().value!, 'silent_limit');
    if (!this.entries.has(socket)) return; // it was the oldest itself (a bound of 0)
    this.armTimer(now);
    this.read(
      socket,
      (chunk) => this.onData(entry, chunk),
      () => {
        if (!this.remove(entry)) return;
        socket.destroy();
        this.events.gaveUp(socket);
      },
    );
  }

  /** Close every silent socket (the listener stops or drains); reports each as `closed` with `reason`. */
  clear(onClosed: (socket: AcceptedSocket) => void): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    for (const entry of [...this.entries.values()]) {
      this.remove(entry);
      entry.socket.destroy();
      onClosed(entry.socket);
    }
  }

  private onData(entry: Entry, chunk: Buffer): void {
    if (!this.entries.has(entry.socket)) return;
    entry.chunks.push(chunk);
    entry.length += chunk.length;
    const head = entry.chunks.length === 1 ? chunk : Buffer.concat(entry.chunks, entry.length);
    entry.chunks = [head];
    const need = this.measure === undefined ? 1 : this.measure(head);
    if (need < 0) {
      this.close(entry, 'malformed');
      return;
    }
    if (need === 0 || head.length < need) return;
    this.remove(entry);
    this.events.spoke(entry.socket, head);
  }

  private close(entry: Entry, reason: SilentCloseReason): void {
    if (!this.remove(entry)) return;
    entry.socket.destroy();
    this.events.closed(entry.socket, reason);
  }

  /** Forget an entry; `false` if it was already gone. */
  private remove(entry: Entry): boolean {
    if (!this.entries.delete(entry.socket)) return false;
    if (entry.source !== undefined) {
      const group = this.bySource.get(entry.source);
      if (group !== undefined) {
        group.delete(entry);
        if (group.size === 0) this.bySource.delete(entry.source);
      }
    }
    if (this.entries.size === 0 && this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    return true;
  }

  /** One timer for the whole stage, due when the oldest silent socket times out. */
  private armTimer(now: number): void {
    if (this.timer !== undefined) return;
    const oldest = this.entries.values().next().value;
    if (oldest === undefined) return;
    this.timer = setTimeout(() => this.expire(), Math.max(0, oldest.since + this.options.silentTimeout - now));
    this.timer.unref();
  }

  private expire(): void {
    this.timer = undefined;
    const now = Date.now();
    const cutoff = now - this.options.silentTimeout;
    for (const entry of this.entries.values()) {
      if (entry.since > cutoff) break;
      this.close(entry, 'silent_timeout');
    }
    this.armTimer(now);
  }
}
