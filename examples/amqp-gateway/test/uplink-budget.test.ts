import { describe, expect, it } from 'vitest';
import { UplinkBudget } from '../src/uplink-budget.js';

describe('UplinkBudget', () => {
  it('grants at once within the limit, then makes later requests wait, first come first served', async () => {
    const seen: number[] = [];
    const budget = new UplinkBudget(100, (bytes) => seen.push(bytes));
    expect(budget.acquire(60)).toBeUndefined();
    const order: string[] = [];
    const big = budget.acquire(50)!.then(() => order.push('big'));
    const small = budget.acquire(10)!.then(() => order.push('small')); // fits, but waits its turn
    expect(budget.waiting).toBe(2);
    budget.release(60);
    await Promise.all([big, small]);
    expect(order).toEqual(['big', 'small']);
    expect(budget.used).toBe(60);
    expect(seen.at(-1)).toBe(60);
  });

  it('grants a request larger than the whole budget when nothing else is held', async () => {
    const budget = new UplinkBudget(100);
    expect(budget.acquire(500)).toBeUndefined();
    const next = budget.acquire(1);
    expect(next).toBeInstanceOf(Promise);
    budget.release(500);
    await next;
    expect(budget.used).toBe(1);
  });

  it('refuses a limit that is not positive', () => {
    expect(() => new UplinkBudget(0)).toThrow(RangeError);
  });
});
