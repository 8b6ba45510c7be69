import type { HandlerHook } from './protocol.js';
import { isThenable } from './is-thenable.js';

/** What a hook's outcome does to its connection. @internal */
export interface HookPolicy {
  /**
   * Whether the connection's queue (frames, the peer's end, a drain) waits while the hook's
   * promise is pending: reading pauses, and the next event is handled once it settles.
   */
  readonly holds: boolean;
  /**
   * What a throw or rejection does: `'restart'` — a crash that `restart: 'transient'` may answer
   * with a fresh handler (otherwise the connection closes); `'close'` — the connection closes;
   * `'count'` — it is counted and reported, nothing else (the connection is closing anyway, or the
   * hook is the one answering a crash).
   */
  readonly crash: 'restart' | 'close' | 'count';
}

/**
 * Every hook's policy, in one table: the one place that says what a throw, a rejection and a
 * pending promise of each hook do. @internal
 */
export const HOOK_POLICIES: Readonly<Record<HandlerHook, HookPolicy>> = {
  onReady: { holds: true, crash: 'restart' },
  onFrame: { holds: true, crash: 'restart' },
  onIdle: { holds: true, crash: 'restart' },
  onFrameError: { holds: true, crash: 'close' },
  onRemoteClose: { holds: true, crash: 'close' },
  onShutdown: { holds: true, crash: 'close' },
  onCrash: { holds: true, crash: 'count' },
  onError: { holds: false, crash: 'count' },
  onClose: { holds: false, crash: 'count' },
};

/**
 * Runs a connection's hooks, one policy per hook ({@link HOOK_POLICIES}): it calls the hook,
 * catches a throw, follows a returned promise, reports a crash to `crashed`, and tells whether a
 * holding hook is pending. Whatever the hook, the same code handles sync returns, throws, promises
 * and rejections. @internal
 */
export class HookRunner {
  /** A holding hook's promise is pending. */
  private pending = 0;

  constructor(
    /** A hook threw or rejected (called after `holding` is updated). */
    private readonly crashed: (hook: HandlerHook, error: unknown) => void,
    /** A holding hook settled: the connection's queue may move on. */
    private readonly released: () => void,
  ) {}

  /** Whether a holding hook is pending. */
  get holding(): boolean {
    return this.pending > 0;
  }

  /**
   * Call `hook` through `invoke`. `settled` runs once the hook is done — returned, resolved, or
   * crashed (after the crash is handled) — with whether it succeeded.
   */
  run(hook: HandlerHook, invoke: () => unknown, settled?: (ok: boolean) => void): void {
    let ret: unknown;
    try {
      ret = invoke();
    } catch (err) {
      this.crashed(hook, err);
      settled?.(false);
      return;
    }
    if (!isThenable(ret)) {
      settled?.(true);
      return;
    }
    const holds = HOOK_POLICIES[hook].holds;
    if (holds) this.pending++;
    ret.then(
      () => {
        if (holds) this.pending--;
        settled?.(true);
        if (holds) this.released();
      },
      (err: unknown) => {
        if (holds) this.pending--;
        this.crashed(hook, err);
        settled?.(false);
        if (holds) this.released();
      },
    );
  }
}
