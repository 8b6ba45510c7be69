import { channels } from '../diagnostics.js';
import type { AlarmPlan } from '../listener-plan.js';
import type { AlarmEvent } from '../options.js';

/**
 * A listener's alarms on its live connection count (Ranch's `alarms`): an alarm fires — its
 * callback, then the listener's `alarm` event and the `corral:listener:alarm` channel — when the
 * count is at or over its threshold as the count changes, and then not again for `cooldown` ms.
 * @internal
 */
export class ConnectionAlarms {
  private readonly lastFired = new Map<string, number>();

  constructor(
    private readonly listener: string,
    private readonly alarms: readonly AlarmPlan[],
    private readonly fire: (event: AlarmEvent) => void,
  ) {}

  /** The live connection count changed to `connections`. */
  check(connections: number): void {
    if (this.alarms.length === 0) return;
    const now = Date.now();
    for (const a of this.alarms) {
      if (connections < a.threshold) continue;
      const last = this.lastFired.get(a.name);
      if (last !== undefined && now - last < a.cooldown) continue;
      this.lastFired.set(a.name, now);
      const event: AlarmEvent = { listener: this.listener, name: a.name, threshold: a.threshold, connections };
      try {
        a.callback?.(event);
      } catch {
        // An alarm's callback must not break the listener that called it; the event still goes out.
      }
      if (channels.listenerAlarm.hasSubscribers) channels.listenerAlarm.publish(event);
      this.fire(event);
    }
  }
}
