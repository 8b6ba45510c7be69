import { InvalidOptionError } from '../errors.js';
import { PP2_SUBTYPE_SSL, PP2_TYPE, type ProxySslInfo, type ProxyTlv } from './header.js';

/** Type (1 byte) and big-endian length (2 bytes) before each TLV value. */
export const TLV_HEADER_LENGTH = 3;

/** The SSL TLV's fixed part before its sub-TLVs: `client` (1 byte) and `verify` (4 bytes). */
const SSL_FIXED_LENGTH = 5;

/** The longest `PP2_TYPE_UNIQUE_ID` value the spec allows. */
const UNIQUE_ID_MAX = 128;

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** What the decoded TLVs add to a header; see `ProxyHeader`. */
export interface DecodedTlvs {
  alpn?: Buffer;
  authority?: string;
  uniqueId?: Buffer;
  ssl?: ProxySslInfo;
  netns?: string;
  /** Offset in the walked buffer of the CRC32C value, to be verified by the caller. */
  crc32cAt?: number;
}

/** Thrown inside this module only, turned into a `bad_tlv` result by the v2 parser. */
export class TlvError extends Error {}

/**
 * Splits `buf[start, end)` into TLVs, each value a view of `buf`. Throws {@link TlvError} when a
 * TLV's header or value runs past `end`.
 */
export function walkTlvs(buf: Buffer, start: number, end: number, where: string): ProxyTlv[] {
  const tlvs: ProxyTlv[] = [];
  let at = start;
  while (at < end) {
    if (end - at < TLV_HEADER_LENGTH) {
      throw new TlvError(`${end - at} byte(s) left at offset ${at} of ${where}, too few for a TLV header`);
    }
    const type = buf[at]!;
    const length = buf.readUInt16BE(at + 1);
    const valueAt = at + TLV_HEADER_LENGTH;
    if (valueAt + length > end) {
      throw new TlvError(`TLV 0x${hex(type)} at offset ${at} of ${where} declares ${length} bytes, ${end - valueAt} left`);
    }
    tlvs.push({ type, value: buf.subarray(valueAt, valueAt + length) });
    at = valueAt + length;
  }
  return tlvs;
}

function hex(type: number): string {
  return type.toString(16).padStart(2, '0');
}

function utf8Text(value: Buffer, name: string): string {
  try {
    return utf8.decode(value);
  } catch {
    throw new TlvError(`${name} is not valid UTF-8`);
  }
}

function asciiText(value: Buffer, name: string): string {
  for (const byte of value) if (byte > 0x7f) throw new TlvError(`${name} is not US-ASCII`);
  return value.toString('latin1');
}

function once(seen: Set<number>, type: number, name: string): void {
  if (seen.has(type)) throw new TlvError(`${name} appears more than once`);
  seen.add(type);
}

function decodeSsl(value: Buffer): ProxySslInfo {
  if (value.length < SSL_FIXED_LENGTH) {
    throw new TlvError(`SSL TLV of ${value.length} bytes, shorter than its ${SSL_FIXED_LENGTH}-byte client and verify fields`);
  }
  const tlvs = walkTlvs(value, SSL_FIXED_LENGTH, value.length, 'the SSL TLV');
  const ssl: ProxySslInfo = { client: value[0]!, verify: value.readUInt32BE(1), tlvs };
  const seen = new Set<number>();
  for (const sub of tlvs) {
    switch (sub.type) {
      case PP2_SUBTYPE_SSL.VERSION:
        once(seen, sub.type, 'SSL VERSION');
        ssl.version = asciiText(sub.value, 'SSL VERSION');
        break;
      case PP2_SUBTYPE_SSL.CN:
        once(seen, sub.type, 'SSL CN');
        ssl.cn = utf8Text(sub.value, 'SSL CN');
        break;
      case PP2_SUBTYPE_SSL.CIPHER:
        once(seen, sub.type, 'SSL CIPHER');
        ssl.cipher = asciiText(sub.value, 'SSL CIPHER');
        break;
      case PP2_SUBTYPE_SSL.SIG_ALG:
        once(seen, sub.type, 'SSL SIG_ALG');
        ssl.sigAlg = asciiText(sub.value, 'SSL SIG_ALG');
        break;
      case PP2_SUBTYPE_SSL.KEY_ALG:
        once(seen, sub.type, 'SSL KEY_ALG');
        ssl.keyAlg = asciiText(sub.value, 'SSL KEY_ALG');
        break;
      default:
        break;
    }
  }
  return ssl;
}

/**
 * Decodes the registered TLVs of `tlvs` (views of `buf`). Throws {@link TlvError} for a registered
 * TLV that breaks its definition: a CRC32C value that is not 4 bytes, a UNIQUE_ID over 128 bytes,
 * an AUTHORITY or SSL CN that is not UTF-8, a NETNS or SSL string that is not US-ASCII, an SSL TLV
 * without its 5 fixed bytes or with sub-TLVs that overrun it, or any registered type (or SSL
 * subtype) sent twice. Unknown types are left alone.
 */
