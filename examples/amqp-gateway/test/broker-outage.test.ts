/**
 * A RabbitMQ outage under load, timed (skipped when RabbitMQ is not reachable; see
 * support/rabbit.ts). The gateway reaches RabbitMQ through a {@link TcpProxy}: "RabbitMQ goes
 * down" is the proxy resetting every connection and refusing new ones, "RabbitMQ is back" is the
 * proxy accepting again (the real RabbitMQ is never stopped). Devices keep sending all along, and
 * `/healthz` is polled every 50 ms.
 */
import { pino } from 'pino';
import { afterEach, expect, it } from 'vitest';
import { type AdminServer, startAdminServer } from '../src/admin-server.js';
import { AmqpBroker, PUBLISH_ID_HEADER } from '../src/amqp-broker.js';
import { DeviceClient } from './support/device-client.js';
import { metric, startTestNodeWith, stopGateways, token } from './support/gateway-harness.js';
import { amqpAddress, amqpUrlVia, deleteTopology, describeRabbit, rabbitBackEnd, uniquePrefix } from './support/rabbit.js';
import { TcpProxy } from './support/tcp-proxy.js';

const topologies: { prefix: string; nodeIds: string[] }[] = [];
const proxies: TcpProxy[] = [];
const admins: AdminServer[] = [];

afterEach(async () => {
  for (const a of admins.splice(0)) await a.close();
  await stopGateways();
  for (const p of proxies.splice(0)) await p.close();
  for (const { prefix, nodeIds } of topologies.splice(0)) await deleteTopology(prefix, nodeIds);
});

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** How long RabbitMQ is "down" (the proxy refuses connections). */
const OUTAGE_MS = 10_000;
/** Devices sending, and the uplinks each keeps unconfirmed. */
const DEVICES = 10;
const WINDOW = 4;
/**
 * Devices attached to the node besides the sending ones (held through the broker, no connection):
 * their bindings are restored after every reconnect, which is what a big node spends its first
 * seconds back on.
 */
const IDLE_DEVICES = 5000;
/** Acks that may still arrive right after the cut: confirmed before it, on their way to the device. */
const IN_TRANSIT_MS = 250;

