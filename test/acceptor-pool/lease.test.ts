import { describe, expect, it } from 'vitest';
import { Lease } from '../../src/acceptor-pool/lease.js';

describe('Lease', () => {
  it('gives its slot back once, however often it is released', () => {
    let given = 0;
    const lease = new Lease(() => given++);
    expect(lease.released).toBe(false);
    expect(lease.release()).toBe(true);
    expect(lease.release()).toBe(false);
    expect(lease.release()).toBe(false);
    expect(lease.released).toBe(true);
    expect(given).toBe(1);
  });
});
