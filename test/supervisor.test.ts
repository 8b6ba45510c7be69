import diagnosticsChannel from 'node:diagnostics_channel';
import type { Duplex } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type CloseReason,
  type Connection,
  type HandlerCrashEvent,
  type HandlerCrashMessage,
  type Listener,
  type ListenerOptions,
  type ListenerSettings,
  type ProtocolSettings,
  type ProtocolHandler,
  startListener,
} from '../src/index.js';
import { connectTcp, LineClient } from './support/clients.js';
import { crashProtocol, echoProtocol, GreetingProtocol } from './support/protocols.js';
import { type TransportCase, transportCases, uniqueName } from './support/transports.js';
import { watchProcess } from './support/escaped-errors.js';

// ---- harness ------------------------------------------------------------------------------------

interface Closed {
  id: string;
  reason: CloseReason;
}

/** Everything a test starts, released in afterEach: listeners, client streams, subscriptions. */
function harness(tc?: TransportCase) {
  const listeners: Listener[] = [];
  const streams: Duplex[] = [];
  const cleanups: (() => void)[] = [];
  afterEach(async () => {
    for (const s of streams.splice(0)) s.destroy();
    await Promise.all(listeners.splice(0).map((l) => l.stop({ timeout: 1000 })));
    for (const c of cleanups.splice(0)) c();
    tc?.cleanup();
  });
  const h = {
    cleanups,
    /** Start a listener (on the transport case, TCP loopback without one) and remember it. */
    async start<O = undefined>(options: Omit<ListenerSettings, 'name'> & ProtocolSettings<O, unknown>): Promise<Listener> {
      const transport = tc ? await tc.listenerOptions() : { transport: 'tcp' as const, transportOptions: { host: '127.0.0.1', port: 0 } };
      const l = await startListener<O>({ name: uniqueName('sup'), ...transport, ...options } as ListenerOptions<O>);
      listeners.push(l);
      return l;
    },
    /** A raw client stream that, like a TCP socket without allowHalfOpen, ends when the server ends. */
    async stream(l: Listener): Promise<Duplex> {
      const s = tc ? await tc.connect(l) : await connectTcp(l.port!);
      s.on('end', () => s.end());
      s.on('error', () => {});
      streams.push(s);
      return s;
    },
    async client(l: Listener): Promise<LineClient> {
      return new LineClient(await h.stream(l));
    },
  };
  return h;
}

/** Record the listener's `connectionClose` events (emitted after the handler's onClose). */
function recordCloses(l: Listener): Closed[] {
  const log: Closed[] = [];
  l.on('connectionClose', (id, reason) => log.push({ id, reason }));
  return log;
}

function nextClose(l: Listener): Promise<Closed> {
  return new Promise((resolve) => l.once('connectionClose', (id, reason) => resolve({ id, reason })));
}

function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** Wraps a handler so every onClose call is recorded (to check it runs exactly once, last). */
function withCloseLog(handler: ProtocolHandler, log: Closed[]): ProtocolHandler {
  return {
    ...handler,
    onClose(conn, reason) {
      log.push({ id: conn.id, reason });
    },
  };
}

const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** One length-prefixed frame (u32 header). */
function lp(payload: string): Buffer {
  const body = Buffer.from(payload);
  const h = Buffer.alloc(4);
  h.writeUInt32BE(body.length, 0);
  return Buffer.concat([h, body]);
}

function decodeLp(buf: Buffer): string[] {
  const out: string[] = [];
  let i = 0;
  while (i + 4 <= buf.length) {
    const n = buf.readUInt32BE(i);
    out.push(buf.subarray(i + 4, i + 4 + n).toString());
    i += 4 + n;
  }
  return out;
}

// ---- crash containment and lifecycle, over every transport ---------------------------------------

