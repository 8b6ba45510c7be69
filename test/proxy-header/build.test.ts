import { describe, expect, it } from 'vitest';
import { InvalidOptionError } from '../../src/errors.js';
import { buildProxyHeader, type BuildProxyHeaderOptions, type ProxyHeaderInit } from '../../src/proxy-header/build.js';
import { crc32c } from '../../src/proxy-header/crc32c.js';
import { PP2_CLIENT, PP2_TYPE } from '../../src/proxy-header/header.js';
import { parseProxyHeader } from '../../src/proxy-header/parse.js';
import { encodeSslTlv } from '../../src/proxy-header/tlv.js';

const tcp4: ProxyHeaderInit = {
  transport: 'tcp4',
  source: { address: '192.168.0.1', port: 56324 },
  destination: { address: '192.168.0.11', port: 443 },
};

describe('buildProxyHeader v1', () => {
  it('writes the spec example line', () => {
    expect(buildProxyHeader(tcp4, { version: 1 }).toString('latin1')).toBe('PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n');
  });

  it('writes IPv6 in canonical form, and UNKNOWN in its short form', () => {
    const line = buildProxyHeader(
      { transport: 'tcp6', source: { address: '2001:DB8:0:0::1', port: 1 }, destination: { address: '::FFFF:192.0.2.1', port: 2 } },
      { version: 1 },
    );
    expect(line.toString('latin1')).toBe('PROXY TCP6 2001:db8::1 ::ffff:192.0.2.1 1 2\r\n');
    expect(buildProxyHeader({ transport: 'unknown' }, { version: 1 }).toString('latin1')).toBe('PROXY UNKNOWN\r\n');
  });
});

describe('buildProxyHeader v2', () => {
  it('writes the fixed part, addresses and ports the spec way', () => {
    expect(buildProxyHeader(tcp4, { version: 2 }).toString('hex')).toBe(
      '0d0a0d0a000d0a515549540a' + '21' + '11' + '000c' + 'c0a80001' + 'c0a8000b' + 'dc04' + '01bb',
    );
    expect(buildProxyHeader({ command: 'local', transport: 'unknown' }, { version: 2 }).toString('hex')).toBe(
      '0d0a0d0a000d0a515549540a' + '20' + '00' + '0000',
    );
  });

  it('writes TLVs in order, and a CRC32C over the whole header with the field zeroed', () => {
    const built = buildProxyHeader(
      { ...tcp4, tlvs: [{ type: PP2_TYPE.ALPN, value: Buffer.from('h2') }, encodeSslTlv({ client: PP2_CLIENT.SSL, version: 'TLSv1.3' })] },
      { version: 2, crc32c: true },
    );
    const crcAt = built.length - 4;
    expect(built.subarray(crcAt - 3, crcAt)).toEqual(Buffer.from([0x03, 0x00, 0x04]));
    const zeroed = Buffer.from(built);
    zeroed.fill(0, crcAt);
    expect(built.readUInt32BE(crcAt)).toBe(crc32c(zeroed));
    const result = parseProxyHeader(built);
    expect(result.status === 'complete' && result.header.tlvs.map((t) => t.type)).toEqual([0x01, 0x20, 0x03]);
  });

  it('fills in a CRC32C TLV already in tlvs, where it stands, whatever its old value', () => {
    const built = buildProxyHeader(
      { ...tcp4, tlvs: [{ type: PP2_TYPE.CRC32C, value: Buffer.from([9, 9, 9, 9]) }, { type: PP2_TYPE.NOOP, value: Buffer.alloc(2) }] },
      { version: 2, crc32c: true },
    );
    const result = parseProxyHeader(built);
    if (result.status !== 'complete') expect.fail(JSON.stringify(result));
    expect(result.header.tlvs.map((t) => t.type)).toEqual([0x03, 0x04]);
    expect(result.header.crc32c).toBe(built.readUInt32BE(28 + 3));
  });

  it('encodes Unix paths, abstract names and unnamed sockets so they parse back', () => {
    for (const path of ['/run/a.sock', '\0abstract', '', 'é'.repeat(54)]) {
      const built = buildProxyHeader({ transport: 'unix', source: { path }, destination: { path: '/b' } }, { version: 2 });
      const result = parseProxyHeader(built);
      expect(result.status === 'complete' && result.header.source).toEqual({ path });
    }
  });

  it('builds a parsed header again to the same bytes (including its CRC32C)', () => {
    const built = buildProxyHeader({ ...tcp4, tlvs: [{ type: PP2_TYPE.AUTHORITY, value: Buffer.from('a.example') }] }, { version: 2, crc32c: true });
    const result = parseProxyHeader(built);
    if (result.status !== 'complete') expect.fail(JSON.stringify(result));
    expect(buildProxyHeader(result.header, { version: 2 })).toEqual(built);
  });
});

