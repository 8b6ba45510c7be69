import Denque from 'denque';

/**
 * The process-wide bound on uplink bytes held unconfirmed: a device line is counted from the moment
 * the session takes it until the broker confirmed (or refused) it. When the budget is spent, the
 * session that wants more waits — and since it waits inside `onFrame`, corral stops reading that
 * device's socket, so TCP pushes back on the device instead of the gateway buffering its lines.
 */
export class UplinkBudget {
  private inUse = 0;
  /** One per session waiting (up to every device of the process): a deque, since `Array.shift` copies an array that long. */
  private readonly waiters = new Denque<{ readonly bytes: number; readonly grant: () => void }>();

  /**
   * @param limit Bytes that may be held at once.
   * @param onChange Told the bytes in use after every change (for a gauge).
   */
  constructor(
    readonly limit: number,
    private readonly onChange: (bytes: number) => void = () => {},
  ) {
    if (!(limit > 0)) throw new RangeError(`uplink budget must be > 0 bytes, got ${limit}`);
  }

  /** Bytes held now. */
  get used(): number {
    return this.inUse;
  }

  /** Sessions waiting for bytes. */
  get waiting(): number {
    return this.waiters.length;
  }

  /**
   * Take `bytes`. Returns nothing when they were granted at once, or a promise that resolves once
   * they are (the caller holds them from then on and must {@link UplinkBudget.release} them).
   * Grants are first come, first served; a request larger than the whole budget is granted when
   * nothing else is held, so no line can wait forever.
   */
  acquire(bytes: number): Promise<void> | undefined {
    if (this.waiters.length === 0 && this.fits(bytes)) {
      this.take(bytes);
      return undefined;
    }
    return new Promise((resolve) => this.waiters.push({ bytes, grant: resolve }));
  }

  /** Give back `bytes` taken with {@link UplinkBudget.acquire}, and grant waiters that now fit. */
  release(bytes: number): void {
    this.inUse = Math.max(0, this.inUse - bytes);
    while (this.waiters.length > 0 && this.fits(this.waiters.peekFront()!.bytes)) {
      const next = this.waiters.shift()!;
      this.take(next.bytes);
      next.grant();
    }
    this.onChange(this.inUse);
  }

  private fits(bytes: number): boolean {
    return this.inUse === 0 || this.inUse + bytes <= this.limit;
  }

  private take(bytes: number): void {
    this.inUse += bytes;
    this.onChange(this.inUse);
  }
}
