import type { RejectReason } from './acceptor-pool-stats.js';
import type { AcceptedSocket } from '../transport.js';
import { type SourcePrefix, sourceKey } from '../limits/source-key.js';
import { timerDelay } from '../timer-delay.js';

/** Why a silent socket was closed: the silent reasons of {@link RejectReason}. */
export type SilentCloseReason = Extract<RejectReason, 'silent_timeout' | 'source_limit' | 'silent_limit' | 'malformed'>;

/** Bounds of the silent stage. @internal */
export interface SilentSocketsOptions {
  readonly silentTimeout: number;
  readonly maxSilent: number;
  readonly maxSilentPerSource: number;
  readonly sourcePrefix: SourcePrefix;
}

/** What the silent stage reports to its acceptor pool. @internal */
export interface SilentSocketsEvents {
  /** The stage closed the socket (a bound or the timeout). */
  closed(socket: AcceptedSocket, reason: SilentCloseReason): void;
}

interface Entry {
  readonly socket: AcceptedSocket;
  /** The tick its timeout falls in (see `slotOf`): the sweep at that tick's start closes it. */
  readonly slot: number;
  /** The client's address when it is not the socket's peer (a PROXY header named it); `null`: exempt. */
  readonly address: string | null | undefined;
  /** Its source (`sourceKey`), once counted per source; `null`: it has none (no IP address). */
  source: string | null | undefined;
}

/**
 * The sockets of one listener whose peer has not yet sent its first message — for TLS, a complete
 * first record (the ClientHello). Such a socket does no work, so it holds no handshake slot and
 * counts against none of `maxHandshakes`, `maxConnections` or `maxWaiting`; it costs a file
 * descriptor and a few hundred bytes, and this stage bounds it by time (`silentTimeout`), per
 * source (`maxSilentPerSource`: per IPv4 address or IPv6 prefix, see `sourceKey`) and in all
 * (`maxSilent`). Over a bound, the oldest silent socket of that source (or of the listener) is
 * closed: a real client speaks within a round trip of its connect, so the socket that has been
 * silent longest is the one least likely to be a client. The acceptor pool reads the sockets and
 * tells this stage when one spoke or left. @internal
 */
export class SilentSockets {
  /** Every silent socket, oldest first (a Map iterates in insertion order). */
  private readonly entries = new Map<AcceptedSocket, Entry>();
  /** Silent sockets by source, oldest first (while `counting`). */
  private readonly bySource = new Map<string, Set<Entry>>();
  /** Whether sources are counted: since the stage held more than `maxSilentPerSource`, until it is empty. */
  private counting = false;
  /** Silent sockets by the tick their timeout falls in (`Entry.slot`). */
  private readonly wheel = new Map<number, Set<Entry>>();
  /** Length of a tick, ms: a thousandth of the timeout, rounded down, at least 1 ms. */
  private readonly tick: number;
  private timer: NodeJS.Timeout | undefined = undefined;
  /** The tick at whose start the timer ends. */
  private timerSlot = Infinity;
  /** Every tick up to this one has been swept. */
  private swept = -Infinity;

  constructor(
    private readonly options: SilentSocketsOptions,
    private readonly events: SilentSocketsEvents,
  ) {
    this.tick = Math.max(1, Math.floor(options.silentTimeout / 1000));
  }

  /** Silent sockets now. */
  get size(): number {
    return this.entries.size;
  }

  /**
   * Count a freshly accepted socket as silent, closing the oldest of its source or of the listener
   * if a bound is passed. Returns `false` if the socket itself was closed (a bound of zero).
   * `address` is the client's when it is not the socket's peer (from a PROXY header); `null`
   * exempts the socket from the per-source bound (a trusted proxy's own connection).
   */
  add(socket: AcceptedSocket, now: number, address?: string | null): boolean {
    // Never a tick already swept (a timeout shorter than a tick).
    const entry: Entry = { socket, slot: Math.max(this.slotOf(now), this.swept + 1), address, source: undefined };
    this.entries.set(socket, entry);
    let due = this.wheel.get(entry.slot);
    if (due === undefined) this.wheel.set(entry.slot, (due = new Set()));
    due.add(entry);
    // No source can hold more than maxSilentPerSource sockets while the stage holds no more than
    // that in all: sources (a getpeername(2) and a key each) are counted only past that point.
    // Once counting, every new socket counts, even when the stage has shrunk back below the bound
    // since (uncounted, a source could hold the bound's worth more).
    if (this.counting) this.countSource(entry);
    else if (this.entries.size > this.options.maxSilentPerSource) this.countSources();
    if (this.entries.size > this.options.maxSilent) this.closeEntry(this.entries.values().next().value!, 'silent_limit');
    if (!this.entries.has(socket)) return false;
    this.armTimer(entry.slot);
    return true;
  }

  /** Start counting per source: every silent socket so far, then each new one. */
  private countSources(): void {
    this.counting = true;
    for (const entry of [...this.entries.values()]) if (entry.source === undefined) this.countSource(entry);
  }