const big = Buffer.alloc(0xffff);
const rejected: [string, unknown, BuildProxyHeaderOptions | undefined, string][] = [
  ['version 3', tcp4, { version: 3 as 1 }, 'options.version'],
  ['no options', tcp4, undefined, 'options.version'],
  ['no header', null, { version: 2 }, 'header'],
  ['command shout', { ...tcp4, command: 'shout' }, { version: 2 }, 'header.command'],
  ['transport sctp', { ...tcp4, transport: 'sctp' }, { version: 2 }, 'header.transport'],
  ['local in v1', { command: 'local', transport: 'unknown' }, { version: 1 }, 'header.command'],
  ['local with tcp4', { ...tcp4, command: 'local' }, { version: 2 }, 'header.transport'],
  ['udp4 in v1', { ...tcp4, transport: 'udp4' }, { version: 1 }, 'header.transport'],
  ['unix in v1', { transport: 'unix', source: { path: '/a' }, destination: { path: '/b' } }, { version: 1 }, 'header.transport'],
  ['TLVs in v1', { ...tcp4, tlvs: [{ type: 4, value: Buffer.alloc(0) }] }, { version: 1 }, 'header.tlvs'],
  ['CRC32C in v1', tcp4, { version: 1, crc32c: true }, 'options.crc32c'],
  ['addresses with unknown', { ...tcp4, transport: 'unknown' }, { version: 2 }, 'header.source'],
  ['an IPv6 address for tcp4', { ...tcp4, source: { address: '::1', port: 1 } }, { version: 2 }, 'header.source.address'],
  ['an IPv4 address for tcp6', { ...tcp4, transport: 'tcp6' }, { version: 2 }, 'header.source.address'],
  ['a leading zero', { ...tcp4, destination: { address: '010.0.0.1', port: 1 } }, { version: 1 }, 'header.destination.address'],
  ['a zone id', { transport: 'tcp6', source: { address: 'fe80::1%eth0', port: 1 }, destination: { address: '::1', port: 1 } }, { version: 2 }, 'header.source.address'],
  ['a host name', { ...tcp4, source: { address: 'localhost', port: 1 } }, { version: 2 }, 'header.source.address'],
  ['no source', { ...tcp4, source: undefined }, { version: 2 }, 'header.source'],
  ['port 65536', { ...tcp4, source: { address: '1.2.3.4', port: 65536 } }, { version: 2 }, 'header.source.port'],
  ['port -1', { ...tcp4, source: { address: '1.2.3.4', port: -1 } }, { version: 1 }, 'header.source.port'],
  ['port 1.5', { ...tcp4, destination: { address: '1.2.3.4', port: 1.5 } }, { version: 2 }, 'header.destination.port'],
  ['port "80"', { ...tcp4, destination: { address: '1.2.3.4', port: '80' } }, { version: 2 }, 'header.destination.port'],
  ['a 109-byte path', { transport: 'unix', source: { path: 'x'.repeat(109) }, destination: { path: '/b' } }, { version: 2 }, 'header.source.path'],
  ['a path with NUL', { transport: 'unix', source: { path: '/a\0b' }, destination: { path: '/b' } }, { version: 2 }, 'header.source.path'],
  ['an abstract name ending in NUL', { transport: 'unix', source: { path: '\0a\0' }, destination: { path: '/b' } }, { version: 2 }, 'header.source.path'],
  ['an empty abstract name', { transport: 'unix', source: { path: '\0' }, destination: { path: '/b' } }, { version: 2 }, 'header.source.path'],
  ['a lone surrogate in a path', { transport: 'unix', source: { path: '/\ud800' }, destination: { path: '/b' } }, { version: 2 }, 'header.source.path'],
  ['tlvs not an array', { ...tcp4, tlvs: 'x' }, { version: 2 }, 'header.tlvs'],
  ['TLV type 256', { ...tcp4, tlvs: [{ type: 256, value: Buffer.alloc(0) }] }, { version: 2 }, 'header.tlvs[0].type'],
  ['TLV value a string', { ...tcp4, tlvs: [{ type: 0xe0, value: 'x' }] }, { version: 2 }, 'header.tlvs[0].value'],
  ['TLV value of 65536 bytes', { ...tcp4, tlvs: [{ type: 0xe0, value: Buffer.alloc(0x10000) }] }, { version: 2 }, 'header.tlvs[0].value'],
  ['TLVs over the v2 length', { ...tcp4, tlvs: [{ type: 0xe0, value: big }] }, { version: 2 }, 'header.tlvs'],
  ['two CRC32C TLVs', { ...tcp4, tlvs: [{ type: 3, value: Buffer.alloc(4) }, { type: 3, value: Buffer.alloc(4) }] }, { version: 2 }, 'header.tlvs'],
  ['a CRC32C TLV of 2 bytes', { ...tcp4, tlvs: [{ type: 3, value: Buffer.alloc(2) }] }, { version: 2 }, 'header.tlvs'],
  ['a 129-byte UNIQUE_ID', { ...tcp4, tlvs: [{ type: 5, value: Buffer.alloc(129) }] }, { version: 2 }, 'header.tlvs'],
  ['two ALPN TLVs', { ...tcp4, tlvs: [{ type: 1, value: Buffer.from('a') }, { type: 1, value: Buffer.from('b') }] }, { version: 2 }, 'header.tlvs'],
  ['a non-ASCII SSL cipher', { ...tcp4, tlvs: [encodeSslTlv({ client: 1, cipher: 'é' })] }, { version: 2 }, 'header.tlvs'],
];

describe('buildProxyHeader rejects what it cannot encode', () => {
  it.each(rejected)('%s', (_, header, options, option) => {
    let thrown: unknown;
    try {
      buildProxyHeader(header as ProxyHeaderInit, options as BuildProxyHeaderOptions);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(InvalidOptionError);
    expect((thrown as InvalidOptionError).option).toBe(option);
    expect((thrown as InvalidOptionError).code).toBe('CORRAL_INVALID_OPTION');
  });

  it('encodeSslTlv rejects a client or verify out of range', () => {
    expect(() => encodeSslTlv({ client: 256 })).toThrow(InvalidOptionError);
    expect(() => encodeSslTlv({ client: 1, verify: -1 })).toThrow(InvalidOptionError);
    expect(() => encodeSslTlv({ client: 1, verify: 2 ** 32 })).toThrow(InvalidOptionError);
    expect(encodeSslTlv({ client: 1, verify: 2 ** 32 - 1 }).value.readUInt32BE(1)).toBe(2 ** 32 - 1);
  });
});
