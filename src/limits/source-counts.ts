/**
 * How many sockets each source holds, for `maxConnectionsPerAddress`: a source takes one when a
 * socket of it is admitted and gives it back when the socket is done (closed unserved, failed, or
 * its connection closed or removed from the count). @internal
 */
export class SourceCounts {
  private readonly counts = new Map<string, number>();

  constructor(private readonly max: number) {}

  /** Take one for `source`; `false` if it holds `max` already. */
  take(source: string): boolean {
    const n = this.counts.get(source) ?? 0;
    if (n >= this.max) return false;
    this.counts.set(source, n + 1);
    return true;
  }

  /** Give one back. */
  release(source: string): void {
    const n = this.counts.get(source);
    if (n === undefined) return;
    if (n <= 1) this.counts.delete(source);
    else this.counts.set(source, n - 1);
  }

  /** Sockets `source` holds now. */
  of(source: string): number {
    return this.counts.get(source) ?? 0;
  }

  /** Sources holding at least one. */
  get size(): number {
    return this.counts.size;
  }
}
