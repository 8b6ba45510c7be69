/**
 * One device's uplink rate: a token bucket of `burst` messages that refills at `rate` per second.
 * A message over the rate is not refused: the session waits for the next token inside `onFrame`,
 * so corral stops reading that device's socket and TCP pushes back on the device (the same way the
 * {@link UplinkBudget} bounds bytes). A device that floods is slowed to its rate, and one that sends
 * in bursts within `burst` never waits.
 */
export class UplinkRate {
  private tokens: number;
  private last: number;

  /**
   * @param rate Messages per second, > 0 (`Infinity`: no limit).
   * @param burst Messages that may be sent at once, ≥ 1.
   * @param now The clock, in ms (monotonic).
   */
  constructor(
    readonly rate: number,
    readonly burst: number,
    now: number,
  ) {
    if (!(rate > 0)) throw new RangeError(`uplink rate must be > 0 messages per second, got ${rate}`);
    if (!(burst >= 1)) throw new RangeError(`uplink burst must be >= 1 message, got ${burst}`);
    this.tokens = burst;
    this.last = now;
  }

  /**
   * Take one message's token. Returns 0 when it was there, else the ms until it will be: the
   * caller waits that long and calls `take` again.
   */
  take(now: number): number {
    if (this.rate === Infinity) return 0;
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.rate) / 1000);
    this.last = now;
    // Within a rounding error of a whole token counts as one: a caller that waited the ms it was told
    // must get its token, even when the refill's floating-point sum lands a hair below 1.
    if (this.tokens >= 1 - 1e-9) {
      this.tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - this.tokens) * 1000) / this.rate);
  }
}
