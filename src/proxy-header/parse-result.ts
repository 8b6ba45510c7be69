import type { PROXY_HEADER_MAX_V1, PROXY_HEADER_MAX_V2, ProxyHeader } from './header.js';

/**
 * Why bytes are not a valid PROXY header; a small closed set, meant for counters and logs.
 *
 * - `bad_signature`: the bytes do not start with `PROXY` nor with the v2 signature (only with
 *   `mode: 'required'`; `'optional'` answers `absent` instead).
 * - `bad_version`: a v2 version nibble other than 2, or a version the options do not accept.
 * - `bad_command`: a v2 command other than LOCAL (0) and PROXY (1).
 * - `bad_family`: a v1 protocol word other than `TCP4`, `TCP6`, `UNKNOWN`; a v2 family/protocol
 *   byte other than the seven the spec lists (0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32).
 * - `bad_address`: a v1 address that is not strict IPv4/IPv6 text of the announced family.
 * - `bad_port`: a v1 port that is not 0-65535 without leading zeros.
 * - `bad_line`: any other v1 grammar error: not exactly one space between fields, a field missing
 *   or extra, a CR or LF that is not part of the final CRLF.
 * - `bad_length`: a v2 length shorter than the address block its family needs.
 * - `too_long`: no CRLF within {@link PROXY_HEADER_MAX_V1} bytes, or a v2 header longer than the
 *   `maxV2Length` option.
 * - `bad_tlv`: a v2 TLV (or SSL sub-TLV) that overruns its parent, or a registered TLV that breaks
 *   its definition (see the docs of `parseProxyHeader`).
 * - `bad_crc32c`: the `PP2_TYPE_CRC32C` checksum does not match the header.
 */
export type ProxyHeaderInvalidReason =
  | 'bad_signature'
  | 'bad_version'
  | 'bad_command'
  | 'bad_family'
  | 'bad_address'
  | 'bad_port'
  | 'bad_line'
  | 'bad_length'
  | 'too_long'
  | 'bad_tlv'
  | 'bad_crc32c';

/**
 * What `parseProxyHeader` makes of the bytes received so far.
 *
 * - `incomplete`: they are a valid beginning; read more. `maxLength` (greater than the bytes given,
 *   at most {@link PROXY_HEADER_MAX_V2}) is the number of bytes by which another answer is certain,
 *   so a caller never needs to buffer more than that before the header is decided.
 * - `absent`: they cannot be the start of a PROXY header (`mode: 'optional'` only); every byte
 *   belongs to the payload.
 * - `complete`: `header` is valid and took the first `length` bytes; the bytes after it are the
 *   payload (e.g. a TLS ClientHello).
 * - `invalid`: they can never become a valid header; close the connection. `message` says where
 *   and why, for logs.
 *
 * Every answer but `incomplete` is final: parsing more of the same stream gives the same answer
 * (the same header and length, or the same reason).
 */
export type ProxyHeaderParseResult =
  | {
      /** The bytes so far are a valid beginning of a header: read more and parse again. */
      status: 'incomplete';
      /**
       * Once this many bytes are there, the answer is no longer `incomplete`: more than the bytes
       * given, at most {@link PROXY_HEADER_MAX_V2}.
       */
      maxLength: number;
    }
  | {
      /** The bytes do not start a PROXY header (`mode: 'optional'` only); all of them are payload. */
      status: 'absent';
    }
  | {
      /** A valid header was read. */
      status: 'complete';
      /** The header, decoded. */
      header: ProxyHeader;
      /** How many bytes the header took at the start of the input; the payload begins after them. */
      length: number;
    }
  | {
      /** The bytes can never become a valid header: close the connection. */
      status: 'invalid';
      /** What is wrong, as a short code for counters. */
      reason: ProxyHeaderInvalidReason;
      /** Where and why parsing failed, in words, for logs (starts with `PROXY header:`). */
      message: string;
    };

/** An `invalid` result. */
export function invalid(reason: ProxyHeaderInvalidReason, message: string): ProxyHeaderParseResult {
  return { status: 'invalid', reason, message: `PROXY header: ${message}` };
}

/** An `incomplete` result. */
export function incomplete(maxLength: number): ProxyHeaderParseResult {
  return { status: 'incomplete', maxLength };
}
