import { describe, expect, it } from 'vitest';
import { PROXY_HEADER_MAX_V1 } from '../../src/proxy-header/header.js';
import { parseProxyHeader } from '../../src/proxy-header/parse.js';
import type { ProxyHeaderInvalidReason, ProxyHeaderParseResult } from '../../src/proxy-header/parse-result.js';

const parse = (s: string): ProxyHeaderParseResult => parseProxyHeader(Buffer.from(s, 'latin1'));

function complete(s: string) {
  const result = parse(s);
  if (result.status !== 'complete') expect.fail(`${JSON.stringify(s)}: ${JSON.stringify(result)}`);
  return result;
}

describe('v1: the spec examples', () => {
  it('parses the TCP4 example line and leaves the HTTP request after it', () => {
    const line = 'PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n';
    const result = complete(`${line}GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n`);
    expect(result.length).toBe(line.length);
    expect(result.header).toEqual({
      version: 1,
      command: 'proxy',
      transport: 'tcp4',
      source: { address: '192.168.0.1', port: 56324 },
      destination: { address: '192.168.0.11', port: 443 },
      tlvs: [],
      raw: Buffer.from(line, 'latin1'),
    });
  });

  it('parses the longest TCP4 line (56 bytes) and the longest TCP6 line (104 bytes)', () => {
    const v4 = 'PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n';
    expect(v4.length).toBe(56);
    expect(complete(v4).length).toBe(56);
    const f = 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff';
    const v6 = `PROXY TCP6 ${f} ${f} 65535 65535\r\n`;
    expect(v6.length).toBe(104);
    const result = complete(v6);
    expect(result.header.source).toEqual({ address: f, port: 65535 });
  });

  it('parses the short UNKNOWN form (15 bytes) and the 107-byte worst case', () => {
    const short = complete('PROXY UNKNOWN\r\n');
    expect(short.length).toBe(15);
    expect(short.header).toMatchObject({ version: 1, command: 'proxy', transport: 'unknown' });
    expect(short.header.source).toBeUndefined();
    const f = 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff';
    const worst = `PROXY UNKNOWN ${f} ${f} 65535 65535\r\n`;
    expect(worst.length).toBe(PROXY_HEADER_MAX_V1);
    expect(complete(`${worst}payload`).length).toBe(107);
  });

  it('ignores whatever UNKNOWN carries before the CRLF, as the spec says', () => {
    expect(complete('PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n').header.transport).toBe('unknown');
    const garbage = 'PROXY UNKNOWN garbage\0\xff\t\r\n';
    expect(complete(garbage).length).toBe(garbage.length);
    expect(complete('PROXY UNKNOWN \r\n').length).toBe(16);
  });
});

describe('v1: addresses and ports', () => {
  it('prints IPv6 the Node way whatever the spelling, and keeps IPv4-mapped addresses mapped', () => {
    const result = complete('PROXY TCP6 2001:0DB8:0000:0000:0000:0000:0000:0001 ::FFFF:192.0.2.1 0 65535\r\n');
    expect(result.header.source).toEqual({ address: '2001:db8::1', port: 0 });
    expect(result.header.destination).toEqual({ address: '::ffff:192.0.2.1', port: 65535 });
    expect(complete('PROXY TCP6 ::ffff:c000:201 ::1 1 2\r\n').header.source).toEqual({ address: '::ffff:192.0.2.1', port: 1 });
  });

  it('accepts 0.0.0.0, 255.255.255.255 and :: addresses, ports 0 and 65535', () => {
    expect(complete('PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n').header.destination).toEqual({ address: '255.255.255.255', port: 65535 });
    expect(complete('PROXY TCP6 :: :: 0 0\r\n').header.source).toEqual({ address: '::', port: 0 });
  });
});

