import { InvalidOptionError } from '../errors.js';
import { crc32c } from './crc32c.js';
import {
  PP2_TYPE,
  type ProxyInetAddress,
  type ProxyTlv,
  type ProxyTransport,
  type ProxyUnixAddress,
} from './header.js';
import { formatIPv4, formatIPv6, parseIPv4, parseIPv6 } from './ip-address.js';
import { parseProxyHeader } from './parse.js';
import { TLV_HEADER_LENGTH, tlvsLength, writeTlvs } from './tlv.js';
import { UNIX_ADDRESS_LENGTH, V2_COMMAND, V2_FAMILIES, V2_FIXED_LENGTH, V2_SIGNATURE, V2_VERSION } from './v2.js';

/**
 * What {@link buildProxyHeader} encodes: the endpoints (narrowed on `transport` like
 * `ProxyHeader`, with `command` defaulting to `'proxy'`) and the v2 TLVs in wire order. A parsed
 * `ProxyHeader` is one, so a parsed header can be built again.
 */
export type ProxyHeaderInit = (
  | {
      /** `'proxy'` (the default): a relayed connection, whose endpoints follow. */
      command?: 'proxy';
      /** TCP or UDP over IPv4 or IPv6; v1 can send only `tcp4` and `tcp6`. */
      transport: 'tcp4' | 'tcp6' | 'udp4' | 'udp6';
      /** The client's end; `address` must be of the transport's IP version. */
      source: ProxyInetAddress;
      /** The end the client connected to; `address` must be of the transport's IP version. */
      destination: ProxyInetAddress;
    }
  | {
      /** `'proxy'` (the default): a relayed connection, whose endpoints follow. */
      command?: 'proxy';
      /** A Unix stream or datagram socket (v2 only). */
      transport: 'unix' | 'unix-dgram';
      /** The client's end; its path takes at most 108 bytes in UTF-8. */
      source: ProxyUnixAddress;
      /** The end the client connected to; its path takes at most 108 bytes in UTF-8. */
      destination: ProxyUnixAddress;
    }
  | {
      /**
       * `'proxy'` (the default) or `'local'` (v2 only: a connection the proxy opened itself, e.g. a
       * health check).
       */
      command?: 'proxy' | 'local';
      /** No addresses: v1 `PROXY UNKNOWN`, v2 `AF_UNSPEC`. The only transport allowed with `'local'`. */
      transport: 'unknown';
      /** Must be absent: there are no addresses to send. */
      source?: undefined;
      /** Must be absent: there are no addresses to send. */
      destination?: undefined;
    }
) & {
  /** v2 only: the TLVs, written in this order (use `encodeSslTlv` for an SSL TLV). */
  tlvs?: readonly ProxyTlv[];
};

/** Options of {@link buildProxyHeader}. */
export interface BuildProxyHeaderOptions {
  /** 1: the text line; 2: the binary header. */
  version: 1 | 2;
  /**
   * v2 only: append a `PP2_TYPE_CRC32C` TLV after the others, unless `tlvs` already has one. Either
   * way the CRC32C TLV's value is computed over the finished header.
   */
  crc32c?: boolean;
}

const TRANSPORTS: readonly ProxyTransport[] = ['tcp4', 'tcp6', 'udp4', 'udp6', 'unix', 'unix-dgram', 'unknown'];

const FAMILY_BYTE = new Map<ProxyTransport, number>([...V2_FAMILIES].map(([byte, family]) => [family.transport, byte]));

function fail(field: string, message: string): never {
  throw new InvalidOptionError(field, message);
}