describe.each(transportCases())('supervision over $name', (tc) => {
  const h = harness(tc);

  it('isolates a throwing and a rejecting handler: their connections close, 20 others keep echoing', async () => {
    const escaped = watchProcess(h.cleanups);
    const published: HandlerCrashMessage[] = [];
    const onMessage = (m: unknown): void => {
      published.push(m as HandlerCrashMessage);
    };
    diagnosticsChannel.subscribe('corral:handler:crash', onMessage);
    h.cleanups.push(() => diagnosticsChannel.unsubscribe('corral:handler:crash', onMessage));

    const l = await h.start({ protocol: crashProtocol, framing: 'line' });
    const crashes: HandlerCrashEvent[] = [];
    l.on('handlerCrash', (e) => crashes.push(e));
    const closes = recordCloses(l);

    const healthy = await Promise.all(Array.from({ length: 20 }, () => h.client(l)));
    const thrower = await h.client(l);
    const rejecter = await h.client(l);
    expect(await thrower.request('before')).toBe('before');
    expect(await rejecter.request('before')).toBe('before');
    await l.waitForConnections('==', 22);

    thrower.send('crash');
    rejecter.send('reject');
    await Promise.all([thrower.closed, rejecter.closed]);
    await l.waitForConnections('==', 20);

    for (let round = 0; round < 3; round++) {
      const replies = await Promise.all(healthy.map((c, i) => c.request(`healthy ${i} ${round}`)));
      expect(replies).toEqual(healthy.map((_, i) => `healthy ${i} ${round}`));
    }

    const info = await l.info();
    expect(info.handlerCrashes).toBe(2);
    expect(info.handlerRestarts).toBe(0);
    expect(info.connections).toBe(20);

    // The events name the crashed connections, the hook and the error.
    expect(crashes).toHaveLength(2);
    expect(crashes.every((c) => c.hook === 'onFrame' && c.restarted === false)).toBe(true);
    expect(crashes.map((c) => (c.error as Error).message).sort()).toEqual(['crash requested', 'reject requested']);
    const crashedIds = crashes.map((c) => c.id).sort();
    expect(new Set(crashedIds).size).toBe(2);
    expect(closes.map((c) => c.id).sort()).toEqual(crashedIds);
    expect(closes.every((c) => c.reason === 'crash')).toBe(true);
    const live = (await l.connections()).map((c) => c.id);
    for (const id of crashedIds) expect(live).not.toContain(id);

    // The diagnostics channel says the same.
    const mine = published.filter((m) => m.listener === l.name);
    expect(mine.map((m) => m.id).sort()).toEqual(crashedIds);
    expect(mine.every((m) => m.hook === 'onFrame' && m.restarted === false && m.error instanceof Error)).toBe(true);

    expect(escaped).toEqual([]);
  });

  it("restart 'transient': a fresh handler greets the same connection, up to maxRestarts within the period", async () => {
    const l = await h.start({ protocol: GreetingProtocol, framing: 'line', restart: 'transient', maxRestarts: 2, period: 10_000 });
    const crashes: HandlerCrashEvent[] = [];
    l.on('handlerCrash', (e) => crashes.push(e));
    const closes = recordCloses(l);
    const c = await h.client(l);

    expect(await c.line()).toBe('hello 0');
    expect(await c.request('a')).toBe('a');
    c.send('crash');
    expect(await c.line()).toBe('hello 1');
    expect(await c.request('b')).toBe('b');
    c.send('crash');
    expect(await c.line()).toBe('hello 2');
    expect(await c.request('c')).toBe('c');
    expect((await l.connections())[0]?.restarts).toBe(2);

    c.send('crash'); // the third crash within the period: no more restarts
    await c.closed;
    await l.waitForConnections('==', 0);

    const info = await l.info();
    expect(info.opened).toBe(1);
    expect(info.handlerRestarts).toBe(2);
    expect(info.handlerCrashes).toBe(3);
    expect(crashes.map((e) => e.restarted)).toEqual([true, true, false]);
    expect(new Set(crashes.map((e) => e.id)).size).toBe(1);
    expect(closes).toEqual([{ id: crashes[0]!.id, reason: 'crash' }]);
  });

  it('a crash in onReady (sync or async) closes the connection before anything is read', async () => {
    let n = 0;
    const frames: string[] = [];
    const l = await h.start({
      framing: 'line',
      protocol: {
        onReady() {
          if (++n === 1) throw new Error('ready broke');
          return Promise.reject(new Error('ready rejected'));
        },
        onFrame(frame) {
          frames.push(frame.toString());
        },
      },
    });
    const crashes: HandlerCrashEvent[] = [];
    l.on('handlerCrash', (e) => crashes.push(e));
    const closes = recordCloses(l);

    for (const expected of ['ready broke', 'ready rejected']) {
      const closed = nextClose(l);
      const c = await h.client(l);
      c.send('never delivered');
      await c.closed;
      expect(await closed).toMatchObject({ reason: 'crash' });
      expect(crashes.at(-1)).toMatchObject({ hook: 'onReady', restarted: false });
      expect((crashes.at(-1)!.error as Error).message).toBe(expected);
    }
    expect(frames).toEqual([]);
    expect(closes.map((c) => c.reason)).toEqual(['crash', 'crash']);
    expect((await l.info()).handlerCrashes).toBe(2);
  });

  it('a throwing factory or class constructor closes that connection, is counted, and the listener keeps serving', async () => {
    const escaped = watchProcess(h.cleanups);
    let made = 0;
    const factory = (): ProtocolHandler => {
      if (++made === 1) throw new Error('factory broke');
      return echoProtocol;
    };
    let built = 0;
    class Fragile implements ProtocolHandler {
      constructor() {
        if (++built === 1) throw new Error('constructor broke');
      }
      onFrame(frame: Buffer, conn: Connection): void {
        conn.sendFrame(frame);
      }
    }

    for (const [protocol, message] of [
      [factory, 'factory broke'],
      [Fragile, 'constructor broke'],
    ] as const) {
      const l = await h.start({ protocol, framing: 'line' });
      const crashes: HandlerCrashEvent[] = [];
      l.on('handlerCrash', (e) => crashes.push(e));
      const closed = nextClose(l);
      const broken = await h.client(l);
      await broken.closed;
      expect(await closed).toMatchObject({ reason: 'crash' });
      expect(crashes).toHaveLength(1);
      expect(crashes[0]).toMatchObject({ hook: 'onReady', restarted: false });
      expect((crashes[0]!.error as Error).message).toBe(message);

      const fine = await h.client(l);
      expect(await fine.request('still serving')).toBe('still serving');
      const info = await l.info();
      expect(info.handlerCrashes).toBe(1);
      expect(info.opened).toBe(2);
    }
    expect(escaped).toEqual([]);
  });

  // The peer half-closes: onRemoteClose may still answer (the TCP transport keeps allowHalfOpen),
  // and the connection closes once it settles.
  it('an onRemoteClose hook can still answer on the half-closed connection, then close', async () => {
    const sent: boolean[] = [];
    const l = await h.start({
      framing: 'line',
      protocol: {
        onFrame(frame, conn) {
          conn.sendFrame(frame);
        },
        async onRemoteClose(conn) {
          await Promise.resolve();
          sent.push(conn.sendFrame('bye'));
          await conn.close();
        },
      },
    });
    const c = await h.client(l);
    c.send('last');
    c.end();
    expect(await c.line()).toBe('last');
    expect(await c.line()).toBe('bye');
    await c.closed;
    expect(sent).toEqual([true]);
  });

  describe('onClose runs exactly once, last, with the reason', () => {
    const handler = (log: Closed[]): ProtocolHandler =>
      withCloseLog(
        {
          onFrame(frame, conn) {
            const text = frame.toString();
            if (text === 'quit') {
              void conn.close();
              return;
            }
            if (text === 'crash') throw new Error('crash requested');
            conn.sendFrame(frame);
          },
        },
        log,
      );

    /** Open one connection, act, and return the reasons onClose and connectionClose saw. */
    async function closeWith(
      act: (c: LineClient, l: Listener) => unknown,
      options: Omit<ListenerSettings, 'name'> = {},
    ): Promise<{ onClose: Closed[]; event: Closed }> {
      const log: Closed[] = [];
      const l = await h.start({ protocol: handler(log), framing: 'line', ...options });
      const c = await h.client(l);
      expect(await c.request('hi')).toBe('hi');
      const closed = nextClose(l);
      await act(c, l);
      await c.closed;
      const event = await closed;
      await l.stop({ timeout: 1000 });
      return { onClose: log, event };
    }

    it("'remote' when the client ends (the default onRemoteClose closes)", async () => {
      const { onClose, event } = await closeWith((c) => c.end());
      expect(onClose).toEqual([event]);
      expect(event.reason).toBe('remote');
    });

    it("'local' when the handler closes", async () => {
      const { onClose, event } = await closeWith((c) => c.send('quit'));
      expect(onClose).toEqual([event]);
      expect(event.reason).toBe('local');
    });

    it("'crash' when a hook throws", async () => {
      const { onClose, event } = await closeWith((c) => c.send('crash'));
      expect(onClose).toEqual([event]);
      expect(event.reason).toBe('crash');
    });

    it("'frame_error' when a line is over maxLength", async () => {
      const { onClose, event } = await closeWith((c) => c.send('x'.repeat(64)), { framing: { type: 'line', maxLength: 16 } });
      expect(onClose).toEqual([event]);
      expect(event.reason).toBe('frame_error');
    });

    it("'shutdown' for every connection on drain", async () => {
      const log: Closed[] = [];
      const l = await h.start({ protocol: handler(log), framing: 'line' });
      const clients = await Promise.all([h.client(l), h.client(l), h.client(l)]);
      for (const c of clients) expect(await c.request('hi')).toBe('hi');
      const result = await l.drain({ timeout: 2000 });
      await Promise.all(clients.map((c) => c.closed));
      expect(result).toMatchObject({ connections: 3, closedGracefully: 3, forced: 0 });
      expect(log.map((e) => e.reason)).toEqual(['shutdown', 'shutdown', 'shutdown']);
      expect(new Set(log.map((e) => e.id)).size).toBe(3);
      await l.stop({ timeout: 1000 });
      expect(log).toHaveLength(3);
    });
  });
});