const invalidCases: [string, ProxyHeaderInvalidReason][] = [
  // the separator after PROXY
  ['PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n', 'bad_line'],
  ['PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n', 'bad_line'],
  ['PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n', 'bad_line'],
  ['PROXY \r\n', 'bad_line'],
  // the protocol word
  ['PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n', 'bad_family'],
  ['PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n', 'bad_family'],
  ['PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n', 'bad_family'],
  ['PROXY TCP44 1.2.3.4 5.6.7.8 1 2\r\n', 'bad_family'],
  ['PROXY TCP 1.2.3.4 5.6.7.8 1 2\r\n', 'bad_family'],
  ['PROXY UNKNOWNX\r\n', 'bad_family'],
  ['PROXY UNKNOW\r\n', 'bad_family'],
  // fields missing, extra, or separated wrongly
  ['PROXY TCP4\r\n', 'bad_line'],
  ['PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n', 'bad_line'],
  ['PROXY TCP4 1.2.3.4 5.6.7.8\r\n', 'bad_line'],
  ['PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n', 'bad_line'],
  ['PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n', 'bad_line'],
  ['PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n', 'bad_line'],
  ['PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n', 'bad_address'],
  // line endings
  ['PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n', 'bad_line'],
  ['PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n', 'bad_line'],
  ['PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX', 'bad_line'],
  ['PROXY UNKNOWN\n', 'bad_line'],
  ['PROXY UNKNOWN\rX\n', 'bad_line'],
  ['PROXY UNKNOWN x\ny\r\n', 'bad_line'],
  ['PROXY UNKNOWN x\ry\r\n', 'bad_line'],
  // addresses
  ['PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n', 'bad_address'],
  ['PROXY TCP4 1.2.3.4 5.6.7.08 1 2\r\n', 'bad_address'],
  ['PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n', 'bad_address'],
  ['PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n', 'bad_address'],
  ['PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n', 'bad_address'],
  ['PROXY TCP4 ::1 5.6.7.8 1 2\r\n', 'bad_address'],
  ['PROXY TCP4 ::ffff:1.2.3.4 5.6.7.8 1 2\r\n', 'bad_address'],
  ['PROXY TCP4 1.2.3.4 1111.2.3.4 1 2\r\n', 'bad_address'],
  ['PROXY TCP4 localhost 5.6.7.8 1 2\r\n', 'bad_address'],
  ['PROXY TCP6 1.2.3.4 ::1 1 2\r\n', 'bad_address'],
  ['PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n', 'bad_address'],
  ['PROXY TCP6 [::1] ::1 1 2\r\n', 'bad_address'],
  ['PROXY TCP6 1::2::3 ::1 1 2\r\n', 'bad_address'],
  ['PROXY TCP6 12345::1 ::1 1 2\r\n', 'bad_address'],
  ['PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n', 'bad_address'],
  ['PROXY TCP6 ::1 ::01.2.3.4 1 2\r\n', 'bad_address'],
  // ports
  ['PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n', 'bad_port'],
  ['PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n', 'bad_port'],
  ['PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n', 'bad_port'],
  ['PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n', 'bad_port'],
  ['PROXY TCP4 1.2.3.4 5.6.7.8 123456 2\r\n', 'bad_port'],
  ['PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n', 'bad_port'],
  ['PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n', 'bad_port'],
  ['PROXY TCP4 1.2.3.4 5.6.7.8 0x10 2\r\n', 'bad_port'],
  ['PROXY TCP4 1.2.3.4 5.6.7.8 1 2a\r\n', 'bad_port'],
  // length
  [`PROXY UNKNOWN ${'a'.repeat(92)}\r\n`, 'too_long'],
  [`PROXY UNKNOWN ${'a'.repeat(200)}`, 'too_long'],
  [`PROXY TCP6 ::ffff:255.255.255.255 ${'ffff:'.repeat(6)}255.255.255.255 65535 65535\r\n`.replace('::ffff:255.255.255.255', `${'ffff:'.repeat(6)}255.255.255.255`), 'too_long'],
];

describe('v1: invalid lines', () => {
  it.each(invalidCases)('%j is %s', (line, reason) => {
    const result = parse(line);
    expect(result).toMatchObject({ status: 'invalid', reason });
    if (result.status === 'invalid') expect(result.message).toMatch(/^PROXY header: /);
  });

  it('the 108-byte UNKNOWN line is one byte too long, the 107-byte one fits', () => {
    expect(parse(`PROXY UNKNOWN ${'a'.repeat(91)}\r\n`).status).toBe('complete');
    expect(parse(`PROXY UNKNOWN ${'a'.repeat(92)}\r\n`)).toMatchObject({ status: 'invalid', reason: 'too_long' });
  });
});

describe('v1: decided as early as the bytes allow', () => {
  it.each([
    ['PROXY TCP4 01', 'bad_address'],
    ['PROXY TCP4 0', 'incomplete'],
    ['PROXY TCP4 1.2.3.', 'incomplete'],
    ['PROXY TCP4 1..', 'bad_address'],
    ['PROXY TCP4 .', 'bad_address'],
    ['PROXY TCP4 1.2.3.4.', 'bad_address'],
    ['PROXY TCP4 256', 'bad_address'],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 65536', 'bad_port'],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 6553', 'incomplete'],
    ['PROXY TCP4\n', 'bad_line'],
    ['PROXY TCP4 1.2.3.4x', 'bad_address'],
    ['PROXY TCP4 1.2.3.4 ', 'incomplete'],
    ['PROXY TCP4 1.2.3.400 ', 'bad_address'],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 01 ', 'bad_port'],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 123456', 'bad_port'],
    ['PROXY TCP6 ::1 ', 'incomplete'],
    ['PROXY TCP6 :::', 'incomplete'],
    ['PROXY TCP6 ::: ', 'bad_address'],
    ['PROXY TCP6 ::1g', 'bad_address'],
    ['PROXY X', 'bad_family'],
    ['PROXY TC', 'incomplete'],
    ['PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r', 'incomplete'],
    ['PROXY UNKNOWN\r', 'incomplete'],
    ['PROXY UNKNOWN ab\n', 'bad_line'],
  ])('%j is %s', (prefix, expected) => {
    const result = parse(prefix);
    if (expected === 'incomplete') expect(result).toEqual({ status: 'incomplete', maxLength: PROXY_HEADER_MAX_V1 });
    else expect(result).toMatchObject({ status: 'invalid', reason: expected });
  });

  it('stays incomplete up to 106 bytes of a line that could still end, and is too_long at 107 without CRLF', () => {
    const line = `PROXY UNKNOWN ${'a'.repeat(200)}`;
    expect(parse(line.slice(0, 106)).status).toBe('incomplete');
    expect(parse(`${line.slice(0, 105)}\r`).status).toBe('incomplete');
    expect(parse(line.slice(0, 107))).toMatchObject({ status: 'invalid', reason: 'too_long' });
    expect(parse(`${line.slice(0, 106)}\r`)).toMatchObject({ status: 'invalid', reason: 'too_long' });
  });

  it('raw is a copy: changing the parsed buffer afterwards does not change the header', () => {
    const buf = Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nX', 'latin1');
    const result = parseProxyHeader(buf);
    buf.fill(0);
    expect(result.status === 'complete' && result.header.raw.toString('latin1')).toBe('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n');
  });
});
