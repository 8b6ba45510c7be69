import { CorralError } from '../errors.js';
import type { ConnectionCountOp } from '../listener.js';
import { MAX_TIMER_MS } from '../timer-delay.js';

interface CountWait {
  readonly op: ConnectionCountOp;
  readonly n: number;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
  readonly timer: NodeJS.Timeout;
}

const OPS: readonly string[] = ['>', '>=', '==', '<=', '<'];

function holds(op: ConnectionCountOp, a: number, b: number): boolean {
  switch (op) {
    case '>':
      return a > b;
    case '>=':
      return a >= b;
    case '==':
      return a === b;
    case '<=':
      return a <= b;
    case '<':
      return a < b;
  }
}

/**
 * The pending `waitForConnections` calls of one listener (Ranch's `wait_for_connections`): each
 * resolves once the live connection count compares to its `n` as its `op` says, or rejects at its
 * timeout or when the listener stops. The listener calls {@link ConnectionCountWaits.check} whenever its
 * count may have changed. @internal
 */
export class ConnectionCountWaits {
  private waits: CountWait[] = [];
  private stopped = false;

  constructor(
    private readonly listener: string,
    /** The live connection count now. */
    private readonly count: () => number,
  ) {}

  wait(op: ConnectionCountOp, n: number, timeout = 5000): Promise<void> {
    if (!OPS.includes(op)) {
      return Promise.reject(new TypeError(`waitForConnections: op must be one of > >= == <= <, got ${String(op)}`));
    }
    if (!Number.isInteger(n) || n < 0) return Promise.reject(new TypeError(`waitForConnections: n must be an integer >= 0, got ${n}`));
    if (!Number.isFinite(timeout) || timeout < 0 || timeout > MAX_TIMER_MS) {
      return Promise.reject(new TypeError(`waitForConnections: timeout must be a number of ms from 0 to ${MAX_TIMER_MS}, got ${timeout}`));
    }
    if (holds(op, this.count(), n)) return Promise.resolve();
    if (this.stopped) {
      // Nothing can change the count any more: fail now rather than hold a timer until the timeout.
      return Promise.reject(new CorralError('CORRAL_LISTENER_STOPPED', `listener ${this.listener} stopped`));
    }
    return new Promise<void>((resolve, reject) => {
      const wait: CountWait = {
        op,
        n,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waits = this.waits.filter((w) => w !== wait);
          reject(
            new CorralError(
              'CORRAL_WAIT_TIMEOUT',
              `listener ${this.listener}: connections ${op} ${n} not reached within ${timeout} ms (now ${this.count()})`,
            ),
          );
        }, timeout),
      };
      this.waits.push(wait);
    });
  }

  /** Resolve every wait whose condition holds now. */
  check(): void {
    if (this.waits.length === 0) return;
    const size = this.count();
    this.waits = this.waits.filter((w) => {
      if (!holds(w.op, size, w.n)) return true;
      clearTimeout(w.timer);
      w.resolve();
      return false;
    });
  }

  /** The listener stopped: reject every wait, and any later one at once. */
  stop(): void {
    this.stopped = true;
    for (const w of this.waits) {
      clearTimeout(w.timer);
      w.reject(new CorralError('CORRAL_LISTENER_STOPPED', `listener ${this.listener} stopped`));
    }
    this.waits = [];
  }
}
