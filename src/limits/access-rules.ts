import { Cidr } from './cidr.js';

/**
 * One access rule: `'allow <cidr>'`, `'deny <cidr>'`, or `'allow all'` / `'deny all'`. A CIDR is
 * IPv4 or IPv6 (`10.0.0.0/8`, `2001:db8::/32`) or a single address.
 */
export type AccessRule = `allow ${string}` | `deny ${string}`;

interface Compiled {
  readonly allow: boolean;
  /** `undefined`: `all`. */
  readonly block: Cidr | undefined;
}

/**
 * Ordered allow/deny rules over client addresses (esockd's access rules): the first rule whose
 * block holds the address decides; an address no rule holds is allowed (end the list with
 * `'deny all'` for an allow-list). A peer without an IP address (a Unix socket) is allowed. The
 * address is the client's own — the one a PROXY header names, when the listener reads those.
 * @internal
 */
export class AccessRules {
  private constructor(
    private readonly rules: readonly Compiled[],
    /** The rules as given. */
    readonly list: readonly AccessRule[],
  ) {}

  /** Check and compile the rules; returns a message naming the first bad one instead. */
  static parse(value: unknown): AccessRules | string {
    if (!Array.isArray(value)) return "must be an array of 'allow <cidr>' / 'deny <cidr>' strings";
    const rules: Compiled[] = [];
    for (const rule of value as unknown[]) {
      const m = typeof rule === 'string' ? /^(allow|deny)\s+(\S+)$/.exec(rule.trim()) : null;
      if (m === null) return `has ${JSON.stringify(rule)}: a rule is 'allow <cidr>', 'deny <cidr>', 'allow all' or 'deny all'`;
      const block = m[2] === 'all' ? undefined : Cidr.parse(m[2]!);
      if (m[2] !== 'all' && block === undefined) return `has ${JSON.stringify(rule)}: ${m[2]} is not an IPv4 or IPv6 address or CIDR block`;
      rules.push({ allow: m[1] === 'allow', block });
    }
    return new AccessRules(rules, [...(value as AccessRule[])]);
  }

  /** Whether a client at `address` may connect. */
  allows(address: string | undefined): boolean {
    if (address === undefined || address === '') return true;
    for (const r of this.rules) if (r.block === undefined || r.block.contains(address)) return r.allow;
    return true;
  }
}
