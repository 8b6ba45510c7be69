import { describe, expect, it } from 'vitest';
import { DeviceDirectory, type DirectorySession, isNewer } from '../src/device-directory.js';

const session = (device: string, at: number, id: string): DirectorySession => ({ device, at, session: id });

describe('DeviceDirectory', () => {
  it('orders sessions by hello time, then by session id', () => {
    expect(isNewer({ at: 2, session: 'a' }, { at: 1, session: 'z' })).toBe(true);
    expect(isNewer({ at: 1, session: 'b' }, { at: 1, session: 'a' })).toBe(true);
    expect(isNewer({ at: 1, session: 'a' }, { at: 1, session: 'a' })).toBe(false);
  });

  it('stamps hellos of the same millisecond in the order they arrived', () => {
    const directory = new DeviceDirectory();
    const times = Array.from({ length: 50 }, () => directory.helloTime());
    for (let i = 1; i < times.length; i++) expect(times[i]).toBeGreaterThan(times[i - 1]!);
  });

  it('routes to the newest local session, and knows stamps announced elsewhere', () => {
    const directory = new DeviceDirectory<DirectorySession>();
    const older = session('d', 10, 'x');
    const newer = session('d', 20, 'a');
    directory.add(newer);
    directory.add(older);
    expect(directory.current('d')).toBe(newer);
    expect(directory.latest('d')).toEqual({ at: 20, session: 'a' });
    directory.noteStamp('d', { at: 30, session: 'remote' });
    expect(directory.latest('d')).toEqual({ at: 30, session: 'remote' });
    directory.noteStamp('d', { at: 25, session: 'late' }); // older than what is known: ignored
    expect(directory.latest('d')).toEqual({ at: 30, session: 'remote' });
    directory.remove(newer);
    expect(directory.current('d')).toBe(older);
    directory.remove(older);
    expect(directory.current('d')).toBeUndefined();
    expect(directory.devices).toBe(0);
  });

  it('forgets stamps older than the retention', () => {
    const directory = new DeviceDirectory({ stampRetention: 0 });
    directory.noteStamp('a', { at: 1, session: 's' });
    directory.noteStamp('b', { at: 1, session: 's' });
    expect(directory.latest('a')).toBeUndefined();
  });
});
