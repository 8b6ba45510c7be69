/**
 * Properties of parseProxyHeader and buildProxyHeader over generated input. The run counts are
 * quoted in docs/proxy-header.md; change both together.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { buildProxyHeader } from '../../src/proxy-header/build.js';
import { PROXY_HEADER_MAX_V1, PROXY_HEADER_MAX_V2 } from '../../src/proxy-header/header.js';
import { parseProxyHeader, type ProxyHeaderParseOptions } from '../../src/proxy-header/parse.js';
import type { ProxyHeaderParseResult } from '../../src/proxy-header/parse-result.js';
import { V1_SIG, V2_SIG, anyBytes, expectHeader, v1Case, v2Case } from './arbitraries.js';

/** Run counts per property (see the doc's table). */
const RUNS = { bytes: 3000, mutated: 3000, roundTrip: 2000, payload: 1000, rebuild: 1000 } as const;

const optionsArb: fc.Arbitrary<ProxyHeaderParseOptions | undefined> = fc.oneof(
  fc.constant(undefined),
  fc.record({
    mode: fc.constantFrom('required' as const, 'optional' as const),
    versions: fc.constantFrom([1, 2] as const, [1] as const, [2] as const),
    maxV2Length: fc.integer({ min: 16, max: PROXY_HEADER_MAX_V2 }),
  }),
);

/** The most an `incomplete` answer can ask the caller to hold, for these options. */
function bound(options: ProxyHeaderParseOptions | undefined): number {
  return Math.max(PROXY_HEADER_MAX_V1, options?.maxV2Length ?? PROXY_HEADER_MAX_V2);
}

/** Feeds `data` as a caller does: re-parse the growing prefix at each cut; checks every answer. */
function feed(data: Buffer, cuts: readonly number[], options: ProxyHeaderParseOptions | undefined): ProxyHeaderParseResult {
  const points = [...new Set(cuts.map((c) => c % (data.length + 1)))].sort((a, b) => a - b);
  points.push(data.length);
  let final: ProxyHeaderParseResult | undefined;
  let lastMax = Infinity;
  for (const end of points) {
    const result = parseProxyHeader(data.subarray(0, end), options);
    if (final !== undefined) {
      // A final answer stays the same whatever arrives after.
      expect(simplify(result)).toEqual(simplify(final));
      continue;
    }
    if (result.status === 'incomplete') {
      expect(end).toBeLessThan(result.maxLength);
      expect(result.maxLength).toBeLessThanOrEqual(bound(options));
      expect(result.maxLength).toBeLessThanOrEqual(lastMax);
      lastMax = result.maxLength;
    } else {
      final = result;
    }
  }
  return parseProxyHeader(data, options);
}

function simplify(result: ProxyHeaderParseResult): unknown {
  switch (result.status) {
    case 'complete':
      return { status: result.status, length: result.length, raw: [...result.header.raw], header: { ...result.header, raw: undefined } };
    case 'invalid':
      return { status: result.status, reason: result.reason };
    default:
      return result;
  }
}

describe('parseProxyHeader over arbitrary bytes', () => {
  it('never throws, never says incomplete past the bound, and keeps every final answer as bytes arrive', () => {
    fc.assert(
      fc.property(anyBytes, fc.array(fc.nat(), { maxLength: 12 }), optionsArb, (data, cuts, options) => {
        const result = feed(data, cuts, options);
        if (result.status === 'complete') {
          expect(result.length).toBeLessThanOrEqual(data.length);
          expect(result.header.raw.equals(data.subarray(0, result.length))).toBe(true);
        }
        if (result.status === 'absent') expect(options?.mode).toBe('optional');
      }),
      { numRuns: RUNS.bytes },
    );
  });

  it('gives the same answer byte by byte as all at once', () => {
    fc.assert(
      fc.property(anyBytes, optionsArb, (data, options) => {
        feed(data, Array.from({ length: data.length }, (_, i) => i), options);
      }),
      { numRuns: 300 },
    );
  });

  it('never says incomplete for a full-length buffer of any bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 64 }), fc.constantFrom(V1_SIG, V2_SIG), (tail, sig) => {
        const data = Buffer.concat([sig, Buffer.from(tail), Buffer.alloc(PROXY_HEADER_MAX_V2)]);
        expect(parseProxyHeader(data).status).not.toBe('incomplete');
      }),
      { numRuns: 200 },
    );
  });
});

