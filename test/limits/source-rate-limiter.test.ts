/**
 * The per-source connection rate limiter's memory bound (`connectionRatePerSource`): at most
 * MAX_SOURCES buckets, the least recently used forgotten first, in constant time per new source —
 * a storm of more distinct sources than that must not cost a scan of every bucket per connect.
 * The clock is the test's: every call gets `now`.
 */
import { describe, expect, it, vi } from 'vitest';
import { MAX_SOURCES, SourceRateLimiter, TokenBucket } from '../../src/limits/token-bucket.js';

/** Refills one token in ~11.6 days: a bucket used once stays empty for the whole test. */
const slow = { rate: 0.000_001, burst: 1 };
const T = 1_000_000;

/** A limiter holding MAX_SOURCES sources `s0`, `s1`, ... (oldest first), each with its token taken. */
function full(): SourceRateLimiter {
  const limiter = new SourceRateLimiter(slow);
  for (let i = 0; i < MAX_SOURCES; i++) expect(limiter.take(`s${i}`, T)).toBe(true);
  expect(limiter.size).toBe(MAX_SOURCES);
  return limiter;
}

describe('SourceRateLimiter at its cap of sources', () => {
  it('never holds more than MAX_SOURCES, forgets the least recently used first, and keeps a live source limited', () => {
    const limiter = full();
    // s0 is used again: it is now the most recently used, and still over its rate.
    expect(limiter.take('s0', T)).toBe(false);
    for (let i = 0; i < 1000; i++) {
      expect(limiter.take(`new${i}`, T)).toBe(true);
      expect(limiter.size).toBe(MAX_SOURCES);
    }
    // The next oldest and the recently used ones are still known, and still limited.
    expect(limiter.take('s1001', T)).toBe(false);
    expect(limiter.take('s0', T)).toBe(false);
    expect(limiter.take('new0', T)).toBe(false);
    // s1..s1000 (the oldest) were forgotten: a forgotten source starts with a full bucket.
    expect(limiter.take('s1', T)).toBe(true);
    expect(limiter.take('s1000', T)).toBe(true);
    expect(limiter.size).toBe(MAX_SOURCES);
  });

  it('keeps use order while evicting: a source used mid-storm outlives the older ones, across a sweep', () => {
    const limiter = full();
    for (let i = 0; i < 1000; i++) limiter.take(`a${i}`, T);
    // s1000..s1999 are the oldest now; s1500 is used again.
    expect(limiter.take('s1500', T)).toBe(false);
    for (let i = 0; i < 1000; i++) limiter.take(`b${i}`, T);
    // A second later the periodic sweep runs (nothing is full: it forgets nothing); evictions go on.
    for (let i = 0; i < 10; i++) limiter.take(`c${i}`, T + 1001);
    expect(limiter.size).toBe(MAX_SOURCES);
    expect(limiter.take('s1500', T + 1001)).toBe(false);
    expect(limiter.take('s2011', T + 1001)).toBe(false);
    // s1000..s2010 but s1500 were forgotten: each starts again with a full bucket.
    expect(limiter.take('s2010', T + 1001)).toBe(true);
    expect(limiter.take('s1499', T + 1001)).toBe(true);
  });

  it('a new source at the cap evicts one bucket without looking at every other (no scan per connect)', () => {
    const limiter = full();
    // Within one second no sweep is due: any look at a bucket's state is the eviction's own.
    const looks = vi.spyOn(TokenBucket.prototype, 'full');
    const n = 30_000;
    for (let i = 0; i < n; i++) limiter.take(`storm${i}`, T);
    expect(limiter.size).toBe(MAX_SOURCES);
    // A scan per new source would look at 65,536 buckets each time: ~2·10⁹ looks.
    expect(looks.mock.calls.length).toBeLessThanOrEqual(n);
    looks.mockRestore();
  });

  it('still forgets refilled buckets once a second', () => {
    const limiter = new SourceRateLimiter({ rate: 10, burst: 1 });
    for (let i = 0; i < 100; i++) limiter.take(`s${i}`, T);
    expect(limiter.size).toBe(100);
    // 1.1 s later every bucket is full again: the next call forgets them all but its own.
    expect(limiter.take('late', T + 1100)).toBe(true);
    expect(limiter.size).toBe(1);
  });
});
