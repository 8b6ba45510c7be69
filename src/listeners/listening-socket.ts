import type { SocketAddress } from '../transport.js';

/**
 * Why a listener keeps its listening socket closed:
 *
 * - `suspended`: the listener is suspended, draining or stopped (its status is not `running`);
 * - `paused`: accepting is paused (`pauseAccepting`, or a `shared` worker at its share of
 *   `maxConnections`): connects wait in the backlog another process keeps;
 * - `refusing`: the wait queue overflowed (`overflow: 'refuse'`): the kernel refuses connects.
 * - `exhausted`: accepting ran out of file descriptors; closed for a back-off.
 *
 * @internal
 */
export type SocketHold = 'suspended' | 'paused' | 'refusing' | 'exhausted';

/** An open listening socket, as whoever opens it hands it over. @internal */
export interface OpenSocket {
  /** The bound address. */
  address(): SocketAddress;
  /** Release the socket. */
  close(): Promise<void>;
}

/** How long to wait before trying again to reopen a socket whose reopening failed, in ms. */
const REOPEN_RETRY_MS = 1000;

/**
 * The listening socket of a listener in one process: open exactly while nothing holds it closed.
 * Every reason to close it is a {@link SocketHold}; the socket reopens when the last is released,
 * so suspend, drain, pause and overflow cannot undo each other. An open that is overtaken by a
 * hold discards its socket. A reopen that fails (the port taken meanwhile) is reported and retried
 * every second while nothing holds the socket. @internal
 */
export class ListeningSocket {
  private current: OpenSocket | undefined = undefined;
  private bound: SocketAddress | undefined;
  private readonly holds = new Set<SocketHold>(['suspended']);
  /** Bumped on every close, so an open still under way knows to discard its socket. */
  private epoch = 0;
  private retry: NodeJS.Timeout | undefined = undefined;

  constructor(
    /** Open the socket; `undefined` when this process has none (sockets arrive by other means). */
    private readonly open: () => Promise<OpenSocket | undefined>,
    /** A reopen that failed (reported, then retried). */
    private readonly failed: (error: Error) => void,
    /** The address to report when this process has no socket of its own. */
    address?: SocketAddress,
  ) {
    this.bound = address;
  }

  /** The address last bound (kept while closed). */
  get address(): SocketAddress | undefined {
    return this.bound;
  }

  /** Note the address another process bound (a `reuseport` pool's first worker), if none is known. */
  learnAddress(address: SocketAddress): void {
    this.bound ??= address;
  }

  /** Whether it is held closed for `reason`. */
  isHeld(reason: SocketHold): boolean {
    return this.holds.has(reason);
  }

  /** Close the socket (if open) and keep it closed until `reason` is released. */
  async hold(reason: SocketHold): Promise<void> {
    this.holds.add(reason);
    await this.close();
  }

  /**
   * Release `reason`; once nothing holds the socket, open it. Rejects if that open fails — unless
   * `retry`, when the failure is reported and the open retried every second instead.
   */
  async release(reason: SocketHold, options: { retry?: boolean } = {}): Promise<void> {
    this.holds.delete(reason);
    if (this.holds.size > 0 || this.current !== undefined) return;
    if (!options.retry) {
      await this.openNow();
      return;
    }
    await this.openNow().catch((err: unknown) => {
      this.failed(err instanceof Error ? err : new Error(String(err)));
      clearTimeout(this.retry);
      this.retry = setTimeout(() => void this.release(reason, options), REOPEN_RETRY_MS);
    });
  }

  /** Close for good (the listener stopped). */
  async closeForGood(): Promise<void> {
    this.holds.add('suspended');
    await this.close();
  }

  private async openNow(): Promise<void> {
    const epoch = this.epoch;
    const socket = await this.open();
    if (epoch !== this.epoch || this.holds.size > 0) {
      // Held closed while it was being opened: do not keep it.
      await socket?.close();
      return;
    }
    this.current = socket;
    if (socket !== undefined) this.bound = socket.address();
  }

  private async close(): Promise<void> {
    this.epoch++;
    clearTimeout(this.retry);
    this.retry = undefined;
    const socket = this.current;
    this.current = undefined;
    if (socket !== undefined) await socket.close();
  }
}
