/**
 * What the back end gets on `<prefix>.events` from gateway nodes, as one suite run once per broker
 * (MemoryBroker on a hub, AmqpBroker against RabbitMQ): `cmd_ack` and `cmd_expired` with the
 * command id, and presence events that sort by `seq` into the right order across a takeover,
 * whichever node the sessions were on.
 *
 * Each test takes a prefix of its own and starts its gateway nodes with `start(prefix, nodeId,
 * options)` (nodes of one prefix share a broker); afterwards the suite drains the gateways and calls
 * `cleanup(prefix, nodeIds)`, which removes everything of the prefix (back-end queues included).
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Broker, CommandEvent, PresenceEvent } from '../../src/broker.js';
import type { GatewayOptions } from '../../src/gateway.js';
import { topology } from '../../src/topology.js';
import { DeviceClient } from './device-client.js';
import { gatedAuthenticate, metric, stopGateways, type TestNode, token } from './gateway-harness.js';
import type { BackEnd, BackEndMessage } from './routing-suite.js';

/** Gateway options a test may set. */
export type EventsNodeOptions = Partial<Omit<GatewayOptions, 'broker' | 'tls' | 'logger' | 'metrics' | 'nodeId'>>;

/** How one broker implementation runs the suite. */
export interface EventsHarness {
  /** Start a gateway node `nodeId` whose broker uses `prefix` (nodes of one prefix share the broker). */
  start(prefix: string, nodeId: string, options?: EventsNodeOptions): Promise<TestNode<Broker>>;
  readonly backEnd: BackEnd;
  cleanup(prefix: string, nodeIds: readonly string[]): Promise<void>;
}

/** The consumer's rule (docs/gateway.md, "Events"): a device's state is its event with the highest seq. */
export function presenceState(events: readonly PresenceEvent[]): PresenceEvent | undefined {
  let best: PresenceEvent | undefined;
  for (const e of events) if (best === undefined || e.seq > best.seq) best = e;
  return best;
}

let count = 0;

