/**
 * Cross-check against an independent implementation, proxy-protocol-js 4.0.6 (devDependency):
 * headers it builds must parse with ours to the same addresses and ports, and headers ours
 * builds must read back the same with its parsers, where they can parse at all. It has no TLV
 * support, no short `PROXY UNKNOWN\r\n`, and checks neither v1 numbers nor v2 lengths; the
 * differences found are asserted at the end, so a change in either side shows up here.
 */
import fc from 'fast-check';
import {
  Command,
  INETProtocol,
  IPv4Address,
  IPv4ProxyAddress,
  IPv6Address,
  IPv6ProxyAddress,
  Peer,
  TransportProtocol,
  UnixAddress,
  UnixProxyAddress,
  UnspecProxyAddress,
  V1BinaryProxyProtocol,
  V1ProxyProtocol,
  V2ProxyProtocol,
} from 'proxy-protocol-js';
import { describe, expect, it } from 'vitest';
import { buildProxyHeader } from '../../src/proxy-header/build.js';
import type { ProxyHeader, ProxyInetAddress, ProxyUnixAddress } from '../../src/proxy-header/header.js';
import { parseProxyHeader } from '../../src/proxy-header/parse.js';
import { ipv4, ipv6, nodeAddress, port, tlvList, unixPath, v1Case, v2Case } from './arbitraries.js';

/** Run counts per property (quoted in docs/proxy-header.md). */
const CROSS_RUNS = 1000;

const payloadArb = fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b));

function parsed(bytes: Uint8Array): { header: ProxyHeader; length: number } {
  const result = parseProxyHeader(Buffer.from(bytes));
  if (result.status !== 'complete') expect.fail(`${Buffer.from(bytes).toString('hex')}: ${JSON.stringify(result)}`);
  return result;
}

/** Node's text for 16 address bytes, without our formatter: SocketAddress of the uncompressed form. */
function ipv6Text(bytes: readonly number[]): string {
  const groups = Array.from({ length: 8 }, (_, i) => ((bytes[2 * i]! << 8) | bytes[2 * i + 1]!).toString(16));
  return nodeAddress(groups.join(':'), 'ipv6');
}

/** The path a 108-byte field stands for, as the module documents it (unnamed, abstract, or up to NUL). */
function unixText(bytes: readonly number[]): string {
  const field = Buffer.from(bytes);
  if (field[0] !== 0) {
    const nul = field.indexOf(0);
    return field.toString('utf8', 0, nul === -1 ? 108 : nul);
  }
  const name = field.toString('latin1', 1).replace(/\0+$/, '');
  return name === '' ? '' : `\0${Buffer.from(name, 'latin1').toString('utf8')}`;
}

const inet = (address: ProxyHeader['source']): ProxyInetAddress => address as ProxyInetAddress;

