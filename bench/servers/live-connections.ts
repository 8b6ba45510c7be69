/**
 * The connections an echo server holds, kept for the stdin command `cut` (config `cut`): destroy
 * them all at once, as a network outage does to the devices of the reconnect-storm scenario.
 */

/** A set of connections (sockets, corral connections) that can all be destroyed at once. */
export class LiveConnections<C extends { destroy(): unknown }> {
  readonly #live = new Set<C>();

  add(c: C): void {
    this.#live.add(c);
  }

  delete(c: C): void {
    this.#live.delete(c);
  }

  /** Destroy every connection; the answer to `cut`: how many, when (wall clock) and how long it took. */
  cut(): { cut: number; at: number; ms: number } {
    const at = Date.now();
    const n = this.#live.size;
    for (const c of [...this.#live]) c.destroy();
    this.#live.clear();
    return { cut: n, at, ms: Date.now() - at };
  }
}