describeRabbit('gateway through a RabbitMQ outage', () => {
  it(
    'resumes acks within 3 s and answers 200 on /healthz within 1 s of RabbitMQ accepting again, losing no acked uplink',
    { timeout: 90_000 },
    async () => {
      const prefix = uniquePrefix('outage');
      topologies.push({ prefix, nodeIds: ['gw-o'] });
      const proxy = new TcpProxy(amqpAddress());
      proxies.push(proxy);
      const url = amqpUrlVia(await proxy.start());
      // The broker's default reconnect settings: they are what is measured.
      const node = await startTestNodeWith({ nodeId: 'gw-o' }, () => new AmqpBroker({ url, nodeId: 'gw-o', prefix }));
      const admin = await startAdminServer({
        port: 0,
        gateway: node.gateway,
        metrics: node.metrics,
        token: undefined,
        logger: pino({ enabled: false }),
      });
      admins.push(admin);
      await rabbitBackEnd.bindUplinkQueue(prefix, `${prefix}.app`, '#');
      await Promise.all(Array.from({ length: IDLE_DEVICES }, (_, i) => node.broker.attachDevice(`idle-${i}`)));

      const t0 = Date.now();
      const states: { at: number; state: string }[] = [];
      node.broker.on('state', (state) => states.push({ at: Date.now(), state }));
      const health: { at: number; status: number }[] = [];
      let polling = true;
      const poller = (async () => {
        while (polling) {
          const res = await fetch(`${admin.url}/healthz`);
          await res.arrayBuffer();
          health.push({ at: Date.now(), status: res.status });
          await sleep(50);
        }
      })();

      // Every device keeps WINDOW uplinks unconfirmed, sending one more per ack until `sending` ends.
      const acks: number[] = [];
      const ackedIds = new Map<string, number>();
      let sending = true;
      let sent = 0;
      const devices = await Promise.all(
        Array.from({ length: DEVICES }, async (_, d) => {
          const id = `dev-${d}`;
          const { client } = await DeviceClient.hello(node.port, id, token(id));
          return { id, client };
        }),
      );
      const running = devices.map(async ({ id, client }) => {
        let next = 0;
        let outstanding = 0;
        const send = (): void => {
          client.send({ type: 'msg', id: `m-${next}`, topic: 't', body: { n: next } });
          next += 1;
          outstanding += 1;
          sent += 1;
        };
        for (let i = 0; i < WINDOW; i++) send();
        while (outstanding > 0) {
          const ack = await client.next('ack');
          acks.push(Date.now());
          outstanding -= 1;
          const key = `${id}/${ack.id}`;
          ackedIds.set(key, (ackedIds.get(key) ?? 0) + 1);
          if (sending) send();
        }
      });
      const acksAfter = (n: number): Promise<void> =>
        (async () => {
          const target = acks.length + n;
          while (acks.length < target) await sleep(20);
        })();

      await acksAfter(200);
      const cutAt = Date.now();
      proxy.pause();
      proxy.cut();
      await sleep(OUTAGE_MS); // the outage itself: how long RabbitMQ stays unreachable
      const backAt = Date.now();
      proxy.resume();

      // Load goes on a few seconds past the first ack after the restore, then stops.
      while (!acks.some((a) => a >= backAt) || !health.some((h) => h.at >= backAt && h.status === 200)) {
        if (Date.now() - backAt > 30_000) break;
        await sleep(20);
      }
      await acksAfter(500);
      sending = false;
      await Promise.all(running);
      polling = false;
      await poller;

      const firstAck = acks.find((a) => a >= backAt);
      const firstOk = health.find((h) => h.at >= backAt && h.status === 200);
      const firstDown = health.find((h) => h.at >= cutAt && h.status !== 200);
      const connectedAt = states.find((s) => s.at >= backAt && s.state === 'connected')?.at;
      const ackDelay = firstAck === undefined ? Infinity : firstAck - backAt;
      const healthDelay = firstOk === undefined ? Infinity : firstOk.at - backAt;
      // The longest time /healthz answered 503 while acks were arriving: for each ack, how long the
      // 503 run it fell in (if any) lasted after it.
      let worst503WhileAcking = 0;
      for (const a of acks) {
        if (a >= cutAt && a < cutAt + IN_TRANSIT_MS) continue;
        const before = health.filter((h) => h.at <= a).at(-1);
        if (before === undefined || before.status === 200) continue;
        const after = health.find((h) => h.at > a && h.status === 200);
        worst503WhileAcking = Math.max(worst503WhileAcking, (after?.at ?? Infinity) - a);
      }
      console.info(
        `broker outage: cut at +${cutAt - t0} ms, /healthz 503 at +${firstDown ? firstDown.at - cutAt : '?'} ms after the cut; ` +
          `back at +${backAt - t0} ms; broker connected ${connectedAt === undefined ? '?' : connectedAt - backAt} ms, first ack ${ackDelay} ms ` +
          `and /healthz 200 ${healthDelay} ms after RabbitMQ accepted again; ` +
          `longest 503 while acks flowed ${worst503WhileAcking} ms; ${acks.length} acks of ${sent} uplinks`,
      );

      expect(await metric(node.metrics, 'gateway_uplink_nacked_total')).toBe(0);
      expect(acks.filter((a) => a >= cutAt + IN_TRANSIT_MS && a < backAt)).toEqual([]);
      expect(ackDelay).toBeLessThanOrEqual(3000);
      expect(healthDelay).toBeLessThanOrEqual(1000);
      expect(worst503WhileAcking).toBeLessThanOrEqual(1000);
      // No uplink acked twice to its device.
      expect([...ackedIds.values()].filter((n) => n !== 1)).toEqual([]);
      expect(ackedIds.size).toBe(sent);

      // Every acked uplink is in the back end's queue, under one publish id: a copy republished after
      // the cut (at-least-once) carries the same id, so the back end can drop it.
      const publishIds = new Map<string, Set<string>>();
      let copies = 0;
      const deadline = Date.now() + 20_000;
      // Read until every acked uplink was seen and the queue is empty (to count every copy).
      for (let batch = 1; (batch > 0 || [...ackedIds.keys()].some((k) => !publishIds.has(k))) && Date.now() < deadline; ) {
        const got = await rabbitBackEnd.read(prefix, `${prefix}.app`, 500, 200);
        batch = got.length;
        for (const m of got) {
          copies += 1;
          const key = `${String(m.headers['device-id'])}/${m.messageId}`;
          let ids = publishIds.get(key);
          if (!ids) publishIds.set(key, (ids = new Set()));
          ids.add(String(m.headers[PUBLISH_ID_HEADER]));
        }
      }
      console.info(`broker outage: ${copies} copies in the back-end queue for ${ackedIds.size} acked uplinks`);
      expect([...ackedIds.keys()].filter((k) => !publishIds.has(k))).toEqual([]);
      expect([...publishIds.entries()].filter(([, ids]) => ids.size !== 1)).toEqual([]);
      expect(firstDown).toBeDefined();
    },
  );
});
