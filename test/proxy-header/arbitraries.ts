/**
 * fast-check arbitraries of valid PROXY headers (as `buildProxyHeader` input) and the header a
 * parser must return for each, computed without the module's own address code: expected IPv6
 * text comes from `net.SocketAddress`.
 */
import fc from 'fast-check';
import { SocketAddress } from 'node:net';
import { expect } from 'vitest';
import {
  PP2_SUBTYPE_SSL,
  PP2_TYPE,
  type ProxyHeader,
  type ProxyInetAddress,
  type ProxySslInfo,
  type ProxyTlv,
  type ProxyUnixAddress,
} from '../../src/proxy-header/header.js';
import type { ProxyHeaderInit } from '../../src/proxy-header/build.js';
import { encodeSslTlv, type ProxySslTlvInit } from '../../src/proxy-header/tlv.js';

/** Node's canonical text of an IP address (what `socket.remoteAddress` would print). */
export function nodeAddress(address: string, family: 'ipv4' | 'ipv6'): string {
  return new SocketAddress({ address, family }).address;
}

export const port = fc.integer({ min: 0, max: 0xffff });
export const ipv4 = fc.ipV4();
/** fast-check's IPv6 text: every compression, dotted tails, leading zeros. */
export const ipv6 = fc.oneof(fc.ipV6(), fc.ipV4().map((v4) => `::ffff:${v4}`), fc.constantFrom('::', '::1', '::ffff:0:0'));

const inet = (address: fc.Arbitrary<string>): fc.Arbitrary<ProxyInetAddress> => fc.record({ address, port });

const noNul = (s: string): boolean => !s.includes('\0');
const utf8Length = (s: string): number => Buffer.byteLength(s, 'utf8');
/** Text of any Unicode scalar values (no lone surrogates, so it survives UTF-8). */
const unicode = (maxLength: number): fc.Arbitrary<string> => fc.string({ unit: 'binary', maxLength });
const ascii = (maxLength: number): fc.Arbitrary<string> => fc.string({ unit: 'binary-ascii', maxLength });

export const unixPath: fc.Arbitrary<ProxyUnixAddress> = fc
  .oneof(
    unicode(108).filter((s) => noNul(s) && utf8Length(s) <= 108),
    unicode(107).filter((s) => s.length > 0 && !s.endsWith('\0') && utf8Length(s) <= 107).map((s) => `\0${s}`),
    fc.constantFrom('/run/haproxy.sock', '', '\0abstract', 'x'.repeat(108)),
  )
  .map((path) => ({ path }));

const bytes = (maxLength: number): fc.Arbitrary<Buffer> => fc.uint8Array({ maxLength }).map((b) => Buffer.from(b));

/** Types the parser decodes (and allows once); every other type is carried raw. */
const DECODED = new Set<number>([PP2_TYPE.ALPN, PP2_TYPE.AUTHORITY, PP2_TYPE.CRC32C, PP2_TYPE.UNIQUE_ID, PP2_TYPE.SSL, PP2_TYPE.NETNS]);
const SSL_DECODED = new Set<number>(Object.values(PP2_SUBTYPE_SSL));

const rawTlv = (decoded: Set<number>): fc.Arbitrary<ProxyTlv> =>
  fc.record({ type: fc.integer({ min: 0, max: 255 }).filter((t) => !decoded.has(t)), value: bytes(40) });

export const sslInit: fc.Arbitrary<ProxySslTlvInit> = fc.record(
  {
    client: fc.integer({ min: 0, max: 255 }),
    verify: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffffffff })),
    version: fc.oneof(fc.constantFrom('TLSv1.2', 'TLSv1.3'), ascii(20)),
    cn: unicode(40),
    cipher: ascii(40),
    sigAlg: ascii(20),
    keyAlg: ascii(20),
    tlvs: fc.array(rawTlv(SSL_DECODED), { maxLength: 3 }),
  },
  { requiredKeys: ['client'] },
);

/** What decoding a TLV adds to the expected header. */
type Expectation = Partial<Pick<ProxyHeader, 'alpn' | 'authority' | 'uniqueId' | 'ssl' | 'netns'>>;

