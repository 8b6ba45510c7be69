import { readdirSync, readFileSync } from 'node:fs';

/** The soft limit on open files of this process (Linux `/proc/self/limits`), or `undefined`. @internal */
export function openFileLimit(): number | undefined {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const soft = line?.split(/\s{2,}/)[1];
    const n = Number(soft);
    return Number.isFinite(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/** Descriptors open in this process now (Linux `/proc/self/fd`), or `undefined`. */
function openDescriptors(): number | undefined {
  try {
    // The listing itself holds one descriptor while it runs.
    return readdirSync('/proc/self/fd').length - 1;
  } catch {
    return undefined;
  }
}

/** Descriptors kept free for everything but this listener's sockets (files, the broker, DNS...). */
export const DESCRIPTOR_RESERVE = 64;

/**
 * Keeps a listener from running out of file descriptors. When accept fails with `EMFILE`, libuv
 * accepts and closes the connects waiting in the backlog to make room (its "EMFILE trick") and
 * Node usually reports nothing: those clients just see their connection reset. So a listener must
 * stop accepting *before* the process runs out. This guard says when: the sockets the listener
 * holds, plus the descriptors everything else in the process holds, plus a reserve
 * ({@link DESCRIPTOR_RESERVE}), reach the open-file limit. Far from the limit the check is
 * arithmetic; near it, the process's open descriptors are counted (`/proc/self/fd`), at most every
 * 50 ms. Without `/proc` (not Linux) it never stops anything. @internal
 */
export class DescriptorGuard {
  private readonly limit: number | undefined;
  /** Descriptors held by everything but the listener's sockets, as last measured. */
  private others: number;
  private measuredAt = 0;

  constructor(limit = openFileLimit()) {
    this.limit = limit;
    this.others = openDescriptors() ?? 0;
  }

  /** Whether accepting must stop now, given the sockets the listener holds. `fresh`: measure now. */
  exhausted(held: number, fresh = false): boolean {
    const limit = this.limit;
    if (limit === undefined) return false;
    if (!fresh && held + this.others + DESCRIPTOR_RESERVE < limit) return false;
    const now = Date.now();
    if (fresh || now - this.measuredAt >= 50) {
      const open = openDescriptors();
      if (open === undefined) return false;
      this.others = Math.max(0, open - held);
      this.measuredAt = now;
    }
    return held + this.others + DESCRIPTOR_RESERVE >= limit;
  }
}
