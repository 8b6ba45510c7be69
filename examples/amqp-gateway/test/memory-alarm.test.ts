/**
 * A RabbitMQ memory alarm, on a node of the test's own (an alarm blocks every publisher of its
 * node, so it is never raised on the broker the other test files share): each of the gateway's
 * publishing connections — the publisher of uplinks and the control connection of takeover
 * announcements — makes the broker `blocked` while RabbitMQ blocks it, nothing it published is
 * lost, and the broker is `connected` again once the alarm clears.
 */
import { connect } from 'amqplib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AmqpBroker } from '../src/amqp-broker.js';
import type { BrokerState, Takeover } from '../src/broker.js';
import { topology } from '../src/topology.js';
import { stateReached } from './support/broker-state.js';
import { PrivateRabbit, canStartPrivateRabbit } from './support/private-rabbit.js';
import { describeRabbit } from './support/rabbit.js';
import { EventLog } from './support/routing-suite.js';

const canStart = await canStartPrivateRabbit();
const required = process.env.REQUIRE_RABBITMQ === '1';
if (!canStart && !required) console.warn('memory alarm tests skipped: cannot start a RabbitMQ node of their own here (needs rabbitmq-server, run as root or rabbitmq)');

describeRabbit('AmqpBroker under a RabbitMQ memory alarm', () => {
  describe.skipIf(!canStart && !required)('on a node of its own', { timeout: 90_000 }, () => {
    let rabbit: PrivateRabbit | undefined;
    const brokers: AmqpBroker[] = [];

    beforeAll(async () => {
      if (!canStart) throw new Error('REQUIRE_RABBITMQ=1, but this process cannot start a RabbitMQ node of its own (needs rabbitmq-server, run as root or rabbitmq)');
      rabbit = await PrivateRabbit.start();
    }, 90_000);

    afterAll(async () => {
      await Promise.all(brokers.splice(0).map((b) => b.stop()));
      await rabbit?.stop();
    }, 90_000);

    /** Raise the alarm: a watermark far below what the node uses. */
    const raise = async (): Promise<void> => void (await rabbit?.ctl(['set_vm_memory_high_watermark', '0.000001']));
    const clear = async (): Promise<void> => void (await rabbit?.ctl(['set_vm_memory_high_watermark', '0.4']));

    const start = async (nodeId: string): Promise<{ broker: AmqpBroker; states: BrokerState[] }> => {
      if (!rabbit) throw new Error('no RabbitMQ node');
      const broker = new AmqpBroker({ url: rabbit.url, nodeId, prefix: `alarm-${nodeId}` });
      brokers.push(broker);
      await broker.start();
      const states: BrokerState[] = [];
      broker.on('state', (s) => states.push(s));
      return { broker, states };
    };

    it('is blocked while RabbitMQ blocks its control connection, and announces the takeover once unblocked', async () => {
      const { broker, states } = await start('control');
      const takeovers = new EventLog<Takeover>(broker, 'takeover');
      await raise();
      try {
        // RabbitMQ blocks a connection when it next publishes: here only the control connection.
        const takeover: Takeover = { device: 'dev-1', node: 'control', session: 's-1', at: 1, seq: 1 };
        const announced = broker.announceTakeover(takeover);
        await stateReached(broker, 'blocked', 30_000);
        await clear();
        await stateReached(broker, 'connected', 30_000);
        await announced;
        expect(await takeovers.next()).toEqual(takeover);
      } finally {
        await clear();
      }
      expect(states).toEqual(['blocked', 'connected']);
    });

    it('is blocked while RabbitMQ blocks its publisher, holds the uplinks, and confirms every one once unblocked', async () => {
      const { broker, states } = await start('publisher');
      const app = 'alarm-publisher.app';
      const model = await connect(rabbit?.url ?? '');
      try {
        const ch = await model.createChannel();
        await ch.assertQueue(app, { durable: true });
        await ch.bindQueue(app, topology('alarm-publisher').up, '#');
        await raise();
        try {
          let settled = 0;
          const uplinks = Array.from({ length: 50 }, (_, i) =>
            broker.publishUplink({ device: 'dev-1', id: `m-${i}`, topic: 't', body: { i } }).finally(() => settled++),
          );
          await stateReached(broker, 'blocked', 30_000);
          const settledWhileBlocked = settled;
          await clear();
          await stateReached(broker, 'connected', 30_000);
          expect(await Promise.all(uplinks)).toEqual(uplinks.map(() => ({ ok: true })));
          // RabbitMQ stops reading a blocked connection: at most the publish that found the alarm
          // raised is confirmed before it clears.
          expect(settledWhileBlocked).toBeLessThanOrEqual(1);
          expect((await ch.checkQueue(app)).messageCount).toBe(50);
        } finally {
          await clear();
        }
      } finally {
        await model.close();
      }
      expect(states).toEqual(['blocked', 'connected']);
    });
  });
});
