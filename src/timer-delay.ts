/**
 * Node's longest timer, in ms (2^31 − 1, ~24.8 days). A `setTimeout` asked for longer fires after
 * 1 ms instead (with a `TimeoutOverflowWarning`): options bounded by it are refused past it, and
 * delays computed from them are capped at it. @internal
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** `ms`, capped at {@link MAX_TIMER_MS}: a delay Node's timers keep. @internal */
export function timerDelay(ms: number): number {
  return Math.min(ms, MAX_TIMER_MS);
}