export function eventsSuite(label: string, harness: EventsHarness): void {
  describe(`${label}: events the back end gets`, () => {
    const started: { prefix: string; nodeIds: string[] }[] = [];
    afterEach(async () => {
      vi.restoreAllMocks();
      await stopGateways();
      for (const { prefix, nodeIds } of started.splice(0)) await harness.cleanup(prefix, nodeIds);
    });

    const fresh = (): { prefix: string; node: (nodeId: string, options?: EventsNodeOptions) => Promise<TestNode<Broker>> } => {
      count += 1;
      const prefix = `ev-${label.replace(/[^A-Za-z0-9_-]+/g, '-')}-${process.pid}-${count}`;
      const entry = { prefix, nodeIds: [] as string[] };
      started.push(entry);
      return {
        prefix,
        node: (nodeId, options) => {
          entry.nodeIds.push(nodeId);
          return harness.start(prefix, nodeId, options);
        },
      };
    };
    const { backEnd } = harness;

    /** Presence events from `queue` until `done` says they are all there (or a deadline passes). */
    const readPresence = async (prefix: string, queue: string, done: (events: PresenceEvent[]) => boolean): Promise<PresenceEvent[]> => {
      const events: PresenceEvent[] = [];
      const deadline = Date.now() + 10_000;
      while (!done(events) && Date.now() < deadline) {
        events.push(...(await backEnd.read(prefix, queue, 1)).map((m: BackEndMessage) => m.body as PresenceEvent));
      }
      return events;
    };

    it('publishes cmd_ack with the command id once the device acknowledged it, and settles the delivery', async () => {
      const { prefix, node } = fresh();
      const a = await node('gw-a');
      await backEnd.bindEventQueue(prefix, `${prefix}.acks`, '#.cmd_ack');
      const { client, welcome } = await DeviceClient.hello(a.port, 'dev-1', token('dev-1'));
      await a.broker.publishCommand('dev-1', { op: 'reboot' }, { id: 'c-1' });
      expect(await client.next('cmd')).toEqual({ type: 'cmd', id: 'c-1', body: { op: 'reboot' } });
      client.send({ type: 'cmd_ack', id: 'c-1' });
      const [ack] = await backEnd.read(prefix, `${prefix}.acks`, 1);
      expect(ack).toMatchObject({
        routingKey: 'dev-1.cmd_ack',
        messageId: 'c-1',
        body: { device: 'dev-1', command: 'c-1', event: 'cmd_ack', node: 'gw-a', session: welcome.session },
      });
      const body = ack!.body as CommandEvent;
      expect(new Date(body.at).toISOString()).toBe(body.at);
      expect(await metric(a.metrics, 'gateway_command_events_total', { event: 'cmd_ack', outcome: 'published' })).toBe(1);
      // The delivery was settled: once node a is drained (a MemoryBroker sends what it holds
      // unsettled back to <p>.down, and so to the device's offline queue: the drain parked it),
      // only what is published next reaches that queue, not c-1 again.
      const b = await node('gw-b');
      await a.gateway.drain();
      await b.broker.publishCommand('dev-1', 'marker', { id: 'marker' });
      const offline = await backEnd.read(prefix, topology(prefix).offlineQueue('dev-1'), 1);
      expect(offline.map((m) => m.messageId)).toEqual(['marker']);
      expect(client.all('cmd').map((c) => c.id)).toEqual(['c-1']);
    });

    it('publishes cmd_expired with the command id for a command that expired before it could be written', async () => {
      const { prefix, node } = fresh();
      // One command out at a time: the second waits in the session until the first is acknowledged.
      const a = await node('gw-a', { maxPendingCommands: 1 });
      await backEnd.bindEventQueue(prefix, `${prefix}.expired`, '#.cmd_expired');
      const { client, welcome } = await DeviceClient.hello(a.port, 'dev-1', token('dev-1'));
      await a.broker.publishCommand('dev-1', 'first', { id: 'c-1' });
      expect((await client.next('cmd')).id).toBe('c-1');
      await a.broker.publishCommand('dev-1', 'second', { id: 'c-2', expirationMs: 60_000 });
      // With the MemoryBroker, c-2 reached the session before the ping is read (the hub delivers it
      // on the next turn of the event loop), so it waits there, unexpired, behind c-1. With RabbitMQ
      // it may arrive later; either way the clock the gateway reads now jumps 10 minutes, and c-2 is
      // found expired: when it arrives, or when c-1's ack makes the session look at what waits.
      client.send({ type: 'ping' });
      await client.next('pong');
      const now = Date.now.bind(Date);
      vi.spyOn(Date, 'now').mockImplementation(() => now() + 600_000);
      const expired = backEnd.read(prefix, `${prefix}.expired`, 1);
      client.send({ type: 'cmd_ack', id: 'c-1' });
      expect(await expired).toMatchObject([
        {
          routingKey: 'dev-1.cmd_expired',
          messageId: 'c-2',
          body: { device: 'dev-1', command: 'c-2', event: 'cmd_expired', node: 'gw-a', session: welcome.session },
        },
      ]);
      vi.restoreAllMocks();
      expect(await metric(a.metrics, 'gateway_downlink_expired_total')).toBe(1);
      expect(await metric(a.metrics, 'gateway_command_events_total', { event: 'cmd_expired', outcome: 'published' })).toBe(1);
      expect(client.all('cmd').map((c) => c.id)).toEqual(['c-1']);
    });

    it('orders the presence of a takeover between two nodes by seq: disconnected(old) < connected(new)', async () => {
      const { prefix, node } = fresh();
      const a = await node('gw-a');
      const b = await node('gw-b');
      const queue = `${prefix}.presence`;
      await backEnd.bindEventQueue(prefix, queue, '*.connected');
      await backEnd.bindEventQueue(prefix, queue, '*.disconnected');
      const { client: onA, welcome: first } = await DeviceClient.hello(a.port, 'dev-1', token('dev-1'));
      const { client: onB, welcome: second } = await DeviceClient.hello(b.port, 'dev-1', token('dev-1'));
      expect((await onA.expectError()).code).toBe('taken_over');
      const events = await readPresence(
        prefix,
        queue,
        (got) => got.some((e) => e.session === first.session && e.event === 'disconnected') && got.some((e) => e.session === second.session),
      );
      const sorted = [...events].sort((x, y) => x.seq - y.seq);
      expect(sorted.map((e) => [e.event, e.node, e.session])).toEqual([
        ['connected', 'gw-a', first.session],
        ['disconnected', 'gw-a', first.session],
        ['connected', 'gw-b', second.session],
      ]);
      expect(presenceState(events)).toMatchObject({ event: 'connected', node: 'gw-b', session: second.session });

      // The device leaves node b; then it is back on node a: each event sorts after the last.
      await onB.close();
      const { welcome: third } = await DeviceClient.hello(a.port, 'dev-1', token('dev-1'));
      const more = await readPresence(prefix, queue, (got) => got.some((e) => e.session === third.session));
      const all = [...events, ...more].sort((x, y) => x.seq - y.seq);
      expect(all.slice(3).map((e) => [e.event, e.node, e.session])).toEqual([
        ['disconnected', 'gw-b', second.session],
        ['connected', 'gw-a', third.session],
      ]);
      expect(presenceState(all)).toMatchObject({ event: 'connected', node: 'gw-a', session: third.session });
    });

    it('orders the presence of a reconnect to the same node by seq', async () => {
      const { prefix, node } = fresh();
      const a = await node('gw-a');
      const queue = `${prefix}.presence`;
      await backEnd.bindEventQueue(prefix, queue, 'dev-1.*');
      const { client: first, welcome: w1 } = await DeviceClient.hello(a.port, 'dev-1', token('dev-1'));
      const { welcome: w2 } = await DeviceClient.hello(a.port, 'dev-1', token('dev-1'));
      expect((await first.expectError()).code).toBe('taken_over');
      const events = await readPresence(
        prefix,
        queue,
        (got) => got.some((e) => e.session === w1.session && e.event === 'disconnected') && got.some((e) => e.session === w2.session),
      );
      expect([...events].sort((x, y) => x.seq - y.seq).map((e) => [e.event, e.session])).toEqual([
        ['connected', w1.session],
        ['disconnected', w1.session],
        ['connected', w2.session],
      ]);
      expect(presenceState(events)).toMatchObject({ event: 'connected', session: w2.session });
    });

    it('numbers a session on a node that never heard of the device above what another node remembers', async () => {
      const { prefix, node } = fresh();
      const a = await node('gw-a');
      const queue = `${prefix}.presence`;
      await backEnd.bindEventQueue(prefix, queue, 'dev-1.*');
      const { client, welcome: first } = await DeviceClient.hello(a.port, 'dev-1', token('dev-1'));
      await client.close();
      const before = await readPresence(prefix, queue, (got) => got.some((e) => e.session === first.session && e.event === 'disconnected'));
      const gone = before.find((e) => e.event === 'disconnected')!;
      // Node b starts now (a restarted node, say): it never saw the device, and numbers its session
      // from scratch; node a remembers the seq it published, and has it raised.
      const b = await node('gw-b');
      const { welcome: second } = await DeviceClient.hello(b.port, 'dev-1', token('dev-1'));
      const after = await readPresence(prefix, queue, (got) => {
        const state = presenceState([...before, ...got]);
        return state?.session === second.session && state.event === 'connected';
      });
      const state = presenceState([...before, ...after]);
      expect(state).toMatchObject({ event: 'connected', node: 'gw-b', session: second.session });
      expect(state!.seq).toBeGreaterThan(gone.seq);
    });

    it('raises the seq of the winner of two hellos racing on two nodes above the loser\'s disconnected', async () => {
      const { prefix, node } = fresh();
      const gateA = gatedAuthenticate();
      const gateB = gatedAuthenticate();
      const a = await node('gw-a', { authenticate: gateA.authenticate });
      const b = await node('gw-b', { authenticate: gateB.authenticate });
      const queue = `${prefix}.presence`;
      await backEnd.bindEventQueue(prefix, queue, 'dev-1.*');
      const earlier = await DeviceClient.connect(a.port);
      earlier.send({ type: 'hello', device: 'dev-1', token: 'a' });
      const callA = await gateA.call(0);
      const later = await DeviceClient.connect(b.port);
      later.send({ type: 'hello', device: 'dev-1', token: 'b' });
      const callB = await gateB.call(0);
      // Both hellos take their seq before either node heard of the other: the same number.
      callA.accept();
      callB.accept();
      const winner = await later.next('welcome');
      expect(winner.node).toBe('gw-b');
      expect((await earlier.expectError()).code).toBe('taken_over');
      const loser = earlier.all('welcome')[0];
      // Wait until the loser's disconnected (if it was welcomed) is there, and a connected of the
      // winner sorts after it.
      const events = await readPresence(prefix, queue, (got) => {
        const state = presenceState(got);
        const lost = loser === undefined || got.some((e) => e.session === loser.session && e.event === 'disconnected');
        return lost && state?.session === winner.session && state.event === 'connected';
      });
      expect(presenceState(events)).toMatchObject({ event: 'connected', node: 'gw-b', session: winner.session });
      if (loser !== undefined) {
        const lost = events.find((e) => e.session === loser.session && e.event === 'disconnected')!;
        expect(lost.seq).toBeLessThan(presenceState(events)!.seq);
      }
    });
  });
}
