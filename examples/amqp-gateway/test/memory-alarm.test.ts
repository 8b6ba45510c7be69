/**
 * A RabbitMQ memory alarm, on a node of the test's own (an alarm blocks every publisher of its
 * node, so it is never raised on the broker the other test files share): each of the gateway's
 * publishing connections — the publisher of uplinks and the control connection of takeover
 * announcements — makes the broker `blocked` while RabbitMQ blocks it, nothing is confirmed
 * meanwhile, nothing is lost, and the broker is `connected` again once the alarm clears. While
 * blocked, uplinks wait in the gateway and a takeover announcement is refused at once.
 *
 * RabbitMQ blocks a connection when it publishes after the alarm has reached it, so the tests wait
 * for the alarm to be in effect, then publish until the broker reports `blocked`.
 */
import { connect } from 'amqplib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AmqpBroker } from '../src/amqp-broker.js';
import type { BrokerState, PublishResult, Takeover } from '../src/broker.js';
import { topology } from '../src/topology.js';
import { stateReached } from './support/broker-state.js';
import { PRIVATE_RABBIT_START_MS, PrivateRabbit, canStartPrivateRabbit } from './support/private-rabbit.js';
import { EventLog } from './support/routing-suite.js';

const canStart = await canStartPrivateRabbit();
const required = process.env.REQUIRE_RABBITMQ === '1';
if (!canStart && !required) console.warn('memory alarm tests skipped: cannot start a RabbitMQ node of their own here (needs rabbitmq-server, run as root or rabbitmq)');

