import { describe, expect, it } from 'vitest';
import { InvalidOptionError } from '../../src/errors.js';
import { PROXY_HEADER_MAX_V1, PROXY_HEADER_MAX_V2 } from '../../src/proxy-header/header.js';
import { parseProxyHeader, type ProxyHeaderParseOptions } from '../../src/proxy-header/parse.js';

const V1 = Buffer.from('PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n', 'latin1');
const V2_LOCAL = Buffer.from('0d0a0d0a000d0a515549540a20000000', 'hex');
const CLIENT_HELLO = Buffer.from('160301020001', 'hex');

describe('parseProxyHeader: telling a header from a payload', () => {
  it('says incomplete for no bytes, bounded by the longer of the two versions', () => {
    expect(parseProxyHeader(Buffer.alloc(0))).toEqual({ status: 'incomplete', maxLength: PROXY_HEADER_MAX_V2 });
    expect(parseProxyHeader(Buffer.alloc(0), { versions: [1] })).toEqual({ status: 'incomplete', maxLength: PROXY_HEADER_MAX_V1 });
  });

  it.each([
    ['a TLS ClientHello', CLIENT_HELLO],
    ['an HTTP request', Buffer.from('GET / HTTP/1.1\r\n')],
    ['an AMQP protocol header', Buffer.from('AMQP\x00\x00\x09\x01', 'latin1')],
    ['a lower-case proxy', Buffer.from('proxy TCP4')],
  ])('decides on the first byte that %s is no header', (_, bytes) => {
    expect(parseProxyHeader(bytes.subarray(0, 1), { mode: 'optional' })).toEqual({ status: 'absent' });
    expect(parseProxyHeader(bytes, { mode: 'optional' })).toEqual({ status: 'absent' });
    expect(parseProxyHeader(bytes.subarray(0, 1))).toMatchObject({ status: 'invalid', reason: 'bad_signature' });
  });

  it.each([
    ['POST (shares P with PROXY)', 'POST / HTTP/1.1', 2],
    ['PROXZ', 'PROXZ', 5],
    ['CR LF CR LF then HTTP (shares 4 bytes with the v2 signature)', '\r\n\r\nGET', 5],
    ['the v2 signature with one wrong byte', '\r\n\r\n\0\r\nQUIX\n', 11],
  ])('decides on the first differing byte for %s', (_, text, decidedAt) => {
    const bytes = Buffer.from(text, 'latin1');
    expect(parseProxyHeader(bytes.subarray(0, decidedAt - 1), { mode: 'optional' }).status).toBe('incomplete');
    expect(parseProxyHeader(bytes.subarray(0, decidedAt), { mode: 'optional' })).toEqual({ status: 'absent' });
    expect(parseProxyHeader(bytes.subarray(0, decidedAt))).toMatchObject({ status: 'invalid', reason: 'bad_signature' });
  });

  it('goes on as a header once a signature matched, in both modes', () => {
    expect(parseProxyHeader(Buffer.from('PROXY'), { mode: 'optional' })).toEqual({ status: 'incomplete', maxLength: PROXY_HEADER_MAX_V1 });
    expect(parseProxyHeader(Buffer.from('PROXYZ'), { mode: 'optional' })).toMatchObject({ status: 'invalid', reason: 'bad_line' });
    expect(parseProxyHeader(V1, { mode: 'optional' }).status).toBe('complete');
    expect(parseProxyHeader(V2_LOCAL, { mode: 'optional' }).status).toBe('complete');
  });
});

describe('parseProxyHeader: options', () => {
  it('versions: [2] rejects a v1 header as bad_version once PROXY is there, and bounds incomplete by the signature', () => {
    expect(parseProxyHeader(Buffer.from('PROX'), { versions: [2] })).toEqual({ status: 'incomplete', maxLength: 5 });
    expect(parseProxyHeader(V1, { versions: [2] })).toMatchObject({ status: 'invalid', reason: 'bad_version' });
    expect(parseProxyHeader(V1, { versions: [2], mode: 'optional' })).toMatchObject({ status: 'invalid', reason: 'bad_version' });
    expect(parseProxyHeader(V2_LOCAL, { versions: [2] }).status).toBe('complete');
  });

  it('versions: [1] rejects a v2 header as bad_version once its signature is there', () => {
    expect(parseProxyHeader(V2_LOCAL.subarray(0, 11), { versions: [1] })).toEqual({ status: 'incomplete', maxLength: 12 });
    expect(parseProxyHeader(V2_LOCAL.subarray(0, 12), { versions: [1] })).toMatchObject({ status: 'invalid', reason: 'bad_version' });
    expect(parseProxyHeader(V1, { versions: [1] }).status).toBe('complete');
  });

  it.each<[string, ProxyHeaderParseOptions]>([
    ['mode', { mode: 'sometimes' as 'optional' }],
    ['versions', { versions: [] }],
    ['versions', { versions: [3 as 1] }],
    ['versions', { versions: '2' as unknown as [2] }],
    ['maxV2Length', { maxV2Length: 15 }],
    ['maxV2Length', { maxV2Length: PROXY_HEADER_MAX_V2 + 1 }],
    ['maxV2Length', { maxV2Length: 100.5 }],
  ])('throws InvalidOptionError for a bad %s', (option, options) => {
    expect(() => parseProxyHeader(V1, options)).toThrow(InvalidOptionError);
    try {
      parseProxyHeader(V1, options);
    } catch (error) {
      expect((error as InvalidOptionError).option).toBe(option);
      expect((error as InvalidOptionError).code).toBe('CORRAL_INVALID_OPTION');
    }
  });
});