// ---- handler forms ---------------------------------------------------------------------------

describe('handler forms', () => {
  const h = harness();

  it('a plain object is shared; per-connection state lives on conn.data', async () => {
    const counting: ProtocolHandler = {
      onFrame(_frame, conn) {
        conn.data = ((conn.data as number | undefined) ?? 0) + 1;
        conn.sendFrame(String(conn.data));
      },
    };
    const l = await h.start({ protocol: counting, framing: 'line' });
    const a = await h.client(l);
    const b = await h.client(l);
    expect([await a.request('x'), await a.request('x'), await b.request('x'), await a.request('x'), await b.request('x')]).toEqual([
      '1',
      '2',
      '1',
      '3',
      '2',
    ]);
  });

  it('a class gets one instance per connection, with its state in fields and protocolOptions in the constructor', async () => {
    class Counter implements ProtocolHandler {
      private lines = 0;
      constructor(
        _conn: Connection,
        private readonly options: { label: string },
      ) {}
      onFrame(_frame: Buffer, conn: Connection): void {
        conn.sendFrame(`${this.options.label} ${++this.lines}`);
      }
    }
    const l = await h.start({ protocol: Counter, protocolOptions: { label: 'n' }, framing: 'line' });
    const a = await h.client(l);
    const b = await h.client(l);
    expect(await a.request('x')).toBe('n 1');
    expect(await b.request('x')).toBe('n 1');
    expect(await a.request('x')).toBe('n 2');
    expect(await a.request('x')).toBe('n 3');
    expect(await b.request('x')).toBe('n 2');
  });

  it('a factory receives protocolOptions; setProtocolOptions applies to new connections only', async () => {
    const factory = (_conn: Connection, options: { prefix: string }): ProtocolHandler => ({
      onFrame(frame, conn) {
        conn.sendFrame(`${options.prefix}${frame.toString()}`);
      },
    });
    const l = await h.start({ protocol: factory, protocolOptions: { prefix: 'v1:' }, framing: 'line' });
    const old = await h.client(l);
    expect(await old.request('a')).toBe('v1:a');

    l.setProtocolOptions({ prefix: 'v2:' });
    const fresh = await h.client(l);
    expect(await fresh.request('b')).toBe('v2:b');
    expect(await old.request('c')).toBe('v1:c');
  });
});

