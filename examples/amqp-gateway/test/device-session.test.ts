/**
 * The device protocol end to end: real TLS devices against a gateway node with a MemoryBroker.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { hmacAuthenticate } from '../src/auth.js';
import type { Command } from '../src/broker.js';
import { DeviceClient } from './support/device-client.js';
import { metric, nextEnqueued, SECRET, startTestNode, stopGateways, token } from './support/gateway-harness.js';

afterEach(async () => {
  vi.useRealTimers();
  await stopGateways();
});

/** A ping answered proves every line the device sent before it was handled. */
async function roundTrip(client: DeviceClient): Promise<void> {
  client.send({ type: 'ping' });
  await client.next('pong');
}

describe('hello', () => {
  it('welcomes a device with a valid token, naming the node and a session', async () => {
    const node = await startTestNode();
    const { client, welcome } = await DeviceClient.hello(node.port, 'dev-1', token('dev-1'));
    expect(welcome).toEqual({ type: 'welcome', node: node.gateway.nodeId, session: expect.any(String) });
    await roundTrip(client);
    expect(await metric(node.metrics, 'gateway_hellos_total', { outcome: 'welcome' })).toBe(1);
    expect(await metric(node.metrics, 'gateway_device_connections')).toBe(1);
    const devices = await node.gateway.devices();
    expect(devices).toEqual([
      {
        device: 'dev-1',
        session: welcome.session,
        connection: expect.any(String),
        remote: expect.stringMatching(/^127\.0\.0\.1:\d+$/),
        connectedAt: expect.any(String),
        pid: process.pid,
      },
    ]);
  });

  it('refuses a bad token with unauthorized and closes', async () => {
    const node = await startTestNode();
    const client = await DeviceClient.connect(node.port);
    client.send({ type: 'hello', device: 'dev-1', token: token('dev-1', 'not-the-secret') });
    expect((await client.expectError()).code).toBe('unauthorized');
    expect(await metric(node.metrics, 'gateway_hellos_total', { outcome: 'unauthorized' })).toBe(1);
    expect(await metric(node.metrics, 'gateway_device_errors_total', { code: 'unauthorized' })).toBe(1);
  });

  it('accepts tokens under the previous secret during a rotation, and no others', async () => {
    const node = await startTestNode({ authenticate: hmacAuthenticate({ current: 'new-secret', previous: SECRET }) });
    await DeviceClient.hello(node.port, 'old-token', token('old-token', SECRET));
    await DeviceClient.hello(node.port, 'new-token', token('new-token', 'new-secret'));
    const other = await DeviceClient.connect(node.port);
    other.send({ type: 'hello', device: 'x', token: token('x', 'older-secret') });
    expect((await other.expectError()).code).toBe('unauthorized');
  });

  it('closes a connection that sends no hello within helloTimeout', async () => {
    const node = await startTestNode({ helloTimeout: 100 });
    const client = await DeviceClient.connect(node.port);
    expect((await client.expectError()).code).toBe('hello_timeout');
    expect(await metric(node.metrics, 'gateway_hellos_total', { outcome: 'timeout' })).toBe(1);
  });

  it('holds the lines sent right after the hello until the welcome is out', async () => {
    const node = await startTestNode();
    const client = await DeviceClient.connect(node.port);
    client.sendRaw(
      `${JSON.stringify({ type: 'hello', device: 'eager', token: token('eager') })}\n` +
        `${JSON.stringify({ type: 'msg', id: 'm1', topic: 't', body: 1 })}\n${JSON.stringify({ type: 'ping' })}\n`,
    );
    await client.next('pong');
    expect(await client.next('ack')).toEqual({ type: 'ack', id: 'm1' });
    expect(client.received[0]!.type).toBe('welcome');
  });

  it('closes an idle device after idleTimeout', async () => {
    const node = await startTestNode({ idleTimeout: 100 });
    const { client } = await DeviceClient.hello(node.port, 'sleepy', token('sleepy'));
    await client.closed;
    await node.gateway.listener.waitForConnections('==', 0);
    expect(await metric(node.metrics, 'gateway_device_connections')).toBe(0);
  });

  it('keeps a device the gateway stopped reading (confirms outstanding) past idleTimeout', async () => {
    const node = await startTestNode({ idleTimeout: 150, maxInflightPerDevice: 2 });
    const hold = node.broker.holdConfirms();
    const { client } = await DeviceClient.hello(node.port, 'paused', token('paused'));
    for (const id of ['m-1', 'm-2', 'm-3']) client.send({ type: 'msg', id, topic: 't', body: 1 });
    await hold.waitFor(2); // two in flight: the gateway stopped reading this device
    // The device keeps pinging (unread while paused) for four idle periods.
    for (let i = 0; i < 6; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      client.send({ type: 'ping' });
    }
    hold.end();
    for (const id of ['m-1', 'm-2', 'm-3']) expect((await client.next('ack')).id).toBe(id);
    expect((await client.next('pong')).type).toBe('pong');
  });

  it('closes a device that sends nothing even while commands are written to it', async () => {
    const node = await startTestNode({ idleTimeout: 200 });
    const { client } = await DeviceClient.hello(node.port, 'half-open', token('half-open'));
    // Writes to the device do not count as it being alive: only what it sends does.
    let n = 0;
    const writer = setInterval(() => void node.broker.publishCommand('half-open', { n: n++ }).catch(() => {}), 50);
    try {
      expect((await client.expectError()).code).toBe('idle_timeout');
    } finally {
      clearInterval(writer);
    }
    expect(await metric(node.metrics, 'gateway_device_errors_total', { code: 'idle_timeout' })).toBe(1);
  });
});