function describe(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

/** The 4 or 16 bytes of an IP endpoint's address, and its port, checked. */
function inetEndpoint(value: unknown, field: string, ipv6: boolean): { bytes: Uint8Array; port: number } {
  if (typeof value !== 'object' || value === null) fail(field, `must be an object with address and port, got ${describe(value)}`);
  const { address, port } = value as Partial<ProxyInetAddress>;
  const bytes = typeof address === 'string' ? (ipv6 ? parseIPv6 : parseIPv4)(Buffer.from(address, 'utf8')) : undefined;
  if (!bytes) {
    fail(`${field}.address`, `must be ${ipv6 ? 'IPv6 text (no zone id)' : 'dotted-decimal IPv4 text without leading zeros'}, got ${describe(address)}`);
  }
  if (!Number.isInteger(port) || (port as number) < 0 || (port as number) > 0xffff) {
    fail(`${field}.port`, `must be an integer from 0 to 65535, got ${describe(port)}`);
  }
  return { bytes, port: port as number };
}

/** The 108-byte field of a Unix endpoint, checked so that parsing it gives the same path back. */
function unixField(value: unknown, field: string): Buffer {
  if (typeof value !== 'object' || value === null) fail(field, `must be an object with a path, got ${describe(value)}`);
  const { path } = value as Partial<ProxyUnixAddress>;
  if (typeof path !== 'string') fail(`${field}.path`, `must be a string, got ${describe(path)}`);
  const bytes = Buffer.from(path, 'utf8');
  if (bytes.toString('utf8') !== path) fail(`${field}.path`, 'must be valid Unicode (no lone surrogates)');
  if (bytes.length > UNIX_ADDRESS_LENGTH) fail(`${field}.path`, `takes ${bytes.length} bytes, over the ${UNIX_ADDRESS_LENGTH} of sun_path`);
  if (path.startsWith('\0')) {
    if (path.length === 1 || path.endsWith('\0')) {
      fail(`${field}.path`, 'as an abstract name must not be empty nor end in NUL (NUL padding would swallow it)');
    }
  } else if (path.includes('\0')) {
    fail(`${field}.path`, 'must not contain NUL except as the first character of an abstract name');
  }
  const out = Buffer.alloc(UNIX_ADDRESS_LENGTH);
  out.set(bytes);
  return out;
}

function checkTlvs(tlvs: unknown): ProxyTlv[] {
  if (tlvs === undefined) return [];
  if (!Array.isArray(tlvs)) fail('header.tlvs', `must be an array of { type, value }, got ${describe(tlvs)}`);
  return tlvs.map((tlv: unknown, i) => {
    const { type, value } = (tlv ?? {}) as Partial<ProxyTlv>;
    if (!Number.isInteger(type) || (type as number) < 0 || (type as number) > 0xff) {
      fail(`header.tlvs[${i}].type`, `must be an integer from 0 to 255, got ${describe(type)}`);
    }
    if (!(value instanceof Uint8Array)) fail(`header.tlvs[${i}].value`, 'must be a Buffer or Uint8Array');
    if (value.length > 0xffff) fail(`header.tlvs[${i}].value`, `has ${value.length} bytes, over 65535`);
    return { type: type as number, value: Buffer.from(value.buffer, value.byteOffset, value.length) };
  });
}

function buildV1(header: ProxyHeaderInit, command: string): Buffer {
  if (command !== 'proxy') fail('header.command', `must be 'proxy' in v1, got ${describe(command)}`);
  if (header.tlvs !== undefined && header.tlvs.length > 0) fail('header.tlvs', 'cannot be sent in v1');
  if (header.transport === 'unknown') return Buffer.from('PROXY UNKNOWN\r\n', 'latin1');
  if (header.transport !== 'tcp4' && header.transport !== 'tcp6') {
    fail('header.transport', `must be 'tcp4', 'tcp6' or 'unknown' in v1, got ${describe(header.transport)}`);
  }
  const ipv6 = header.transport === 'tcp6';
  const format = ipv6 ? formatIPv6 : formatIPv4;
  const src = inetEndpoint(header.source, 'header.source', ipv6);
  const dst = inetEndpoint(header.destination, 'header.destination', ipv6);
  const word = ipv6 ? 'TCP6' : 'TCP4';
  return Buffer.from(`PROXY ${word} ${format(src.bytes)} ${format(dst.bytes)} ${src.port} ${dst.port}\r\n`, 'latin1');
}

function addressBlock(header: ProxyHeaderInit): Buffer {
  switch (header.transport) {
    case 'tcp4':
    case 'udp4':
    case 'tcp6':
    case 'udp6': {
      const ipv6 = header.transport === 'tcp6' || header.transport === 'udp6';
      const src = inetEndpoint(header.source, 'header.source', ipv6);
      const dst = inetEndpoint(header.destination, 'header.destination', ipv6);
      const size = src.bytes.length;
      const block = Buffer.alloc(2 * size + 4);
      block.set(src.bytes, 0);
      block.set(dst.bytes, size);
      block.writeUInt16BE(src.port, 2 * size);
      block.writeUInt16BE(dst.port, 2 * size + 2);
      return block;
    }
    case 'unix':
    case 'unix-dgram':
      return Buffer.concat([unixField(header.source, 'header.source'), unixField(header.destination, 'header.destination')]);
    default:
      return Buffer.alloc(0);
  }
}

function buildV2(header: ProxyHeaderInit, command: 'proxy' | 'local', withCrc: boolean): Buffer {
  if (command === 'local' && header.transport !== 'unknown') {
    fail('header.transport', `must be 'unknown' with command 'local' (the receiver ignores the family), got ${describe(header.transport)}`);
  }
  const block = addressBlock(header);
  const tlvs = checkTlvs(header.tlvs);
  const crcCount = tlvs.filter((tlv) => tlv.type === PP2_TYPE.CRC32C).length;
  if (crcCount > 1) fail('header.tlvs', 'has more than one CRC32C TLV');
  if (withCrc && crcCount === 0) tlvs.push({ type: PP2_TYPE.CRC32C, value: Buffer.alloc(4) });
  const length = block.length + tlvsLength(tlvs);
  if (length > 0xffff) fail('header.tlvs', `make the v2 length ${length} bytes, over 65535`);

  const out = Buffer.alloc(V2_FIXED_LENGTH + length);
  out.set(V2_SIGNATURE, 0);
  out[12] = (V2_VERSION << 4) | V2_COMMAND[command];
  out[13] = FAMILY_BYTE.get(header.transport)!;
  out.writeUInt16BE(length, 14);
  out.set(block, V2_FIXED_LENGTH);
  let at = V2_FIXED_LENGTH + block.length;
  let crcAt = -1;
  for (const tlv of tlvs) {
    if (tlv.type === PP2_TYPE.CRC32C) {
      if (tlv.value.length !== 4) fail('header.tlvs', `has a CRC32C TLV of ${tlv.value.length} bytes, not 4`);
      crcAt = at + TLV_HEADER_LENGTH;
    }
    at = writeTlvs(out, at, [tlv]);
  }
  if (crcAt !== -1) {
    out.fill(0, crcAt, crcAt + 4);
    out.writeUInt32BE(crc32c(out), crcAt);
  }
  return out;
}

/**
 * Encodes a PROXY protocol header, for clients and tests: the v1 line (`TCP4`, `TCP6` or the short
 * `PROXY UNKNOWN\r\n`) or the v2 block with its TLVs and, if asked or present, a computed CRC32C.
 * Addresses are written in canonical form: `parseProxyHeader` of the result gives back the same
 * header, with IPv6 addresses printed the Node way.
 *
 * Throws `InvalidOptionError` (its `option` names the field, e.g. `header.source.address`) for
 * what cannot be encoded or would not parse: an unknown version, command or transport; `local` in
 * v1 or with a transport other than `unknown`; UDP or Unix transports or TLVs in v1; an address not
 * of the transport's family, a port outside 0-65535, a Unix path over 108 UTF-8 bytes or with a NUL
 * that parsing would cut at; a TLV type outside 0-255, a value over 65535 bytes, a v2 length over
 * 65535; and registered TLVs that the parser would reject (see `parseProxyHeader`).
 */
export function buildProxyHeader(header: ProxyHeaderInit, options: BuildProxyHeaderOptions): Buffer {
  const { version, crc32c: withCrc = false } = options ?? ({} as Partial<BuildProxyHeaderOptions>);
  if (version !== 1 && version !== 2) fail('options.version', `must be 1 or 2, got ${describe(version)}`);
  if (typeof header !== 'object' || header === null) fail('header', `must be an object, got ${describe(header)}`);
  const command = header.command ?? 'proxy';
  if (command !== 'proxy' && command !== 'local') fail('header.command', `must be 'proxy' or 'local', got ${describe(command)}`);
  if (!TRANSPORTS.includes(header.transport)) {
    fail('header.transport', `must be one of ${TRANSPORTS.join(', ')}, got ${describe(header.transport)}`);
  }
  if (header.transport === 'unknown' && (header.source !== undefined || header.destination !== undefined)) {
    fail('header.source', `must be absent with transport 'unknown' (there are no addresses to send)`);
  }
  if (version === 1 && withCrc) fail('options.crc32c', 'cannot be sent in v1');
  const built = version === 1 ? buildV1(header, command) : buildV2(header, command, withCrc);
  const check = parseProxyHeader(built);
  if (check.status !== 'complete') fail('header.tlvs', `would not parse: ${check.status === 'invalid' ? check.message : check.status}`);
  return built;
}
