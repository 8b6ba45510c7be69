/**
 * The connection lifecycle as ProtocolHandler's doc comment promises it, over every transport of
 * the shared suite: one ordered queue (frames, then the peer's end), onRemoteClose that cannot leak,
 * drains that keep their replies and count `forced` truthfully, a hook that answers crashes, the
 * live connection set, and the ordering of events around onReady.
 */
import diagnosticsChannel from 'node:diagnostics_channel';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type Connection,
  type ConnectionOpenMessage,
  getListener,
  type Listener,
  type ListenerSettings,
  type ProtocolHandler,
  startListener,
} from '../src/index.js';
import { LineClient, once } from './support/clients.js';
import { within } from './support/within.js';
import { type TransportCase, transportCases, uniqueName } from './support/transports.js';

const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let started: Listener[] = [];
let streams: Duplex[] = [];

afterEach(async () => {
  for (const s of streams.splice(0)) s.destroy();
  await Promise.all(started.splice(0).map((l) => (l.status === 'stopped' ? undefined : l.stop({ timeout: 500 }))));
});

async function listen(tc: TransportCase, protocol: ProtocolHandler | ((conn: Connection) => ProtocolHandler), options: Omit<ListenerSettings, 'name'> = {}): Promise<Listener> {
  const l = await startListener({ name: uniqueName('life'), framing: 'line', ...(await tc.listenerOptions()), ...options, protocol });
  started.push(l);
  return l;
}

/** A client stream that collects every line it receives until the server closes. */
async function client(tc: TransportCase, l: Listener, connect?: () => Promise<Duplex>): Promise<{ stream: Duplex; lines: Promise<string[]> }> {
  const stream = await (connect ? connect() : tc.connect(l));
  stream.on('error', () => {});
  // Like a TCP socket without allowHalfOpen: end our side once the server ended its.
  stream.on('end', () => stream.end());
  streams.push(stream);
  const lines = new Promise<string[]>((resolve) => {
    let buf = '';
    stream.setEncoding('utf8');
    stream.on('data', (d: string) => (buf += d));
    stream.once('close', () => resolve(buf.split('\n').filter((x) => x !== '')));
  });
  return { stream, lines };
}

const echoSync: ProtocolHandler = {
  onFrame(frame, conn) {
    conn.sendFrame(`re:${frame.toString()}`);
  },
};

const echoAsync: ProtocolHandler = {
  async onFrame(frame, conn) {
    await delay(5);
    conn.sendFrame(`re:${frame.toString()}`);
  },
};