describe('protocol errors: an error line, then close, counted by code', () => {
  const afterHello: [string, string, string][] = [
    ['malformed JSON', '{"type":', 'malformed_json'],
    ['not an object', '[1,2,3]', 'not_an_object'],
    ['a JSON string', '"hello"', 'not_an_object'],
    ['an unknown type', '{"type":"reboot"}', 'unknown_type'],
    ['an invalid field', '{"type":"msg","id":"","topic":"t","body":1}', 'invalid_field'],
    ['a topic with a dot', '{"type":"msg","id":"1","topic":"a.b","body":1}', 'invalid_field'],
    ['a msg without body', '{"type":"msg","id":"1","topic":"t"}', 'invalid_field'],
    // Too deep for JSON.stringify: the error message must not try to print it.
    ['a type nested 30,000 arrays deep', `{"type":${'['.repeat(30_000)}${']'.repeat(30_000)}}`, 'unknown_type'],
    ['a type nested 8,000 objects deep', `{"type":${'{"a":'.repeat(8_000)}1${'}'.repeat(8_000)}}`, 'unknown_type'],
    ['a body nested 65 levels deep', `{"type":"msg","id":"1","topic":"t","body":${'['.repeat(65)}${']'.repeat(65)}}`, 'invalid_field'],
    ['a body nested 30,000 levels deep', `{"type":"msg","id":"1","topic":"t","body":${'['.repeat(30_000)}${']'.repeat(30_000)}}`, 'invalid_field'],
    ['a second hello', JSON.stringify({ type: 'hello', device: 'dev-1', token: token('dev-1') }), 'duplicate_hello'],
  ];
  for (const [what, line, code] of afterHello) {
    it(`${what} → ${code}`, async () => {
      const node = await startTestNode();
      const { client } = await DeviceClient.hello(node.port, 'dev-1', token('dev-1'));
      client.sendRaw(`${line}\n`);
      const error = await client.expectError();
      expect(error).toEqual({ type: 'error', code, message: expect.any(String) });
      expect(await metric(node.metrics, 'gateway_device_errors_total', { code })).toBe(1);
    });
  }

  it('a body that is not UTF-8 → malformed_json, nothing published', async () => {
    const node = await startTestNode();
    const { client } = await DeviceClient.hello(node.port, 'dev-1', token('dev-1'));
    // "\xff\xfe" is not UTF-8: a lenient decoder would store it as U+FFFD U+FFFD and ack it.
    client.sendRaw(Buffer.concat([Buffer.from('{"type":"msg","id":"1","topic":"t","body":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}\n')]));
    const error = await client.expectError();
    expect(error).toEqual({ type: 'error', code: 'malformed_json', message: 'line is not valid UTF-8' });
    expect(client.received.some((m) => m.type === 'ack')).toBe(false);
    expect(await metric(node.metrics, 'gateway_device_errors_total', { code: 'malformed_json' })).toBe(1);
    expect(await metric(node.metrics, 'gateway_uplink_published_total')).toBe(0);
  });

  it('a first line that is not a hello → hello_required', async () => {
    const node = await startTestNode();
    const client = await DeviceClient.connect(node.port);
    client.send({ type: 'ping' });
    expect((await client.expectError()).code).toBe('hello_required');
    expect(await metric(node.metrics, 'gateway_device_errors_total', { code: 'hello_required' })).toBe(1);
  });

  it('a hello with an invalid device id → invalid_field', async () => {
    const node = await startTestNode();
    const client = await DeviceClient.connect(node.port);
    client.send({ type: 'hello', device: 'has.dot', token: 'x' });
    expect((await client.expectError()).code).toBe('invalid_field');
  });

  it('a line over maxLineLength → line_too_long', async () => {
    const node = await startTestNode({ maxLineLength: 256 });
    const { client } = await DeviceClient.hello(node.port, 'dev-1', token('dev-1'));
    client.sendRaw(`{"type":"msg","id":"1","topic":"t","body":"${'x'.repeat(400)}"}\n`);
    expect((await client.expectError()).code).toBe('line_too_long');
    expect(await metric(node.metrics, 'gateway_device_errors_total', { code: 'line_too_long' })).toBe(1);
  });

  it('keeps serving other devices through all of it', async () => {
    const node = await startTestNode();
    const { client: good } = await DeviceClient.hello(node.port, 'good', token('good'));
    const bad = await DeviceClient.connect(node.port);
    bad.sendRaw('\u0000\u0001garbage\n');
    expect((await bad.expectError()).code).toBe('malformed_json');
    await roundTrip(good);
    expect((await node.gateway.listener.info()).handlerCrashes).toBe(0);
  });
});

