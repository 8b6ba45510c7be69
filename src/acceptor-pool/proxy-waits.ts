import type { CidrSet } from '../limits/cidr.js';
import type { AcceptedSocket } from '../transport.js';

/** How a listener reads PROXY protocol headers. @internal */
export interface ProxyHeaderSettings {
  /** `true`: every connection from a trusted peer must start with a header; `false`: it may (`'optional'`). */
  readonly required: boolean;
  /** The peers (load balancers) whose headers are believed. */
  readonly trusted: CidrSet;
  /** Longest wait for a trusted peer's header, in ms. */
  readonly timeout: number;
}

/**
 * Sockets from a trusted proxy whose PROXY header has not fully arrived. Most load balancers send
 * the header at once, but some only once their client has sent data (an AWS NLB by default), so a
 * silent client behind one waits here: each wait is bounded by `proxyHeaderTimeout` (one timer),
 * and their number by `maxSilent` (the pool closes the oldest). Such a socket is not counted per
 * source: its source is not known yet, and the proxy's own address is exempt from per-source
 * rules. @internal
 */
export class ProxyWaits<T> {
  private readonly waiting = new Map<AcceptedSocket, { readonly item: T; readonly since: number }>();
  private timer: NodeJS.Timeout | undefined = undefined;

  constructor(
    private readonly timeout: number,
    /** A socket's header did not arrive in time. */
    private readonly timedOut: (item: T) => void,
  ) {}

  get size(): number {
    return this.waiting.size;
  }

  add(socket: AcceptedSocket, item: T, now: number): void {
    this.waiting.set(socket, { item, since: now });
    this.arm(now);
  }

  has(socket: AcceptedSocket): boolean {
    return this.waiting.has(socket);
  }

  /** The socket that has waited longest, if any. */
  oldest(): T | undefined {
    return this.waiting.values().next().value?.item;
  }

  /** The header arrived (or the socket left). */
  remove(socket: AcceptedSocket): boolean {
    return this.waiting.delete(socket);
  }

  /** Forget every socket; `onEach` is told of each. */
  clear(onEach: (item: T) => void): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const items = [...this.waiting.values()];
    this.waiting.clear();
    for (const { item } of items) onEach(item);
  }

  private arm(now: number): void {
    if (this.timer !== undefined) return;
    const oldest = this.waiting.values().next().value;
    if (oldest === undefined) return;
    this.timer = setTimeout(() => this.expire(), Math.max(0, oldest.since + this.timeout - now));
    this.timer.unref();
  }

  private expire(): void {
    this.timer = undefined;
    const now = Date.now();
    const cutoff = now - this.timeout;
    for (const [socket, { item, since }] of this.waiting) {
      if (since > cutoff) break;
      this.waiting.delete(socket);
      this.timedOut(item);
    }
    this.arm(now);
  }
}
