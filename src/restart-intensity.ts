/**
 * OTP's restart intensity: at most `maxRestarts` restarts within any `period` milliseconds.
 * Used for transient handler restarts on one connection (and, across processes, for workers).
 */
export class RestartIntensity {
  private readonly stamps: number[] = [];

  constructor(
    /** Restarts allowed within one period. `0` means never restart. */
    readonly maxRestarts: number,
    /** The sliding window, in milliseconds. */
    readonly period: number,
  ) {}

  /**
   * Record a restart at `now` if the intensity allows it. Returns `false`, recording nothing,
   * when `maxRestarts` restarts already happened within the last `period` ms.
   */
  tryRestart(now: number = Date.now()): boolean {
    const since = now - this.period;
    while (this.stamps.length > 0 && this.stamps[0]! <= since) this.stamps.shift();
    if (this.stamps.length >= this.maxRestarts) return false;
    this.stamps.push(now);
    return true;
  }

  /** Restarts counted in the current window. */
  get recent(): number {
    return this.stamps.length;
  }
}
