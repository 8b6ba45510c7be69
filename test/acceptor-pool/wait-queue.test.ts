import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RestartIntensity } from '../../src/index.js';
import { WaitQueue } from '../../src/acceptor-pool/wait-queue.js';
import type { AdmissionPolicy } from '../../src/options.js';

/** Push every item of `items` at time `now`, asserting each push is accepted. */
function fill<T>(q: WaitQueue<T>, items: readonly T[], now = 0): void {
  for (const item of items) expect(q.push(item, now)).toBe(true);
}

/** Take everything left, in policy order. */
function drainAll<T>(q: WaitQueue<T>, now = 0): T[] {
  const out: T[] = [];
  for (let item = q.take(now); item !== undefined; item = q.take(now)) out.push(item);
  return out;
}

describe('WaitQueue', () => {
  it('fifo serves the oldest first', () => {
    const q = new WaitQueue<string>(10, 'fifo', 100);
    fill(q, ['a', 'b', 'c']);
    expect(q.length).toBe(3);
    expect(drainAll(q)).toEqual(['a', 'b', 'c']);
    expect(q.length).toBe(0);
    expect(q.take(0)).toBeUndefined();
  });

  it('lifo serves the newest first', () => {
    const q = new WaitQueue<string>(10, 'lifo', 100);
    fill(q, ['a', 'b', 'c']);
    expect(drainAll(q)).toEqual(['c', 'b', 'a']);
  });

  it('fifo and lifo interleave correctly with pushes between takes', () => {
    const fifo = new WaitQueue<number>(10, 'fifo', 0);
    const lifo = new WaitQueue<number>(10, 'lifo', 0);
    for (const q of [fifo, lifo]) fill(q, [1, 2, 3]);
    expect(fifo.take(0)).toBe(1);
    expect(lifo.take(0)).toBe(3);
    for (const q of [fifo, lifo]) fill(q, [4]);
    expect(drainAll(fifo)).toEqual([2, 3, 4]);
    expect(drainAll(lifo)).toEqual([4, 2, 1]);
  });

  it('adaptive serves the oldest first while the head is young, the newest once it is older than the target', () => {
    const q = new WaitQueue<string>(10, 'adaptive', 100);
    q.push('a', 1000);
    q.push('b', 1010);
    q.push('c', 1020);
    q.push('d', 1030);
    // The head (a) has waited 50 ms: oldest first.
    expect(q.take(1050)).toBe('a');
    // The head (b) has waited exactly the target: still oldest first (the target is not exceeded).
    expect(q.take(1110)).toBe('b');
    // The head (c) has waited 101 ms: a standing queue, newest first.
    expect(q.take(1121)).toBe('d');
    expect(q.take(1121)).toBe('c');
    expect(q.length).toBe(0);
  });

  it('adaptive goes back to oldest first once the standing queue is gone', () => {
    const q = new WaitQueue<string>(10, 'adaptive', 100);
    q.push('old', 0);
    q.push('new', 500);
    expect(q.take(500)).toBe('new'); // head waited 500 ms > 100
    q.push('fresh', 501);
    expect(q.take(502)).toBe('fresh'); // head (old) still waited 502 ms
    expect(q.take(502)).toBe('old');
    q.push('x', 1000);
    q.push('y', 1001);
    expect(q.take(1002)).toBe('x'); // young queue again: fifo
  });

  it('refuses pushes beyond its capacity and accepts again once an item left', () => {
    const q = new WaitQueue<string>(2, 'fifo', 100);
    expect(q.push('a', 0)).toBe(true);
    expect(q.push('b', 0)).toBe(true);
    expect(q.push('c', 0)).toBe(false);
    expect(q.length).toBe(2);
    expect(q.take(0)).toBe('a');
    expect(q.push('d', 0)).toBe(true);
    expect(q.push('e', 0)).toBe(false);
    expect(drainAll(q)).toEqual(['b', 'd']);
  });

  it('with capacity 0 refuses everything', () => {
    const q = new WaitQueue<string>(0, 'fifo', 100);
    expect(q.push('a', 0)).toBe(false);
    expect(q.length).toBe(0);
    expect(q.oldestSince).toBeUndefined();
    expect(q.take(0)).toBeUndefined();
  });

  it('expires from the head only the items that arrived at or before the cutoff, oldest first', () => {
    const q = new WaitQueue<string>(10, 'lifo', 100);
    q.push('a', 10);
    q.push('b', 20);
    q.push('c', 30);
    q.push('d', 40);
    expect(q.oldestSince).toBe(10);
    expect(q.expire(5)).toEqual([]);
    expect(q.expire(20)).toEqual(['a', 'b']);
    expect(q.length).toBe(2);
    expect(q.oldestSince).toBe(30);
    // A lifo take removes from the tail; the head is still the oldest and expires next.
    expect(q.take(50)).toBe('d');
    expect(q.expire(1000)).toEqual(['c']);
    expect(q.length).toBe(0);
    expect(q.oldestSince).toBeUndefined();
    expect(q.expire(1000)).toEqual([]);
  });

  it('grows past its initial ring size, keeping order across a wrapped-around ring', () => {
    // The ring starts at 1024 slots; a larger capacity makes it grow on demand.
    const q = new WaitQueue<number>(5000, 'fifo', 100);
    let next = 0;
    let expected = 0;
    for (; next < 1000; next++) expect(q.push(next, next)).toBe(true);
    // Move the head forward so that later pushes wrap around the end of the ring.
    for (let i = 0; i < 600; i++) expect(q.take(0)).toBe(expected++);
    for (; next < 1600; next++) expect(q.push(next, next)).toBe(true); // 1000 items, wrapped
    expect(q.length).toBe(1000);
    // Push past 1024 while wrapped: the ring grows and must unwrap in order.
    for (; next < 3500; next++) expect(q.push(next, next)).toBe(true);
    expect(q.length).toBe(2900);
    expect(q.oldestSince).toBe(600);
    // Both ends still right after growing: newest from the tail, oldest from the head.
    q.policy = 'lifo';
    expect(q.take(0)).toBe(3499);
    q.policy = 'fifo';
    expect(q.take(0)).toBe(expected++);
    // Expire a run from the head, then take the rest in order.
    expect(q.expire(700)).toEqual(Array.from({ length: 100 }, (_, i) => 601 + i));
    expected = 701;
    const rest = drainAll(q);
    expect(rest).toEqual(Array.from({ length: 3499 - 701 }, (_, i) => 701 + i));
    expect(q.length).toBe(0);
    // Reusable after being emptied.
    fill(q, [1, 2]);
    expect(drainAll(q)).toEqual([1, 2]);
  });

  it('grows up to its capacity and no further', () => {
    const q = new WaitQueue<number>(2500, 'lifo', 100);
    for (let i = 0; i < 2500; i++) expect(q.push(i, 0)).toBe(true);
    expect(q.push(2500, 0)).toBe(false);
    expect(q.length).toBe(2500);
    expect(q.take(0)).toBe(2499);
    expect(q.clear()).toEqual(Array.from({ length: 2499 }, (_, i) => i));
  });

  it('clear removes and returns everything, oldest first, and leaves it usable', () => {
    const q = new WaitQueue<string>(10, 'lifo', 100);
    q.push('a', 1);
    q.push('b', 2);
    q.push('c', 3);
    expect(q.take(3)).toBe('c');
    q.push('d', 4);
    expect(q.clear()).toEqual(['a', 'b', 'd']);
    expect(q.length).toBe(0);
    expect(q.oldestSince).toBeUndefined();
    expect(q.take(5)).toBeUndefined();
    expect(q.clear()).toEqual([]);
    expect(q.push('e', 5)).toBe(true);
    expect(q.take(5)).toBe('e');
  });

  type Op =
    | { kind: 'push'; count: number; advance: number }
    | { kind: 'take'; advance: number }
    | { kind: 'expire'; age: number; advance: number }
    | { kind: 'delete'; pick: number }
    | { kind: 'clear' };

  const opArb: fc.Arbitrary<Op> = fc.oneof(
    { weight: 5, arbitrary: fc.record({ kind: fc.constant('push' as const), count: fc.integer({ min: 1, max: 3 }), advance: fc.integer({ min: 0, max: 30 }) }) },
    // Occasionally a burst, to make the ring grow past its initial 1024 slots.
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('push' as const), count: fc.integer({ min: 100, max: 700 }), advance: fc.integer({ min: 0, max: 30 }) }) },
    { weight: 5, arbitrary: fc.record({ kind: fc.constant('take' as const), advance: fc.integer({ min: 0, max: 60 }) }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('expire' as const), age: fc.integer({ min: 0, max: 200 }), advance: fc.integer({ min: 0, max: 30 }) }) },
    { weight: 3, arbitrary: fc.record({ kind: fc.constant('delete' as const), pick: fc.nat() }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'clear' as const }) },
  );

  it('behaves like a simple array model for any sequence of push, take, expire, delete and clear', () => {
    fc.assert(
      fc.property(
        fc.constantFrom<AdmissionPolicy>('fifo', 'lifo', 'adaptive'),
        fc.oneof(fc.integer({ min: 0, max: 8 }), fc.integer({ min: 1000, max: 3000 })),
        fc.integer({ min: 0, max: 100 }),
        fc.array(opArb, { maxLength: 120 }),
        (policy, capacity, target, ops) => {
          const q = new WaitQueue<number>(capacity, policy, target);
          const model: { item: number; since: number }[] = [];
          let now = 0;
          let id = 0;
          for (const op of ops) {
            switch (op.kind) {
              case 'push': {
                now += op.advance;
                for (let i = 0; i < op.count; i++) {
                  const item = id++;
                  const fits = model.length < capacity;
                  expect(q.push(item, now)).toBe(fits);
                  if (fits) model.push({ item, since: now });
                }
                break;
              }
              case 'take': {
                now += op.advance;
                let want: number | undefined;
                if (model.length > 0) {
                  const newest = policy === 'lifo' || (policy === 'adaptive' && now - model[0]!.since > target);
                  want = (newest ? model.pop() : model.shift())!.item;
                }
                expect(q.take(now)).toBe(want);
                break;
              }
              case 'expire': {
                now += op.advance;
                const cutoff = now - op.age;
                const want: number[] = [];
                while (model.length > 0 && model[0]!.since <= cutoff) want.push(model.shift()!.item);
                expect(q.expire(cutoff)).toEqual(want);
                break;
              }
              case 'delete': {
                // Delete a waiting item (anywhere), or one that is not waiting (pick past the end).
                const i = op.pick % (model.length + 1);
                if (i < model.length) {
                  expect(q.delete(model[i]!.item)).toBe(true);
                  model.splice(i, 1);
                } else {
                  expect(q.delete(-1 - op.pick)).toBe(false);
                }
                break;
              }
              case 'clear':
                expect(q.clear()).toEqual(model.splice(0).map((w) => w.item));
                break;
            }
            expect(q.length).toBe(model.length);
            expect(q.oldestSince).toBe(model[0]?.since);
          }
          expect(q.clear()).toEqual(model.map((w) => w.item));
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('RestartIntensity', () => {
  it('allows maxRestarts restarts within a period, then refuses without recording', () => {
    const r = new RestartIntensity(3, 1000);
    expect(r.tryRestart(0)).toBe(true);
    expect(r.tryRestart(100)).toBe(true);
    expect(r.tryRestart(200)).toBe(true);
    expect(r.recent).toBe(3);
    expect(r.tryRestart(300)).toBe(false);
    expect(r.tryRestart(999)).toBe(false);
    expect(r.recent).toBe(3);
  });

  it('slides its window: a restart exactly one period old no longer counts', () => {
    const r = new RestartIntensity(3, 1000);
    expect(r.tryRestart(0)).toBe(true);
    expect(r.tryRestart(100)).toBe(true);
    expect(r.tryRestart(200)).toBe(true);
    expect(r.tryRestart(999)).toBe(false);
    // At 1000 the restart at 0 left the window; one slot frees.
    expect(r.tryRestart(1000)).toBe(true);
    expect(r.recent).toBe(3);
    expect(r.tryRestart(1050)).toBe(false);
    // At 1100 the one at 100 leaves; at 1200 the one at 200.
    expect(r.tryRestart(1100)).toBe(true);
    expect(r.tryRestart(1150)).toBe(false);
    expect(r.tryRestart(1200)).toBe(true);
    expect(r.recent).toBe(3);
    // Long after, everything has left the window.
    expect(r.tryRestart(10_000)).toBe(true);
    expect(r.recent).toBe(1);
  });

  it('failed attempts do not extend the window (only recorded restarts count)', () => {
    const r = new RestartIntensity(1, 1000);
    expect(r.tryRestart(0)).toBe(true);
    for (let t = 100; t < 1000; t += 100) expect(r.tryRestart(t)).toBe(false);
    expect(r.tryRestart(1000)).toBe(true);
  });

  it('with maxRestarts 0 never restarts', () => {
    const r = new RestartIntensity(0, 1000);
    for (const t of [0, 1, 1000, 100_000]) expect(r.tryRestart(t)).toBe(false);
    expect(r.recent).toBe(0);
  });

  it('uses the current time by default', () => {
    const r = new RestartIntensity(1, 60_000);
    expect(r.tryRestart()).toBe(true);
    expect(r.tryRestart()).toBe(false);
    expect(r.recent).toBe(1);
  });
});