describe('proxy-protocol-js builds, corral parses', () => {
  it('v1 text and binary TCP4/TCP6 lines: same addresses (Node form) and ports, payload untouched', () => {
    const line = fc.oneof(
      fc.record({ proto: fc.constant(INETProtocol.TCP4), src: ipv4, dst: ipv4, sport: port, dport: port }),
      fc.record({ proto: fc.constant(INETProtocol.TCP6), src: ipv6, dst: ipv6, sport: port, dport: port }),
    );
    fc.assert(
      fc.property(line, payloadArb, fc.boolean(), ({ proto, src, dst, sport, dport }, payload, binary) => {
        const source = new Peer(src, sport);
        const destination = new Peer(dst, dport);
        const theirs = binary
          ? Buffer.from(new V1BinaryProxyProtocol(proto, source, destination, payload).build())
          : Buffer.from(new V1ProxyProtocol(proto, source, destination, payload.toString('latin1')).build(), 'latin1');
        const headerLength = theirs.length - payload.length;
        const { header, length } = parsed(theirs);
        const family = proto === INETProtocol.TCP4 ? 'ipv4' : 'ipv6';
        expect(length).toBe(headerLength);
        expect(header.transport).toBe(proto === INETProtocol.TCP4 ? 'tcp4' : 'tcp6');
        expect(header.source).toEqual({ address: nodeAddress(src, family), port: sport });
        expect(header.destination).toEqual({ address: nodeAddress(dst, family), port: dport });
      }),
      { numRuns: CROSS_RUNS },
    );
  });

  it('v1 UNKNOWN in its long form (the only one it builds)', () => {
    const built = new V1ProxyProtocol(INETProtocol.UNKNOWN, new Peer('::1', 1), new Peer('::1', 2)).build();
    expect(parsed(Buffer.from(built)).header).toMatchObject({ version: 1, transport: 'unknown' });
  });

  it('v2 headers of every family it can build: same command, transport, addresses, ports; length excludes the payload', () => {
    const v4 = fc.record({ kind: fc.constant('ipv4' as const), src: fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 4, maxLength: 4 }), dst: fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 4, maxLength: 4 }), sport: port, dport: port });
    const v6 = fc.record({ kind: fc.constant('ipv6' as const), src: fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 16, maxLength: 16 }), dst: fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 16, maxLength: 16 }), sport: port, dport: port });
    // 108 bytes: an ASCII path, a NUL, then any garbage; or a path of ours padded with NULs.
    const unixField = fc.oneof(
      fc
        .tuple(fc.array(fc.integer({ min: 1, max: 0x7f }), { maxLength: 108 }), fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 108, maxLength: 108 }))
        .map(([path, garbage]) => [...path, 0, ...garbage].slice(0, 108)),
      unixPath.map(({ path }) => [...Buffer.concat([Buffer.from(path, 'utf8'), Buffer.alloc(108)]).subarray(0, 108)]),
    );
    const unix = fc.record({ kind: fc.constant('unix' as const), src: unixField, dst: unixField });
    fc.assert(
      fc.property(fc.oneof(v4, v6, unix), fc.constantFrom(TransportProtocol.STREAM, TransportProtocol.DGRAM), payloadArb, (a, proto, payload) => {
        const address =
          a.kind === 'ipv4'
            ? new IPv4ProxyAddress(IPv4Address.createFrom(a.src), a.sport, IPv4Address.createFrom(a.dst), a.dport)
            : a.kind === 'ipv6'
              ? new IPv6ProxyAddress(IPv6Address.createFrom(a.src), a.sport, IPv6Address.createFrom(a.dst), a.dport)
              : new UnixProxyAddress(UnixAddress.createFrom(a.src), UnixAddress.createFrom(a.dst));
        const theirs = Buffer.from(new V2ProxyProtocol(Command.PROXY, proto, address, payload).build());
        const { header, length } = parsed(theirs);
        expect(length).toBe(theirs.length - payload.length);
        expect(header.command).toBe('proxy');
        const dgram = proto === TransportProtocol.DGRAM;
        if (a.kind === 'unix') {
          expect(header.transport).toBe(dgram ? 'unix-dgram' : 'unix');
          expect(header.source).toEqual({ path: unixText(a.src) });
          expect(header.destination).toEqual({ path: unixText(a.dst) });
        } else {
          expect(header.transport).toBe(`${dgram ? 'udp' : 'tcp'}${a.kind === 'ipv4' ? 4 : 6}`);
          const text = a.kind === 'ipv4' ? (b: number[]) => b.join('.') : ipv6Text;
          expect(header.source).toEqual({ address: text(a.src), port: a.sport });
          expect(header.destination).toEqual({ address: text(a.dst), port: a.dport });
        }
      }),
      { numRuns: CROSS_RUNS },
    );
  });

  it('v2 LOCAL with UNSPEC', () => {
    const theirs = new V2ProxyProtocol(Command.LOCAL, TransportProtocol.UNSPEC, new UnspecProxyAddress()).build();
    const { header, length } = parsed(theirs);
    expect(length).toBe(16);
    expect(header).toMatchObject({ version: 2, command: 'local', transport: 'unknown' });
  });
});