function expectedSsl(init: ProxySslTlvInit): ProxySslInfo {
  const ssl: ProxySslInfo = { client: init.client, verify: init.verify ?? 0, tlvs: [] };
  const subs: [keyof ProxySslTlvInit, number][] = [
    ['version', PP2_SUBTYPE_SSL.VERSION],
    ['cn', PP2_SUBTYPE_SSL.CN],
    ['cipher', PP2_SUBTYPE_SSL.CIPHER],
    ['sigAlg', PP2_SUBTYPE_SSL.SIG_ALG],
    ['keyAlg', PP2_SUBTYPE_SSL.KEY_ALG],
  ];
  for (const [key, type] of subs) {
    const text = init[key];
    if (typeof text === 'string') {
      (ssl as unknown as Record<string, unknown>)[key] = text;
      ssl.tlvs.push({ type, value: Buffer.from(text, 'utf8') });
    }
  }
  ssl.tlvs.push(...(init.tlvs ?? []));
  return ssl;
}

/** A registered TLV with a valid value, and what the parser must decode from it. */
const registeredTlvs: fc.Arbitrary<[ProxyTlv, Expectation][]> = fc
  .tuple(
    bytes(20).map((v): [ProxyTlv, Expectation] => [{ type: PP2_TYPE.ALPN, value: v }, { alpn: v }]),
    unicode(60).map((s): [ProxyTlv, Expectation] => [{ type: PP2_TYPE.AUTHORITY, value: Buffer.from(s, 'utf8') }, { authority: s }]),
    bytes(128).map((v): [ProxyTlv, Expectation] => [{ type: PP2_TYPE.UNIQUE_ID, value: v }, { uniqueId: v }]),
    sslInit.map((init): [ProxyTlv, Expectation] => [encodeSslTlv(init), { ssl: expectedSsl(init) }]),
    ascii(30).map((s): [ProxyTlv, Expectation] => [{ type: PP2_TYPE.NETNS, value: Buffer.from(s, 'latin1') }, { netns: s }]),
    bytes(10).map((v): [ProxyTlv, Expectation] => [{ type: PP2_TYPE.NOOP, value: v }, {}]),
  )
  .chain((all) => fc.shuffledSubarray(all));

/** A TLV list: registered TLVs (each at most once) and raw ones, in random order. */
export const tlvList: fc.Arbitrary<{ tlvs: ProxyTlv[]; expected: Expectation }> = fc
  .tuple(registeredTlvs, fc.array(rawTlv(DECODED), { maxLength: 4 }), fc.nat())
  .map(([registered, raw, seed]) => {
    const entries: [ProxyTlv, Expectation][] = [...registered, ...raw.map((t): [ProxyTlv, Expectation] => [t, {}])];
    // A deterministic shuffle driven by seed, so the raw TLVs land between the registered ones.
    for (let i = entries.length - 1; i > 0; i--) {
      const j = (seed + i * 7919) % (i + 1);
      [entries[i], entries[j]] = [entries[j]!, entries[i]!];
    }
    return { tlvs: entries.map(([t]) => t), expected: Object.assign({}, ...entries.map(([, e]) => e)) as Expectation };
  });

/** A header `buildProxyHeader` can encode in v2, with the fields a parser must give back. */
export interface HeaderCase {
  init: ProxyHeaderInit;
  crc32c: boolean;
  /** The header minus `raw`, and minus `crc32c` (its value depends on the bytes). */
  expected: Omit<ProxyHeader, 'raw' | 'crc32c'>;
}

const endpointsV2 = fc.oneof(
  fc.record({ transport: fc.constantFrom('tcp4' as const, 'udp4' as const), source: inet(ipv4), destination: inet(ipv4) }),
  fc.record({ transport: fc.constantFrom('tcp6' as const, 'udp6' as const), source: inet(ipv6), destination: inet(ipv6) }),
  fc.record({ transport: fc.constantFrom('unix' as const, 'unix-dgram' as const), source: unixPath, destination: unixPath }),
  fc.record({ command: fc.constantFrom('proxy' as const, 'local' as const), transport: fc.constant('unknown' as const) }),
);