describe.skipIf(!canStart && !required)('AmqpBroker under a RabbitMQ memory alarm, on a node of its own', { timeout: 90_000 }, () => {
  let rabbit: PrivateRabbit | undefined;
  const brokers: AmqpBroker[] = [];

  beforeAll(async () => {
    if (!canStart) throw new Error('REQUIRE_RABBITMQ=1, but this process cannot start a RabbitMQ node of its own (needs rabbitmq-server, run as root or rabbitmq)');
    rabbit = await PrivateRabbit.start();
  }, PRIVATE_RABBIT_START_MS + 5_000);

  afterAll(async () => {
    try {
      await Promise.all(brokers.splice(0).map((b) => b.stop()));
    } finally {
      await rabbit?.stop();
    }
  }, 60_000);

  const node = (): PrivateRabbit => {
    if (!rabbit) throw new Error('no RabbitMQ node');
    return rabbit;
  };

  /** Resolves once the node lists a memory alarm (`on`) or none (`!on`); each poll is one rabbitmqctl call. */
  const alarmIs = async (on: boolean): Promise<void> => {
    const deadline = Date.now() + 20_000;
    for (;;) {
      const listed = (await node().alarms()).includes('memory');
      if (listed === on) return;
      if (Date.now() > deadline) throw new Error(`memory alarm still ${listed ? 'set' : 'clear'} after 20 s`);
    }
  };
  /** Raise the alarm (a watermark far below what the node uses) and wait until it is in effect. */
  const raise = async (): Promise<void> => {
    await node().ctl(['set_vm_memory_high_watermark', '0.000001']);
    await alarmIs(true);
  };
  const clear = async (): Promise<void> => {
    await node().ctl(['set_vm_memory_high_watermark', '0.4']);
    await alarmIs(false);
  };

  /** Call `publish` until the broker reports `blocked` (RabbitMQ blocks at a publish after the alarm reached the connection). */
  const publishUntilBlocked = async (broker: AmqpBroker, publish: (i: number) => void): Promise<void> => {
    for (let i = 0; broker.state !== 'blocked'; i++) {
      if (i === 20) throw new Error(`not blocked after 20 publishes (state ${broker.state})`);
      publish(i);
      await stateReached(broker, 'blocked', 1_000).catch(() => undefined);
    }
  };

  /**
   * RabbitMQ's own view of the node's connections, by the name the gateway gives them
   * (`<nodeId> <role>`) → state (running, blocking, blocked, flow).
   */
  const connectionStates = async (): Promise<Map<string, string>> => {
    const out = await node().ctl(['list_connections', '-q', '--no-table-headers', 'client_properties', 'state']);
    const states = new Map<string, string>();
    for (const line of out.split('\n')) {
      const name = /corral-gateway ([^"<>]+)/.exec(line)?.[1];
      const state = /\b(running|blocking|blocked|flow)\s*$/.exec(line)?.[1];
      if (name && state) states.set(name, state);
    }
    return states;
  };

  const start = async (nodeId: string): Promise<{ broker: AmqpBroker; states: BrokerState[] }> => {
    const broker = new AmqpBroker({ url: node().url, nodeId, prefix: `alarm-${nodeId}` });
    brokers.push(broker);
    await broker.start();
    const states: BrokerState[] = [];
    broker.on('state', (s) => states.push(s));
    return { broker, states };
  };

  it('is blocked while RabbitMQ blocks its control connection, and announces the takeovers once unblocked', async () => {
    const { broker, states } = await start('control');
    const takeovers = new EventLog<Takeover>(broker, 'takeover');
    const announced: Takeover[] = [];
    const confirms: Promise<void>[] = [];
    let confirmed = 0;
    await raise();
    try {
      // Only the control connection publishes here.
      await publishUntilBlocked(broker, (i) => {
        const takeover: Takeover = { device: 'dev-1', node: 'control', session: `s-${i}`, at: i, seq: i + 1 };
        announced.push(takeover);
        confirms.push(broker.announceTakeover(takeover).then(() => void confirmed++));
      });
      // One more, once blocked: refused at once (its hello is answered `overloaded` and the device
      // retries), not queued behind the block.
      await expect(broker.announceTakeover({ device: 'dev-2', node: 'control', session: 's-2', at: 99, seq: 1 })).rejects.toThrow(/unavailable/);
      const before = confirmed;
      // RabbitMQ's view, and ~a second of its time: the control connection is blocked, and no
      // announcement is confirmed meanwhile.
      expect((await connectionStates()).get('control control')).toBe('blocked');
      expect(confirmed).toBe(before);
      await clear();
      await stateReached(broker, 'connected', 30_000);
      await Promise.all(confirms);
      for (const takeover of announced) expect(await takeovers.next()).toEqual(takeover);
    } finally {
      await clear();
    }
    expect(states).toEqual(['blocked', 'connected']);
  });

  it('is blocked while RabbitMQ blocks its publisher, holds the uplinks, and confirms every one once unblocked', async () => {
    const { broker, states } = await start('publisher');
    const app = 'alarm-publisher.app';
    const model = await connect(node().url);
    try {
      const ch = await model.createChannel();
      await ch.assertQueue(app, { durable: true });
      await ch.bindQueue(app, topology('alarm-publisher').up, '#');
      await raise();
      try {
        let settled = 0;
        const uplinks: Promise<PublishResult>[] = [];
        const publish = (i: number): void => {
          uplinks.push(broker.publishUplink({ device: 'dev-1', id: `m-${i}`, topic: 't', body: { i } }).finally(() => void settled++));
        };
        await publishUntilBlocked(broker, publish);
        // Blocked: these wait in the gateway (it stops writing to a blocked connection).
        const first = uplinks.length;
        for (let i = first; i < first + 50; i++) publish(i);
        const before = settled;
        expect((await connectionStates()).get('publisher publisher')).toBe('blocked');
        expect(settled).toBe(before);
        expect(settled).toBeLessThanOrEqual(first);
        await clear();
        await stateReached(broker, 'connected', 30_000);
        expect(await Promise.all(uplinks)).toEqual(uplinks.map(() => ({ ok: true })));
        expect((await ch.checkQueue(app)).messageCount).toBe(uplinks.length);
      } finally {
        await clear();
      }
    } finally {
      await model.close();
    }
    expect(states).toEqual(['blocked', 'connected']);
  });
});
