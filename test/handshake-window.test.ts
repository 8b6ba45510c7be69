/**
 * The adaptive handshake window (`maxHandshakes: 'auto'`), its decisions driven step by step with a
 * scripted event-loop utilization; the listener-level behaviour (silent peers widen it, it narrows
 * back) is in limits.test.ts.
 */
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { HandshakeWindow, type HandshakeWindowOptions } from '../src/handshake-window.js';

const OPTIONS: HandshakeWindowOptions = { floor: 128, ceiling: 1024, interval: 60_000 };

let windows: HandshakeWindow[] = [];
afterEach(() => {
  for (const w of windows.splice(0)) w.stop();
});

/** Peers a round trip away: each interval completes as many handshakes as the window holds. */
function roundTrip(w: HandshakeWindow): void {
  for (let k = 0; k < w.size; k++) w.noteCompleted();
  w.adjust();
}

/** A window whose event loop reports `busy()` and whose slots are saturated while `saturated()`. */
function windowWith(busy: () => number, saturated: () => boolean) {
  let widened = 0;
  const w = new HandshakeWindow(OPTIONS, saturated, () => widened++, busy);
  windows.push(w);
  return { w, widenedCalls: () => widened };
}

describe('HandshakeWindow', () => {
  it('widens by a quarter per look while saturated, the loop idle and each widening pays, up to the ceiling', () => {
    const { w, widenedCalls } = windowWith(() => 0.3, () => true);
    expect(w.size).toBe(128);
    w.noteSaturated();
    expect(w.watching).toBe(true);
    const sizes: number[] = [];
    for (let i = 0; i < 12; i++) {
      roundTrip(w);
      sizes.push(w.size);
    }
    expect(sizes.slice(0, 4)).toEqual([160, 200, 250, 313]);
    expect(sizes.at(-1)).toBe(1024);
    expect(widenedCalls()).toBe(sizes.filter((s, i) => s > (sizes[i - 1] ?? 128)).length);
  });

  it('does not widen while the event loop is busy: the CPU, not the peers, is the bottleneck', () => {
    const { w } = windowWith(() => 0.99, () => true);
    w.noteSaturated();
    for (let i = 0; i < 5; i++) w.adjust();
    expect(w.size).toBe(128);
  });

  it('narrows when the loop gets busy, and when the demand is gone; stops watching at the floor', () => {
    let busy = 0.2;
    let saturated = true;
    const { w } = windowWith(() => busy, () => saturated);
    w.noteSaturated();
    for (let i = 0; i < 6; i++) roundTrip(w);
    const wide = w.size;
    expect(wide).toBeGreaterThan(400);
    busy = 0.99;
    roundTrip(w);
    expect(w.size).toBe(Math.floor(wide * 0.8));
    busy = 0.5;
    saturated = false;
    for (let i = 0; i < 20 && w.watching; i++) w.adjust();
    expect(w.size).toBe(128);
    expect(w.watching).toBe(false);
  });

  it('holds its size while saturated with the loop between 0.8 and 0.95 busy (the CPU is nearly used)', () => {
    const script = [0.2, 0.2, 0.9, 0.85, 0.93];
    let i = -1; // the first reading (at noteSaturated) only starts the measurement
    const { w } = windowWith(() => (i < 0 ? (i++, 0) : script[i++]!), () => true);
    w.noteSaturated();
    const sizes = script.map(() => (roundTrip(w), w.size));
    expect(sizes).toEqual([160, 200, 200, 200, 200]);
  });

  it('undoes a widening that did not raise the handshake rate, and waits 8 looks before trying again', () => {
    // Peers slow for want of CPU (or this process starved): more slots, no more handshakes.
    const { w } = windowWith(() => 0.3, () => true);
    w.noteSaturated();
    const sizes: number[] = [];
    for (let i = 0; i < 11; i++) {
      for (let k = 0; k < 100; k++) w.noteCompleted();
      w.adjust();
      sizes.push(w.size);
    }
    expect(sizes).toEqual([160, 128, 128, 128, 128, 128, 128, 128, 128, 160, 128]);
  });

  it('stays within [floor, ceiling] whatever the event loop and the demand do', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.double({ min: 0, max: 1, noNaN: true }), fc.boolean(), fc.nat(3000)), { maxLength: 200 }), (steps) => {
        let i = 0;
        const w = new HandshakeWindow(OPTIONS, () => steps[i]?.[1] ?? false, () => {}, () => steps[i]?.[0] ?? 0);
        try {
          w.noteSaturated();
          for (i = 0; i < steps.length; i++) {
            for (let k = 0; k < steps[i]![2]; k++) w.noteCompleted();
            w.adjust();
            expect(w.size).toBeGreaterThanOrEqual(OPTIONS.floor);
            expect(w.size).toBeLessThanOrEqual(OPTIONS.ceiling);
          }
        } finally {
          w.stop();
        }
      }),
    );
  });
});