function canonical(address: ProxyInetAddress | ProxyUnixAddress, ipFamily: 'ipv4' | 'ipv6' | undefined): ProxyInetAddress | ProxyUnixAddress {
  return ipFamily === undefined ? address : { ...(address as ProxyInetAddress), address: nodeAddress((address as ProxyInetAddress).address, ipFamily) };
}

function expectedEndpoints(init: ProxyHeaderInit): Pick<ProxyHeader, 'command' | 'transport' | 'source' | 'destination'> {
  if (init.transport === 'unknown') return { command: init.command ?? 'proxy', transport: 'unknown' };
  const family = init.transport.endsWith('4') ? 'ipv4' : init.transport.endsWith('6') ? 'ipv6' : undefined;
  return {
    command: 'proxy',
    transport: init.transport,
    source: canonical(init.source, family),
    destination: canonical(init.destination, family),
  } as Pick<ProxyHeader, 'command' | 'transport' | 'source' | 'destination'>;
}

/** Valid v2 headers over every family, with random TLVs and an optional CRC32C. */
export const v2Case: fc.Arbitrary<HeaderCase> = fc
  .tuple(endpointsV2, tlvList, fc.boolean())
  .map(([endpoints, { tlvs, expected }, crc32c]) => {
    const init = { ...endpoints, tlvs } as ProxyHeaderInit;
    const allTlvs = crc32c ? [...tlvs, { type: PP2_TYPE.CRC32C, value: Buffer.alloc(4) }] : tlvs;
    return {
      init,
      crc32c,
      expected: { ...expectedEndpoints(init), version: 2, tlvs: allTlvs, ...expected } as Omit<ProxyHeader, 'raw' | 'crc32c'>,
    };
  });

/** Valid v1 headers: TCP4, TCP6 (any IPv6 spelling in, canonical out) and UNKNOWN. */
export const v1Case: fc.Arbitrary<HeaderCase> = fc
  .oneof(
    fc.record({ transport: fc.constant('tcp4' as const), source: inet(ipv4), destination: inet(ipv4) }),
    fc.record({ transport: fc.constant('tcp6' as const), source: inet(ipv6), destination: inet(ipv6) }),
    fc.record({ transport: fc.constant('unknown' as const) }),
  )
  .map((init) => ({
    init,
    crc32c: false,
    expected: { ...expectedEndpoints(init), version: 1, tlvs: [] } as Omit<ProxyHeader, 'raw' | 'crc32c'>,
  }));

/**
 * Checks a parsed header against a case: every field equal, the CRC32C TLV's value (computed by
 * the builder) equal to the `crc32c` field.
 */
export function expectHeader(actual: ProxyHeader, c: HeaderCase): void {
  const { raw, crc32c, ...rest } = actual;
  expect(raw).toBeInstanceOf(Buffer);
  if (c.crc32c || c.init.tlvs?.some((t) => t.type === PP2_TYPE.CRC32C)) {
    const crcTlv = rest.tlvs.find((t) => t.type === PP2_TYPE.CRC32C);
    expect(crcTlv).toBeDefined();
    expect(crc32c).toBe(crcTlv!.value.readUInt32BE(0));
    const expectedTlvs = c.expected.tlvs.map((t) => (t.type === PP2_TYPE.CRC32C ? crcTlv! : t));
    expect(normalize({ ...rest })).toEqual(normalize({ ...c.expected, tlvs: expectedTlvs }));
  } else {
    expect(crc32c).toBeUndefined();
    expect(normalize(rest)).toEqual(normalize(c.expected));
  }
}

/** Buffers as plain byte arrays, so views and copies compare equal. */
function normalize(value: unknown): unknown {
  if (value instanceof Uint8Array) return { bytes: [...value] };
  if (Array.isArray(value)) return value.map(normalize);
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(
      Object.entries(value)
        .filter(([, v]) => v !== undefined)
        .map(([k, v]) => [k, normalize(v)]),
    );
  }
  return value;
}

