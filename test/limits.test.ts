/**
 * Admission limits, after Ranch's acceptor_SUITE max-connections group: maxConnections,
 * maxHandshakes, the wait queue (maxWaiting, waitTimeout, admission order), removeFromCount,
 * run-time changes of maxConnections, and the info() counters that report all of it.
 */
import net from 'node:net';
import tls from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type AdmissionPolicy,
  type HandshakeErrorEvent,
  InvalidOptionError,
  type Listener,
  type ListenerInfo,
  type ListenerOptions,
  type ProtocolHandler,
  type RejectEvent,
  startListener,
} from '../src/index.js';
import { testCerts } from './support/certs.js';
import { captureClientHello, connectTcp, connectTls, LineClient } from './support/clients.js';
import { echoProtocol } from './support/protocols.js';
import { uniqueName } from './support/transports.js';

const HOST = '127.0.0.1';

let started: Listener[] = [];
let sockets: net.Socket[] = [];

afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(started.splice(0).map((l) => l.stop({ timeout: 1000 })));
});

type Extra = Omit<Partial<ListenerOptions>, 'name' | 'transport' | 'transportOptions'>;

/** A line-echo TCP listener on loopback (stopped after the test). */
async function tcpListener(options: Extra = {}, backlog?: number): Promise<Listener> {
  const l = await startListener({
    name: uniqueName('limits-tcp'),
    protocol: echoProtocol,
    framing: 'line',
    transport: 'tcp',
    transportOptions: { host: HOST, port: 0, ...(backlog !== undefined ? { backlog } : {}) },
    ...options,
  });
  started.push(l);
  return l;
}

/** A line-echo TLS listener on loopback (stopped after the test). */
async function tlsListener(options: Extra = {}): Promise<Listener> {
  const c = await testCerts();
  const l = await startListener({
    name: uniqueName('limits-tls'),
    protocol: echoProtocol,
    framing: 'line',
    transport: 'tls',
    transportOptions: { host: HOST, port: 0, key: c.key, cert: c.cert },
    ...options,
  });
  started.push(l);
  return l;
}

/** A TCP client, connected (the kernel accepted it; corral may not serve it yet). */
async function tcpClient(l: Listener): Promise<LineClient> {
  const s = await connectTcp(l.port!, HOST);
  sockets.push(s);
  return new LineClient(s);
}

/** A TLS client whose handshake completed. */
async function tlsClient(l: Listener): Promise<LineClient> {
  const s = await connectTls(l.port!);
  sockets.push(s);
  return new LineClient(s);
}

/** A raw TCP client that connects and sends nothing (to a TLS listener: no ClientHello). */
async function rawClient(l: Listener): Promise<net.Socket> {
  const s = await connectTcp(l.port!, HOST);
  s.on('error', () => {});
  sockets.push(s);
  return s;
}

/** A raw TCP client that sends a real ClientHello and then nothing: its handshake stalls. */
async function stalledHello(l: Listener): Promise<net.Socket> {
  const s = await rawClient(l);
  s.resume(); // read (and drop) the server's answer, so that its close is seen
  s.write(await captureClientHello());
  return s;
}

/** With maxConnections 1: `a` is served, `w` waits in the queue. */
async function servedAndWaiting(l: Listener): Promise<{ a: LineClient; w: LineClient }> {
  const a = await tcpClient(l);
  expect(await a.request('a')).toBe('a');
  const w = await tcpClient(l);
  w.send('w');
  await until(l, 'waiting == 1', (i) => i.waiting === 1);
  return { a, w };
}

/** Connect once more into a full queue: that socket is accepted and closed as queue_full. */
async function overflowOnce(l: Listener): Promise<void> {
  const rejected = next(l, 'reject');
  const c = await tcpClient(l);
  expect((await rejected).reason).toBe('queue_full');
  await c.closed;
}

/** Try to connect; resolve with the error code (e.g. `ECONNREFUSED`), or `'connected'`. */
function connectFails(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: HOST });
    sockets.push(s);
    s.once('connect', () => resolve('connected'));
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

