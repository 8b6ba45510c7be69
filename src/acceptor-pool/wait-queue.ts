import type { AdmissionPolicy } from '../options.js';

interface Waiter<T> {
  readonly item: T;
  readonly since: number;
  /** Removed by `delete` while in the middle of the ring; skipped when it reaches an end. */
  deleted: boolean;
}

/**
 * A bounded double-ended queue of waiting items ordered by arrival, served from either end by
 * policy. The oldest item is always at the head, so expiry only ever looks at the head. An item can
 * also leave from the middle (`delete`: its peer gave up while it waited).
 */
export class WaitQueue<T> {
  private ring: (Waiter<T> | undefined)[];
  private head = 0;
  /** Slots in use from `head`, deleted ones included. */
  private used = 0;
  /** Items waiting (deleted ones excluded). */
  private size = 0;
  private readonly index = new Map<T, Waiter<T>>();

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
    if (this.used === this.ring.length) {
      if (this.used > this.size) this.compact();
      else this.grow();
    }
    const w: Waiter<T> = { item, since: now, deleted: false };
    this.ring[(this.head + this.used) % this.ring.length] = w;
    this.used++;
    this.size++;
    this.index.set(item, w);
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

  /** Remove and return the oldest item, or `undefined` if empty. */
  shift(): T | undefined {
    return this.size === 0 ? undefined : this.popHead();
  }

  /** Remove an item wherever it is; `false` if it is not waiting. */
  delete(item: T): boolean {
    const w = this.index.get(item);
    if (w === undefined) return false;
    w.deleted = true;
    this.index.delete(item);
    this.size--;
    this.trim();
    return true;
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
    this.used--;
    this.size--;
    this.index.delete(w.item);
    this.trim();
    return w.item;
  }

  private popTail(): T | undefined {
    const i = (this.head + this.used - 1) % this.ring.length;
    const w = this.ring[i]!;
    this.ring[i] = undefined;
    this.used--;
    this.size--;
    this.index.delete(w.item);
    this.trim();
    return w.item;
  }

  /** Drop deleted items from both ends, so that both ends are live (or the ring is empty). */
  private trim(): void {
    while (this.used > 0 && this.ring[this.head]!.deleted) {
      this.ring[this.head] = undefined;
      this.head = (this.head + 1) % this.ring.length;
      this.used--;
    }
    while (this.used > 0) {
      const i = (this.head + this.used - 1) % this.ring.length;
      if (!this.ring[i]!.deleted) break;
      this.ring[i] = undefined;
      this.used--;
    }
  }

  /** Close the gaps deleted items left, in place of growing. */
  private compact(): void {
    const next = new Array<Waiter<T> | undefined>(this.ring.length);
    let n = 0;
    for (let i = 0; i < this.used; i++) {
      const w = this.ring[(this.head + i) % this.ring.length]!;
      if (!w.deleted) next[n++] = w;
    }
    this.ring = next;
    this.head = 0;
    this.used = n;
  }

  private grow(): void {
    const next = new Array<Waiter<T> | undefined>(this.ring.length * 2);
    for (let i = 0; i < this.used; i++) next[i] = this.ring[(this.head + i) % this.ring.length];
    this.ring = next;
    this.head = 0;
  }
}