describe('corral builds, proxy-protocol-js parses', () => {
  it('v1 TCP4/TCP6: both of its parsers read the same addresses and ports', () => {
    fc.assert(
      fc.property(v1Case.filter((c) => c.init.transport !== 'unknown'), payloadArb, (c, payload) => {
        const ours = buildProxyHeader(c.init, { version: 1 });
        const family = c.init.transport === 'tcp4' ? 'ipv4' : 'ipv6';
        const text = V1ProxyProtocol.parse(Buffer.concat([ours, payload]).toString('latin1'));
        const binary = V1BinaryProxyProtocol.parse(Buffer.concat([ours, payload]));
        for (const theirs of [text, binary]) {
          expect(theirs.inetProtocol).toBe(c.init.transport === 'tcp4' ? 'TCP4' : 'TCP6');
          expect(nodeAddress(theirs.source.ipAddress, family)).toBe(nodeAddress(inet(c.init.source).address, family));
          expect(nodeAddress(theirs.destination.ipAddress, family)).toBe(nodeAddress(inet(c.init.destination).address, family));
          expect(theirs.source.port).toBe(inet(c.init.source).port);
          expect(theirs.destination.port).toBe(inet(c.init.destination).port);
        }
        expect(Buffer.from(binary.data ?? [])).toEqual(payload);
      }),
      { numRuns: CROSS_RUNS },
    );
  });

  it('v2 of every family, with TLVs: it reads the same command, family, addresses and ports, and hands our TLVs on as data', () => {
    const endpoints = v2Case.filter((c) => c.init.command !== 'local');
    fc.assert(
      fc.property(endpoints, tlvList, fc.boolean(), payloadArb, (c, { tlvs }, crc, payload) => {
        const ours = buildProxyHeader({ ...c.init, tlvs }, { version: 2, crc32c: crc });
        const theirs = V2ProxyProtocol.parse(Buffer.concat([ours, payload]));
        const transport = c.init.transport;
        expect(theirs.command).toBe(Command.PROXY);
        expect(theirs.transportProtocol).toBe(
          transport === 'unknown' ? TransportProtocol.UNSPEC : transport.startsWith('udp') || transport === 'unix-dgram' ? TransportProtocol.DGRAM : TransportProtocol.STREAM,
        );
        const address = theirs.proxyAddress;
        let blockLength = 0;
        if (transport === 'tcp4' || transport === 'udp4') {
          expect(address).toBeInstanceOf(IPv4ProxyAddress);
          const a = address as IPv4ProxyAddress;
          expect(a.sourceAddress.address.join('.')).toBe(inet(c.init.source).address);
          expect(a.destinationAddress.address.join('.')).toBe(inet(c.init.destination).address);
          expect([a.sourcePort, a.destinationPort]).toEqual([inet(c.init.source).port, inet(c.init.destination).port]);
          blockLength = 12;
        } else if (transport === 'tcp6' || transport === 'udp6') {
          expect(address).toBeInstanceOf(IPv6ProxyAddress);
          const a = address as IPv6ProxyAddress;
          expect(ipv6Text(a.sourceAddress.address)).toBe(nodeAddress(inet(c.init.source).address, 'ipv6'));
          expect(ipv6Text(a.destinationAddress.address)).toBe(nodeAddress(inet(c.init.destination).address, 'ipv6'));
          expect([a.sourcePort, a.destinationPort]).toEqual([inet(c.init.source).port, inet(c.init.destination).port]);
          blockLength = 36;
        } else if (transport === 'unix' || transport === 'unix-dgram') {
          expect(address).toBeInstanceOf(UnixProxyAddress);
          const a = address as UnixProxyAddress;
          expect(unixText(a.sourceAddress.address)).toBe((c.init.source as ProxyUnixAddress).path);
          expect(unixText(a.destinationAddress.address)).toBe((c.init.destination as ProxyUnixAddress).path);
          blockLength = 216;
        } else {
          expect(address).toBeInstanceOf(UnspecProxyAddress);
        }
        // It ignores the length field: everything after the address block, TLVs included, is its data.
        expect(Buffer.from(theirs.data ?? [])).toEqual(Buffer.concat([ours.subarray(16 + blockLength), payload]));
      }),
      { numRuns: CROSS_RUNS },
    );
  });

  it('v2 LOCAL', () => {
    const theirs = V2ProxyProtocol.parse(buildProxyHeader({ command: 'local', transport: 'unknown' }, { version: 2 }));
    expect(theirs.command).toBe(Command.LOCAL);
    expect(theirs.proxyAddress).toBeInstanceOf(UnspecProxyAddress);
  });
});

