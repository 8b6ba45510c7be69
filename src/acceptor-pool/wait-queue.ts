/**
 * In which order waiting sockets get a handshake slot.
 *
 * - `fifo`: oldest first. Fair, but after a stampede it spends every slot on the sockets most
 *   likely to have been given up on by their clients.
 * - `lifo`: newest first. The socket served is the one whose client is most likely still waiting;
 *   the oldest wait until `waitTimeout` closes them.
 * - `adaptive`: oldest first while the queue is short-lived (its oldest socket has waited less than
 *   `adaptiveTarget` ms), newest first once a standing queue has formed. The default.
 */
export type AdmissionPolicy = 'fifo' | 'lifo' | 'adaptive';

interface Waiter<T> {
  readonly item: T;
  readonly since: number;
}

/**
 * A bounded double-ended queue of waiting items ordered by arrival, served from either end by
 * policy. The oldest item is always at the head, so expiry only ever looks at the head.
 */
export class WaitQueue<T> {
  private ring: (Waiter<T> | undefined)[];
  private head = 0;
  private size = 0;

  constructor(
    /** Most items held at once; a push beyond it is refused. */
    public capacity: number,
    public policy: AdmissionPolicy,
    /** For `adaptive`: how old the head may get before newest-first kicks in, in ms. */
    public adaptiveTarget: number,
  ) {
    this.ring = new Array<Waiter<T> | undefined>(Math.min(Math.max(capacity, 1), 1024));
  }

  /** Items waiting now. */
  get length(): number {
    return this.size;
  }

  /** When the oldest item arrived, or `undefined` if empty. */
  get oldestSince(): number | undefined {
    return this.size === 0 ? undefined : this.ring[this.head]!.since;
  }

  /** Add an item; returns `false` (adding nothing) when the queue is full. */
  push(item: T, now: number): boolean {
    if (this.size >= this.capacity) return false;
    if (this.size === this.ring.length) this.grow();
    this.ring[(this.head + this.size) % this.ring.length] = { item, since: now };
    this.size++;
    return true;
  }

  /** Take the next item to serve under the policy, or `undefined` if empty. */
  take(now: number): T | undefined {
    if (this.size === 0) return undefined;
    const newest =
      this.policy === 'lifo' ||
      (this.policy === 'adaptive' && now - this.ring[this.head]!.since > this.adaptiveTarget);
    return newest ? this.popTail() : this.popHead();
  }

  /** Remove and return every item that arrived at or before `cutoff`, oldest first. */
  expire(cutoff: number): T[] {
    const out: T[] = [];
    while (this.size > 0 && this.ring[this.head]!.since <= cutoff) out.push(this.popHead()!);
    return out;
  }

  /** Remove and return everything, oldest first. */
  clear(): T[] {
    const out: T[] = [];
    while (this.size > 0) out.push(this.popHead()!);
    return out;
  }

  private popHead(): T | undefined {
    const w = this.ring[this.head]!;
    this.ring[this.head] = undefined;
    this.head = (this.head + 1) % this.ring.length;
    this.size--;
    return w.item;
  }

  private popTail(): T | undefined {
    const i = (this.head + this.size - 1) % this.ring.length;
    const w = this.ring[i]!;
    this.ring[i] = undefined;
    this.size--;
    return w.item;
  }

  private grow(): void {
    const next = new Array<Waiter<T> | undefined>(this.ring.length * 2);
    for (let i = 0; i < this.size; i++) next[i] = this.ring[(this.head + i) % this.ring.length];
    this.ring = next;
    this.head = 0;
  }
}
