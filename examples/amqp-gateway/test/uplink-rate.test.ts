/**
 * The per-device uplink rate: the token bucket alone (a property over any arrival times), then a
 * real device over the rate against a gateway node with a MemoryBroker.
 */
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { UplinkRate } from '../src/uplink-rate.js';
import { DeviceClient } from './support/device-client.js';
import { metric, startTestNode, stopGateways, token } from './support/gateway-harness.js';

afterEach(() => stopGateways());

describe('UplinkRate', () => {
  it('gives a burst at once, then one token per 1/rate seconds', () => {
    const rate = new UplinkRate(10, 3, 0);
    expect([rate.take(0), rate.take(0), rate.take(0)]).toEqual([0, 0, 0]);
    expect(rate.take(0)).toBe(100); // the next token is 100 ms away
    expect(rate.take(50)).toBe(50);
    expect(rate.take(100)).toBe(0);
    expect(rate.take(1000)).toBe(0); // refilled, but never beyond the burst
    expect(rate.take(1000)).toBe(0);
    expect(rate.take(1000)).toBe(0);
    expect(rate.take(1000)).toBeGreaterThan(0);
  });

  it('never lets through more than burst + rate × elapsed, and a caller that waits as told always gets its token', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 1000 }),
        fc.integer({ min: 1, max: 50 }),
        fc.array(fc.integer({ min: 0, max: 200 }), { minLength: 1, maxLength: 300 }),
        (perSecond, burst, gaps) => {
          // Rates that do not divide 1000 ms evenly (e.g. 7/s) are where the float sums land a hair short.
          const rate = new UplinkRate(perSecond, burst, 0);
          let now = 0;
          let passed = 0;
          for (const gap of gaps) {
            now += gap;
            const wait = rate.take(now);
            if (wait === 0) {
              passed++;
            } else {
              now += wait;
              expect(rate.take(now)).toBe(0);
              passed++;
            }
            expect(passed).toBeLessThanOrEqual(burst + (now * perSecond) / 1000 + 1e-6);
          }
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('a caller that waited the time it was told gets its token, float rounding included', () => {
    // Found by the property above: 0.061 + 0.939 tokens summed to a hair under 1.
    const rate = new UplinkRate(1, 2, 0);
    expect([rate.take(0), rate.take(35)]).toEqual([0, 0]);
    const wait = rate.take(61);
    expect(wait).toBe(939);
    expect(rate.take(61 + wait)).toBe(0);
  });

  it('refuses a rate or a burst that cannot work', () => {
    expect(() => new UplinkRate(0, 1, 0)).toThrow(RangeError);
    expect(() => new UplinkRate(10, 0, 0)).toThrow(RangeError);
    expect(new UplinkRate(Infinity, 1, 0).take(0)).toBe(0);
  });
});

describe('uplinkRate and uplinkBurst', () => {
  for (const [what, options] of [
    ['a rate of 0', { uplinkRate: 0 }],
    ['a NaN rate', { uplinkRate: Number.NaN }],
    ['a rate too low to wait for', { uplinkRate: 1e-6 }],
    ['a burst of 0', { uplinkBurst: 0 }],
    ['a fractional burst', { uplinkBurst: 1.5 }],
    ['an infinite burst', { uplinkBurst: Infinity }],
  ] as const) {
    it(`refuses ${what} when the gateway starts, not at the first message`, async () => {
      await expect(startTestNode(options)).rejects.toThrow(RangeError);
    });
  }
});

describe('a device over its uplink rate', () => {
  it('is slowed, not refused: every message is acked and published in order, and other devices are served meanwhile', async () => {
    const node = await startTestNode({ uplinkRate: 20, uplinkBurst: 5, maxInflightPerDevice: 64 });
    node.broker.bindQueue('backend', node.broker.topology.up, '#');
    const { client } = await DeviceClient.hello(node.port, 'chatty', token('chatty'));
    const { client: other } = await DeviceClient.hello(node.port, 'quiet', token('quiet'));
    const n = 25; // 5 at once, then 20 at 20 per second: about a second
    client.sendRaw(Array.from({ length: n }, (_, i) => `${JSON.stringify({ type: 'msg', id: `m-${i}`, topic: 't', body: i })}\n`).join(''));
    await client.next('ack');
    other.send({ type: 'ping' });
    await other.next('pong');
    const acksSoFar = client.received.filter((m) => m.type === 'ack').length;
    expect(acksSoFar).toBeLessThan(n); // the chatty device is still being held to its rate
    const acks = [`m-0`];
    for (let i = 1; i < n; i++) acks.push((await client.next('ack')).id);
    const expected = Array.from({ length: n }, (_, i) => `m-${i}`);
    expect(acks).toEqual(expected);
    expect(client.received.some((m) => m.type === 'nack' || m.type === 'error')).toBe(false);
    expect(node.broker.read('backend').map((m) => m.messageId)).toEqual(expected);
    expect(await metric(node.metrics, 'gateway_uplink_rate_limited_total')).toBeGreaterThan(0);
  });

  it('a message waiting for its token when the node drains is published and acked before the device is closed', async () => {
    // onShutdown waits behind the pending onFrame (corral keeps a connection's events in order), so
    // the drain holds this device for at most one token's wait (1/rate), bounded by shutdownTimeout.
    const node = await startTestNode({ uplinkRate: 2, uplinkBurst: 1 });
    node.broker.bindQueue('backend', node.broker.topology.up, '#');
    const { client } = await DeviceClient.hello(node.port, 'waiting', token('waiting'));
    client.send({ type: 'msg', id: 'a', topic: 't', body: 1 });
    client.send({ type: 'msg', id: 'b', topic: 't', body: 2 }); // its token is 500 ms away
    expect(await client.next('ack')).toEqual({ type: 'ack', id: 'a' });
    await node.gateway.drain();
    expect(await client.next('ack')).toEqual({ type: 'ack', id: 'b' });
    await client.closed;
    expect(node.broker.read('backend').map((m) => m.messageId)).toEqual(['a', 'b']);
    expect((await node.gateway.listener.info()).handlerCrashes).toBe(0);
    expect(await metric(node.metrics, 'gateway_uplink_rate_limited_total')).toBe(1);
  });
});