describe('where the two disagree (each case is the spec against proxy-protocol-js)', () => {
  it('its v1 parsers cannot read the short UNKNOWN line the spec allows (and HAProxy sends)', () => {
    const line = buildProxyHeader({ transport: 'unknown' }, { version: 1 });
    expect(line.toString('latin1')).toBe('PROXY UNKNOWN\r\n');
    expect(() => V1ProxyProtocol.parse(line.toString('latin1'))).toThrow();
    expect(() => V1BinaryProxyProtocol.parse(line)).toThrow();
  });

  it.each([
    ['a leading zero in an IPv4 octet', 'PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n', 'bad_address'],
    ['a port over 65535', 'PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n', 'bad_port'],
    ['a port with a leading zero', 'PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n', 'bad_port'],
    ['a host name for an address', 'PROXY TCP4 localhost 5.6.7.8 1 2\r\n', 'bad_address'],
    ['an IPv6 address in TCP4', 'PROXY TCP4 ::1 ::1 1 2\r\n', 'bad_address'],
  ])('its text parser accepts %s; ours rejects it', (_, line, reason) => {
    expect(() => V1ProxyProtocol.parse(line)).not.toThrow();
    expect(parseProxyHeader(Buffer.from(line, 'latin1'))).toMatchObject({ status: 'invalid', reason });
  });

  it('it builds v2 family bytes the spec does not list (INET with UNSPEC protocol); ours rejects them', () => {
    const theirs = new V2ProxyProtocol(Command.PROXY, TransportProtocol.UNSPEC, new IPv4ProxyAddress(IPv4Address.createFrom([1, 2, 3, 4]), 1, IPv4Address.createFrom([5, 6, 7, 8]), 2)).build();
    expect(theirs[13]).toBe(0x10);
    expect(parseProxyHeader(Buffer.from(theirs))).toMatchObject({ status: 'invalid', reason: 'bad_family' });
  });

  it('it writes ports over 65535 modulo 65536 in v2 where ours refuses them', () => {
    const theirs = new V2ProxyProtocol(Command.PROXY, TransportProtocol.STREAM, new IPv4ProxyAddress(IPv4Address.createFrom([1, 2, 3, 4]), 65536 + 80, IPv4Address.createFrom([5, 6, 7, 8]), 2)).build();
    expect(parsed(theirs).header.source).toEqual({ address: '1.2.3.4', port: 80 });
    expect(() =>
      buildProxyHeader({ transport: 'tcp4', source: { address: '1.2.3.4', port: 65536 + 80 }, destination: { address: '5.6.7.8', port: 2 } }, { version: 2 }),
    ).toThrow(/65535/);
  });

  it('its v2 parser takes a header whose length is shorter than its TLVs; ours does not', () => {
    const ours = buildProxyHeader({ transport: 'unknown', tlvs: [{ type: 0xe0, value: Buffer.from('abc') }] }, { version: 2 });
    const truncatedLength = Buffer.from(ours);
    truncatedLength.writeUInt16BE(2, 14);
    expect(() => V2ProxyProtocol.parse(truncatedLength)).not.toThrow();
    expect(parseProxyHeader(truncatedLength)).toMatchObject({ status: 'invalid', reason: 'bad_tlv' });
  });
});