// ---- ordering and flow control ---------------------------------------------------------------------

describe('ordering and flow control', () => {
  const h = harness();

  it('async hooks: frames are answered in order and never delivered while a hook is pending', async () => {
    interface State {
      inFlight: number;
      max: number;
    }
    const states: State[] = [];
    const randomPause = async (): Promise<void> => {
      const r = Math.random();
      if (r < 0.3) await new Promise<void>((res) => setImmediate(res));
      else if (r < 0.6) for (let i = 0; i < 5; i++) await Promise.resolve();
      else await delay(Math.floor(Math.random() * 3));
    };
    const slow: ProtocolHandler = {
      async onReady(conn) {
        const s: State = { inFlight: 0, max: 0 };
        conn.data = s;
        states.push(s);
        await delay(5);
        conn.sendFrame('hello');
      },
      async onFrame(frame, conn) {
        const s = conn.data as State;
        s.max = Math.max(s.max, ++s.inFlight);
        await randomPause();
        conn.sendFrame(frame);
        s.inFlight--;
      },
    };
    const l = await h.start({ protocol: slow, framing: 'line' });
    const clients = await Promise.all([h.client(l), h.client(l), h.client(l)]);
    const expected = clients.map((_, n) => Array.from({ length: 40 }, (_, i) => `c${n} line ${i}`));
    // Everything is written at once, before the greeting: onReady must still come first.
    clients.forEach((c, n) => c.stream.write(expected[n]!.map((line) => `${line}\n`).join('')));
    const received = await Promise.all(clients.map(async (c) => Promise.all(Array.from({ length: 41 }, () => c.line()))));
    received.forEach((lines, n) => expect(lines).toEqual(['hello', ...expected[n]!]));
    expect(states).toHaveLength(3);
    for (const s of states) expect(s.max).toBe(1);
  });

  it('pause() from a handler stops frame delivery; resume() from another handler restarts it, in order', async () => {
    const delivered: string[] = [];
    let paused: Connection | undefined;
    const l = await h.start({
      framing: 'line',
      protocol: {
        onFrame(frame, conn) {
          const text = frame.toString();
          if (text === 'status') {
            conn.sendFrame(delivered.join(','));
            return;
          }
          if (text === 'resume') {
            paused!.resume();
            conn.sendFrame('resumed');
            return;
          }
          delivered.push(text);
          conn.sendFrame(text);
          if (text === 'pause') {
            paused = conn;
            conn.pause();
          }
        },
      },
    });
    const a = await h.client(l);
    const b = await h.client(l);
    // One write: the frames after 'pause' are already buffered when the handler pauses.
    a.stream.write('pause\na1\na2\n');
    expect(await a.line()).toBe('pause');
    expect(await b.request('status')).toBe('pause');
    a.send('a3'); // arrives while paused
    expect(await b.request('status')).toBe('pause');
    expect(await b.request('resume')).toBe('resumed');
    expect([await a.line(), await a.line(), await a.line()]).toEqual(['a1', 'a2', 'a3']);
    expect(await a.request('a4')).toBe('a4');
    expect(delivered).toEqual(['pause', 'a1', 'a2', 'a3', 'a4']);
  });

  it('send() returns false when the peer does not read, and drained() resolves once it reads', async () => {
    const chunk = 'x'.repeat(16 * 1024 - 1);
    const full = deferred<{ sent: number; buffered: number }>();
    const l = await h.start({
      framing: 'line',
      protocol: {
        async onFrame(frame, conn) {
          if (frame.toString() !== 'fill') return;
          let sent = 0;
          let ok = true;
          // Bounded: the kernel buffers on loopback take a few MiB at most.
          while (ok && sent < 16 * 1024) {
            ok = conn.sendFrame(chunk);
            sent++;
          }
          full.resolve({ sent: ok ? -1 : sent, buffered: conn.bufferedAmount });
          await conn.drained();
          conn.sendFrame('drained');
        },
      },
    });
    const socket = await connectTcp(l.port!);
    h.cleanups.push(() => socket.destroy());
    socket.write('fill\n'); // and read nothing yet
    const { sent, buffered } = await full.promise;
    expect(sent).toBeGreaterThan(0); // -1 would mean send() never returned false
    expect(buffered).toBeGreaterThan(0);

    const c = new LineClient(socket); // start reading
    for (let i = 0; i < sent; i++) expect(await c.line()).toBe(chunk);
    expect(await c.line()).toBe('drained');
  });
});

