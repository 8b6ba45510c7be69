import { crc32c } from './crc32c.js';
import type { ProxyHeader, ProxyTransport, ProxyUnixAddress } from './header.js';
import { formatIPv4, formatIPv6 } from './ip-address.js';
import { incomplete, invalid, type ProxyHeaderParseResult } from './parse-result.js';
import { TlvError, decodeTlvs, walkTlvs } from './tlv.js';

/** The 12 bytes every v2 header starts with. */
export const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

/** Signature, version/command byte, family/protocol byte, 16-bit length. */
export const V2_FIXED_LENGTH = 16;

/** The bytes of one Unix socket address in a v2 address block. */
export const UNIX_ADDRESS_LENGTH = 108;

/** The version nibble every v2 header carries. */
export const V2_VERSION = 0x2;

/** The v2 command nibble. */
export const V2_COMMAND = { local: 0x0, proxy: 0x1 } as const;

/** What a v2 family/protocol byte means: the transport and the size of its address block. */
interface V2Family {
  transport: ProxyTransport;
  addressLength: number;
}

/** The seven family/protocol bytes the spec lists; every other byte is rejected. */
export const V2_FAMILIES: ReadonlyMap<number, V2Family> = new Map([
  [0x00, { transport: 'unknown', addressLength: 0 }],
  [0x11, { transport: 'tcp4', addressLength: 12 }],
  [0x12, { transport: 'udp4', addressLength: 12 }],
  [0x21, { transport: 'tcp6', addressLength: 36 }],
  [0x22, { transport: 'udp6', addressLength: 36 }],
  [0x31, { transport: 'unix', addressLength: 2 * UNIX_ADDRESS_LENGTH }],
  [0x32, { transport: 'unix-dgram', addressLength: 2 * UNIX_ADDRESS_LENGTH }],
]);

function unixPath(raw: Buffer, at: number): ProxyUnixAddress {
  const field = raw.subarray(at, at + UNIX_ADDRESS_LENGTH);
  if (field[0] === 0) {
    // All NULs: an unnamed socket. Otherwise a Linux abstract name: everything after the leading
    // NUL, without the NULs that pad the field.
    let end = field.length;
    while (end > 1 && field[end - 1] === 0) end--;
    return { path: end === 1 ? '' : `\0${field.subarray(1, end).toString('utf8')}` };
  }
  const nul = field.indexOf(0);
  return { path: field.subarray(0, nul === -1 ? field.length : nul).toString('utf8') };
}

/** The endpoints part of a v2 header, read from the address block at offset 16 of `raw`. */
function endpoints(raw: Buffer, command: number, transport: ProxyTransport): Pick<ProxyHeader, 'command' | 'transport' | 'source' | 'destination'> {
  const at = V2_FIXED_LENGTH;
  if (command === V2_COMMAND.local || transport === 'unknown') {
    return { command: command === V2_COMMAND.local ? 'local' : 'proxy', transport: 'unknown' };
  }
  switch (transport) {
    case 'tcp4':
    case 'udp4':
      return {
        command: 'proxy',
        transport,
        source: { address: formatIPv4(raw, at), port: raw.readUInt16BE(at + 8) },
        destination: { address: formatIPv4(raw, at + 4), port: raw.readUInt16BE(at + 10) },
      };
    case 'tcp6':
    case 'udp6':
      return {
        command: 'proxy',
        transport,
        source: { address: formatIPv6(raw, at), port: raw.readUInt16BE(at + 32) },
        destination: { address: formatIPv6(raw, at + 16), port: raw.readUInt16BE(at + 34) },
      };
    case 'unix':
    case 'unix-dgram':
      return {
        command: 'proxy',
        transport,
        source: unixPath(raw, at),
        destination: unixPath(raw, at + UNIX_ADDRESS_LENGTH),
      };
  }
}

/**
 * Reads a v2 header from `head`, which starts with the 12-byte signature. The fixed fields are
 * checked as soon as they arrive; the address block and TLVs once all `16 + length` bytes have.
 * `maxLength` (16 to 65551) caps the whole header.
 */
export function parseV2(head: Buffer, maxLength: number): ProxyHeaderParseResult {
  if (head.length < 13) return incomplete(maxLength);
  const version = head[12]! >> 4;
  const command = head[12]! & 0x0f;
  if (version !== V2_VERSION) return invalid('bad_version', `v2 signature with version ${version}, not 2`);
  if (command !== V2_COMMAND.local && command !== V2_COMMAND.proxy) {
    return invalid('bad_command', `v2 command ${command}, neither LOCAL (0) nor PROXY (1)`);
  }
  if (head.length < 14) return incomplete(maxLength);
  const family = V2_FAMILIES.get(head[13]!);
  if (family === undefined) {
    return invalid('bad_family', `v2 family and protocol byte 0x${head[13]!.toString(16).padStart(2, '0')} is none of 0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32`);
  }
  if (head.length < V2_FIXED_LENGTH) return incomplete(maxLength);
  const length = V2_FIXED_LENGTH + head.readUInt16BE(14);
  if (length > maxLength) return invalid('too_long', `v2 header of ${length} bytes, over the ${maxLength} accepted`);
  // LOCAL (a health check of the proxy's own): the spec has the receiver accept it whatever its
  // protocol block holds, and discard the block and the family. Its TLVs are read where they can
  // be (after the family's address block); a block too short for that, or one that does not
  // parse, is discarded without them.
  const local = command === V2_COMMAND.local;
  const blockFits = length - V2_FIXED_LENGTH >= family.addressLength;
  if (!blockFits && !local) {
    return invalid('bad_length', `v2 length ${length - V2_FIXED_LENGTH} is shorter than the ${family.addressLength}-byte ${family.transport} address block`);
  }
  if (head.length < length) return incomplete(length);

  const raw = Buffer.from(head.subarray(0, length));
  const localWithoutTlvs = (): ProxyHeaderParseResult => ({
    status: 'complete',
    header: { ...endpoints(raw, command, family.transport), version: 2, tlvs: [], raw } as ProxyHeader,
    length,
  });
  if (!blockFits) return localWithoutTlvs();
  let tlvs;
  let decoded;
  try {
    tlvs = walkTlvs(raw, V2_FIXED_LENGTH + family.addressLength, length, 'the header');
    decoded = decodeTlvs(raw, tlvs);
  } catch (error) {
    if (error instanceof TlvError) return local ? localWithoutTlvs() : invalid('bad_tlv', error.message);
    throw error;
  }
  const { crc32cAt, ...conveniences } = decoded;
  let checksum: number | undefined;
  if (crc32cAt !== undefined) {
    checksum = raw.readUInt32BE(crc32cAt);
    const computed = crc32c(raw.subarray(crc32cAt + 4), crc32c(new Uint8Array(4), crc32c(raw.subarray(0, crc32cAt))));
    if (computed !== checksum) {
      if (local) return localWithoutTlvs();
      return invalid('bad_crc32c', `CRC32C 0x${checksum.toString(16).padStart(8, '0')} sent, 0x${computed.toString(16).padStart(8, '0')} computed`);
    }
  }
  const header = {
    ...endpoints(raw, command, family.transport),
    version: 2,
    tlvs,
    ...conveniences,
    ...(checksum === undefined ? {} : { crc32c: checksum }),
    raw,
  } as ProxyHeader;
  return { status: 'complete', header, length };
}