describe('uplink', () => {
  it('acks a message once the broker has it, and answers pings', async () => {
    const node = await startTestNode();
    node.broker.bindQueue('backend', node.broker.topology.up, 'dev-1.*');
    const { client } = await DeviceClient.hello(node.port, 'dev-1', token('dev-1'));
    client.send({ type: 'msg', id: 'm-1', topic: 'telemetry', body: { t: 21.5 } });
    expect(await client.next('ack')).toEqual({ type: 'ack', id: 'm-1' });
    const [m] = node.broker.read('backend');
    expect(m).toMatchObject({
      routingKey: 'dev-1.telemetry',
      messageId: 'm-1',
      body: { t: 21.5 },
      headers: { 'device-id': 'dev-1', 'message-id': 'm-1', 'node-id': node.gateway.nodeId },
    });
    await roundTrip(client);
    expect(await metric(node.metrics, 'gateway_uplink_acked_total')).toBe(1);
    expect(await metric(node.metrics, 'gateway_uplink_ack_seconds')).toBe(1);
  });

  it('nacks a message no queue takes (no back end, no embedded queue)', async () => {
    const node = await startTestNode({ brokerOptions: { retain: 0 } });
    const { client } = await DeviceClient.hello(node.port, 'dev-1', token('dev-1'));
    client.send({ type: 'msg', id: 'm-1', topic: 'telemetry', body: 1 });
    expect(await client.next('nack')).toEqual({ type: 'nack', id: 'm-1', reason: 'unroutable' });
    expect(await metric(node.metrics, 'gateway_uplink_nacked_total', { reason: 'unroutable' })).toBe(1);
    await roundTrip(client); // the session goes on
  });

  it('keeps in embedded mode the last uplinks in <p>.up.embedded', async () => {
    const node = await startTestNode({ brokerOptions: { retain: 3 } });
    const { client } = await DeviceClient.hello(node.port, 'dev-1', token('dev-1'));
    for (let i = 0; i < 5; i++) client.send({ type: 'msg', id: `m-${i}`, topic: 't', body: i });
    for (let i = 0; i < 5; i++) await client.next('ack');
    expect(node.broker.read(node.broker.embeddedUplinkQueue).map((m) => m.body)).toEqual([2, 3, 4]);
  });

  it('publishes and acks in the order the device sent', async () => {
    const node = await startTestNode({ maxInflightPerDevice: 8 });
    node.broker.bindQueue('backend', node.broker.topology.up, '#');
    const { client } = await DeviceClient.hello(node.port, 'dev-1', token('dev-1'));
    const n = 200;
    client.sendRaw(Array.from({ length: n }, (_, i) => `${JSON.stringify({ type: 'msg', id: `m-${i}`, topic: 't', body: i })}\n`).join(''));
    const acks = [];
    for (let i = 0; i < n; i++) acks.push((await client.next('ack')).id);
    const expected = Array.from({ length: n }, (_, i) => `m-${i}`);
    expect(acks).toEqual(expected);
    expect(node.broker.read('backend').map((m) => m.messageId)).toEqual(expected);
  });

  it('writes the acks of one burst of confirms as one TLS record, in order', async () => {
    const node = await startTestNode({ maxInflightPerDevice: 16 });
    const hold = node.broker.holdConfirms();
    const { client } = await DeviceClient.hello(node.port, 'dev-1', token('dev-1'));
    const n = 8;
    client.sendRaw(Array.from({ length: n }, (_, i) => `${JSON.stringify({ type: 'msg', id: `m-${i}`, topic: 't', body: i })}\n`).join(''));
    await hold.waitFor(n);
    let records = 0;
    client.socket.on('data', () => records++); // a TLS client emits one 'data' per record read
    hold.release(); // all eight confirms in one synchronous burst
    const acks = [];
    for (let i = 0; i < n; i++) acks.push((await client.next('ack')).id);
    expect(acks).toEqual(Array.from({ length: n }, (_, i) => `m-${i}`));
    expect(records).toBe(1);
  });

  it('stops reading a device with maxInflightPerDevice unconfirmed messages', async () => {
    const node = await startTestNode({ maxInflightPerDevice: 4 });
    const hold = node.broker.holdConfirms();
    const { client } = await DeviceClient.hello(node.port, 'busy', token('busy'));
    const { client: other } = await DeviceClient.hello(node.port, 'other', token('other'));
    client.sendRaw(
      Array.from({ length: 6 }, (_, i) => `${JSON.stringify({ type: 'msg', id: `m-${i}`, topic: 't', body: i })}\n`).join('') +
        `${JSON.stringify({ type: 'ping' })}\n`,
    );
    await hold.waitFor(4);
    await roundTrip(other); // the gateway is responsive...
    expect(hold.held).toBe(4); // ...but reads no more of `busy`
    expect(client.all('pong')).toEqual([]);
    hold.release(1); // one confirm: one slot, one more message read
    await hold.waitFor(4);
    expect((await client.next('ack')).id).toBe('m-0');
    hold.end();
    await client.next('pong');
    for (let i = 1; i < 6; i++) expect((await client.next('ack')).id).toBe(`m-${i}`);
    // The ping was read only once m-5 had a slot, so after two confirms.
    const order = client.received.map((m) => (m.type === 'ack' ? m.id : m.type));
    expect(order.indexOf('pong')).toBeGreaterThan(order.indexOf('m-1'));
  });

  it('bounds the uplink bytes held unconfirmed in the process (maxBufferedBytes)', async () => {
    const node = await startTestNode({ maxBufferedBytes: 250 });
    const hold = node.broker.holdConfirms();
    // Lines of exactly 100 bytes: two fit in the budget, a third does not.
    const line = (id: string): string => {
      const base = JSON.stringify({ type: 'msg', id, topic: 't', body: '' });
      return JSON.stringify({ type: 'msg', id, topic: 't', body: 'x'.repeat(100 - base.length) });
    };
    expect(line('a-0').length).toBe(100);
    const devices = await Promise.all(['a', 'b'].map((d) => DeviceClient.hello(node.port, d, token(d)).then((r) => r.client)));
    const { client: probe } = await DeviceClient.hello(node.port, 'probe', token('probe'));
    for (const [i, d] of devices.entries()) {
      const name = i === 0 ? 'a' : 'b';
      d.sendRaw(Array.from({ length: 3 }, (_, k) => `${line(`${name}-${k}`)}\n`).join(''));
    }
    await hold.waitFor(2);
    await roundTrip(probe);
    expect(hold.held).toBe(2);
    expect(await metric(node.metrics, 'gateway_uplink_buffered_bytes')).toBe(200);
    hold.end();
    for (const d of devices) for (let k = 0; k < 3; k++) await d.next('ack');
    await roundTrip(probe);
    expect(await metric(node.metrics, 'gateway_uplink_buffered_bytes')).toBe(0);
    expect(await metric(node.metrics, 'gateway_uplink_acked_total')).toBe(6);
  });
});