describe.each(transportCases())('the connection lifecycle over $name', (tc) => {
  afterEach(() => tc.cleanup());

  it.each([
    ['sync', echoSync],
    ['async', echoAsync],
  ])('a pipelined client that half-closes after N requests gets N replies (%s onFrame)', async (_kind, protocol) => {
    const l = await listen(tc, protocol);
    const c = await client(tc, l);
    c.stream.write('a\nb\nc\nd\n');
    c.stream.end();
    expect(await c.lines).toEqual(['re:a', 're:b', 're:c', 're:d']);
    await l.waitForConnections('==', 0);
    expect((await l.info()).closed).toBe(1);
  });

  it('an onRemoteClose that only logs leaks nothing: the connection closes when it returns', async () => {
    const seen: string[] = [];
    const l = await listen(tc, { ...echoAsync, onRemoteClose: (conn) => void seen.push(conn.id) });
    const c = await client(tc, l);
    c.stream.write('x\n');
    c.stream.end();
    expect(await c.lines).toEqual(['re:x']);
    await l.waitForConnections('==', 0);
    expect(seen).toHaveLength(1);
  });

  it('an async onRemoteClose answers after an await; the connection closes when it settles', async () => {
    const l = await listen(tc, {
      ...echoSync,
      async onRemoteClose(conn) {
        expect(conn.peerEnded).toBe(true);
        await delay(20);
        conn.sendFrame('bye');
      },
    });
    const c = await client(tc, l);
    c.stream.write('x\n');
    c.stream.end();
    expect(await c.lines).toEqual(['re:x', 'bye']);
    await l.waitForConnections('==', 0);
  });

  it('an onRemoteClose that never settles is bounded by shutdownTimeout', async () => {
    const l = await listen(tc, { onRemoteClose: () => new Promise(() => {}) }, { shutdownTimeout: 200 });
    const c = await client(tc, l);
    c.stream.end();
    await c.lines;
    await l.waitForConnections('==', 0, { timeout: 2000 });
  });

  it('stop() lets a hook in flight finish and flushes its reply; the close counts as graceful', async () => {
    const inFlight = deferred();
    const l = await listen(tc, {
      async onFrame(frame, conn) {
        inFlight.resolve();
        await delay(300);
        conn.sendFrame(`done:${frame.toString()}`);
      },
    });
    const c = await client(tc, l);
    c.stream.write('slow\n');
    await inFlight.promise;
    const result = await l.stop({ timeout: 2000 });
    expect(await c.lines).toEqual(['done:slow']);
    expect(result).toMatchObject({ connections: 1, closedGracefully: 1, forced: 0 });
  });

  it('a drain cut by its deadline counts the connection as forced, never graceful', async () => {
    const replies: boolean[] = [];
    const inFlight = deferred();
    const l = await listen(tc, {
      async onFrame(_frame, conn) {
        inFlight.resolve();
        await delay(600);
        replies.push(conn.sendFrame('too late'));
      },
    });
    const c = await client(tc, l);
    c.stream.write('slow\n');
    await inFlight.promise;
    const result = await l.drain({ timeout: 100 });
    expect(result).toMatchObject({ connections: 1, closedGracefully: 0, forced: 1 });
    expect(await c.lines).toEqual([]);
    await delay(600);
    expect(replies).toEqual([false]);
  });

  // The memory transport hands every write to its peer's buffer at once: nothing is ever unsent.
  it.skipIf(tc.name === 'memory')("a connection whose peer does not read its last reply is destroyed by the close's linger bound: the drain counts it forced, not graceful", async () => {
    const asked = deferred();
    const l = await listen(
      tc,
      {
        onFrame: () => asked.resolve(),
        onShutdown(conn) {
          // A reply far larger than the socket buffers: it cannot be flushed to a peer that does not read.
          conn.sendFrame('x'.repeat(8 * 1024 * 1024));
          void conn.close();
        },
      },
      { shutdownTimeout: 300, maxSendBuffer: 64 * 1024 * 1024 },
    );
    const c = await client(tc, l);
    c.stream.write('hello\n');
    await asked.promise;
    c.stream.pause(); // and never reads again
    const result = await within(l.drain({ timeout: 10_000 }), 8000, 'the drain');
    expect(result).toMatchObject({ connections: 1, closedGracefully: 0, forced: 1 });
  });

  it('stop({ timeout }) during a long drain keeps its own, sooner deadline (a SIGTERM grace period): the drain is cut there', async () => {
    const inFlight = deferred();
    const l = await listen(tc, {
      async onFrame(_frame, conn) {
        inFlight.resolve();
        await delay(60_000); // a request that outlives any grace period
        conn.sendFrame('too late');
      },
    });
    const c = await client(tc, l);
    c.stream.write('slow\n');
    await inFlight.promise;
    const drain = l.drain({ timeout: 60_000 });
    const stop = l.stop({ timeout: 100 });
    const result = await within(stop, 5000, 'the stop, cut at its own deadline');
    expect(result).toMatchObject({ connections: 1, closedGracefully: 0, forced: 1 });
    expect(await within(drain, 5000, 'the drain the stop cut short')).toMatchObject({ forced: 1 });
    expect(await c.lines).toEqual([]);
  });

  it('onCrash answers a crash before the connection closes; a crash inside onCrash is counted, not answered', async () => {
    const crashes: string[] = [];
    const l = await listen(tc, {
      onFrame(frame) {
        throw new Error(`bad ${frame.toString()}`);
      },
      onCrash(error, conn, crash) {
        conn.sendFrame(`error: ${(error as Error).message} in ${crash.hook}`);
        throw new Error('and the answer fails too');
      },
    });
    l.on('handlerCrash', (e) => crashes.push(e.hook));
    const c = await client(tc, l);
    c.stream.write('x\n');
    expect(await c.lines).toEqual(['error: bad x in onFrame']);
    expect(crashes).toEqual(['onFrame', 'onCrash']);
    expect((await l.info()).handlerCrashes).toBe(2);
  });

  it('with restart transient, onCrash answers, then a fresh handler takes over with conn.data reset', async () => {
    const l = await listen(
      tc,
      {
        onReady(conn) {
          conn.sendFrame(`ready ${conn.restarts} data=${String(conn.data)}`);
          conn.data = 'set';
        },
        onFrame(frame, conn) {
          if (frame.toString() === 'crash') throw new Error('boom');
          conn.sendFrame(`re:${frame.toString()}`);
        },
        onCrash(_error, conn, crash) {
          conn.sendFrame(`sorry (restarted: ${crash.restarted})`);
        },
      },
      { restart: 'transient' },
    );
    const c = await client(tc, l);
    c.stream.write('crash\nafter\n');
    c.stream.end();
    expect(await c.lines).toEqual(['ready 0 data=undefined', 'sorry (restarted: true)', 'ready 1 data=undefined', 're:after']);
  });

  it('with restart transient, the fresh handler keeps the conn.data its factory set; onCrash saw the old one', async () => {
    let made = 0;
    const l = await listen(
      tc,
      (conn: Connection): ProtocolHandler => {
        conn.data = { made: ++made, n: 0 };
        return {
          onReady(c) {
            c.sendFrame(`ready ${c.restarts} data=${JSON.stringify(c.data)}`);
          },
          onFrame(frame, c) {
            if (frame.toString() === 'crash') throw new Error('boom');
            (c.data as { n: number }).n++;
            c.sendFrame(`re:${frame.toString()} data=${JSON.stringify(c.data)}`);
          },
          onCrash(_error, c) {
            c.sendFrame(`sorry data=${JSON.stringify(c.data)}`);
          },
        };
      },
      { restart: 'transient' },
    );
    const c = await client(tc, l);
    c.stream.write('one\ncrash\nafter\n');
    c.stream.end();
    expect(await c.lines).toEqual([
      'ready 0 data={"made":1,"n":0}',
      're:one data={"made":1,"n":1}',
      'sorry data={"made":1,"n":1}',
      'ready 1 data={"made":2,"n":0}',
      're:after data={"made":2,"n":1}',
    ]);
  });

  it('with restart transient, a connection that onCrash closes is not restarted, and no restart is counted', async () => {
    let readies = 0;
    const l = await listen(
      tc,
      {
        onReady() {
          readies++;
        },
        onFrame(frame) {
          if (frame.toString() === 'crash') throw new Error('boom');
        },
        async onCrash(_error, conn, crash) {
          await delay(5);
          conn.sendFrame(`sorry (restarted: ${crash.restarted}), bye`);
          void conn.close();
        },
      },
      { restart: 'transient' },
    );
    const crashes: boolean[] = [];
    l.on('handlerCrash', (e) => crashes.push(e.restarted));
    const c = await client(tc, l);
    c.stream.write('crash\nnever read\n');
    expect(await c.lines).toEqual(['sorry (restarted: true), bye']);
    await l.waitForConnections('==', 0);
    expect(readies).toBe(1);
    expect(crashes).toEqual([true]);
    const info = await l.info();
    expect(info.handlerCrashes).toBe(1);
    expect(info.handlerRestarts).toBe(0);
  });

  it.each(['onFrameError', 'onRemoteClose'] as const)('an async onCrash answers a crash of %s before the connection closes', async (hook) => {
    const crash = (): never => {
      throw new Error(`${hook} broke`);
    };
    const l = await listen(
      tc,
      {
        onFrame(frame, conn) {
          conn.sendFrame(`re:${frame.toString()}`);
        },
        ...(hook === 'onFrameError' ? { onFrameError: crash } : { onRemoteClose: crash }),
        async onCrash(error, conn, info) {
          await new Promise((resolve) => setTimeout(resolve, 20));
          conn.sendFrame(`sorry ${info.hook}: ${(error as Error).message}`);
        },
      },
      hook === 'onFrameError' ? { framing: { type: 'line', maxLength: 16 } } : {},
    );
    const c = await client(tc, l);
    c.stream.write(hook === 'onFrameError' ? 'ok\nthis line is far too long for 16 bytes\n' : 'ok\n');
    if (hook === 'onRemoteClose') c.stream.end();
    expect(await c.lines).toEqual(['re:ok', `sorry ${hook}: ${hook} broke`]);
  });

  it('a handler reaches every live connection of its listener: a broadcast', async () => {
    const l = await listen(tc, {
      onFrame(frame, conn) {
        for (const other of getListener(conn.listener)!.localConnections()) other.sendFrame(`${conn.id}: ${frame.toString()}`);
      },
    });
    const a = new LineClient(track(await tc.connect(l)));
    const b = new LineClient(track(await tc.connect(l)));
    await l.waitForConnections('==', 2);
    expect(l.localConnections().size).toBe(2);
    a.send('hello all');
    const [fromA, fromB] = await Promise.all([a.line(), b.line()]);
    expect(fromA).toMatch(/: hello all$/);
    expect(fromB).toBe(fromA);
  });

  it('corral:connection:open is published, and connectionOpen emitted, before onReady', async () => {
    const order: string[] = [];
    const onOpen = (m: unknown): void => void order.push(`channel ${(m as ConnectionOpenMessage).id}`);
    diagnosticsChannel.subscribe('corral:connection:open', onOpen);
    try {
      const l = await listen(tc, { onReady: (conn) => void order.push(`onReady ${conn.id}`) });
      l.on('connectionOpen', (info) => order.push(`event ${info.id}`));
      track(await tc.connect(l));
      await l.waitForConnections('==', 1);
      const id = [...l.localConnections()][0]!.id;
      expect(order.filter((o) => o.endsWith(id))).toEqual([`event ${id}`, `channel ${id}`, `onReady ${id}`]);
    } finally {
      diagnosticsChannel.unsubscribe('corral:connection:open', onOpen);
    }
  });
});

describe.each(['TLSv1.2', 'TLSv1.3'] as const)('half-close over TLS with a %s client', (version) => {
  it('a pipelined client that ends after N requests (its close_notify sent) gets N replies', async () => {
    const tc = transportCases().find((t) => t.name === 'tls')!;
    const l = await listen(tc, echoAsync);
    const c = await client(tc, l, async () => {
      const s = tls.connect({ port: l.port!, host: '127.0.0.1', rejectUnauthorized: false, maxVersion: version, minVersion: version });
      await once(s, 'secureConnect');
      return s;
    });
    expect((c.stream as tls.TLSSocket).getProtocol()).toBe(version);
    c.stream.write('1\n2\n3\n');
    c.stream.end();
    expect(await c.lines).toEqual(['re:1', 're:2', 're:3']);
  });
});

function track(s: Duplex): Duplex {
  s.on('error', () => {});
  s.on('end', () => s.end());
  streams.push(s);
  return s;
}

/** A promise and its resolve function. */
function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}
