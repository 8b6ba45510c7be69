import { crc32 as zlibCrc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { crc32c } from '../../src/proxy-header/crc32c.js';
import { PP2_CLIENT, PP2_SUBTYPE_SSL, PP2_TYPE, PROXY_HEADER_MAX_V2 } from '../../src/proxy-header/header.js';
import { parseProxyHeader } from '../../src/proxy-header/parse.js';
import type { ProxyHeaderInvalidReason, ProxyHeaderParseResult } from '../../src/proxy-header/parse-result.js';

// Everything here is assembled by hand from the spec's layout (section 2.2), not with the builder.
const SIG = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

/** A v2 header: signature, version/command byte, family byte, length of `body`, body. */
function v2(verCmd: number, fam: number, ...body: (Buffer | number[])[]): Buffer {
  const rest = Buffer.concat(body.map((b) => Buffer.from(b)));
  const len = Buffer.alloc(2);
  len.writeUInt16BE(rest.length);
  return Buffer.concat([SIG, Buffer.from([verCmd, fam]), len, rest]);
}

/** A TLV's bytes. */
function tlv(type: number, value: Buffer | number[] | string): Buffer {
  const v = typeof value === 'string' ? Buffer.from(value, 'utf8') : Buffer.from(value);
  const head = Buffer.alloc(3);
  head[0] = type;
  head.writeUInt16BE(v.length, 1);
  return Buffer.concat([head, v]);
}

/** The IPv4 address block of the spec's example: 192.168.0.1:56324 -> 192.168.0.11:443. */
const IPV4_BLOCK = [192, 168, 0, 1, 192, 168, 0, 11, 0xdc, 0x04, 0x01, 0xbb];
const IPV6_BLOCK = [
  ...Buffer.from('20010db8000000000000000000000001', 'hex'),
  ...Buffer.from('00000000000000000000ffffc0000201', 'hex'),
  0x30, 0x39, 0x00, 0x50,
];

function unixField(path: string | Buffer): Buffer {
  const field = Buffer.alloc(108);
  (typeof path === 'string' ? Buffer.from(path, 'utf8') : path).copy(field);
  return field;
}

/** Sets the CRC32C value (at `valueAt`) the spec's way: over the whole header with the field zeroed. */
function withCrc(header: Buffer, valueAt: number): Buffer {
  header.fill(0, valueAt, valueAt + 4);
  header.writeUInt32BE(crc32c(header), valueAt);
  return header;
}

function complete(bytes: Buffer) {
  const result = parseProxyHeader(bytes);
  if (result.status !== 'complete') expect.fail(JSON.stringify(result));
  return result;
}

function expectInvalid(result: ProxyHeaderParseResult, reason: ProxyHeaderInvalidReason): void {
  expect(result).toMatchObject({ status: 'invalid', reason });
}

describe('v2: families', () => {
  it('TCP over IPv4 (0x11), with the payload after it left alone', () => {
    const header = v2(0x21, 0x11, IPV4_BLOCK);
    const result = complete(Buffer.concat([header, Buffer.from('\x16\x03\x01', 'latin1')]));
    expect(result.length).toBe(28);
    expect(result.header).toEqual({
      version: 2,
      command: 'proxy',
      transport: 'tcp4',
      source: { address: '192.168.0.1', port: 56324 },
      destination: { address: '192.168.0.11', port: 443 },
      tlvs: [],
      raw: header,
    });
  });

  it('UDP over IPv4 (0x12), TCP and UDP over IPv6 (0x21, 0x22) with Node-style addresses', () => {
    expect(complete(v2(0x21, 0x12, IPV4_BLOCK)).header.transport).toBe('udp4');
    for (const [fam, transport] of [[0x21, 'tcp6'], [0x22, 'udp6']] as const) {
      const { header, length } = complete(v2(0x21, fam, IPV6_BLOCK));
      expect(length).toBe(52);
      expect(header).toMatchObject({
        transport,
        source: { address: '2001:db8::1', port: 12345 },
        destination: { address: '::ffff:192.0.2.1', port: 80 },
      });
    }
  });

  it('Unix stream and datagram (0x31, 0x32): paths up to the NUL, abstract names, unnamed sockets', () => {
    const body = [unixField('/run/haproxy.sock'), unixField(Buffer.from('\0abstract\0\0'))];
    const stream = complete(v2(0x21, 0x31, ...body));
    expect(stream.length).toBe(16 + 216);
    expect(stream.header).toMatchObject({ transport: 'unix', source: { path: '/run/haproxy.sock' }, destination: { path: '\0abstract' } });
    expect(complete(v2(0x21, 0x32, ...body)).header.transport).toBe('unix-dgram');
    const unnamed = complete(v2(0x21, 0x31, unixField(''), unixField('x'.repeat(108))));
    expect(unnamed.header.source).toEqual({ path: '' });
    expect(unnamed.header.destination).toEqual({ path: 'x'.repeat(108) });
    const garbageAfterNul = complete(v2(0x21, 0x31, unixField(Buffer.from('/a\0junk')), unixField('/b')));
    expect(garbageAfterNul.header.source).toEqual({ path: '/a' });
  });

  it('UNSPEC (0x00) with PROXY: no addresses, and any address bytes the length covers are TLVs', () => {
    const { header } = complete(v2(0x21, 0x00));
    expect(header).toMatchObject({ command: 'proxy', transport: 'unknown', tlvs: [] });
    expect(header.source).toBeUndefined();
    expect(complete(v2(0x21, 0x00, tlv(PP2_TYPE.NOOP, []))).header.tlvs).toEqual([{ type: PP2_TYPE.NOOP, value: Buffer.alloc(0) }]);
  });

  it('LOCAL: no addresses whatever the family; the family address block is skipped before the TLVs', () => {
    const local = complete(v2(0x20, 0x00));
    expect(local.header).toMatchObject({ version: 2, command: 'local', transport: 'unknown' });
    expect(local.length).toBe(16);
    const withBlock = complete(v2(0x20, 0x11, IPV4_BLOCK, tlv(PP2_TYPE.AUTHORITY, 'example.com')));
    expect(withBlock.header).toMatchObject({ command: 'local', transport: 'unknown', authority: 'example.com' });
    expect(withBlock.header.source).toBeUndefined();
  });

  it('LOCAL is accepted whatever its protocol block holds (the spec: the receiver must accept it and discard the block); TLVs are read only where they parse', () => {
    // The family says IPv4 or IPv6, the length 0: shorter than the family's address block.
    for (const family of [0x11, 0x21, 0x31]) {
      const { header, length } = complete(v2(0x20, family));
      expect(header).toMatchObject({ version: 2, command: 'local', transport: 'unknown', tlvs: [] });
      expect(length).toBe(16);
    }
    const discarded = [
      v2(0x20, 0x00, [1, 2, 3, 4, 5]), // not TLVs
      v2(0x20, 0x11, IPV4_BLOCK.slice(0, 7)), // half an address block
      v2(0x20, 0x00, tlv(PP2_TYPE.CRC32C, [1, 2, 3, 4])), // a wrong checksum
    ];
    for (const bytes of discarded) {
      const { header, length } = complete(bytes);
      expect(header).toMatchObject({ command: 'local', transport: 'unknown', tlvs: [] });
      expect(length).toBe(bytes.length);
    }
  });

  it('address bytes are followed by TLVs when the length says so', () => {
    const { header } = complete(v2(0x21, 0x11, IPV4_BLOCK, tlv(0xe0, [1, 2, 3])));
    expect(header.tlvs).toEqual([{ type: 0xe0, value: Buffer.from([1, 2, 3]) }]);
  });
});

describe('v2: TLVs', () => {
  it('decodes ALPN, AUTHORITY, UNIQUE_ID, NETNS and keeps NOOP and unknown types raw, in order', () => {
    const { header } = complete(
      v2(
        0x21,
        0x11,
        IPV4_BLOCK,
        tlv(PP2_TYPE.ALPN, 'h2'),
        tlv(PP2_TYPE.NOOP, [0, 0, 0]),
        tlv(PP2_TYPE.AUTHORITY, 'gateway.example.com'),
        tlv(0xea, [0x01, ...Buffer.from('vpce-08d2bf15fac5001c9')]), // AWS VPC endpoint id
        tlv(PP2_TYPE.UNIQUE_ID, 'A1B2C3'),
        tlv(PP2_TYPE.NETNS, 'blue'),
        tlv(0x06, []), // unassigned
      ),
    );
    expect(header.tlvs.map((t) => t.type)).toEqual([0x01, 0x04, 0x02, 0xea, 0x05, 0x30, 0x06]);
    expect(header.alpn).toEqual(Buffer.from('h2'));
    expect(header.authority).toBe('gateway.example.com');
    expect(header.uniqueId).toEqual(Buffer.from('A1B2C3'));
    expect(header.netns).toBe('blue');
    expect(header.crc32c).toBeUndefined();
    expect(header.ssl).toBeUndefined();
  });

  it('decodes the SSL TLV: client flags, verify, and every sub-TLV', () => {
    const ssl = Buffer.concat([
      Buffer.from([PP2_CLIENT.SSL | PP2_CLIENT.CERT_CONN | PP2_CLIENT.CERT_SESS, 0, 0, 0, 0]),
      tlv(PP2_SUBTYPE_SSL.VERSION, 'TLSv1.3'),
      tlv(PP2_SUBTYPE_SSL.CN, 'device-42 ü'),
      tlv(PP2_SUBTYPE_SSL.CIPHER, 'TLS_AES_256_GCM_SHA384'),
      tlv(PP2_SUBTYPE_SSL.SIG_ALG, 'RSA-SHA256'),
      tlv(PP2_SUBTYPE_SSL.KEY_ALG, 'RSA2048'),
      tlv(0x26, [9]),
    ]);
    const { header } = complete(v2(0x21, 0x11, IPV4_BLOCK, tlv(PP2_TYPE.SSL, ssl)));
    expect(header.ssl).toEqual({
      client: 7,
      verify: 0,
      version: 'TLSv1.3',
      cn: 'device-42 ü',
      cipher: 'TLS_AES_256_GCM_SHA384',
      sigAlg: 'RSA-SHA256',
      keyAlg: 'RSA2048',
      tlvs: [
        { type: 0x21, value: Buffer.from('TLSv1.3') },
        { type: 0x22, value: Buffer.from('device-42 ü') },
        { type: 0x23, value: Buffer.from('TLS_AES_256_GCM_SHA384') },
        { type: 0x24, value: Buffer.from('RSA-SHA256') },
        { type: 0x25, value: Buffer.from('RSA2048') },
        { type: 0x26, value: Buffer.from([9]) },
      ],
    });
  });

  it('reads the SSL verify field as unsigned 32-bit, and accepts an SSL TLV of just its 5 fixed bytes', () => {
    const { header } = complete(v2(0x21, 0x00, tlv(PP2_TYPE.SSL, [0, 0xff, 0xff, 0xff, 0xff])));
    expect(header.ssl).toEqual({ client: 0, verify: 0xffffffff, tlvs: [] });
  });

  it('verifies a CRC32C computed over the whole header with the field zeroed (Castagnoli, not IEEE)', () => {
    const header = v2(0x21, 0x11, IPV4_BLOCK, tlv(PP2_TYPE.CRC32C, [0, 0, 0, 0]), tlv(PP2_TYPE.AUTHORITY, 'a'));
    withCrc(header, 28 + 3);
    const result = complete(header);
    expect(result.header.crc32c).toBe(header.readUInt32BE(31));
    const ieee = Buffer.from(header);
    ieee.fill(0, 31, 35);
    ieee.writeUInt32BE(zlibCrc32(ieee), 31);
    expectInvalid(parseProxyHeader(ieee), 'bad_crc32c');
  });

  it('rejects a CRC32C that does not match, wherever the changed byte is', () => {
    const header = withCrc(v2(0x21, 0x11, IPV4_BLOCK, tlv(PP2_TYPE.CRC32C, [0, 0, 0, 0])), 31);
    for (const at of [0x10, 0x14, 0x1b, 31, 34]) {
      const bad = Buffer.from(header);
      bad[at]! ^= 0x01;
      expectInvalid(parseProxyHeader(bad), 'bad_crc32c');
    }
  });
});

const cases: [string, Buffer, ProxyHeaderInvalidReason][] = [
  ['version 1 in the v2 signature', v2(0x11, 0x11, IPV4_BLOCK), 'bad_version'],
  ['version 3', v2(0x31, 0x11, IPV4_BLOCK), 'bad_version'],
  ['version 0', v2(0x01, 0x11, IPV4_BLOCK), 'bad_version'],
  ['command 2', v2(0x22, 0x11, IPV4_BLOCK), 'bad_command'],
  ['command 0xf', v2(0x2f, 0x11, IPV4_BLOCK), 'bad_command'],
  ['family 4', v2(0x21, 0x41, IPV4_BLOCK), 'bad_family'],
  ['protocol 3', v2(0x21, 0x13, IPV4_BLOCK), 'bad_family'],
  ['INET with UNSPEC protocol (0x10)', v2(0x21, 0x10, IPV4_BLOCK), 'bad_family'],
  ['UNSPEC with STREAM protocol (0x01)', v2(0x21, 0x01, IPV4_BLOCK), 'bad_family'],
  ['family byte 0xff', v2(0x21, 0xff, IPV4_BLOCK), 'bad_family'],
  ['IPv4 length 11', v2(0x21, 0x11, IPV4_BLOCK.slice(0, 11)), 'bad_length'],
  ['IPv4 length 0', v2(0x21, 0x11), 'bad_length'],
  ['IPv6 with an IPv4 block', v2(0x21, 0x21, IPV4_BLOCK), 'bad_length'],
  ['Unix length 215', v2(0x21, 0x31, Buffer.alloc(215)), 'bad_length'],
  ['1 byte after the addresses', v2(0x21, 0x11, IPV4_BLOCK, [0x04]), 'bad_tlv'],
  ['2 bytes after the addresses', v2(0x21, 0x11, IPV4_BLOCK, [0x04, 0x00]), 'bad_tlv'],
  ['a TLV longer than the header', v2(0x21, 0x11, IPV4_BLOCK, [0x04, 0x00, 0x02, 0x00]), 'bad_tlv'],
  ['a TLV of 65535 bytes in a short header', v2(0x21, 0x00, [0xe0, 0xff, 0xff]), 'bad_tlv'],
  ['an SSL TLV of 4 bytes', v2(0x21, 0x00, tlv(PP2_TYPE.SSL, [1, 0, 0, 0])), 'bad_tlv'],
  ['an SSL sub-TLV overrunning the SSL TLV', v2(0x21, 0x00, tlv(PP2_TYPE.SSL, [1, 0, 0, 0, 0, 0x21, 0x00, 0x08, 0x54, 0x4c, 0x53])), 'bad_tlv'],
  ['an SSL sub-TLV header cut short', v2(0x21, 0x00, tlv(PP2_TYPE.SSL, [1, 0, 0, 0, 0, 0x21, 0x00])), 'bad_tlv'],
  ['an SSL VERSION that is not ASCII', v2(0x21, 0x00, tlv(PP2_TYPE.SSL, Buffer.concat([Buffer.from([1, 0, 0, 0, 0]), tlv(0x21, [0xc3, 0xa9])]))), 'bad_tlv'],
  ['an SSL CN that is not UTF-8', v2(0x21, 0x00, tlv(PP2_TYPE.SSL, Buffer.concat([Buffer.from([1, 0, 0, 0, 0]), tlv(0x22, [0xff])]))), 'bad_tlv'],
  ['two SSL CIPHER sub-TLVs', v2(0x21, 0x00, tlv(PP2_TYPE.SSL, Buffer.concat([Buffer.from([1, 0, 0, 0, 0]), tlv(0x23, 'A'), tlv(0x23, 'B')]))), 'bad_tlv'],
  ['a UNIQUE_ID of 129 bytes', v2(0x21, 0x00, tlv(PP2_TYPE.UNIQUE_ID, Buffer.alloc(129, 0x41))), 'bad_tlv'],
  ['an AUTHORITY that is not UTF-8', v2(0x21, 0x00, tlv(PP2_TYPE.AUTHORITY, [0x65, 0xc3])), 'bad_tlv'],
  ['a NETNS that is not ASCII', v2(0x21, 0x00, tlv(PP2_TYPE.NETNS, [0x80])), 'bad_tlv'],
  ['a CRC32C of 3 bytes', v2(0x21, 0x00, tlv(PP2_TYPE.CRC32C, [0, 0, 0])), 'bad_tlv'],
  ['a CRC32C of 5 bytes', v2(0x21, 0x00, tlv(PP2_TYPE.CRC32C, [0, 0, 0, 0, 0])), 'bad_tlv'],
  ['two CRC32C TLVs', v2(0x21, 0x00, tlv(PP2_TYPE.CRC32C, [0, 0, 0, 0]), tlv(PP2_TYPE.CRC32C, [0, 0, 0, 0])), 'bad_tlv'],
  ['two ALPN TLVs', v2(0x21, 0x00, tlv(PP2_TYPE.ALPN, 'h2'), tlv(PP2_TYPE.ALPN, 'http/1.1')), 'bad_tlv'],
  ['two AUTHORITY TLVs', v2(0x21, 0x00, tlv(PP2_TYPE.AUTHORITY, 'a'), tlv(PP2_TYPE.AUTHORITY, 'b')), 'bad_tlv'],
  ['a wrong CRC32C', v2(0x21, 0x00, tlv(PP2_TYPE.CRC32C, [1, 2, 3, 4])), 'bad_crc32c'],
  ['a zero CRC32C', v2(0x21, 0x00, tlv(PP2_TYPE.CRC32C, [0, 0, 0, 0])), 'bad_crc32c'],
];

describe('v2: invalid headers', () => {
  it.each(cases)('%s is %s', (_, bytes, reason) => {
    expectInvalid(parseProxyHeader(bytes), reason);
  });

  it('allows TLV types that repeat unless the parser decodes them (NOOP, custom ranges)', () => {
    const { header } = complete(v2(0x21, 0x00, tlv(PP2_TYPE.NOOP, []), tlv(PP2_TYPE.NOOP, [1]), tlv(0xe0, 'x'), tlv(0xe0, 'y')));
    expect(header.tlvs).toHaveLength(4);
  });
});

describe('v2: decided as early as the bytes allow', () => {
  it('says incomplete with the most it can take until the length is known, then the exact length', () => {
    const header = v2(0x21, 0x11, IPV4_BLOCK, tlv(PP2_TYPE.AUTHORITY, 'example.com'));
    for (let n = 1; n < 16; n++) expect(parseProxyHeader(header.subarray(0, n))).toEqual({ status: 'incomplete', maxLength: PROXY_HEADER_MAX_V2 });
    for (let n = 16; n < header.length; n++) expect(parseProxyHeader(header.subarray(0, n))).toEqual({ status: 'incomplete', maxLength: header.length });
    expect(parseProxyHeader(header).status).toBe('complete');
  });

  it('rejects the version, command, family and length bytes on arrival', () => {
    expectInvalid(parseProxyHeader(v2(0x11, 0x11, IPV4_BLOCK).subarray(0, 13)), 'bad_version');
    expectInvalid(parseProxyHeader(v2(0x23, 0x11, IPV4_BLOCK).subarray(0, 13)), 'bad_command');
    expectInvalid(parseProxyHeader(v2(0x21, 0x14, IPV4_BLOCK).subarray(0, 14)), 'bad_family');
    expectInvalid(parseProxyHeader(v2(0x21, 0x21, IPV4_BLOCK).subarray(0, 16)), 'bad_length');
  });

  it('rejects a length over maxV2Length at the 16th byte', () => {
    const header = v2(0x21, 0x00, tlv(0xe0, Buffer.alloc(600)));
    expectInvalid(parseProxyHeader(header.subarray(0, 16), { maxV2Length: 512 }), 'too_long');
    expect(parseProxyHeader(header.subarray(0, 15), { maxV2Length: 512 })).toEqual({ status: 'incomplete', maxLength: 512 });
    expect(parseProxyHeader(header, { maxV2Length: header.length }).status).toBe('complete');
  });

  it('takes the longest possible header, 65551 bytes', () => {
    const big = v2(0x21, 0x00, tlv(0xe0, Buffer.alloc(0xffff - 3)));
    expect(big.length).toBe(PROXY_HEADER_MAX_V2);
    expect(complete(Buffer.concat([big, Buffer.from('x')])).length).toBe(PROXY_HEADER_MAX_V2);
  });
});