describe('downlink', () => {
  it('writes a command; the device acks; the broker delivery is settled', async () => {
    const node = await startTestNode();
    const { client } = await DeviceClient.hello(node.port, 'dev-1', token('dev-1'));
    const { id } = await node.broker.publishCommand('dev-1', { op: 'open' }, { id: 'c-1' });
    expect(await client.next('cmd')).toEqual({ type: 'cmd', id, body: { op: 'open' } });
    client.send({ type: 'cmd_ack', id });
    await roundTrip(client);
    expect(await metric(node.metrics, 'gateway_downlink_acked_total')).toBe(1);
    expect(await metric(node.metrics, 'gateway_command_ack_seconds')).toBe(1);
    expect(await metric(node.metrics, 'gateway_downlink_redelivered_total')).toBe(0);
    expect(node.hub.depth(node.broker.topology.downOffline)).toBe(0);
  });

  it('writes at most maxPendingCommands unacknowledged; the rest wait their turn, in order', async () => {
    const node = await startTestNode({ maxPendingCommands: 2 });
    const { client } = await DeviceClient.hello(node.port, 'dev-1', token('dev-1'));
    for (let i = 0; i < 4; i++) await node.broker.publishCommand('dev-1', i, { id: `c-${i}` });
    expect((await client.next('cmd')).id).toBe('c-0');
    expect((await client.next('cmd')).id).toBe('c-1');
    await roundTrip(client);
    expect(client.all('cmd')).toHaveLength(2);
    client.send({ type: 'cmd_ack', id: 'c-1' });
    expect((await client.next('cmd')).id).toBe('c-2');
    await roundTrip(client);
    expect(client.all('cmd')).toHaveLength(3);
    client.send({ type: 'cmd_ack', id: 'c-0' });
    expect((await client.next('cmd')).id).toBe('c-3');
  });

  it('gives a command not acknowledged within cmdAckTimeout back to the broker (it comes round again)', async () => {
    const node = await startTestNode({ cmdAckTimeout: 100 });
    const { client } = await DeviceClient.hello(node.port, 'dev-1', token('dev-1'));
    await node.broker.publishCommand('dev-1', 'x', { id: 'c-1' });
    expect((await client.next('cmd')).id).toBe('c-1');
    expect((await client.next('cmd')).id).toBe('c-1'); // redelivered, and still for this device
    expect(await metric(node.metrics, 'gateway_downlink_timed_out_total')).toBeGreaterThanOrEqual(1);
    expect(await metric(node.metrics, 'gateway_downlink_redelivered_total', { reason: 'ack_timeout' })).toBeGreaterThanOrEqual(1);
    client.send({ type: 'cmd_ack', id: 'c-1' });
    await roundTrip(client);
    expect(await metric(node.metrics, 'gateway_downlink_acked_total')).toBe(1);
  });

  it('does not let a device that never acks hold up commands for others', async () => {
    const node = await startTestNode({ cmdAckTimeout: 100, maxPendingCommands: 1 });
    const { client: stuck } = await DeviceClient.hello(node.port, 'stuck', token('stuck'));
    const { client: fine } = await DeviceClient.hello(node.port, 'fine', token('fine'));
    for (let i = 0; i < 3; i++) await node.broker.publishCommand('stuck', i, { id: `s-${i}` });
    await stuck.next('cmd');
    await node.broker.publishCommand('fine', 'go', { id: 'f-1' });
    expect((await fine.next('cmd')).id).toBe('f-1');
  });

  it('drops a command that has expired, without writing it', async () => {
    const node = await startTestNode();
    const { client } = await DeviceClient.hello(node.port, 'dev-1', token('dev-1'));
    const settled: string[] = [];
    const stale: Command = {
      id: 'old',
      device: 'dev-1',
      body: null,
      expiresAt: Date.now() - 1,
      ack: () => settled.push('ack'),
      redeliver: () => settled.push('redeliver'),
      drop: () => settled.push('drop'),
      deadLetter: () => settled.push('deadLetter'),
    };
    node.broker.emit('command', stale);
    await node.broker.publishCommand('dev-1', 'fresh', { id: 'new', expirationMs: 60_000 });
    expect((await client.next('cmd')).id).toBe('new');
    expect(client.all('cmd').map((c) => c.id)).toEqual(['new']);
    expect(settled).toEqual(['drop']);
    expect(await metric(node.metrics, 'gateway_downlink_expired_total')).toBe(1);
  });

  it('drops a queued command that expires while it waits for its turn', async () => {
    const node = await startTestNode({ maxPendingCommands: 1 });
    const { client } = await DeviceClient.hello(node.port, 'dev-1', token('dev-1'));
    await node.broker.publishCommand('dev-1', 1, { id: 'c-1' });
    await client.next('cmd');
    await node.broker.publishCommand('dev-1', 2, { id: 'c-2', expirationMs: 60_000 });
    await node.broker.publishCommand('dev-1', 3, { id: 'c-3' });
    await roundTrip(client); // both are queued in the session by now
    await new Promise<void>((resolve) => setImmediate(resolve));
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + 120_000);
    client.send({ type: 'cmd_ack', id: 'c-1' });
    expect((await client.next('cmd')).id).toBe('c-3');
    expect(client.all('cmd').map((c) => c.id)).toEqual(['c-1', 'c-3']);
    expect(await metric(node.metrics, 'gateway_downlink_expired_total')).toBe(1);
  });

  it('gives every unacknowledged and queued command back when the device disconnects', async () => {
    const node = await startTestNode({ maxPendingCommands: 1 });
    const { client } = await DeviceClient.hello(node.port, 'dev-1', token('dev-1'));
    await node.broker.publishCommand('dev-1', 1, { id: 'c-1' });
    await node.broker.publishCommand('dev-1', 2, { id: 'c-2' });
    await client.next('cmd');
    await roundTrip(client);
    // The device is parked: what it was given lands in its own offline queue, kept for its next connect.
    const offline = node.broker.topology.offlineQueue('dev-1');
    const landed = new Promise<string[]>((resolve) => {
      const ids: string[] = [];
      node.hub.on('enqueue', (q, m) => {
        if (q === offline && ids.push(m.messageId!) === 2) resolve(ids);
      });
    });
    await client.close();
    expect((await landed).sort()).toEqual(['c-1', 'c-2']);
    expect(await metric(node.metrics, 'gateway_downlink_redelivered_total', { reason: 'disconnected' })).toBe(2);
  });

  it('sends a command for a device connected nowhere to the offline queue', async () => {
    const node = await startTestNode();
    const landed = nextEnqueued(node.hub, node.broker.topology.downOffline);
    await node.broker.publishCommand('nobody', 'x', { id: 'c-1' });
    expect((await landed).messageId).toBe('c-1');
  });
});

describe('presence', () => {
  it('publishes connected after the welcome and disconnected after the close', async () => {
    const node = await startTestNode();
    node.broker.bindQueue('presence', node.broker.topology.events, '*.*');
    const connected = nextEnqueued(node.hub, 'presence');
    const { client } = await DeviceClient.hello(node.port, 'dev-1', token('dev-1'));
    expect(await connected).toMatchObject({
      routingKey: 'dev-1.connected',
      body: { device: 'dev-1', event: 'connected', node: node.gateway.nodeId, at: expect.any(String) },
    });
    const disconnected = nextEnqueued(node.hub, 'presence');
    await client.close();
    expect(await disconnected).toMatchObject({ routingKey: 'dev-1.disconnected', body: { event: 'disconnected' } });
  });

  it('publishes nothing for a device that was never welcomed', async () => {
    const node = await startTestNode();
    const client = await DeviceClient.connect(node.port);
    client.send({ type: 'hello', device: 'dev-1', token: 'wrong' });
    await client.expectError();
    const { client: probe } = await DeviceClient.hello(node.port, 'probe', token('probe'));
    await probe.close();
    expect(node.broker.read(node.broker.embeddedEventQueue).map((m) => m.routingKey)).not.toContain('dev-1.connected');
  });
});