/** Bytes a client has received from the server. */
function received(c: LineClient): number {
  return (c.stream as net.Socket).bytesRead;
}

/** The next `event` of a listener. */
function next<E extends 'reject' | 'handshakeError'>(l: Listener, event: E): Promise<E extends 'reject' ? RejectEvent : HandshakeErrorEvent> {
  return new Promise((resolve) => l.once(event, resolve as never));
}

/**
 * Resolve with `info()` once `pred` holds. The wait queue has no event of its own (a socket
 * accepted by the kernel reaches corral a tick later), so this polls the counters; it asserts a
 * state, never a duration, and fails with the last snapshot if the state is not reached.
 */
async function until(l: Listener, what: string, pred: (i: ListenerInfo) => boolean, timeout = 5000): Promise<ListenerInfo> {
  const deadline = Date.now() + timeout;
  for (;;) {
    const info = await l.info();
    if (pred(info)) return info;
    if (Date.now() > deadline) {
      const { accepted, handshaking, waiting, active, connections, opened, closed, rejected } = info;
      throw new Error(`${what} not reached: ${JSON.stringify({ accepted, handshaking, waiting, active, connections, opened, closed, rejected })}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

describe('maxConnections', () => {
  it('serves N clients; more are accepted but wait unserved until a served one leaves', async () => {
    const l = await tcpListener({ maxConnections: 3, admission: 'fifo' });
    const served = await Promise.all([0, 1, 2].map(() => tcpClient(l)));
    expect(await Promise.all(served.map((c, i) => c.request(`s${i}`)))).toEqual(['s0', 's1', 's2']);
    await l.waitForConnections('==', 3);

    // The kernel completes their TCP connect, but corral holds them, paused and unserved.
    const extra: LineClient[] = [];
    for (let k = 1; k <= 2; k++) {
      const c = await tcpClient(l);
      c.send(`x${k}`);
      extra.push(c);
      await until(l, `waiting == ${k}`, (i) => i.waiting === k);
    }
    // A round trip on a served connection proves the server is live; the extras still got nothing.
    expect(await served[0]!.request('ping')).toBe('ping');
    let info = await l.info();
    expect(info).toMatchObject({ accepted: 5, opened: 3, active: 3, connections: 3, waiting: 2, handshaking: 0 });
    expect(extra.map(received)).toEqual([0, 0]);

    // One served client leaves: the oldest waiting one is served, and its request is answered.
    served[2]!.end();
    expect(await extra[0]!.line()).toBe('x1');
    await served[2]!.closed;
    info = await l.info();
    expect(info).toMatchObject({ opened: 4, closed: 1, active: 3, connections: 3, waiting: 1 });
    expect(received(extra[1]!)).toBe(0);

    served[1]!.end();
    expect(await extra[1]!.line()).toBe('x2');
    expect((await l.info()).waiting).toBe(0);
  });

  it('over TLS, starts no handshake beyond the limit until a slot frees', async () => {
    const l = await tlsListener({ maxConnections: 2 });
    const held = [await tlsClient(l), await tlsClient(l)];
    await l.waitForConnections('==', 2);

    const third = tls.connect({ port: l.port!, host: HOST, rejectUnauthorized: false });
    sockets.push(third);
    third.on('error', () => {});
    let secured = false;
    const securedNow = new Promise<void>((resolve) =>
      third.once('secureConnect', () => {
        secured = true;
        resolve();
      }),
    );
    await until(l, 'waiting == 1', (i) => i.waiting === 1);
    // Both held connections still work, and the third's ClientHello was read but not answered.
    expect(await Promise.all(held.map((c, i) => c.request(`h${i}`)))).toEqual(['h0', 'h1']);
    const info = await l.info();
    expect(info).toMatchObject({ handshaking: 0, waiting: 1, active: 2, connections: 2, accepted: 3, opened: 2 });
    expect(secured).toBe(false);
    expect(third.bytesRead).toBe(0);

    held[0]!.end();
    await securedNow;
    const c = new LineClient(third);
    expect(await c.request('third')).toBe('third');
    await l.waitForConnections('==', 2);
    expect(await l.info()).toMatchObject({ waiting: 0, opened: 3, closed: 1 });
  });

  it('counts a running handshake against the limit (a peer that sent its ClientHello and stalls)', async () => {
    const l = await tlsListener({ maxConnections: 1, handshakeTimeout: 30_000 });
    await stalledHello(l);
    await until(l, 'handshaking == 1', (i) => i.handshaking === 1);
    const second = tls.connect({ port: l.port!, host: HOST, rejectUnauthorized: false });
    sockets.push(second);
    second.on('error', () => {});
    const info = await until(l, 'waiting == 1', (i) => i.waiting === 1);
    expect(info).toMatchObject({ handshaking: 1, active: 1, connections: 0 });
  });
});

describe('maxHandshakes', () => {
  it('defaults to 8192 handshakes in progress, 8 started per event-loop turn', async () => {
    expect(await (await tlsListener()).info()).toMatchObject({ maxHandshakes: 8192 });
  });

  it('bounds handshakes in progress: a peer that stalls after its ClientHello holds a slot, the next waits, then runs when one ends', async () => {
    const l = await tlsListener({ maxHandshakes: 1, handshakeTimeout: 30_000 });
    // Listening before the connect: the peer address is read at accept only for a listener then.
    const failed = next(l, 'handshakeError');
    const first = await stalledHello(l);
    await until(l, 'handshaking == 1', (i) => i.handshaking === 1);
    const second = await stalledHello(l);
    let info = await until(l, 'waiting == 1', (i) => i.waiting === 1);
    expect(info).toMatchObject({ handshaking: 1, waiting: 1, active: 1, connections: 0, accepted: 2 });

    // The first client gives up: its handshake fails and the second's handshake starts.
    const firstPort = first.localPort;
    first.destroy();
    const event = await failed;
    expect(event.kind).toBe('error');
    expect(event).toMatchObject({ remoteAddress: HOST, remotePort: firstPort });
    info = await until(l, 'second handshaking', (i) => i.handshaking === 1 && i.waiting === 0);
    expect(info.handshakeFailures).toMatchObject({ error: 1, timeout: 0 });

    // A real TLS client waits behind the second, and completes once the second leaves.
    const real = tls.connect({ port: l.port!, host: HOST, rejectUnauthorized: false });
    sockets.push(real);
    real.on('error', () => {});
    const securedNow = new Promise<void>((resolve) => real.once('secureConnect', () => resolve()));
    await until(l, 'waiting == 1', (i) => i.waiting === 1);
    second.destroy();
    await securedNow;
    expect(await new LineClient(real).request('tls')).toBe('tls');
    expect(await l.info()).toMatchObject({ handshaking: 0, waiting: 0, opened: 1, handshakeFailures: { error: 2, timeout: 0, stalled: 0 } });
  });

  it('when every slot is held and a ClientHello waits, closes the handshake stalled longest (over a fifth of handshakeTimeout)', async () => {
    const l = await tlsListener({ maxHandshakes: 1, handshakeTimeout: 1000 });
    const failed = next(l, 'handshakeError');
    const stalled = await stalledHello(l);
    await until(l, 'handshaking == 1', (i) => i.handshaking === 1);
    const stalledClosed = new Promise<void>((resolve) => stalled.once('close', () => resolve()));
    // A real client's ClientHello waits for the only slot; the stalled peer is closed to make room
    // (after 200 ms, long before its 1 s handshakeTimeout).
    const c = await tlsClient(l);
    expect(await c.request('served')).toBe('served');
    await stalledClosed;
    const event = await failed;
    expect(event.kind).toBe('stalled');
    expect(event.error).toMatchObject({ code: 'CORRAL_HANDSHAKE_TIMEOUT' });
    expect((await l.info()).handshakeFailures).toEqual({ timeout: 0, stalled: 1, error: 0 });
  });

  it('a lone stalled handshake is closed at handshakeTimeout, counted as timeout', async () => {
    const l = await tlsListener({ handshakeTimeout: 300 });
    const failed = next(l, 'handshakeError');
    const s = await stalledHello(l);
    const event = await failed;
    expect(event.kind).toBe('timeout');
    await new Promise<void>((resolve) => (s.destroyed ? resolve() : s.once('close', () => resolve())));
    expect((await l.info()).handshakeFailures).toEqual({ timeout: 1, stalled: 0, error: 0 });
  });
});

describe('setting maxConnections at run time', () => {
  it('raising it serves waiting sockets at once; lowering it closes nothing', async () => {
    const l = await tcpListener({ maxConnections: 1 });
    const a = await tcpClient(l);
    expect(await a.request('a')).toBe('a');
    const w: LineClient[] = [];
    for (let k = 1; k <= 2; k++) {
      const c = await tcpClient(l);
      c.send(`w${k}`);
      w.push(c);
      await until(l, `waiting == ${k}`, (i) => i.waiting === k);
    }

    l.maxConnections = 3;
    expect(l.maxConnections).toBe(3);
    // Served synchronously: the queue is empty as soon as the setter returns.
    expect(await l.info()).toMatchObject({ maxConnections: 3, waiting: 0, active: 3 });
    expect(await Promise.all(w.map((c) => c.line()))).toEqual(['w1', 'w2']);

    l.maxConnections = 1;
    expect(l.maxConnections).toBe(1);
    const all = [a, ...w];
    expect(await Promise.all(all.map((c, i) => c.request(`again${i}`)))).toEqual(['again0', 'again1', 'again2']);
    expect(await l.info()).toMatchObject({ maxConnections: 1, connections: 3, active: 3, closed: 0 });

    // New sockets wait until the count is below the new limit.
    const late = await tcpClient(l);
    late.send('late');
    await until(l, 'waiting == 1', (i) => i.waiting === 1);
    a.end();
    w[0]!.end();
    await l.waitForConnections('==', 1);
    expect(await w[1]!.request('still')).toBe('still');
    expect(await l.info()).toMatchObject({ active: 1, waiting: 1 });
    expect(received(late)).toBe(0);
    w[1]!.end();
    expect(await late.line()).toBe('late');
  });

  it('rejects values that are not an integer >= 1 or Infinity, naming maxConnections', async () => {
    const l = await tcpListener({ maxConnections: 5 });
    for (const bad of [0, -1, 1.5, Number.NaN, -Infinity, undefined]) {
      let thrown: unknown;
      try {
        (l as { maxConnections: unknown }).maxConnections = bad;
      } catch (err) {
        thrown = err;
      }
      expect(thrown, `maxConnections = ${bad}`).toBeInstanceOf(InvalidOptionError);
      expect((thrown as InvalidOptionError).option).toBe('maxConnections');
      expect((thrown as Error).message).toMatch(/maxConnections/);
      expect(l.maxConnections).toBe(5);
    }
    l.maxConnections = Infinity;
    expect(l.maxConnections).toBe(Infinity);
    const c = await tcpClient(l);
    expect(await c.request('ok')).toBe('ok');
  });
});

describe('removeFromCount', () => {
  /** Echoes; the line `uncount` removes the connection from the count first. */
  const uncountProtocol: ProtocolHandler = {
    onFrame(frame, conn) {
      if (frame.toString() === 'uncount') conn.removeFromCount();
      conn.sendFrame(frame);
    },
  };

  it('frees the slot: a waiting client is served; the connection stays listed with counted: false', async () => {
    const l = await tcpListener({ maxConnections: 1, protocol: uncountProtocol });
    const a = await tcpClient(l);
    expect(await a.request('a')).toBe('a');
    const b = await tcpClient(l);
    b.send('b');
    await until(l, 'waiting == 1', (i) => i.waiting === 1);

    expect(await a.request('uncount')).toBe('uncount');
    expect(await b.line()).toBe('b');
    expect(await l.info()).toMatchObject({ active: 1, connections: 2, waiting: 0 });
    const aPort = (a.stream as net.Socket).localPort;
    const bPort = (b.stream as net.Socket).localPort;
    const list = await l.connections();
    const port = (c: (typeof list)[number]): number | undefined => (c.remote.family === 'IPv4' || c.remote.family === 'IPv6' ? c.remote.port : undefined);
    expect(list.find((c) => port(c) === aPort)?.counted).toBe(false);
    expect(list.find((c) => port(c) === bPort)?.counted).toBe(true);

    // Idempotent: removing again frees nothing more, so a third client waits behind b.
    expect(await a.request('uncount')).toBe('uncount');
    const c = await tcpClient(l);
    c.send('c');
    await until(l, 'waiting == 1', (i) => i.waiting === 1);
    expect(await l.info()).toMatchObject({ active: 1, connections: 2 });

    // Closing the uncounted connection frees nothing either.
    a.end();
    await l.waitForConnections('==', 1);
    expect(await b.request('b2')).toBe('b2');
    expect(await l.info()).toMatchObject({ active: 1, waiting: 1, closed: 1 });
    expect(received(c)).toBe(0);

    // Only b leaving frees the slot.
    b.end();
    expect(await c.line()).toBe('c');
  });

  it('drops active without any waiter', async () => {
    const l = await tcpListener({ maxConnections: 1, protocol: uncountProtocol });
    const a = await tcpClient(l);
    expect(await a.request('a')).toBe('a');
    expect((await l.info()).active).toBe(1);
    expect(await a.request('uncount')).toBe('uncount');
    expect(await l.info()).toMatchObject({ active: 0, connections: 1 });
    // The limit of 1 no longer holds a, so b is served at once while a lives on.
    const b = await tcpClient(l);
    expect(await b.request('b')).toBe('b');
    expect(await a.request('a2')).toBe('a2');
    expect(await l.info()).toMatchObject({ active: 1, connections: 2 });
  });
});

describe('the wait queue', () => {
  it('closes a socket that finds the queue full (maxWaiting) and reports queue_full', async () => {
    const l = await tcpListener({ maxConnections: 1, maxWaiting: 1 });
    const a = await tcpClient(l);
    expect(await a.request('a')).toBe('a');
    const w = await tcpClient(l);
    w.send('w');
    await until(l, 'waiting == 1', (i) => i.waiting === 1);

    const rejected = next(l, 'reject');
    const c = await tcpClient(l);
    const event = await rejected;
    expect(event).toMatchObject({ reason: 'queue_full', remoteAddress: HOST, remotePort: (c.stream as net.Socket).localPort });
    await c.closed;
    expect(received(c)).toBe(0);
    expect(await l.info()).toMatchObject({ accepted: 3, waiting: 1, rejected: { queue_full: 1, wait_timeout: 0, shutdown: 0 } });

    // The waiting socket kept its place.
    a.end();
    expect(await w.line()).toBe('w');
  });

  it('with maxWaiting 0 closes every socket beyond the limit at once', async () => {
    const l = await tcpListener({ maxConnections: 1, maxWaiting: 0 });
    const a = await tcpClient(l);
    expect(await a.request('a')).toBe('a');
    const rejected = next(l, 'reject');
    const c = await tcpClient(l);
    expect((await rejected).reason).toBe('queue_full');
    await c.closed;
    expect(await l.info()).toMatchObject({ waiting: 0, rejected: { queue_full: 1 } });
    expect(await a.request('a2')).toBe('a2');
  });

  it("overflow 'refuse' (default): closes the listening socket at the first overflow and reopens once the queue has room", async () => {
    const l = await tcpListener({ maxConnections: 1, maxWaiting: 1 });
    const events: boolean[] = [];
    l.on('queueFull', (full) => events.push(full));
    const { a, w } = await servedAndWaiting(l);
    // The first socket that finds the queue full is closed, as with 'close', and the listener stops listening.
    await overflowOnce(l);
    const info = await until(l, 'refusing', (i) => i.refusing);
    expect(info).toMatchObject({ status: 'running', overflows: 1, rejected: { queue_full: 1 } });
    expect(events).toEqual([true]);
    // Now the kernel refuses: no accept, no TLS, no byte on either side.
    expect(await connectFails(l.port!)).toBe('ECONNREFUSED');
    expect((await l.info()).accepted).toBe(3);

    // a leaves, w is served, the queue is empty (≤ 3/4 of 1): the socket reopens.
    const reopened = new Promise<void>((resolve) => l.once('queueFull', (full) => !full && resolve()));
    a.end();
    expect(await w.line()).toBe('w');
    await reopened;
    expect(await l.info()).toMatchObject({ refusing: false });
    const d = await tcpClient(l);
    d.send('d');
    w.end();
    expect(await d.line()).toBe('d');
    expect(events).toEqual([true, false]);
  });

  it("overflow 'close': keeps listening and closes every socket that finds the queue full", async () => {
    const l = await tcpListener({ maxConnections: 1, maxWaiting: 1, overflow: 'close' });
    await servedAndWaiting(l);
    await overflowOnce(l);
    await overflowOnce(l);
    expect(await l.info()).toMatchObject({ refusing: false, overflows: 1, accepted: 4, rejected: { queue_full: 2 } });
  });

  it("overflow 'drop-oldest': keeps listening, closes the socket that waited longest and keeps the new one", async () => {
    const l = await tcpListener({ maxConnections: 1, maxWaiting: 1, overflow: 'drop-oldest' });
    const { a, w } = await servedAndWaiting(l);
    const rejected = next(l, 'reject');
    const fresh = await tcpClient(l);
    fresh.send('fresh');
    expect((await rejected).reason).toBe('queue_full');
    await w.closed; // the one that waited longest made room
    expect(await l.info()).toMatchObject({ refusing: false, waiting: 1, rejected: { queue_full: 1 } });
    a.end();
    expect(await fresh.line()).toBe('fresh');
  });

  it("overflow 'refuse' with maxWaiting 0 reopens once a slot is free; a suspend meanwhile keeps it closed until resume", async () => {
    const l = await tcpListener({ maxConnections: 1, maxWaiting: 0 });
    const a = await tcpClient(l);
    expect(await a.request('a')).toBe('a');
    await overflowOnce(l);
    await until(l, 'refusing', (i) => i.refusing);

    // Suspended while refusing: room comes back, but the socket stays closed until resume().
    await l.suspend();
    const room = new Promise<void>((resolve) => l.once('queueFull', (full) => !full && resolve()));
    a.end();
    await room;
    expect(await l.info()).toMatchObject({ status: 'suspended', refusing: false });
    expect(await connectFails(l.port!)).toBe('ECONNREFUSED');
    await l.resume();
    const b = await tcpClient(l);
    expect(await b.request('b')).toBe('b');
  });

  it('closes a socket that waited longer than waitTimeout and reports wait_timeout', async () => {
    const l = await tcpListener({ maxConnections: 1, waitTimeout: 200 });
    const a = await tcpClient(l);
    expect(await a.request('a')).toBe('a');
    const rejected = next(l, 'reject');
    const w = await tcpClient(l);
    w.send('w');
    const event = await rejected;
    expect(event).toMatchObject({ reason: 'wait_timeout', remoteAddress: HOST, remotePort: (w.stream as net.Socket).localPort });
    await w.closed;
    expect(received(w)).toBe(0);
    expect(await l.info()).toMatchObject({ waiting: 0, accepted: 2, opened: 1, rejected: { queue_full: 0, wait_timeout: 1, shutdown: 0 } });
    // The served connection is unaffected.
    expect(await a.request('a2')).toBe('a2');
  });

  /** Records the first line of each connection, echoes it and closes, freeing the slot. */
  function oneShot(order: string[]): ProtocolHandler {
    return {
      onFrame(frame, conn) {
        order.push(frame.toString());
        conn.sendFrame(frame);
        void conn.close();
      },
    };
  }

  it.each<[AdmissionPolicy, string[]]>([
    ['fifo', ['w1', 'w2', 'w3']],
    ['lifo', ['w3', 'w2', 'w1']],
    // A young queue (far below adaptiveTarget) is served oldest first.
    ['adaptive', ['w1', 'w2', 'w3']],
  ])('admission %s serves waiting sockets in order %j', async (admission, expected) => {
    const order: string[] = [];
    const l = await tcpListener({ maxConnections: 1, admission, adaptiveTarget: 60_000, protocol: oneShot(order) });
    const holder = await tcpClient(l);
    await l.waitForConnections('==', 1);
    const waiters: LineClient[] = [];
    for (let k = 1; k <= 3; k++) {
      const c = await tcpClient(l);
      c.send(`w${k}`);
      waiters.push(c);
      await until(l, `waiting == ${k}`, (i) => i.waiting === k);
    }
    expect(order).toEqual([]);
    holder.destroy();
    expect(await Promise.all(waiters.map((c) => c.line()))).toEqual(['w1', 'w2', 'w3']);
    await Promise.all(waiters.map((c) => c.closed));
    expect(order).toEqual(expected);
    await l.waitForConnections('==', 0);
    expect(await l.info()).toMatchObject({ accepted: 4, opened: 4, closed: 4, waiting: 0 });
  });
});

describe('many connections', () => {
  it('serves 2,000 concurrent connections, each doing an echo round trip', async () => {
    const total = 2000;
    const l = await tcpListener({ maxConnections: 2500 }, 2048);
    const clients: LineClient[] = [];
    for (let done = 0; done < total; done += 250) {
      clients.push(...(await Promise.all(Array.from({ length: Math.min(250, total - done) }, () => tcpClient(l)))));
    }
    const replies = await Promise.all(clients.map((c, i) => c.request(`n${i}`)));
    expect(replies).toEqual(clients.map((_, i) => `n${i}`));
    await l.waitForConnections('==', total);
    expect(await l.info()).toMatchObject({ accepted: total, opened: total, connections: total, active: total, waiting: 0, handshaking: 0 });
    expect((await l.connections()).length).toBe(total);

    for (const c of clients) c.end();
    await Promise.all(clients.map((c) => c.closed));
    await l.waitForConnections('==', 0, { timeout: 10_000 });
    expect(await l.info()).toMatchObject({
      accepted: total,
      opened: total,
      closed: total,
      connections: 0,
      active: 0,
      rejected: { queue_full: 0, wait_timeout: 0, shutdown: 0 },
    });
  });
});

describe('info counters', () => {
  /** Every accepted socket is exactly one of: opened, silent, handshaking, waiting, rejected, failed, given up. */
  function balanced(i: ListenerInfo): void {
    const rejected = Object.values(i.rejected).reduce((a, b) => a + b, 0);
    const failed = Object.values(i.handshakeFailures).reduce((a, b) => a + b, 0);
    expect(i.accepted).toBe(i.opened + i.silent + i.handshaking + i.waiting + rejected + failed + i.gaveUp);
    expect(i.opened - i.closed).toBe(i.connections);
  }

  it('accepted, opened, closed, active, waiting and rejected add up across a scenario', async () => {
    const l = await tcpListener({ maxConnections: 2, maxWaiting: 1 });
    let info = await l.info();
    expect(info).toMatchObject({ accepted: 0, opened: 0, closed: 0, active: 0, waiting: 0, connections: 0 });
    balanced(info);

    const a = await tcpClient(l);
    const b = await tcpClient(l);
    expect(await a.request('a')).toBe('a');
    expect(await b.request('b')).toBe('b');
    const c = await tcpClient(l);
    c.send('c');
    await until(l, 'waiting == 1', (i) => i.waiting === 1);
    const rejected = next(l, 'reject');
    const d = await tcpClient(l);
    expect((await rejected).reason).toBe('queue_full');
    await d.closed;
    info = await l.info();
    expect(info).toMatchObject({ accepted: 4, opened: 2, closed: 0, active: 2, connections: 2, waiting: 1, rejected: { queue_full: 1 } });
    balanced(info);

    a.end();
    expect(await c.line()).toBe('c');
    await a.closed;
    await l.waitForConnections('==', 2);
    info = await l.info();
    expect(info).toMatchObject({ accepted: 4, opened: 3, closed: 1, active: 2, connections: 2, waiting: 0 });
    balanced(info);

    b.end();
    c.end();
    await l.waitForConnections('==', 0);
    info = await l.info();
    expect(info).toMatchObject({ accepted: 4, opened: 3, closed: 3, active: 0, connections: 0, waiting: 0, handshaking: 0 });
    balanced(info);
  });
});
