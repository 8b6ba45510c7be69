/**
 * Crash containment at the edges of a handler's life, over every transport of the shared suite:
 * an `onCrash` that never settles is bounded by `shutdownTimeout` under either restart strategy; a
 * handler factory that throws while restarting is a counted, reported crash; and user code that runs
 * while a connection starts (a `connectionOpen` listener, a custom framing's `createFramer`) crashes
 * that connection only: counted, reported, its slot given back, the process untouched.
 */
import type { Duplex } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type CloseReason,
  channels,
  type Connection,
  type CrashInfo,
  type HandlerCrashEvent,
  type HandlerCrashMessage,
  lineFraming,
  type Listener,
  type ListenerOptions,
  type ListenerSettings,
  type ProtocolHandler,
  type ProtocolSettings,
  startListener,
} from '../../src/index.js';
import { LineClient } from '../support/clients.js';
import { type TransportCase, transportCases, uniqueName } from '../support/transports.js';
import { within } from '../support/within.js';
import { watchProcess } from '../support/escaped-errors.js';

// ---- harness ------------------------------------------------------------------------------------

interface Closed {
  id: string;
  reason: CloseReason;
}

/** What one listener reported: its `handlerCrash` events, its channel messages, its closes. */
interface Reports {
  crashes: HandlerCrashEvent[];
  published: HandlerCrashMessage[];
  closes: Closed[];
}

/** Everything a test starts, released in afterEach: listeners, client streams, subscriptions. */
function harness(tc: TransportCase) {
  const listeners: Listener[] = [];
  const streams: Duplex[] = [];
  const cleanups: (() => void)[] = [];
  afterEach(async () => {
    for (const s of streams.splice(0)) s.destroy();
    await Promise.all(listeners.splice(0).map((l) => l.stop({ timeout: 1000 })));
    for (const c of cleanups.splice(0)) c();
    tc.cleanup();
  });
  const h = {
    /** Start a listener on the transport case, with line framing unless told, and remember it. */
    async start<O = undefined>(options: Omit<ListenerSettings, 'name'> & ProtocolSettings<O, unknown>): Promise<Listener> {
      const transport = await tc.listenerOptions();
      const l = await startListener<O>({ name: uniqueName('contain'), framing: 'line', ...transport, ...options } as ListenerOptions<O>);
      listeners.push(l);
      return l;
    },
    /** A line client that, like a TCP socket without allowHalfOpen, ends when the server ends. */
    async client(l: Listener): Promise<LineClient> {
      const s = await tc.connect(l);
      s.on('end', () => s.end());
      s.on('error', () => {});
      streams.push(s);
      return new LineClient(s);
    },
    /** Record `l`'s crash reports (event and diagnostics channel) and closes. */
    record(l: Listener): Reports {
      const reports: Reports = { crashes: [], published: [], closes: [] };
      l.on('handlerCrash', (e) => reports.crashes.push(e));
      l.on('connectionClose', (id, reason) => reports.closes.push({ id, reason }));
      const onMessage = (m: HandlerCrashMessage): void => {
        if (m.listener === l.name) reports.published.push(m);
      };
      channels.handlerCrash.subscribe(onMessage);
      cleanups.push(() => channels.handlerCrash.unsubscribe(onMessage));
      return reports;
    },
    /** Errors that escape to the process while the test runs. */
    watchProcess(): unknown[] {
      return watchProcess(cleanups);
    },
  };
  return h;
}

function nextClose(l: Listener): Promise<Closed> {
  return new Promise((resolve) => l.once('connectionClose', (id, reason) => resolve({ id, reason })));
}

function nextCrash(l: Listener): Promise<HandlerCrashEvent> {
  return new Promise((resolve) => l.once('handlerCrash', resolve));
}

function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Greets with `hello <restarts>`, echoes, throws on `crash`; `onCrash` answers `sorry`, then returns `answer()`. */
function greeter(answer: () => void | Promise<void>): ProtocolHandler {
  return {
    onReady(conn) {
      conn.sendFrame(`hello ${conn.restarts}`);
    },
    onFrame(frame, conn) {
      if (frame.toString() === 'crash') throw new Error('crash requested');
      conn.sendFrame(frame);
    },
    onCrash(_error, conn, crash) {
      conn.sendFrame(`sorry restarted=${crash.restarted}`);
      return answer();
    },
  };
}

const never = (): Promise<void> => new Promise<void>(() => {});

// ---- the tests ----------------------------------------------------------------------------------

