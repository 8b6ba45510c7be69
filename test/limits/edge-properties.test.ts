/**
 * Properties of the edge limits, checked with fast-check against independent models: CIDR blocks
 * against Node's own `net.BlockList`, access rules against a first-match model built on
 * BlockList, token buckets against their bound, per-source counts against a map.
 */
import net from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AccessRules } from '../../src/limits/access-rules.js';
import { Cidr } from '../../src/limits/cidr.js';
import { SourceCounts } from '../../src/limits/source-counts.js';
import { TokenBucket } from '../../src/limits/token-bucket.js';

const ipv4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((p) => p.join('.'));
const ipv6 = fc.array(fc.nat(0xffff), { minLength: 8, maxLength: 8 }).map((g) => g.map((x) => x.toString(16)).join(':'));
/** Addresses near a base, so prefixes match often enough to matter. */
const near = (base: string): fc.Arbitrary<string> =>
  fc.nat(255).map((n) => {
    if (base.includes(':')) return `${base.split(':').slice(0, 7).join(':')}:${n.toString(16)}`;
    return `${base.split('.').slice(0, 3).join('.')}.${n}`;
  });
const block = fc.oneof(
  fc.tuple(ipv4, fc.integer({ min: 0, max: 32 })).map(([a, bits]) => ({ family: 'ipv4' as const, a, bits })),
  fc.tuple(ipv6, fc.integer({ min: 0, max: 128 })).map(([a, bits]) => ({ family: 'ipv6' as const, a, bits })),
);

function blockList(b: { family: 'ipv4' | 'ipv6'; a: string; bits: number }): net.BlockList {
  const list = new net.BlockList();
  list.addSubnet(b.a, b.bits, b.family);
  return list;
}

/** How Node's BlockList sees a peer address: an IPv4-mapped IPv6 address as IPv4. */
function check(list: net.BlockList, address: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return list.check(mapped[1]!, 'ipv4');
  return list.check(address, address.includes(':') ? 'ipv6' : 'ipv4');
}

describe('Cidr', () => {
  it('agrees with net.BlockList on every address, IPv4, IPv6 and IPv4-mapped', () => {
    fc.assert(
      fc.property(
        block.chain((b) => fc.tuple(fc.constant(b), fc.oneof(ipv4, ipv6, near(b.a), near(b.a).map((a) => (a.includes(':') ? a : `::ffff:${a}`))))),
        ([b, address]) => {
          const cidr = Cidr.parse(`${b.a}/${b.bits}`)!;
          expect(cidr).toBeDefined();
          expect(cidr.contains(address)).toBe(check(blockList(b), address));
        },
      ),
      { numRuns: 20_000 },
    );
  });
});

describe('AccessRules', () => {
  it('decides as the first matching rule says, and allows what no rule holds', () => {
    const rule = fc.tuple(fc.boolean(), fc.option(block, { nil: undefined }));
    fc.assert(
      fc.property(fc.array(rule, { maxLength: 6 }), fc.oneof(ipv4, ipv6, ipv4.map((a) => `::ffff:${a}`)), (rules, address) => {
        const text = rules.map(([allow, b]) => `${allow ? 'allow' : 'deny'} ${b === undefined ? 'all' : `${b.a}/${b.bits}`}`);
        const compiled = AccessRules.parse(text);
        if (typeof compiled === 'string') throw new Error(compiled);
        let expected = true;
        for (const [allow, b] of rules) {
          if (b === undefined || check(blockList(b), address)) {
            expected = allow;
            break;
          }
        }
        expect(compiled.allows(address)).toBe(expected);
      }),
      { numRuns: 5000 },
    );
  });
});

describe('TokenBucket', () => {
  it('never admits more than burst + rate × elapsed in any stretch of time', () => {
    fc.assert(
      fc.property(
        fc.double({ min: 0.5, max: 1000, noNaN: true }),
        fc.integer({ min: 1, max: 50 }),
        fc.array(fc.integer({ min: 0, max: 200 }), { minLength: 1, maxLength: 150 }),
        (rate, burst, gaps) => {
          const bucket = new TokenBucket({ rate, burst }, 0);
          let now = 0;
          const admitted: number[] = [];
          for (const gap of gaps) {
            now += gap;
            if (bucket.take(now)) admitted.push(now);
          }
          let worst = -Infinity;
          for (let i = 0; i < admitted.length; i++) {
            for (let j = i; j < admitted.length; j++) {
              worst = Math.max(worst, j - i + 1 - (burst + (rate * (admitted[j]! - admitted[i]!)) / 1000));
            }
          }
          expect(worst).toBeLessThanOrEqual(1e-9);
        },
      ),
      { numRuns: 2000 },
    );
  });
});

describe('SourceCounts', () => {
  it('holds what a model holds, never over the cap, and forgets sources that gave everything back', () => {
    const op = fc.tuple(fc.boolean(), fc.constantFrom('a', 'b', 'c'));
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 4 }), fc.array(op, { maxLength: 200 }), (max, ops) => {
        const counts = new SourceCounts(max);
        const model = new Map<string, number>();
        for (const [take, source] of ops) {
          const n = model.get(source) ?? 0;
          if (take) {
            expect(counts.take(source)).toBe(n < max);
            if (n < max) model.set(source, n + 1);
          } else if (n > 0) {
            counts.release(source);
            if (n === 1) model.delete(source);
            else model.set(source, n - 1);
          }
          expect(counts.of(source)).toBe(model.get(source) ?? 0);
          expect(counts.size).toBe(model.size);
        }
      }),
      { numRuns: 2000 },
    );
  });
});
