import { AcceptorPool, type AcceptorPoolOptions } from '../acceptor-pool/acceptor-pool.js';
import { CorralError } from '../errors.js';
import type { AccessRules } from '../limits/access-rules.js';
import type { ListenerReporter } from '../listeners/listener-reporter.js';
import type { Transport, TransportServer } from '../transport.js';
import type { DispatchStats } from './pool-info.js';
import type { WorkerProcess } from './worker-process.js';

/**
 * Distribution `primary`: the primary's own acceptor pool, whose last step passes each socket to a
 * worker instead of handshaking it. The pool reads the socket's first message (for TLS the
 * ClientHello; silent sockets hold no slot here either), then hands the socket, with what it read,
 * to the ready worker holding the fewest sockets, together with a lease on its slot of
 * `maxConnections` that the worker gives back when the connection is done (or that is released when
 * the worker dies) — so `maxConnections` holds exactly over all workers. Sockets wait, unread, in
 * the primary's wait queue while no worker is ready or accepting is paused. @internal
 */
export class PrimaryDispatch {
  private readonly pool: AcceptorPool;
  private overflows = 0;
  /** After a hand-over no worker could take: look at the workers again soon. */
  private relimitTimer: NodeJS.Timeout | undefined = undefined;

  constructor(
    /** The pool's transport, built to accept and read only (it never handshakes here). */
    private readonly transport: Transport,
    admission: AcceptorPoolOptions,
    /** The workers that may take a socket, in the order to try them. */
    candidates: () => readonly WorkerProcess[],
    report: ListenerReporter,
    /** Set the hand-over limit again from the workers' state (the listener's own rule). */
    relimit: () => void,
  ) {
    const detach = transport.detach;
    if (detach === undefined) throw new CorralError('CORRAL_UNSUPPORTED', `distribution 'primary' needs a transport that can pass sockets; ${transport.name} cannot`);
    this.pool = new AcceptorPool(
      transport,
      admission,
      {
        kind: 'dispatch',
        dispatch: (socket, head, lease, proxy) => {
          const { raw, rest } = detach.call(transport, socket);
          const read = rest === undefined ? head : head === undefined ? rest : Buffer.concat([head, rest]);
          for (const w of candidates()) {
            const id = w.nextSocketId();
            // The PROXY header goes as its bytes; the worker parses them again.
            if (!w.post({ t: 'socket', id, head: read, proxy: proxy?.raw }, raw)) continue; // its process just went
            w.hold(id, lease);
            return true;
          }
          // Every worker that looked ready has just lost its process (its exit is yet to be seen):
          // hand nothing over until the listener sets the limit again (a worker's exit or ready),
          // so the sockets behind this one wait instead of failing one after another.
          this.pool.maxConnections = 0;
          // Their exits normally set the limit again; should none come, look again shortly.
          this.relimitTimer ??= setTimeout(() => {
            this.relimitTimer = undefined;
            relimit();
          }, 100);
          this.relimitTimer.unref();
          throw new CorralError('CORRAL_HANDSHAKE_FAILED', 'no worker is ready to take the connection');
        },
      },
      {
        handshaken: () => {},
        handshakeFailed: (socket, kind, error) => {
          const { remoteAddress, remotePort } = this.pool.clientOf(socket);
          report.handshakeFailed({ kind, error, remoteAddress, remotePort });
        },
        rejected: (socket, reason, detail) => {
          const { remoteAddress, remotePort } = this.pool.clientOf(socket);
          report.rejected({ reason, remoteAddress, remotePort, ...(detail === undefined ? {} : { detail }) });
        },
        released: () => {},
        changed: () => {},
        wantsPeerAddress: () => report.wantsPeerAddress(),
        // The primary's socket is not closed on overflow (its wait queue is the whole pool's):
        // overflowing sockets are closed as with overflow: 'close'.
        overflowed: (full) => {
          if (full) this.overflows++;
        },
      },
    );
  }

  /** Open the listening socket; accepted sockets enter the pool (then `accepted` is called). */
  listen(onError: (error: Error) => void, accepted: () => void): Promise<TransportServer> {
    return this.transport.listen({
      onSocket: (socket) => {
        this.pool.admit(socket);
        accepted();
      },
      onError,
    });
  }

  /** Hand over at most this many sockets at once (`0`: none; they wait). */
  set limit(n: number) {
    this.pool.maxConnections = n;
  }

  get stats(): DispatchStats {
    return { stats: this.pool.stats, overflows: this.overflows };
  }

  /** Replace the access rules for new connects. */
  setAccess(rules: AccessRules | undefined): void {
    this.pool.setAccess(rules);
  }

  /** Close the waiting sockets (the pool drains); returns how many there were. */
  rejectWaiting(): number {
    const before = this.pool.stats.rejected.shutdown;
    this.pool.rejectWaiting();
    return this.pool.stats.rejected.shutdown - before;
  }

  /** Close everything the pool holds (the pool stops). */
  close(): void {
    clearTimeout(this.relimitTimer);
    this.pool.close();
  }
}
