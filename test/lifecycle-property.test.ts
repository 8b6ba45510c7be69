/**
 * A property of the connection lifecycle: for random interleavings of frames (split at random
 * points), slow and fast, sync and async hooks, a peer's half-close and a drain with a random
 * deadline, every `sendFrame` that returned true reaches the peer, in order — unless the drain's
 * deadline forced the connection closed, and then the drain counts it as `forced` and the peer got
 * a prefix of them. Run on the in-memory transport with fast-check, and a fixed set of cases
 * replayed over TCP and TLS.
 */
import type { Duplex } from 'node:stream';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { type DrainResult, type Listener, startListener } from '../src/index.js';
import { type TransportCase, transportCases, uniqueName } from './support/transports.js';

interface Scenario {
  /** Per frame: how long its hook takes, ms (0: synchronous). */
  readonly hooks: readonly number[];
  /** Where the bytes are cut into separate writes (offsets into the whole input). */
  readonly cuts: readonly number[];
  /** Whether the client ends its side after writing. */
  readonly halfClose: boolean;
  /** A drain `after` ms after the first write, with `timeout` ms; or none. */
  readonly drain: { readonly after: number; readonly timeout: number } | null;
}

const scenarioArb: fc.Arbitrary<Scenario> = fc.record({
  hooks: fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 25 })), { minLength: 1, maxLength: 8 }),
  cuts: fc.array(fc.integer({ min: 1, max: 60 }), { maxLength: 4 }),
  halfClose: fc.boolean(),
  drain: fc.option(fc.record({ after: fc.integer({ min: 0, max: 40 }), timeout: fc.integer({ min: 0, max: 80 }) }), { nil: null }),
});

const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let started: Listener[] = [];
afterEach(async () => {
  await Promise.all(started.splice(0).map((l) => (l.status === 'stopped' ? undefined : l.stop({ timeout: 200 }))));
});

/** Run one scenario over a transport case; returns what was promised, what arrived, and the drain's result. */
async function run(tc: TransportCase, sc: Scenario): Promise<{ promised: string[]; received: string[]; drained: DrainResult | undefined }> {
  const promised: string[] = [];
  const l = await startListener({
    name: uniqueName('prop'),
    framing: 'line',
    shutdownTimeout: 1000,
    ...(await tc.listenerOptions()),
    protocol: {
      onFrame(frame, conn) {
        const [id, ms] = frame.toString().split(':');
        const reply = (): void => {
          if (conn.sendFrame(`r${id}`)) promised.push(`r${id}`);
        };
        if (Number(ms) === 0) return reply();
        return delay(Number(ms)).then(reply);
      },
    },
  });
  started.push(l);
  const stream: Duplex = await tc.connect(l);
  stream.on('error', () => {});
  stream.on('end', () => stream.end());
  let buf = '';
  stream.setEncoding('utf8');
  stream.on('data', (d: string) => (buf += d));
  const closed = new Promise<void>((resolve) => stream.once('close', () => resolve()));

  const input = sc.hooks.map((ms, i) => `${i}:${ms}\n`).join('');
  const cuts = [...new Set(sc.cuts.filter((c) => c < input.length))].sort((a, b) => a - b);
  const pieces: string[] = [];
  let at = 0;
  for (const c of [...cuts, input.length]) {
    pieces.push(input.slice(at, c));
    at = c;
  }
  const drain = sc.drain
    ? delay(sc.drain.after).then(() => l.drain({ timeout: sc.drain!.timeout }))
    : undefined;
  for (const p of pieces) {
    if (stream.destroyed) break;
    stream.write(p);
    await delay(1);
  }
  if (sc.halfClose && !stream.destroyed) stream.end();
  const drained = await drain;
  if (!sc.halfClose && !drained) {
    // Neither side closes: wait for every hook, then end from the client.
    await delay(Math.max(...sc.hooks) + 30);
    stream.end();
  }
  await closed;
  return { promised, received: buf.split('\n').filter((x) => x !== ''), drained };
}

function check(sc: Scenario, r: Awaited<ReturnType<typeof run>>): void {
  if (r.drained && r.drained.forced > 0) {
    expect(r.drained.forced).toBe(1);
    expect(r.promised.slice(0, r.received.length)).toEqual(r.received);
  } else {
    expect(r.received).toEqual(r.promised);
    // Not forced: every connection the drain saw closed gracefully (it may have closed before
    // the drain began, and then the drain saw none).
    if (r.drained) expect(r.drained.closedGracefully).toBe(r.drained.connections);
  }
  // Without a drain, every frame was answered.
  if (!sc.drain) expect(r.received).toEqual(sc.hooks.map((_, i) => `r${i}`));
}

describe('every reply promised reaches the peer, in order, unless a deadline forced the close', () => {
  const memory = transportCases().find((t) => t.name === 'memory')!;

  it('property, over the in-memory transport', async () => {
    await fc.assert(
      fc.asyncProperty(scenarioArb, async (sc) => {
        check(sc, await run(memory, sc));
      }),
      { numRuns: 60 },
    );
  });

  // A fixed set of cases, replayed over real sockets.
  const fixed: Scenario[] = [
    { hooks: [0, 0, 0, 0], cuts: [3, 9], halfClose: true, drain: null },
    { hooks: [10, 0, 20, 5], cuts: [1, 2, 3], halfClose: true, drain: null },
    { hooks: [25, 25], cuts: [], halfClose: false, drain: { after: 5, timeout: 80 } },
    { hooks: [20, 20, 20], cuts: [4], halfClose: true, drain: { after: 0, timeout: 0 } },
    { hooks: [0, 15, 0], cuts: [], halfClose: false, drain: { after: 10, timeout: 5 } },
    { hooks: [5, 5, 5, 5, 5, 5], cuts: [7, 20, 30], halfClose: false, drain: null },
  ];
  describe.each(transportCases().filter((t) => t.name === 'tcp' || t.name === 'tls'))('fixed cases over $name', (tc) => {
    it.each(fixed.map((sc, i) => [i, sc] as const))('case %i', async (_i, sc) => {
      check(sc, await run(tc, sc));
    });
  });
});
