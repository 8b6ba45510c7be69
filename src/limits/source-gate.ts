import type { AccessRules } from './access-rules.js';
import { SourceCounts } from './source-counts.js';
import { type SourcePrefix, sourceKey } from './source-key.js';
import { type RateLimit, SourceRateLimiter } from './token-bucket.js';

/** The per-source rules of a listener. @internal */
export interface SourceGateOptions {
  readonly access: AccessRules | undefined;
  /** Most connects a second (and burst) per source; over it, refused. */
  readonly connectionRatePerSource: RateLimit | undefined;
  /** Most sockets a source holds at once (`maxConnectionsPerAddress`). */
  readonly maxConnectionsPerAddress: number;
  readonly sourcePrefix: SourcePrefix;
}

/** Why the gate refused a socket. */
export type GateRefusal = 'denied' | 'rate_limited' | 'address_limit';

/**
 * The rules applied to a client's own address before its socket may do any work: the access rules,
 * the connection rate per source, and the per-address cap — in that order, the cheapest first. The
 * address is the client's (the one its PROXY header names, when the listener reads those); the
 * source is its `sourceKey` (IPv4 address, IPv6 prefix), so one client is one source for every
 * rule. @internal
 */
export class SourceGate {
  private access: AccessRules | undefined;
  private readonly rate: SourceRateLimiter | undefined;
  private readonly counts: SourceCounts | undefined;

  constructor(private readonly options: SourceGateOptions) {
    this.access = options.access;
    this.rate = options.connectionRatePerSource ? new SourceRateLimiter(options.connectionRatePerSource) : undefined;
    this.counts = Number.isFinite(options.maxConnectionsPerAddress) ? new SourceCounts(options.maxConnectionsPerAddress) : undefined;
  }

  /** Whether the gate has any rule (otherwise nothing needs the peer address). */
  get active(): boolean {
    return this.access !== undefined || this.rate !== undefined || this.counts !== undefined;
  }

  /** Replace the access rules (`undefined`: allow all). */
  setAccess(rules: AccessRules | undefined): void {
    this.access = rules;
  }

  /**
   * Check a client (`address` is read only if a rule needs it: for a socket's own peer it is a
   * syscall). Returns why it is refused, or the source it now holds a place for (to give back
   * with {@link SourceGate.release} when its socket is done; `undefined` when nothing was taken).
   */
  admit(address: () => string | undefined, now: number): { refused: GateRefusal } | { source: string | undefined } {
    if (this.access === undefined && this.rate === undefined && this.counts === undefined) return { source: undefined };
    const client = address();
    if (this.access !== undefined && !this.access.allows(client)) return { refused: 'denied' };
    if (this.rate === undefined && this.counts === undefined) return { source: undefined };
    const source = sourceKey(client, this.options.sourcePrefix);
    if (source === undefined) return { source: undefined };
    if (this.rate !== undefined && !this.rate.take(source, now)) return { refused: 'rate_limited' };
    if (this.counts === undefined) return { source: undefined };
    if (!this.counts.take(source)) return { refused: 'address_limit' };
    return { source };
  }

  /** A socket of `source` is done. */
  release(source: string): void {
    this.counts?.release(source);
  }
}