describe.each(transportCases())('crash containment over $name', (tc) => {
  const h = harness(tc);

  describe('an onCrash that never settles is bounded by shutdownTimeout', () => {
    it("restart 'transient': past the bound the fresh handler gets the next frames, and a late rejection is still counted", async () => {
      const late = deferred();
      const l = await h.start({ protocol: greeter(() => late.promise), restart: 'transient', shutdownTimeout: 200 });
      const r = h.record(l);
      const c = await h.client(l);
      expect(await c.line()).toBe('hello 0');

      c.stream.write('crash\nafter\n');
      const lines = within(Promise.all([c.line(), c.line(), c.line()]), 5000, 'the frame after the crash');
      expect(await lines).toEqual(['sorry restarted=true', 'hello 1', 'after']);
      expect(await within(c.request('still'), 5000, 'a frame after the restart')).toBe('still');
      expect(await l.info()).toMatchObject({ handlerCrashes: 1, handlerRestarts: 1, connections: 1 });

      // The abandoned answer rejects later: counted and reported as a crash of onCrash, nothing more.
      const crash = nextCrash(l);
      late.reject(new Error('late answer failed'));
      expect(await crash).toMatchObject({ hook: 'onCrash', restarted: false, id: r.crashes[0]!.id });
      expect(await c.request('and still')).toBe('and still');
      expect((await l.info()).handlerCrashes).toBe(2);
      expect(r.published.map((m) => m.hook)).toEqual(['onFrame', 'onCrash']);

      const closed = nextClose(l);
      c.end();
      await c.closed;
      expect(await closed).toMatchObject({ reason: 'remote' });
    });

    it("restart 'transient': past the bound the fresh handler's connection idles out as usual", async () => {
      const l = await h.start({ protocol: greeter(never), restart: 'transient', shutdownTimeout: 100, idleTimeout: 1000 });
      const c = await h.client(l);
      const closed = nextClose(l);
      expect(await c.line()).toBe('hello 0');
      c.send('crash');
      expect(await c.line()).toBe('sorry restarted=true');
      expect(await c.line()).toBe('hello 1');
      expect(await within(closed, 5000, 'the idle close after the restart')).toMatchObject({ reason: 'idle' });
      await c.closed;
    });

    it("restart 'temporary': past the bound the connection closes with reason 'crash'", async () => {
      const l = await h.start({ protocol: greeter(never), shutdownTimeout: 200 });
      const c = await h.client(l);
      const closed = nextClose(l);
      expect(await c.line()).toBe('hello 0');
      c.send('crash');
      expect(await c.line()).toBe('sorry restarted=false');
      expect(await within(closed, 5000, 'the close after the crash')).toMatchObject({ reason: 'crash' });
      await c.closed;
    });
  });

  it("restart 'transient': a factory or constructor that throws while restarting is a counted, reported crash, and the connection closes", async () => {
    const escaped = h.watchProcess();
    let made = 0;
    const factory = (): ProtocolHandler => {
      if (++made === 2) throw new Error('factory broke on restart');
      return greeter(() => {});
    };
    let built = 0;
    class Fragile implements ProtocolHandler {
      private readonly inner = greeter(() => {});
      constructor() {
        if (++built === 2) throw new Error('constructor broke on restart');
      }
      onReady(conn: Connection): void {
        this.inner.onReady!(conn);
      }
      onFrame(frame: Buffer, conn: Connection): void {
        void this.inner.onFrame!(frame, conn);
      }
      onCrash(error: unknown, conn: Connection, crash: CrashInfo): void {
        void this.inner.onCrash!(error, conn, crash);
      }
    }

    for (const [protocol, message] of [
      [factory, 'factory broke on restart'],
      [Fragile, 'constructor broke on restart'],
    ] as const) {
      const l = await h.start({ protocol, restart: 'transient' });
      const r = h.record(l);
      const c = await h.client(l);
      const closed = nextClose(l);
      expect(await c.line()).toBe('hello 0');
      c.send('crash');
      expect(await c.line()).toBe('sorry restarted=false');
      await c.closed;
      const close = await closed;
      expect(close.reason).toBe('crash');

      expect(r.crashes).toHaveLength(2);
      expect(r.crashes[0]).toMatchObject({ id: close.id, hook: 'onFrame', restarted: false });
      expect(r.crashes[1]).toMatchObject({ id: close.id, hook: 'onReady', restarted: false });
      expect((r.crashes[1]!.error as Error).message).toBe(message);
      expect(r.published.map((m) => [m.id, m.hook, m.restarted])).toEqual([
        [close.id, 'onFrame', false],
        [close.id, 'onReady', false],
      ]);
      expect(await l.info()).toMatchObject({ handlerCrashes: 2, handlerRestarts: 0 });

      const fine = await h.client(l);
      expect(await fine.line()).toBe('hello 0');
      expect(await fine.request('still serving')).toBe('still serving');
    }
    expect(escaped).toEqual([]);
  });

  describe('user code that throws while a connection starts crashes that connection only', () => {
    /**
     * One listener with `maxConnections: 1`, whose first connection is broken by `breakFirst`:
     * the broken one must close as a crash of `onReady` (counted, reported) and give its slot back,
     * so the next client is served; no handler is created for it; nothing reaches the process.
     */
    async function firstConnectionBroken(
      message: string,
      setup: (created: () => number) => Promise<Listener>,
    ): Promise<void> {
      const escaped = h.watchProcess();
      let made = 0;
      const l = await setup(() => ++made);
      const r = h.record(l);
      const closed = nextClose(l);
      const broken = await h.client(l);
      await within(broken.closed, 5000, 'the close of the broken connection');
      const close = await within(closed, 5000, 'connectionClose of the broken connection');
      expect(close.reason).toBe('crash');
      expect(r.crashes).toHaveLength(1);
      expect(r.crashes[0]).toMatchObject({ id: close.id, hook: 'onReady', restarted: false });
      expect((r.crashes[0]!.error as Error).message).toBe(message);
      expect(r.published.map((m) => [m.id, m.hook])).toEqual([[close.id, 'onReady']]);
      expect(made).toBe(0);

      // Its slot was given back, once: the next client is served, and counts as the only one.
      const fine = await h.client(l);
      expect(await within(fine.request('served'), 5000, 'a reply to the next client')).toBe('served');
      expect(made).toBe(1);
      expect(await l.info()).toMatchObject({ handlerCrashes: 1, opened: 2, closed: 1, connections: 1, active: 1 });
      const fineClosed = nextClose(l);
      fine.end();
      await fine.closed;
      await fineClosed;
      expect(await l.info()).toMatchObject({ connections: 0, active: 0, closed: 2 });
      expect(escaped).toEqual([]);
    }

    it('a connectionOpen listener', async () => {
      await firstConnectionBroken('connectionOpen listener broke', async (created) => {
        const l = await h.start({
          maxConnections: 1,
          protocol: (): ProtocolHandler => {
            created();
            return { onFrame: (frame, conn) => void conn.sendFrame(frame) };
          },
        });
        let opened = 0;
        l.on('connectionOpen', () => {
          if (++opened === 1) throw new Error('connectionOpen listener broke');
        });
        return l;
      });
    });

    it("a custom framer's push() that throws on the peer's bytes is a frame error of that connection: it closes, the process and the listener go on", async () => {
      const escaped = h.watchProcess();
      const line = lineFraming();
      const l = await h.start({
        framing: {
          name: 'picky-line',
          encode: (payload) => line.encode(payload),
          createFramer() {
            const inner = line.createFramer();
            return {
              push(chunk: Buffer) {
                if (chunk.includes(0)) throw new Error('a NUL byte');
                inner.push(chunk);
              },
              next: () => inner.next(),
              get buffered() {
                return inner.buffered;
              },
            };
          },
        },
        protocol: (): ProtocolHandler => ({ onFrame: (frame, conn) => void conn.sendFrame(frame) }),
      });
      const closed = nextClose(l);
      const bad = await h.client(l);
      bad.send('a\u0000b');
      const close = await within(closed, 5000, 'connectionClose of the connection that sent a NUL');
      expect(close.reason).toBe('frame_error');
      await within(bad.closed, 5000, 'the close of that connection');
      const fine = await h.client(l);
      expect(await within(fine.request('fine'), 5000, 'a reply to the next client')).toBe('fine');
      expect(escaped).toEqual([]);
    });

    it("a custom framing's createFramer", async () => {
      await firstConnectionBroken('createFramer broke', async (created) => {
        const line = lineFraming();
        let framers = 0;
        return h.start({
          maxConnections: 1,
          framing: {
            name: 'fragile-line',
            encode: (payload) => line.encode(payload),
            createFramer() {
              if (++framers === 1) throw new Error('createFramer broke');
              return line.createFramer();
            },
          },
          protocol: (): ProtocolHandler => {
            created();
            return { onFrame: (frame, conn) => void conn.sendFrame(frame) };
          },
        });
      });
    });
  });
});
