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

  it('numbers a new session above every seq it knows of the device: remembered, announced, and its own sessions\' disconnected', () => {
    const directory = new DeviceDirectory<DirectorySession>();
    expect(directory.nextSeq('d', 's1')).toBe(2);
    expect(directory.nextSeq('d', 's2')).toBe(4); // two hellos here get different ones
    directory.noteSeq('d', 10, 'remote'); // announced by another node
    directory.noteSeq('d', 7, 'older'); // lower: the highest is kept, with its session
    expect(directory.highestSeq('d')).toBe(10);
    expect(directory.knownSeq('d')).toEqual({ seq: 10, session: 'remote' });
    directory.add({ device: 'd', at: 1, session: 's', seq: 20 });
    expect(directory.highestSeq('d')).toBe(21); // its disconnected will be 21
    expect(directory.nextSeq('d', 's3')).toBe(23);
    expect(directory.knownSeq('d')).toEqual({ seq: 23, session: 's3' });
    expect(directory.nextSeq('other', 's4')).toBe(2);
  });

  it('forgets seqs older than their retention', () => {
    const directory = new DeviceDirectory({ seqRetention: 0 });
    directory.noteSeq('a', 5, 's');
    directory.noteSeq('b', 5, 's');
    expect(directory.highestSeq('a')).toBe(0);
  });
});
