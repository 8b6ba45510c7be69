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

/** One open under way: every release that finds it joins it instead of opening a second socket. */
interface Opening {
  /** The close count it started at: once a close has happened since, its socket is discarded. */
  readonly epoch: number;
  /** Settles once its socket is kept or discarded (closed); rejects if the open failed. */
  readonly done: Promise<void>;
  /** Whether some release asked to retry if it fails (report it and try again every second). */
  retry: boolean;
}

/**
 * The listening socket of a listener in one process: open exactly while nothing holds it closed.
 * Every reason to close it is a {@link SocketHold}; the socket reopens when the last is released,
 * so suspend, drain, pause and overflow cannot undo each other. At most one open is under way at a
 * time, so at most one socket is ever open: a release while one is under way joins it, and a
 * release after a hold overtook it waits until it has discarded its socket, then opens anew. A
 * hold (and so a stop) resolves only once an open under way when it was made has settled and what
 * it produced is closed. A reopen that fails (the port taken meanwhile) is reported and retried
 * every second while nothing holds the socket. @internal
 */
export class ListeningSocket {
  private current: OpenSocket | undefined = undefined;
  private bound: SocketAddress | undefined;
  private readonly holds = new Set<SocketHold>(['suspended']);
  /** Bumped on every close, so an open still under way knows to discard its socket. */
  private epoch = 0;
  private opening: Opening | undefined = undefined;
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

  /** Close the socket (if open, or being opened) and keep it closed until `reason` is released. */
  async hold(reason: SocketHold): Promise<void> {
    this.holds.add(reason);
    await this.close();
  }

  /**
   * Release `reason`; once nothing holds the socket, open it (or join the open under way). Rejects
   * if that open fails — unless `retry`, when the failure is reported and the open retried every
   * second instead.
   */
  async release(reason: SocketHold, options: { retry?: boolean } = {}): Promise<void> {
    this.holds.delete(reason);
    await this.openIfFree(options.retry ?? false);
  }

  /** Close for good (the listener stopped). */
  async closeForGood(): Promise<void> {
    this.holds.add('suspended');
    await this.close();
  }

  /** Open the socket if nothing holds it and none is open, joining an open under way. */
  private async openIfFree(retry: boolean): Promise<void> {
    for (;;) {
      if (this.holds.size > 0 || this.current !== undefined) return;
      const opening = this.opening;
      if (opening === undefined || opening.epoch === this.epoch) break;
      // Overtaken by a hold since it began: it discards its socket. Wait for that, then look again.
      await opening.done.catch(() => {});
    }
    const opening = (this.opening ??= this.begin());
    if (retry) opening.retry = true;
    if (!retry) return opening.done;
    return opening.done.catch(() => {});
  }

  private begin(): Opening {
    const epoch = this.epoch;
    const opening: Opening = {
      epoch,
      retry: false,
      done: this.openNow(epoch).then(
        () => {
          if (this.opening === opening) this.opening = undefined;
        },
        (err: unknown) => {
          if (this.opening === opening) this.opening = undefined;
          const error = err instanceof Error ? err : new Error(String(err));
          // Report and retry only while it is still wanted: a hold since then reopens on its release.
          if (opening.retry && epoch === this.epoch) {
            this.failed(error);
            clearTimeout(this.retry);
            this.retry = setTimeout(() => {
              this.retry = undefined;
              void this.openIfFree(true);
            }, REOPEN_RETRY_MS);
          }
          throw error;
        },
      ),
    };
    return opening;
  }

  private async openNow(epoch: number): Promise<void> {
    const socket = await this.open();
    if (epoch !== this.epoch || this.holds.size > 0) {
      // Held closed while it was being opened: do not keep it.
      await socket?.close();
      return;
    }
    this.current = socket;
    if (socket !== undefined) this.bound = socket.address();
  }

  /** Close the open socket, and wait until an open under way has discarded what it produced. */
  private async close(): Promise<void> {
    this.epoch++;
    clearTimeout(this.retry);
    this.retry = undefined;
    const socket = this.current;
    const opening = this.opening;
    this.current = undefined;
    if (socket !== undefined) await socket.close();
    if (opening !== undefined) await opening.done.catch(() => {});
  }
}