// ---- send buffer bound -------------------------------------------------------------------------------

describe.each(transportCases().filter((tc) => tc.name === 'tcp' || tc.name === 'unix'))('send buffer bound over $name', (tc) => {
  const h = harness(tc);

  it("a handler that keeps writing to a peer that does not read is closed with 'send_buffer_full'", async () => {
    const chunk = Buffer.alloc(16 * 1024, 0x78);
    const flood = deferred<{ kernelFull: boolean; chunks: number; closed: boolean; sendAfterClose: boolean }>();
    const log: Closed[] = [];
    const l = await h.start({
      framing: 'line',
      maxSendBuffer: 64 * 1024,
      protocol: withCloseLog(
        {
          onFrame(_frame, conn) {
            // Fill the kernel's socket buffers first (respecting backpressure, bounded) ...
            let ok = true;
            for (let i = 0; ok && i < 16 * 1024; i++) ok = conn.send(chunk);
            // ... then write 1 MiB more, ignoring it.
            let chunks = 0;
            while (chunks < 64 && !conn.closed) {
              conn.send(chunk);
              chunks++;
            }
            flood.resolve({ kernelFull: !ok, chunks, closed: conn.closed, sendAfterClose: conn.send('more') });
          },
        },
        log,
      ),
    });
    const closed = nextClose(l);
    const s = await h.stream(l);
    s.pause();
    s.write('flood\n'); // and never read
    const result = await flood.promise;
    expect(result.kernelFull).toBe(true);
    expect(result.closed).toBe(true);
    expect(result.chunks).toBeLessThan(64); // closed long before the 1 MiB was queued
    expect(result.sendAfterClose).toBe(false);
    const event = await closed;
    expect(event.reason).toBe('send_buffer_full');
    expect(log).toEqual([event]);
  });
});

