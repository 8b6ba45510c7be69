import { InvalidOptionError } from '../errors.js';
import { PROXY_HEADER_MAX_V1, PROXY_HEADER_MAX_V2 } from './header.js';
import { incomplete, invalid, type ProxyHeaderParseResult } from './parse-result.js';
import { V1_SIGNATURE, parseV1 } from './v1.js';
import { V2_FIXED_LENGTH, V2_SIGNATURE, parseV2 } from './v2.js';

/** Options of {@link parseProxyHeader}. */
export interface ProxyHeaderParseOptions {
  /**
   * `'required'` (default): bytes that cannot start a PROXY header are `invalid` with reason
   * `bad_signature`. `'optional'`: they are `absent`, and belong to the payload.
   *
   * Only bytes that start with neither signature count as missing a header: a stream that starts
   * with `PROXY` or the v2 signature and then goes wrong is `invalid` in both modes.
   */
  mode?: 'required' | 'optional';
  /** The versions accepted; default both. A header of another version is `invalid` (`bad_version`). */
  versions?: readonly (1 | 2)[];
  /**
   * The longest v2 header accepted, in bytes, from 16 to {@link PROXY_HEADER_MAX_V2} (the default).
   * A longer one is `invalid` (`too_long`) as soon as its length field arrives.
   */
  maxV2Length?: number;
}

/** The options, checked, with their defaults. */
interface ResolvedOptions {
  optional: boolean;
  v1: boolean;
  v2: boolean;
  maxV2Length: number;
}

const DEFAULTS: ResolvedOptions = { optional: false, v1: true, v2: true, maxV2Length: PROXY_HEADER_MAX_V2 };

function resolve(options: ProxyHeaderParseOptions | undefined): ResolvedOptions {
  if (options === undefined) return DEFAULTS;
  const { mode = 'required', versions = [1, 2], maxV2Length = PROXY_HEADER_MAX_V2 } = options;
  if (mode !== 'required' && mode !== 'optional') {
    throw new InvalidOptionError('mode', `must be 'required' or 'optional', got ${String(mode)}`);
  }
  if (!Array.isArray(versions) || versions.length === 0 || versions.some((v) => v !== 1 && v !== 2)) {
    throw new InvalidOptionError('versions', `must be a non-empty array of 1 and/or 2, got ${String(versions)}`);
  }
  if (!Number.isInteger(maxV2Length) || maxV2Length < V2_FIXED_LENGTH || maxV2Length > PROXY_HEADER_MAX_V2) {
    throw new InvalidOptionError('maxV2Length', `must be an integer from ${V2_FIXED_LENGTH} to ${PROXY_HEADER_MAX_V2}, got ${String(maxV2Length)}`);
  }
  return { optional: mode === 'optional', v1: versions.includes(1), v2: versions.includes(2), maxV2Length };
}

/** How many leading bytes of `head` equal the start of `signature`. */
function matching(head: Buffer, signature: Buffer): number {
  const n = Math.min(head.length, signature.length);
  let i = 0;
  while (i < n && head[i] === signature[i]) i++;
  return i;
}

/**
 * Parses the PROXY protocol header (v1 text or v2 binary) at the start of `head`, the bytes of a
 * connection received so far. Pure and synchronous; it never throws, whatever the bytes (it throws
 * `InvalidOptionError` only for bad `options`). Call it again with all bytes so far whenever more
 * arrive, until the answer is not `incomplete`; see {@link ProxyHeaderParseResult} for what each
 * answer means and the guarantee that only `incomplete` ever changes.
 *
 * The answer comes as early as the bytes allow: `absent`/`bad_signature` on the first byte that
 * departs from both signatures (so a TLS ClientHello is told apart on its first byte), v1 field
 * errors on the byte that breaks the field, v2 version, command, family and length errors as soon
 * as their byte arrives. `incomplete` is impossible once {@link PROXY_HEADER_MAX_V1} bytes of a
 * v1 line, or 16 + length bytes of a v2 header, are there.
 *
 * What is validated:
 * - v1: `PROXY` SP (`TCP4` | `TCP6`) SP src SP dst SP sport SP dport CRLF, single spaces; IPv4
 *   as four 0-255 numbers without leading zeros; IPv6 as colon-hex text (one `::`, an optional
 *   dotted IPv4 tail, no zone id); ports 0-65535 without leading zeros; `PROXY UNKNOWN` followed by
 *   CRLF or by a space and anything without a lone CR or LF up to the CRLF; 107 bytes at most.
 * - v2: signature, version 2, command LOCAL or PROXY, one of the seven family/protocol bytes the
 *   spec lists, a length covering the family's address block (for LOCAL too, as the block is
 *   skipped before the TLVs), TLVs and SSL sub-TLVs that fit their parent exactly, each registered
 *   TLV decoded and checked (CRC32C of 4 bytes that matches, UNIQUE_ID at most 128 bytes,
 *   AUTHORITY and SSL CN UTF-8, NETNS and the other SSL strings US-ASCII, SSL with its 5 fixed
 *   bytes, none sent twice). Unknown TLV types and reserved ranges are kept, not judged.
 */
export function parseProxyHeader(head: Buffer, options?: ProxyHeaderParseOptions): ProxyHeaderParseResult {
  const { optional, v1, v2, maxV2Length } = resolve(options);
  if (head.length === 0) {
    return incomplete(Math.max(v1 ? PROXY_HEADER_MAX_V1 : V1_SIGNATURE.length, v2 ? maxV2Length : V2_SIGNATURE.length));
  }
  const v1Match = matching(head, V1_SIGNATURE);
  if (v1Match === head.length && v1Match < V1_SIGNATURE.length) {
    return incomplete(v1 ? PROXY_HEADER_MAX_V1 : V1_SIGNATURE.length);
  }
  if (v1Match === V1_SIGNATURE.length) {
    return v1 ? parseV1(head) : invalid('bad_version', 'a v1 header where only v2 is accepted');
  }
  const v2Match = matching(head, V2_SIGNATURE);
  if (v2Match === head.length && v2Match < V2_SIGNATURE.length) {
    return incomplete(v2 ? maxV2Length : V2_SIGNATURE.length);
  }
  if (v2Match === V2_SIGNATURE.length) {
    return v2 ? parseV2(head, maxV2Length) : invalid('bad_version', 'a v2 header where only v1 is accepted');
  }
  if (optional) return { status: 'absent' };
  const first = head.subarray(0, 8).toString('hex');
  return invalid('bad_signature', `the first bytes (${first}${head.length > 8 ? '...' : ''}) start neither a v1 nor a v2 header`);
}
