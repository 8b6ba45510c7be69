/** A rate with a burst: `rate` tokens a second, at most `burst` saved up. */
export interface RateLimit {
  /** Tokens (connections) a second, > 0. */
  readonly rate: number;
  /** Most tokens saved up (connections accepted at once after a quiet spell), >= 1. */
  readonly burst: number;
}

/** A token bucket: full at first, refilled at `rate` a second up to `burst`. @internal */
export class TokenBucket {
  private tokens: number;
  private at: number;

  constructor(
    private readonly limit: RateLimit,
    now: number,
  ) {
    this.tokens = limit.burst;
    this.at = now;
  }

  private refill(now: number): void {
    if (now > this.at) {
      this.tokens = Math.min(this.limit.burst, this.tokens + ((now - this.at) / 1000) * this.limit.rate);
      this.at = now;
    }
  }

  /** Take a token if there is one. */
  take(now: number): boolean {
    this.refill(now);
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** Milliseconds until a token is there (0 if one is). */
  wait(now: number): number {
    this.refill(now);
    return this.tokens >= 1 ? 0 : Math.ceil(((1 - this.tokens) / this.limit.rate) * 1000);
  }

  /** Whether it is full again (it can be forgotten: a new bucket would be the same). */
  full(now: number): boolean {
    this.refill(now);
    return this.tokens >= this.limit.burst;
  }
}

/** Most sources whose buckets are kept; past it, the least recently used are forgotten. @internal */
export const MAX_SOURCES = 65_536;

/**
 * A token bucket per source (`sourceKey`): a source over its rate is refused while others are
 * not. Memory is bounded: a bucket that has refilled is forgotten (a new one would be the same),
 * and past {@link MAX_SOURCES} sources the least recently used goes — which can only make a
 * forgotten source's next connect succeed, never refuse one. A call costs O(1) (amortized) apart
 * from the sweep of full buckets, at most once a second: at the cap, a new source evicts the least
 * recently used without looking at the others. @internal
 */
export class SourceRateLimiter {
  /** In use order, least recently used first (a used bucket is re-inserted). */
  private readonly buckets = new Map<string, TokenBucket>();
  private sweptAt = 0;
  /**
   * Walks `buckets` oldest first across evictions. A fresh `keys()` per eviction would not be
   * O(1): V8 keeps deleted entries as holes until it rehashes, and a new iterator steps over every
   * one of them from the start. A live iterator goes on where it stopped and still sees entries
   * added since, in order (the language guarantees both). Dropped at each sweep, so that it keeps
   * no table V8 has since replaced alive for longer.
   */
  private oldest: Iterator<string> | undefined = undefined;

  constructor(private readonly limit: RateLimit) {}

  /** Sources tracked now. */
  get size(): number {
    return this.buckets.size;
  }

  /** Take a token for `source`; `false` if it is over its rate. */
  take(source: string, now: number): boolean {
    // Sweep first: a sweep forgets full buckets, and the one about to be used may be full.
    if (now - this.sweptAt > 1000) this.sweep(now);
    let bucket = this.buckets.get(source);
    if (bucket === undefined) {
      if (this.buckets.size >= MAX_SOURCES) this.forgetOldest();
      bucket = new TokenBucket(this.limit, now);
    } else {
      // Most recently used last: re-insert.
      this.buckets.delete(source);
    }
    this.buckets.set(source, bucket);
    return bucket.take(now);
  }

  /** Forget the least recently used bucket. */
  private forgetOldest(): void {
    let next = this.oldest?.next();
    if (next === undefined || next.done === true) {
      this.oldest = this.buckets.keys();
      next = this.oldest.next();
    }
    if (next.done !== true) this.buckets.delete(next.value);
  }

  /** Forget full buckets (at most once a second). */
  private sweep(now: number): void {
    this.sweptAt = now;
    this.oldest = undefined;
    for (const [key, bucket] of this.buckets) if (bucket.full(now)) this.buckets.delete(key);
  }
}