export const V1_SIG = Buffer.from('PROXY ', 'latin1');
export const V2_SIG = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');

const V2_FAMILY_BYTES = [0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32] as const;
const ADDRESS_BLOCK: Record<number, number> = { 0x00: 0, 0x11: 12, 0x12: 12, 0x21: 36, 0x22: 36, 0x31: 216, 0x32: 216 };

/** v1-looking lines: a protocol word, then tokens valid or not, single or double spaces, some line end. */
const v1Token = fc.constantFrom('1.2.3.4', '255.255.255.255', '01.2.3.4', '1.2.3', '::1', '2001:DB8::1', '::ffff:1.2.3.4', 'fe80::1%1', '0', '65535', '65536', '00', '-1', 'x', '');
const v4Token = fc.oneof({ weight: 6, arbitrary: fc.ipV4() }, { weight: 1, arbitrary: v1Token });
const v6Token = fc.oneof({ weight: 6, arbitrary: fc.ipV6() }, { weight: 1, arbitrary: v1Token });
const portToken = fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 0, max: 0xffff }).map(String) }, { weight: 1, arbitrary: v1Token });
const v1Like = fc
  .tuple(
    fc.oneof(
      { weight: 3, arbitrary: fc.tuple(fc.constant('TCP4'), v4Token, v4Token, portToken, portToken) },
      { weight: 3, arbitrary: fc.tuple(fc.constant('TCP6'), v6Token, v6Token, portToken, portToken) },
      { weight: 1, arbitrary: fc.tuple(fc.constantFrom('TCP4', 'TCP6', 'UNKNOWN', 'TCP5', 'tcp4', '')).chain(([w]) => fc.array(v1Token, { maxLength: 6 }).map((rest) => [w, ...rest])) },
    ),
    fc.oneof({ weight: 8, arbitrary: fc.constant(' ') }, { weight: 1, arbitrary: fc.constantFrom('  ', '\t') }),
    fc.oneof({ weight: 8, arbitrary: fc.constant('\r\n') }, { weight: 1, arbitrary: fc.constantFrom('\n', '\r', '', '\r\r\n', ' \r\n') }),
  )
  .map(([tokens, sep, eol]) => Buffer.from(`PROXY ${tokens.join(sep)}${eol}`, 'latin1'));

/** v2-looking headers: any version/command nibbles and family byte, an address block of random bytes, then TLV-shaped bytes. */
const v2Like = fc
  .tuple(
    fc.oneof({ weight: 8, arbitrary: fc.constantFrom(0x20, 0x21) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }) }),
    fc.oneof({ weight: 8, arbitrary: fc.constantFrom(...V2_FAMILY_BYTES) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }) }),
    fc.uint8Array({ minLength: 216, maxLength: 216 }),
    fc.array(fc.tuple(fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 24 }), fc.integer({ min: -2, max: 2 })), { maxLength: 5 }),
    fc.integer({ min: -3, max: 3 }),
  )
  .map(([verCmd, fam, addresses, tlvs, lengthSkew]) => {
    const block = Buffer.from(addresses.subarray(0, ADDRESS_BLOCK[fam] ?? 12));
    // Each TLV's declared length is off by `skew` now and then, so some overrun their parent.
    const tlvBytes = tlvs.map(([type, value, skew]) => {
      const head = Buffer.alloc(3);
      head[0] = type;
      head.writeUInt16BE(Math.max(0, value.length + (skew === 2 ? 1 : 0)), 1);
      return Buffer.concat([head, value]);
    });
    const body = Buffer.concat([block, ...tlvBytes]);
    const len = Buffer.alloc(2);
    len.writeUInt16BE(Math.max(0, body.length + (Math.abs(lengthSkew) === 3 ? lengthSkew : 0)));
    return Buffer.concat([V2_SIG, Buffer.from([verCmd, fam]), len, body]);
  });

/** Arbitrary bytes, most behind a signature so the parser gets past its first byte. */
export const anyBytes = fc.oneof(
  fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
  fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.concat([V1_SIG, b])),
  { weight: 2, arbitrary: v1Like },
  { weight: 2, arbitrary: v2Like },
);