describe('valid headers, corrupted', () => {
  it('one flipped or truncated byte anywhere never throws and keeps answers stable', () => {
    fc.assert(
      fc.property(fc.oneof(v1Case, v2Case), fc.nat(), fc.integer({ min: 1, max: 255 }), fc.array(fc.nat(), { maxLength: 6 }), (c, where, xor, cuts) => {
        const built = buildProxyHeader(c.init, { version: c.expected.version, crc32c: c.crc32c });
        const data = Buffer.from(built);
        data[where % data.length]! ^= xor;
        feed(data, cuts, undefined);
        feed(data.subarray(0, where % data.length), cuts, undefined);
      }),
      { numRuns: RUNS.mutated },
    );
  });

  it('a flipped byte under a CRC32C is always caught', () => {
    fc.assert(
      fc.property(v2Case, fc.nat(), fc.integer({ min: 1, max: 255 }), (c, where, xor) => {
        const data = buildProxyHeader(c.init, { version: 2, crc32c: true });
        const at = 16 + (where % (data.length - 16)); // past the fixed part, whose errors have their own reasons
        data[at]! ^= xor;
        const result = parseProxyHeader(data);
        expect(result.status === 'invalid' || (result.status === 'complete' && result.header.crc32c === undefined)).toBe(true);
      }),
      { numRuns: RUNS.mutated },
    );
  });
});

describe('build then parse', () => {
  it('round-trips every v1 header', () => {
    fc.assert(
      fc.property(v1Case, (c) => {
        const built = buildProxyHeader(c.init, { version: 1 });
        const result = parseProxyHeader(built);
        if (result.status !== 'complete') expect.fail(JSON.stringify(result));
        expect(result.length).toBe(built.length);
        expectHeader(result.header, c);
      }),
      { numRuns: RUNS.roundTrip },
    );
  });

  it('round-trips every v2 header: all families, random TLVs with SSL sub-TLVs, CRC32C', () => {
    fc.assert(
      fc.property(v2Case, (c) => {
        const built = buildProxyHeader(c.init, { version: 2, crc32c: c.crc32c });
        const result = parseProxyHeader(built);
        if (result.status !== 'complete') expect.fail(JSON.stringify(result));
        expect(result.length).toBe(built.length);
        expectHeader(result.header, c);
      }),
      { numRuns: RUNS.roundTrip },
    );
  });

  it('parses a header followed by any payload to the same header and the header length, fed in any chunks', () => {
    fc.assert(
      fc.property(fc.oneof(v1Case, v2Case), fc.uint8Array({ maxLength: 200 }), fc.array(fc.nat(), { maxLength: 8 }), (c, payload, cuts) => {
        const built = buildProxyHeader(c.init, { version: c.expected.version, crc32c: c.crc32c });
        const result = feed(Buffer.concat([built, payload]), cuts, undefined);
        if (result.status !== 'complete') expect.fail(JSON.stringify(result));
        expect(result.length).toBe(built.length);
        expect(result.header.raw.equals(built)).toBe(true);
        expectHeader(result.header, c);
      }),
      { numRuns: RUNS.payload },
    );
  });

  it('rebuilding a parsed header gives the same bytes', () => {
    fc.assert(
      fc.property(fc.oneof(v1Case, v2Case), (c) => {
        const built = buildProxyHeader(c.init, { version: c.expected.version, crc32c: c.crc32c });
        const result = parseProxyHeader(built);
        if (result.status !== 'complete') expect.fail(JSON.stringify(result));
        expect(buildProxyHeader(result.header, { version: result.header.version }).equals(built)).toBe(true);
      }),
      { numRuns: RUNS.rebuild },
    );
  });
});
