import { afterEach, describe, expect, it, vi } from 'vitest';
import { StrayCommands } from '../src/stray-commands.js';

describe('StrayCommands', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('holds per device in arrival order, up to max, and hands them out once', () => {
    const strays = new StrayCommands<string>({ graceMs: 1000, max: 3, onExpired: () => undefined });
    expect(strays.hold('a', 'a1')).toBe('first');
    expect(strays.hold('a', 'a2')).toBe('held');
    expect(strays.hold('b', 'b1')).toBe('first');
    expect(strays.hold('b', 'b2')).toBe('full');
    expect(strays.size).toBe(3);
    expect(strays.take('a')).toEqual(['a1', 'a2']);
    expect(strays.take('a')).toEqual([]);
    expect(strays.size).toBe(1);
    expect(strays.hold('c', 'c1')).toBe('first');
  });

  it('hands a device’s commands to onExpired when its grace ends, and not after a take', () => {
    vi.useFakeTimers();
    const expired: [string, string[]][] = [];
    const strays = new StrayCommands<string>({ graceMs: 1000, max: 10, onExpired: (device, held) => expired.push([device, held]) });
    strays.hold('a', 'a1');
    vi.advanceTimersByTime(500);
    strays.hold('a', 'a2'); // the grace runs from the first
    strays.hold('b', 'b1');
    strays.take('b');
    vi.advanceTimersByTime(500);
    expect(expired).toEqual([['a', ['a1', 'a2']]]);
    vi.advanceTimersByTime(5000);
    expect(expired).toHaveLength(1);
    expect(strays.size).toBe(0);
  });

  it('forgets what a lost link held, keeping the rest and their timers', () => {
    vi.useFakeTimers();
    const expired: string[][] = [];
    const strays = new StrayCommands<{ link: number; id: string }>({ graceMs: 1000, max: 10, onExpired: (_d, held) => expired.push(held.map((h) => h.id)) });
    strays.hold('a', { link: 1, id: 'a1' });
    strays.hold('a', { link: 2, id: 'a2' });
    strays.hold('b', { link: 1, id: 'b1' });
    strays.forget((h) => h.link === 1);
    expect(strays.size).toBe(1);
    expect(strays.has('b')).toBe(false);
    vi.advanceTimersByTime(1000);
    expect(expired).toEqual([['a2']]);
  });
});
