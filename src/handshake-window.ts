import { performance } from 'node:perf_hooks';

/** Bounds and cadence of an adaptive {@link HandshakeWindow}. @internal */
export interface HandshakeWindowOptions {
  /** The window it starts at and never goes below. */
  readonly floor: number;
  /** The widest it may grow. */
  readonly ceiling: number;
  /** How often it looks at the event loop, ms. */
  readonly interval: number;
}

/** `maxHandshakes: 'auto'`: start at 128, grow up to 1024, look every 250 ms. @internal */
export const AUTO_HANDSHAKES: HandshakeWindowOptions = { floor: 128, ceiling: 1024, interval: 250 };

/** Share of the time since its last call that this process's event loop was busy (0–1). @internal */
export type LoopBusy = () => number;

/** The event loop's utilization since the previous call (`performance.eventLoopUtilization`). @internal */
export function eventLoopBusy(): LoopBusy {
  let mark = performance.eventLoopUtilization();
  return () => {
    const now = performance.eventLoopUtilization();
    const busy = performance.eventLoopUtilization(now, mark).utilization;
    mark = now;
    return busy;
  };
}

/** Below this event-loop utilization, a full window is waiting on peers, not on the CPU: widen. */
const WIDEN_BELOW = 0.8;
/** Above this, the CPU is the bottleneck: narrow back toward the floor. */
const NARROW_ABOVE = 0.95;
/** A widening must raise the handshakes completed per interval by this factor to be kept. */
const WORTH_IT = 1.05;
/** Intervals without widening after one that did not pay off. */
const HOLD_AFTER_FUTILE = 8;

/**
 * How many handshakes may run at once, for `maxHandshakes: 'auto'`.
 *
 * A handshake holds its slot until the peer answers, so a fixed window bounds the handshake rate at
 * window ÷ round-trip time, whatever the CPU could do: 128 slots and 200 ms devices allow 640
 * handshakes a second while a core can do ~1,200. The window therefore widens (by a quarter) while
 * every slot is taken, sockets wait, and the event loop was idle for more than a fifth of the last
 * interval — the handshakes wait on peers, not on the CPU — and narrows (by a fifth, not below the
 * floor) when the loop is busy for more than 95% of it, or when the slots were no longer all taken.
 * A widening must pay: if the next interval completes fewer than 5% more handshakes than the one
 * before it, the window returns to its previous size and does not widen for 8 intervals. Peers can
 * be slow because they are far away — then more slots mean more handshakes — or because they are
 * short of CPU themselves, or the process is (the loop looks idle while it waits to be scheduled) —
 * then more slots only add handshakes in flight. Under a stampede the CPU is the bottleneck, the
 * loop is busy, and the window stays at the floor, so the wait queue (and its newest-first order)
 * keeps doing the choosing. @internal
 */
export class HandshakeWindow {
  private current: number;
  private timer: NodeJS.Timeout | undefined = undefined;
  /** Were all slots taken with sockets waiting at some point in this interval? */
  private saturated = false;
  /** Handshakes completed in this interval, and in the one before. */
  private completed = 0;
  private completedBefore = 0;
  /** The size before the last widening, while its payoff is judged. */
  private beforeWidening: number | undefined = undefined;
  /** Intervals left without widening. */
  private hold = 0;

  constructor(
    private readonly options: HandshakeWindowOptions,
    /** Whether all slots are taken with sockets waiting, now. */
    private readonly isSaturated: () => boolean,
    /** Called after the window widened, to serve waiting sockets. */
    private readonly widened: () => void,
    private readonly loopBusy: LoopBusy = eventLoopBusy(),
  ) {
    this.current = options.floor;
  }

  get size(): number {
    return this.current;
  }

  /** A handshake completed. */
  noteCompleted(): void {
    this.completed++;
  }

  /** The gate found every slot taken with sockets waiting. */
  noteSaturated(): void {
    this.saturated = true;
    if (this.timer === undefined && this.current < this.options.ceiling) this.start();
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  private start(): void {
    this.loopBusy(); // start the measurement now
    this.completed = 0;
    this.beforeWidening = undefined;
    this.timer = setInterval(() => this.adjust(), this.options.interval);
    this.timer.unref();
  }

  /** Whether it is watching the event loop (between saturation and the return to the floor). */
  get watching(): boolean {
    return this.timer !== undefined;
  }

  /** One look at the event loop; run every `interval` ms while watching. @internal */
  adjust(): void {
    const busy = this.loopBusy();
    const saturated = this.saturated || this.isSaturated();
    this.saturated = false;
    const completed = this.completed;
    const completedBefore = this.completedBefore;
    this.completed = 0;
    this.completedBefore = completed;
    const { floor, ceiling } = this.options;
    const before = this.current;
    const judged = this.beforeWidening;
    this.beforeWidening = undefined;
    if (this.hold > 0) this.hold--;
    if (judged !== undefined && completed < completedBefore * WORTH_IT) {
      // The last widening did not raise the handshake rate: undo it and wait before trying again.
      this.current = judged;
      this.hold = HOLD_AFTER_FUTILE;
    } else if (saturated && busy < WIDEN_BELOW && this.hold === 0 && before < ceiling) {
      this.current = Math.min(ceiling, before + Math.ceil(before / 4));
      this.beforeWidening = before;
    } else if (busy > NARROW_ABOVE || !saturated) {
      this.current = Math.max(floor, Math.floor(before * 0.8));
    }
    if (this.current > before) this.widened();
    // Idle at the floor: nothing to watch until the gate is saturated again.
    if (this.current === floor && !saturated) this.stop();
  }
}