export function decodeTlvs(buf: Buffer, tlvs: readonly ProxyTlv[]): DecodedTlvs {
  const decoded: DecodedTlvs = {};
  const seen = new Set<number>();
  for (const tlv of tlvs) {
    switch (tlv.type) {
      case PP2_TYPE.ALPN:
        once(seen, tlv.type, 'ALPN');
        decoded.alpn = tlv.value;
        break;
      case PP2_TYPE.AUTHORITY:
        once(seen, tlv.type, 'AUTHORITY');
        decoded.authority = utf8Text(tlv.value, 'AUTHORITY');
        break;
      case PP2_TYPE.CRC32C:
        once(seen, tlv.type, 'CRC32C');
        if (tlv.value.length !== 4) throw new TlvError(`CRC32C value of ${tlv.value.length} bytes, not 4`);
        decoded.crc32cAt = tlv.value.byteOffset - buf.byteOffset;
        break;
      case PP2_TYPE.UNIQUE_ID:
        once(seen, tlv.type, 'UNIQUE_ID');
        if (tlv.value.length > UNIQUE_ID_MAX) {
          throw new TlvError(`UNIQUE_ID of ${tlv.value.length} bytes, over ${UNIQUE_ID_MAX}`);
        }
        decoded.uniqueId = tlv.value;
        break;
      case PP2_TYPE.SSL:
        once(seen, tlv.type, 'SSL');
        decoded.ssl = decodeSsl(tlv.value);
        break;
      case PP2_TYPE.NETNS:
        once(seen, tlv.type, 'NETNS');
        decoded.netns = asciiText(tlv.value, 'NETNS');
        break;
      default:
        break;
    }
  }
  return decoded;
}

/** Writes `tlvs` one after the other into `out` from `at`; returns the offset after the last. */
export function writeTlvs(out: Buffer, at: number, tlvs: readonly ProxyTlv[]): number {
  for (const tlv of tlvs) {
    out[at] = tlv.type;
    out.writeUInt16BE(tlv.value.length, at + 1);
    out.set(tlv.value, at + TLV_HEADER_LENGTH);
    at += TLV_HEADER_LENGTH + tlv.value.length;
  }
  return at;
}

/** Bytes that `tlvs` take on the wire. */
export function tlvsLength(tlvs: readonly ProxyTlv[]): number {
  let length = 0;
  for (const tlv of tlvs) length += TLV_HEADER_LENGTH + tlv.value.length;
  return length;
}

/** What {@link encodeSslTlv} takes: {@link ProxySslInfo} with every field but `client` optional. */
export interface ProxySslTlvInit {
  /** Bit field of `PP2_CLIENT`. */
  client: number;
  /** Unsigned 32-bit verification result; default 0 (verified). */
  verify?: number;
  /** Sent as `PP2_SUBTYPE_SSL_VERSION` (US-ASCII), e.g. `TLSv1.3`. */
  version?: string;
  /** Sent as `PP2_SUBTYPE_SSL_CN` (UTF-8): the client certificate's Common Name. */
  cn?: string;
  /** Sent as `PP2_SUBTYPE_SSL_CIPHER` (US-ASCII), e.g. `ECDHE-RSA-AES128-GCM-SHA256`. */
  cipher?: string;
  /** Sent as `PP2_SUBTYPE_SSL_SIG_ALG` (US-ASCII), e.g. `RSA-SHA256`. */
  sigAlg?: string;
  /** Sent as `PP2_SUBTYPE_SSL_KEY_ALG` (US-ASCII), e.g. `RSA2048`. */
  keyAlg?: string;
  /** Further sub-TLVs, written after the named ones. */
  tlvs?: readonly ProxyTlv[];
}

/**
 * A `PP2_TYPE_SSL` TLV for `buildProxyHeader`'s `tlvs`: the client flags, the verify result, then
 * the sub-TLVs VERSION, CN, CIPHER, SIG_ALG and KEY_ALG for the fields given (in that order), then
 * `tlvs`. Throws `InvalidOptionError` for a `client` outside 0-255 or a `verify` outside 0-2^32-1;
 * the strings and sub-TLVs are checked by `buildProxyHeader`, which parses what it built.
 */
export function encodeSslTlv(ssl: ProxySslTlvInit): ProxyTlv {
  if (!Number.isInteger(ssl.client) || ssl.client < 0 || ssl.client > 0xff) {
    throw new InvalidOptionError('ssl.client', `must be an integer from 0 to 255, got ${String(ssl.client)}`);
  }
  const verify = ssl.verify ?? 0;
  if (!Number.isInteger(verify) || verify < 0 || verify > 0xffffffff) {
    throw new InvalidOptionError('ssl.verify', `must be an integer from 0 to 4294967295, got ${String(verify)}`);
  }
  const subs: ProxyTlv[] = [];
  const add = (type: number, text: string | undefined): void => {
    if (text !== undefined) subs.push({ type, value: Buffer.from(text, 'utf8') });
  };
  add(PP2_SUBTYPE_SSL.VERSION, ssl.version);
  add(PP2_SUBTYPE_SSL.CN, ssl.cn);
  add(PP2_SUBTYPE_SSL.CIPHER, ssl.cipher);
  add(PP2_SUBTYPE_SSL.SIG_ALG, ssl.sigAlg);
  add(PP2_SUBTYPE_SSL.KEY_ALG, ssl.keyAlg);
  subs.push(...(ssl.tlvs ?? []));
  const value = Buffer.alloc(SSL_FIXED_LENGTH + tlvsLength(subs));
  value[0] = ssl.client;
  value.writeUInt32BE(verify, 1);
  writeTlvs(value, SSL_FIXED_LENGTH, subs);
  return { type: PP2_TYPE.SSL, value };
}
