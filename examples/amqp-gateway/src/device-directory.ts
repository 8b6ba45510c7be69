/**
 * Which sessions this process holds for each device, and the latest session stamp known for each
 * device (from this process's hellos and from every node's takeover announcements). It decides
 * who wins when a device connects twice: the later hello, ties broken by session id. It also
 * remembers the highest presence seq known for each device, which numbers the next session's
 * presence events (see {@link DeviceDirectory.nextSeq}).
 */

/** When a session's hello was received, and the session's id: what takeovers compare. */
export interface SessionStamp {
  /** When the hello was received (ms since the epoch; see {@link DeviceDirectory.helloTime}). */
  readonly at: number;
  readonly session: string;
}

/** Whether `a` is a later session than `b`: a later hello, or the same time and a larger session id. */
export function isNewer(a: SessionStamp, b: SessionStamp): boolean {
  return a.at > b.at || (a.at === b.at && a.session > b.session);
}

/** What the directory needs to know of a session. */
export interface DirectorySession extends SessionStamp {
  readonly device: string | undefined;
  /** The session's presence seq, if it has one (its `disconnected` will carry seq + 1). */
  readonly seq?: number;
}

/** The highest presence seq known for a device, and the session that used it. */
export interface SeqOwner {
  readonly seq: number;
  readonly session: string;
}

interface KnownSeq extends SeqOwner {
  readonly seenAt: number;
}

interface KnownStamp {
  readonly stamp: SessionStamp;
  readonly seenAt: number;
}

/** Options of a {@link DeviceDirectory}. */
export interface DeviceDirectoryOptions {
  /**
   * How long a device's latest stamp is remembered once it is no longer refreshed, in ms. It must
   * outlast the slowest hello (a hello received before a newer session was announced elsewhere, but
   * processed after it, must still find that announcement). Default 60000.
   */
  readonly stampRetention?: number;
  /**
   * How long a device's highest presence seq is remembered once it is no longer refreshed, in ms
   * (it is refreshed by every announcement and presence event of the device). A device that
   * comes back after every node forgot it starts again from 2. Default 86400000 (24 h).
   */
  readonly seqRetention?: number;
}

/** Default of {@link DeviceDirectoryOptions.seqRetention}: 24 h. */
export const SEQ_RETENTION_MS = 24 * 60 * 60 * 1000;

/** Local sessions by device id, and the latest takeover stamp per device. One per process. */
export class DeviceDirectory<S extends DirectorySession> {
  private readonly byDevice = new Map<string, Set<S>>();
  /** Latest stamp per device, oldest-refreshed first (a Map keeps insertion order). */
  private readonly stamps = new Map<string, KnownStamp>();
  private readonly retention: number;
  /** Highest presence seq per device, oldest-refreshed first. */
  private readonly seqs = new Map<string, KnownSeq>();
  private readonly seqRetention: number;
  private lastMs = 0;
  private sameMs = 0;

  constructor(options: DeviceDirectoryOptions = {}) {
    this.retention = options.stampRetention ?? 60_000;
    this.seqRetention = options.seqRetention ?? SEQ_RETENTION_MS;
  }

  /**
   * The time of a hello received now: `Date.now()`, plus a fraction of a millisecond counted per
   * process, so two hellos received by this process in the same millisecond still compare in the
   * order they arrived (up to 1000 per millisecond; beyond that, session ids break ties).
   */
  helloTime(): number {
    const now = Date.now();
    if (now === this.lastMs) this.sameMs = Math.min(this.sameMs + 1, 999);
    else {
      this.lastMs = now;
      this.sameMs = 0;
    }
    return now + this.sameMs / 1000;
  }

  /** Register a session whose device is known; its stamp becomes known too. */
  add(session: S): void {
    const device = session.device!;
    let set = this.byDevice.get(device);
    if (set === undefined) this.byDevice.set(device, (set = new Set()));
    set.add(session);
    this.noteStamp(device, session);
  }

  /** Forget a session (idempotent). */
  remove(session: S): void {
    const device = session.device;
    if (device === undefined) return;
    const set = this.byDevice.get(device);
    if (set === undefined || !set.delete(session)) return;
    if (set.size === 0) this.byDevice.delete(device);
  }

  /** This process's sessions of `device` (usually one; two for a moment during a takeover). */
  sessions(device: string): ReadonlySet<S> {
    return this.byDevice.get(device) ?? EMPTY;
  }

  /** The session downlink for `device` goes to: the newest one this process holds. */
  current(device: string): S | undefined {
    const set = this.byDevice.get(device);
    if (set === undefined) return undefined;
    let best: S | undefined;
    for (const s of set) if (best === undefined || isNewer(s, best)) best = s;
    return best;
  }

  /** Devices with at least one session here. */
  get devices(): number {
    return this.byDevice.size;
  }

  /** Remember `stamp` for `device` if it is later than what is known. */
  noteStamp(device: string, stamp: SessionStamp): void {
    const now = Date.now();
    const known = this.stamps.get(device);
    if (known !== undefined && !isNewer(stamp, known.stamp)) return;
    this.stamps.delete(device);
    this.stamps.set(device, { stamp: { at: stamp.at, session: stamp.session }, seenAt: now });
    this.prune(now);
  }

  /** The latest stamp known for `device`: this process's sessions and announcements from every node. */
  latest(device: string): SessionStamp | undefined {
    let best = this.stamps.get(device)?.stamp;
    for (const s of this.sessions(device)) if (best === undefined || isNewer(s, best)) best = s;
    return best;
  }

  /** Remember that `session` of `device` used presence seq `seq` (the highest one is kept, with its session). */
  noteSeq(device: string, seq: number, session: string): void {
    const now = Date.now();
    const known = this.seqs.get(device);
    const keep = known !== undefined && known.seq >= seq;
    this.seqs.delete(device);
    this.seqs.set(device, keep ? { seq: known.seq, session: known.session, seenAt: now } : { seq, session, seenAt: now });
    let budget = 8;
    for (const [d, k] of this.seqs) {
      if (budget-- === 0 || now - k.seenAt < this.seqRetention) break;
      this.seqs.delete(d);
    }
  }

  /** The highest presence seq remembered for `device`, and the session that used it. */
  knownSeq(device: string): SeqOwner | undefined {
    const known = this.seqs.get(device);
    return known === undefined ? undefined : { seq: known.seq, session: known.session };
  }

  /** The highest presence seq known for `device` (0 if none): remembered, and this process's sessions' (+ 1, for their `disconnected`). */
  highestSeq(device: string): number {
    let best = this.seqs.get(device)?.seq ?? 0;
    for (const s of this.sessions(device)) if (s.seq !== undefined) best = Math.max(best, s.seq + 1);
    return best;
  }

  /**
   * The presence seq of a new session of `device`: the highest known + 2, so it is above the
   * `disconnected` (seq + 1) of every session this process knows of. Remembered at once, so two
   * hellos here get different ones.
   */
  nextSeq(device: string, session: string): number {
    const seq = this.highestSeq(device) + 2;
    this.noteSeq(device, seq, session);
    return seq;
  }

  /** Forget a few stamps older than the retention (amortized: a handful per call). */
  private prune(now: number): void {
    let budget = 8;
    for (const [device, known] of this.stamps) {
      if (budget-- === 0 || now - known.seenAt < this.retention) return;
      this.stamps.delete(device);
    }
  }
}

const EMPTY: ReadonlySet<never> = new Set();