  /** Count one silent socket against its source, closing that source's oldest if over the bound. */
  private countSource(entry: Entry): void {
    const source = entry.address === null ? null : (sourceKey(entry.address ?? entry.socket.remoteAddress, this.options.sourcePrefix) ?? null);
    entry.source = source;
    if (source === null) return;
    let group = this.bySource.get(source);
    if (group === undefined) this.bySource.set(source, (group = new Set()));
    group.add(entry);
    if (group.size > this.options.maxSilentPerSource) this.closeEntry(group.values().next().value!, 'source_limit');
  }

  /** Whether the socket is still silent. */
  has(socket: AcceptedSocket): boolean {
    return this.entries.has(socket);
  }

  /** The socket spoke or its peer left: it is no longer silent. `false` if it was not. */
  remove(socket: AcceptedSocket): boolean {
    const entry = this.entries.get(socket);
    if (entry === undefined) return false;
    this.forget(entry);
    return true;
  }

  /** Close a silent socket for `reason` (reported as `closed`). */
  close(socket: AcceptedSocket, reason: SilentCloseReason): void {
    const entry = this.entries.get(socket);
    if (entry !== undefined) this.closeEntry(entry, reason);
  }

  /** Close every silent socket (the listener stops or drains); `onClosed` is told of each. */
  clear(onClosed: (socket: AcceptedSocket) => void): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerSlot = Infinity;
    for (const entry of [...this.entries.values()]) {
      this.forget(entry);
      entry.socket.destroy();
      onClosed(entry.socket);
    }
  }

  private closeEntry(entry: Entry, reason: SilentCloseReason): void {
    this.forget(entry);
    entry.socket.destroy();
    this.events.closed(entry.socket, reason);
  }

  private forget(entry: Entry): void {
    this.entries.delete(entry.socket);
    const due = this.wheel.get(entry.slot);
    if (due !== undefined) {
      due.delete(entry);
      if (due.size === 0) this.wheel.delete(entry.slot);
    }
    if (typeof entry.source === 'string') {
      const group = this.bySource.get(entry.source);
      if (group !== undefined) {
        group.delete(entry);
        if (group.size === 0) this.bySource.delete(entry.source);
      }
    }
    if (this.entries.size === 0) this.counting = false;
  }

  /**
   * The tick in which a socket opened at `now` times out: `silentTimeout` after `now`, less a
   * random share of up to a quarter of it, so that sockets opened together — a flood, or the
   * reconnect wave of one — are closed over a quarter of the timeout, a few at every tick, not in
   * one turn of the event loop, and their peers' reconnects are spread as much. With one deadline
   * for all, 3,000 silent sockets opened at once were closed at once and reopened at once, and a
   * real client's p99 doubled while they were (docs/limits.md). The sweep at the tick's start
   * closes it: a socket is never held past `silentTimeout`.
   */
  private slotOf(now: number): number {
    const t = this.options.silentTimeout;
    return Math.floor((now + t - Math.random() * (t / 4)) / this.tick);
  }

  /** Run the timer to the start of tick `slot`, unless it already ends sooner. */
  private armTimer(slot: number): void {
    if (slot >= this.timerSlot) return;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timerSlot = slot;
    this.timer = setTimeout(() => this.expire(), timerDelay(Math.max(0, slot * this.tick - Date.now())));
    this.timer.unref();
  }

  /**
   * Close the sockets of every tick that has begun since the last sweep, then run the timer to the
   * next tick that holds one. The timer is left running when sockets speak or leave (they come and
   * go faster than a timer is worth re-arming): a sweep may find nothing to close. Both walks are
   * bounded by the number of ticks holding sockets: tick by tick while that is shorter (the usual
   * case: the last sweep was a tick ago, the next tick is near), else over those ticks (after a
   * stall of the event loop, or when the clock stepped).
   */
  private expire(): void {
    this.timer = undefined;
    this.timerSlot = Infinity;
    const now = Math.floor(Date.now() / this.tick);
    const close = (slot: number): void => {
      const due = this.wheel.get(slot);
      if (due === undefined) return;
      // Only what is still here: the `closed` handler may have closed or removed some meanwhile.
      for (const entry of [...due]) if (this.entries.get(entry.socket) === entry) this.closeEntry(entry, 'silent_timeout');
    };
    if (now - this.swept > this.wheel.size) {
      for (const slot of [...this.wheel.keys()]) if (slot <= now) close(slot);
    } else {
      for (let slot = this.swept + 1; slot <= now; slot++) close(slot);
    }
    this.swept = now;
    if (this.entries.size === 0) return;
    let next = Infinity;
    for (let slot = now + 1, end = now + this.wheel.size; slot <= end; slot++) {
      if (this.wheel.has(slot)) {
        next = slot;
        break;
      }
    }
    if (next === Infinity) for (const slot of this.wheel.keys()) next = Math.min(next, slot);
    this.armTimer(next);
  }
}
