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

/** Most sources whose buckets are kept; past it, the least recently used are forgotten. */
const MAX_SOURCES = 65_536;

/**
 * A token bucket per source (`sourceKey`): a source over its rate is refused while others are
 * not. Memory is bounded: a bucket that has refilled is forgotten (a new one would be the same),
 * and past {@link MAX_SOURCES} sources the least recently used go — which can only make a
 * forgotten source's next connect succeed, never refuse one. @internal
 */
export class SourceRateLimiter {
  private readonly buckets = new Map<string, TokenBucket>();
  private sweptAt = 0;

  constructor(private readonly limit: RateLimit) {}

  /** Sources tracked now. */
  get size(): number {
    return this.buckets.size;
  }

  /** Take a token for `source`; `false` if it is over its rate. */
  take(source: string, now: number): boolean {
    // Sweep first: a sweep forgets full buckets, and the one about to be used may be full.
    if (now - this.sweptAt > 1000) this.sweep(now, false);
    let bucket = this.buckets.get(source);
    if (bucket === undefined) {
      if (this.buckets.size >= MAX_SOURCES) this.sweep(now, true);
      bucket = new TokenBucket(this.limit, now);
    } else {
      // Most recently used last: re-insert.
      this.buckets.delete(source);
    }
    this.buckets.set(source, bucket);
    return bucket.take(now);
  }

  /** Forget full buckets (at most once a second); with `evict`, also the least recently used. */
  private sweep(now: number, evict: boolean): void {
    this.sweptAt = now;
    for (const [key, bucket] of this.buckets) if (bucket.full(now)) this.buckets.delete(key);
    if (evict) {
      for (const key of this.buckets.keys()) {
        if (this.buckets.size < MAX_SOURCES) break;
        this.buckets.delete(key);
      }
    }
  }
}