// ---- idle timeout ----------------------------------------------------------------------------------

describe('idle timeout', () => {
  const h = harness();

  /**
   * Echoes, except: `quiet` waits 60 ms (a third of the timeout) and answers nothing, telling the
   * test through `quietDone`; `ticks` sends `tick` six times 60 ms apart, then `done`; `noidle`
   * turns the timer off for the connection.
   */
  const quietDone: (() => void)[] = [];
  const idleHandler = (log: Closed[], extra: ProtocolHandler = {}): ProtocolHandler =>
    withCloseLog(
      {
        async onFrame(frame, conn) {
          const text = frame.toString();
          if (text === 'quiet') {
            await delay(60);
            quietDone.shift()?.();
            return;
          }
          if (text === 'ticks') {
            for (let i = 0; i < 6; i++) {
              await delay(60);
              conn.sendFrame('tick');
            }
            conn.sendFrame('done');
            return;
          }
          if (text === 'noidle') conn.setIdleTimeout(0);
          conn.sendFrame(text);
        },
        ...extra,
      },
      log,
    );

  it("closes a silent connection with reason 'idle'", async () => {
    const log: Closed[] = [];
    const l = await h.start({ protocol: idleHandler(log), framing: 'line', idleTimeout: 200 });
    const closed = nextClose(l);
    const c = await h.client(l);
    await c.closed;
    expect(await closed).toMatchObject({ reason: 'idle' });
    expect(log.map((e) => e.reason)).toEqual(['idle']);
  });

  it('bytes read and bytes sent both keep the connection open past the timeout; silence then closes it', async () => {
    const log: Closed[] = [];
    quietDone.length = 0;
    const l = await h.start({ protocol: idleHandler(log), framing: 'line', idleTimeout: 200 });
    const c = await h.client(l);
    // Only reads: six lines ~60 ms apart (the handler paces them), nothing sent back.
    for (let i = 0; i < 6; i++) {
      const done = deferred();
      quietDone.push(done.resolve);
      c.send('quiet');
      await Promise.race([done.promise, c.closed.then(() => Promise.reject(new Error('closed while reading')))]);
    }
    expect(await c.request('after reads')).toBe('after reads');
    // Only sends: one line in, seven out over ~360 ms.
    c.send('ticks');
    for (let i = 0; i < 6; i++) expect(await c.line()).toBe('tick');
    expect(await c.line()).toBe('done');
    expect(await c.request('after sends')).toBe('after sends');
    expect(log).toEqual([]);

    const closed = nextClose(l);
    await c.closed;
    expect(await closed).toMatchObject({ reason: 'idle' });
  });

  it('conn.setIdleTimeout(0) turns it off for that connection only', async () => {
    const log: Closed[] = [];
    const l = await h.start({ protocol: idleHandler(log), framing: 'line', idleTimeout: 200 });
    const kept = await h.client(l);
    expect(await kept.request('noidle')).toBe('noidle');
    // A connection opened after kept's last byte: once it idles out, kept would have too.
    const closed = nextClose(l);
    const other = await h.client(l);
    await other.closed;
    expect(await closed).toMatchObject({ reason: 'idle' });
    expect(await kept.request('still here')).toBe('still here');
    expect(log.map((e) => e.reason)).toEqual(['idle']);
  });

  it('an onIdle hook that sends a ping keeps the connection, and is called again after another period', async () => {
    const log: Closed[] = [];
    let idles = 0;
    const l = await h.start({
      framing: 'line',
      idleTimeout: 200,
      protocol: idleHandler(log, {
        onIdle(conn) {
          idles++;
          conn.sendFrame('ping');
        },
      }),
    });
    const c = await h.client(l);
    expect(await c.line()).toBe('ping');
    expect(await c.line()).toBe('ping');
    expect(await c.request('pong')).toBe('pong');
    expect(idles).toBe(2);
    const closed = nextClose(l);
    c.end();
    await c.closed;
    expect(await closed).toMatchObject({ reason: 'remote' });
    expect(log.map((e) => e.reason)).toEqual(['remote']);
  });
});

