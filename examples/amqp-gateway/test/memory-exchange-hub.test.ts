/**
 * The embedded broker's queues (MemoryExchangeHub): what a bounded queue keeps, what a publish
 * reports (taken, refused by a full queue), and that a consumer gets a backlog larger than one
 * delivery batch complete and in publish order.
 */
import { describe, expect, it } from 'vitest';
import { type HubMessage, MemoryExchangeHub } from '../src/memory-exchange-hub.js';

function hubWithQueue(options: { maxLength?: number; overflow?: 'drop-head' | 'reject-publish' }): MemoryExchangeHub {
  const hub = new MemoryExchangeHub();
  hub.declareExchange('x', 'direct');
  hub.declareQueue('q', options);
  hub.bindQueue('q', 'x', 'k');
  return hub;
}

const bodies = (messages: readonly HubMessage[]): unknown[] => messages.map((m) => m.body);

describe('MemoryExchangeHub queues', () => {
  it('a full drop-head queue keeps the newest messages, oldest first', () => {
    const hub = hubWithQueue({ maxLength: 3 });
    for (let i = 1; i <= 5; i++) hub.publish('x', 'k', { body: i });
    expect(hub.depth('q')).toBe(3);
    expect(bodies(hub.read('q'))).toEqual([3, 4, 5]);
    expect(hub.depth('q')).toBe(0);
  });

  it('a full reject-publish queue keeps the oldest messages and takes no more, and says so', () => {
    const hub = hubWithQueue({ maxLength: 3, overflow: 'reject-publish' });
    const routed = Array.from({ length: 5 }, (_, i) => hub.publish('x', 'k', { body: i + 1 }));
    expect(routed).toEqual([...Array(3).fill({ taken: 1, rejected: 0 }), ...Array(2).fill({ taken: 0, rejected: 1 })]);
    expect(bodies(hub.read('q'))).toEqual([1, 2, 3]);
    // Read empties it: there is room again.
    hub.publish('x', 'k', { body: 6 });
    expect(bodies(hub.read('q'))).toEqual([6]);
  });

  it('reports a message no queue is bound for as neither taken nor refused', () => {
    const hub = hubWithQueue({});
    expect(hub.publish('x', 'other', { body: 1 })).toEqual({ taken: 0, rejected: 0 });
  });

  it('a consumer gets a backlog of several delivery batches, then later messages, each once and in order', async () => {
    const hub = hubWithQueue({});
    const n = 1000; // the hub hands a consumer 256 per turn of the event loop
    for (let i = 0; i < n; i++) hub.publish('x', 'k', { body: i });
    const got: unknown[] = [];
    const all = new Promise<void>((resolve) => {
      const cancel = hub.consume('q', (m) => {
        got.push(m.body);
        if (got.length === n + 1) {
          cancel();
          resolve();
        }
      });
    });
    hub.publish('x', 'k', { body: n });
    await all;
    expect(got).toEqual(Array.from({ length: n + 1 }, (_, i) => i));
    expect(hub.depth('q')).toBe(0);
  });
});
