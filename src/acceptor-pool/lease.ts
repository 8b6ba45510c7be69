/**
 * One slot of a listener's `maxConnections`, held by whatever serves the socket it was given for:
 * the handshake, then the connection — or, in a worker pool with distribution `primary`, the worker
 * the socket was passed to. The acceptor pool that issued it is the one owner of the count; a lease
 * is how the holder gives its slot back, and it can give it back only once, whichever way the
 * connection ends (close, `removeFromCount`, crash, drain, the death of its worker). @internal
 */
export class Lease {
  #released = false;

  constructor(private readonly onRelease: () => void) {}

  /** Whether the slot was given back. */
  get released(): boolean {
    return this.#released;
  }

  /** Give the slot back. Returns `false` (doing nothing) if it was given back before. */
  release(): boolean {
    if (this.#released) return false;
    this.#released = true;
    this.onRelease();
    return true;
  }
}