// ---- framing errors ------------------------------------------------------------------------------

describe('framing errors', () => {
  const h = harness();

  it('a line over maxLength: the lines before it are answered in order, then the last reply, then close', async () => {
    const log: Closed[] = [];
    const errors: Error[] = [];
    const l = await h.start({
      framing: { type: 'line', maxLength: 16 },
      protocol: withCloseLog(
        {
          onFrame(frame, conn) {
            conn.sendFrame(frame);
          },
          onFrameError(error, conn) {
            errors.push(error);
            conn.sendFrame('error too-long');
          },
        },
        log,
      ),
    });
    const closed = nextClose(l);
    const c = await h.client(l);
    c.stream.write(`one\ntwo\n${'x'.repeat(40)}\nnever\n`);
    expect([await c.line(), await c.line(), await c.line()]).toEqual(['one', 'two', 'error too-long']);
    await c.closed;
    await expect(c.line()).rejects.toThrow('connection closed');
    expect(await closed).toMatchObject({ reason: 'frame_error' });
    expect(log.map((e) => e.reason)).toEqual(['frame_error']);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ name: 'FrameTooLargeError', code: 'CORRAL_FRAME_TOO_LARGE', maxLength: 16 });
  });

  it('a length-prefixed header announcing too much closes at once, after the frames before it', async () => {
    const log: Closed[] = [];
    const l = await h.start({
      framing: { type: 'length-prefixed', maxLength: 16 },
      protocol: withCloseLog(echoProtocol, log),
    });
    const closed = nextClose(l);
    const s = await h.stream(l);
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(d));
    const tooBig = Buffer.alloc(4);
    tooBig.writeUInt32BE(1000, 0);
    // The 1000 announced bytes are never sent: the server must not wait for them.
    s.write(Buffer.concat([lp('a'), lp('bb'), tooBig]));
    await new Promise((resolve) => s.once('close', resolve));
    expect(decodeLp(Buffer.concat(chunks))).toEqual(['a', 'bb']);
    expect(await closed).toMatchObject({ reason: 'frame_error' });
    expect(log.map((e) => e.reason)).toEqual(['frame_error']);
  });
});
