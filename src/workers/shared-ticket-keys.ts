import { randomBytes } from 'node:crypto';

/**
 * The TLS session-ticket keys a worker pool's primary makes and every worker uses, so that a
 * ticket issued by one worker resumes on any other and after a rolling restart. With a rotation
 * period, a fresh key is added every period: new tickets are made under it, tickets under the key
 * before it still resume (and are renewed under the new one) until the next rotation. Not used
 * when the user gave `transportOptions.ticketKeys` (each worker has those already). @internal
 */
export class SharedTicketKeys {
  /** The current key first, then the one before. 48 bytes each. */
  private current: Buffer[] = [randomBytes(48)];
  private timer: NodeJS.Timeout | undefined = undefined;

  get keys(): readonly Buffer[] {
    return this.current;
  }

  /** Rotate every `period` ms (`0`: never), telling `rotated` the new list each time. */
  start(period: number, rotated: (keys: readonly Buffer[]) => void): void {
    if (period <= 0) return;
    this.timer = setInterval(() => {
      this.current = [randomBytes(48), ...this.current.slice(0, 1)];
      rotated(this.current);
    }, period);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}
