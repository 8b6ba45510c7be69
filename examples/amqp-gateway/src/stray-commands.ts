/**
 * Commands stranded by a process that died: delivered from its slot's queue (through the bindings
 * it could not remove) to the process that took the slot over, for devices that process does not
 * hold. Their devices are usually on their way back — reconnecting here, to another worker or to
 * another node — so each is held for a grace period instead of being sent on at once (which,
 * before the device is bound anywhere again, would route it to the shared `<p>.down.offline`
 * queue, where no device ever reads it).
 *
 * This class only keeps the books: what is held per device, in arrival order, the grace timer of
 * each device, and the bound on how many are held. What releases them (the device attached here,
 * its `connected` presence event from elsewhere, the grace ending) is the broker's business.
 */
export interface StrayCommandsOptions<T> {
  /** How long a device's stray commands are held, in ms, from the first one. */
  readonly graceMs: number;
  /** Most commands held at once (they stay unacknowledged, so they count against the prefetch). */
  readonly max: number;
  /** The grace of `device` ended with these still held (in arrival order). */
  readonly onExpired: (device: string, held: T[]) => void;
}

/** What {@link StrayCommands.hold} did. */
export type HoldOutcome =
  /** Held; the device already had commands held. */
  | 'held'
  /** Held, the first for its device: its grace starts now. */
  | 'first'
  /** Not held: `max` are held already. */
  | 'full';

export class StrayCommands<T> {
  private readonly held = new Map<string, { readonly items: T[]; readonly timer: NodeJS.Timeout }>();
  private count = 0;

  constructor(private readonly options: StrayCommandsOptions<T>) {}

  /** Commands held now. */
  get size(): number {
    return this.count;
  }

  /** The devices with commands held. */
  devices(): string[] {
    return [...this.held.keys()];
  }

  /** Whether commands of `device` are held. */
  has(device: string): boolean {
    return this.held.has(device);
  }

  hold(device: string, item: T): HoldOutcome {
    if (this.count >= this.options.max) return 'full';
    this.count += 1;
    const entry = this.held.get(device);
    if (entry) {
      entry.items.push(item);
      return 'held';
    }
    const timer = setTimeout(() => {
      const items = this.take(device);
      if (items.length > 0) this.options.onExpired(device, items);
    }, this.options.graceMs);
    timer.unref();
    this.held.set(device, { items: [item], timer });
    return 'first';
  }

  /** Release what is held for `device` (in arrival order) and stop its grace timer. */
  take(device: string): T[] {
    const entry = this.held.get(device);
    if (!entry) return [];
    clearTimeout(entry.timer);
    this.held.delete(device);
    this.count -= entry.items.length;
    return entry.items;
  }

  /** Forget the held commands that `drop` selects (e.g. those of a lost link, which RabbitMQ requeued). */
  forget(drop: (item: T) => boolean): void {
    for (const [device, entry] of [...this.held]) {
      const kept = entry.items.filter((item) => !drop(item));
      this.count -= entry.items.length - kept.length;
      if (kept.length === entry.items.length) continue;
      if (kept.length === 0) {
        clearTimeout(entry.timer);
        this.held.delete(device);
      } else {
        entry.items.splice(0, entry.items.length, ...kept);
      }
    }
  }
}
