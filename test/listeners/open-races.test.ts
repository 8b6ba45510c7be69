/**
 * Races around opening the listening socket (ListeningSocket, ListenerShell): a listener opens at
 * most one listening socket at a time, whatever asks it to reopen while an open is under way; a
 * stop closes what an open under way produces before it resolves; and a resume that loses to a
 * stop leaves the listener stopped. Checked on the kernel's own list of listening sockets.
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type Connection,
  type Listener,
  type ListenerOptions,
  type ProtocolHandler,
  startListener,
  supportsReusePort,
  TcpTransport,
  type TransportListenHandlers,
  type TransportServer,
} from '../../src/index.js';
import { ListeningSocket } from '../../src/listeners/listening-socket.js';
import { connectTcp, LineClient } from '../support/clients.js';
import { echoProtocol } from '../support/protocols.js';
import { uniqueName } from '../support/transports.js';
import { listeningSockets } from '../support/listening-sockets.js';

const HOST = '127.0.0.1';

let started: Listener[] = [];
let sockets: net.Socket[] = [];
let servers: TransportServer[] = [];

afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(started.splice(0).map((l) => l.stop({ timeout: 500 }).catch(() => {})));
  // A socket a listener leaked (the defect these tests are about) must not outlive its test.
  await Promise.all(servers.splice(0).map((s) => s.close().catch(() => {})));
});


/** Try to connect; resolve with the error code (e.g. `ECONNREFUSED`), or `'connected'`. */
function connectResult(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: HOST });
    sockets.push(s);
    s.once('connect', () => resolve('connected'));
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

async function client(l: Listener): Promise<LineClient> {
  const s = await connectTcp(l.port!, HOST);
  sockets.push(s);
  return new LineClient(s);
}

type Extra = Omit<Partial<ListenerOptions>, 'name'>;

async function listener(options: Extra): Promise<Listener> {
  const l = await startListener({ name: uniqueName('open-races'), protocol: echoProtocol, framing: 'line', ...options });
  started.push(l);
  return l;
}

/**
 * A single listener with `overflow: 'refuse'` that is refusing now: one client holds its only
 * slot (`maxWaiting: 0`), one more connect overflowed. `a.end()` frees the slot, and the listener
 * starts reopening its socket (`queueFull` fires with `false`, right after the open began).
 */
async function refusingListener(options: Extra): Promise<{ l: Listener; a: LineClient }> {
  const l = await listener({ maxConnections: 1, maxWaiting: 0, ...options });
  const a = await client(l);
  expect(await a.request('a')).toBe('a');
  const refusing = new Promise<void>((resolve) => l.once('queueFull', (full) => full && resolve()));
  const overflowed = await client(l);
  await refusing;
  await new LineClient(overflowed.stream).closed;
  expect(await l.info()).toMatchObject({ refusing: true, status: 'running' });
  return { l, a };
}

/** Slot freed: on `queueFull(false)` — the reopen under way — call `race`; resolve with its outcome. */
function onReopen(l: Listener, a: LineClient, race: () => Promise<unknown>): Promise<unknown> {
  const raced = new Promise<Promise<unknown>>((resolve) =>
    l.once('queueFull', (full) => {
      if (!full) resolve(race());
    }),
  );
  a.end();
  return raced.then((p) => p);
}

/**
 * TCP on a port of its own for every listen (as a transport that binds anew each time may do),
 * remembering each server it opened: two opens at once both succeed here, on Node 20 too.
 */
class FreshPortTransport extends TcpTransport {
  readonly ports: number[] = [];

  override async listen(handlers: TransportListenHandlers): Promise<TransportServer> {
    const server = await new TcpTransport({ host: HOST, port: 0 }).listen(handlers);
    servers.push(server);
    const a = server.address();
    if (a.family === 'IPv4') this.ports.push(a.port);
    return server;
  }
}

/** TCP whose listen waits at a gate while one is set, counting listens still under way. */
class GatedTransport extends TcpTransport {
  pending = 0;
  private gate: Promise<void> | undefined;
  private openGate: () => void = () => {};
  private entered: () => void = () => {};

  /** Hold the next listens at the gate; resolves once one has reached it. */
  arm(): Promise<void> {
    this.gate = new Promise((resolve) => (this.openGate = resolve));
    return new Promise((resolve) => (this.entered = resolve));
  }

  open(): void {
    this.gate = undefined;
    this.openGate();
  }

  override async listen(handlers: TransportListenHandlers): Promise<TransportServer> {
    this.pending++;
    try {
      if (this.gate !== undefined) {
        this.entered();
        await this.gate;
      }
      return await super.listen(handlers);
    } finally {
      this.pending--;
    }
  }
}

describe('one listening socket at a time', () => {
  it('resumeAccepting() while an overflow reopens the socket joins that open: no EADDRINUSE, one socket', async () => {
    const { l, a } = await refusingListener({ transport: 'tcp', transportOptions: { host: HOST, port: 0 } });
    const port = l.port!;
    const acceptErrors: Error[] = [];
    l.on('acceptError', (err) => acceptErrors.push(err));
    // Before: a second open on the same port, which failed with EADDRINUSE (rejected or reported).
    await onReopen(l, a, () => l.resumeAccepting());
    expect(acceptErrors).toEqual([]);
    expect(await l.info()).toMatchObject({ refusing: false, status: 'running' });
    expect(listeningSockets(port)).toBe(1);
    const b = await client(l);
    expect(await b.request('b')).toBe('b');
    await l.stop({ timeout: 500 });
    expect(listeningSockets(port)).toBe(0);
  });

  it('with a transport whose every listen succeeds, the reopen and resumeAccepting() open one socket, and stop() closes it', async () => {
    const transport = new FreshPortTransport({ host: HOST, port: 0 });
    const { l, a } = await refusingListener({ transport });
    await onReopen(l, a, () => l.resumeAccepting());
    // Before: two listens, each kept in turn as the socket; the one overwritten was never closed.
    expect(transport.ports).toHaveLength(2); // the start, and one reopen
    const b = await client(l);
    expect(await b.request('b')).toBe('b');
    await l.stop({ timeout: 500 });
    for (const port of transport.ports) {
      expect(listeningSockets(port)).toBe(0);
      expect(await connectResult(port)).toBe('ECONNREFUSED');
    }
  });

  it.runIf(supportsReusePort() && process.platform === 'linux')(
    'reusePort: resumeAccepting() during the reopen leaves one socket, and none after stop()',
    async () => {
      const { l, a } = await refusingListener({ transport: 'tcp', transportOptions: { host: HOST, port: 0, reusePort: true } });
      const port = l.port!;
      await onReopen(l, a, () => l.resumeAccepting());
      // Before: both opens bound the port (SO_REUSEPORT); one was lost, and accepted after stop().
      expect(listeningSockets(port)).toBe(1);
      await l.stop({ timeout: 500 });
      expect(listeningSockets(port)).toBe(0);
      expect(await connectResult(port)).toBe('ECONNREFUSED');
    },
  );

  it('stop() while the socket reopens resolves once that open has settled and its socket is closed', async () => {
    const transport = new GatedTransport({ host: HOST, port: 0 });
    const { l, a } = await refusingListener({ transport });
    const port = l.port!;
    const entered = transport.arm();
    a.end();
    await entered; // the reopen is under way, held at the gate
    const stopped = l.stop({ timeout: 500 });
    // Let the open finish only after stop() has begun, a turn of the event loop later.
    setImmediate(() => transport.open());
    await stopped;
    // Before: stop() resolved with the listen still under way; its socket opened afterwards.
    expect(transport.pending).toBe(0);
    expect(listeningSockets(port)).toBe(0);
    expect(await connectResult(port)).toBe('ECONNREFUSED');
  });
});

describe('ListeningSocket', () => {
  it('a release after a hold overtook the open under way waits for it to discard its socket, then opens one', async () => {
    const transport = new GatedTransport({ host: HOST, port: 0 });
    const handlers: TransportListenHandlers = { onSocket: (s) => s.destroy(), onError: () => {} };
    const failed: Error[] = [];
    const socket = new ListeningSocket(() => transport.listen(handlers), (err) => failed.push(err));
    try {
      await socket.release('suspended');
      const a = socket.address;
      if (a?.family !== 'IPv4') throw new Error('no TCP address');
      await socket.hold('paused');
      expect(listeningSockets(a.port)).toBe(0);

      const entered = transport.arm();
      const first = socket.release('paused'); // the open under way, held at the gate
      await entered;
      const held = socket.hold('refusing'); // overtakes it: it must discard its socket
      const second = socket.release('refusing'); // must not open beside it
      const joined = socket.release('exhausted', { retry: true }); // joins the second
      transport.open();
      await Promise.all([first, held, second, joined]);
      // Before: three listens on the port at once; one failed with EADDRINUSE (rejected or reported).
      expect(failed).toEqual([]);
      expect(transport.pending).toBe(0);
      expect(listeningSockets(a.port)).toBe(1);
      expect(await connectResult(a.port)).toBe('connected');
      await socket.closeForGood();
      expect(listeningSockets(a.port)).toBe(0);
    } finally {
      await socket.closeForGood();
    }
  });
});

describe('resume() racing stop()', () => {
  /** Records the lifecycle events of `l`, in order. */
  function lifecycle(l: Listener): string[] {
    const events: string[] = [];
    for (const event of ['suspend', 'resume', 'stop'] as const) l.on(event, () => events.push(event));
    return events;
  }

  it('a resume() waiting for a drain that a stop() overtakes rejects with CORRAL_LISTENER_STOPPED; the listener stays stopped', async () => {
    let asked!: (conn: Connection) => void;
    const shutdownAsked = new Promise<Connection>((resolve) => (asked = resolve));
    // Keeps its connection through the drain until the test closes it.
    const protocol: ProtocolHandler = {
      onFrame: (frame, conn) => void conn.sendFrame(frame),
      onShutdown: (conn) => asked(conn),
    };
    const l = await listener({ protocol, transport: 'tcp', transportOptions: { host: HOST, port: 0 } });
    const port = l.port!;
    const c = await client(l);
    expect(await c.request('c')).toBe('c');
    const events = lifecycle(l);

    const drained = l.drain({ timeout: 10_000 });
    const conn = await shutdownAsked;
    const resumed = l.resume().then(
      () => 'resolved',
      (err: { code?: string }) => err.code,
    );
    const stopped = l.stop({ timeout: 10_000 });
    await conn.close(); // the drain ends; resume() and stop() go on
    await drained;
    await stopped;
    expect(await resumed).toBe('CORRAL_LISTENER_STOPPED');
    // Before: resume() released the stop's hold, then set 'running' and emitted 'resume' after 'stop'.
    expect(l.status).toBe('stopped');
    expect(events).toEqual(['suspend', 'stop']);
    expect(listeningSockets(port)).toBe(0);
    expect(await connectResult(port)).toBe('ECONNREFUSED');
  });

  it('a resume() whose reopen a stop() overtakes rejects with CORRAL_LISTENER_STOPPED; the listener stays stopped', async () => {
    const l = await listener({ transport: 'tcp', transportOptions: { host: HOST, port: 0 } });
    const port = l.port!;
    await l.suspend();
    const events = lifecycle(l);
    const resumed = l.resume().then(
      () => 'resolved',
      (err: { code?: string }) => err.code,
    );
    const stopped = l.stop({ timeout: 500 });
    await stopped;
    expect(await resumed).toBe('CORRAL_LISTENER_STOPPED');
    expect(l.status).toBe('stopped');
    expect(events).toEqual(['stop']);
    expect(listeningSockets(port)).toBe(0);
    expect(await connectResult(port)).toBe('ECONNREFUSED');
  });
});

describe('resume() racing suspend()', () => {
  it('a resume() called while a suspend() is still closing the socket waits for it, then reopens: running and accepting', async () => {
    const l = await listener({ transportOptions: { host: HOST, port: 0 } });
    const port = l.port!;
    const suspended = l.suspend();
    const resumed = l.resume();
    await suspended;
    await resumed;
    expect(l.status).toBe('running');
    expect(listeningSockets(port)).toBe(1);
    expect(await (await client(l)).request('served')).toBe('served');
  });
});

describe('resume() racing drain() and suspend()', () => {
  it('a drain() called while a resume() reopens the socket wins: the listener ends suspended, its socket closed, and a later resume() serves', async () => {
    const l = await listener({ transportOptions: { host: HOST, port: 0 } });
    const port = l.port!;
    await l.suspend();
    const resumed = l.resume();
    const drained = l.drain({ timeout: 1000 });
    await resumed;
    await drained;
    expect(l.status).toBe('suspended');
    expect(listeningSockets(port)).toBe(0);
    await l.resume();
    expect(l.status).toBe('running');
    expect(await (await client(l)).request('served')).toBe('served');
  });

  it('a suspend() called while a resume() reopens the socket is not lost: the listener ends suspended', async () => {
    const l = await listener({ transportOptions: { host: HOST, port: 0 } });
    const port = l.port!;
    await l.suspend();
    const resumed = l.resume();
    const suspended = l.suspend();
    await resumed;
    await suspended;
    expect(l.status).toBe('suspended');
    expect(listeningSockets(port)).toBe(0);
  });
});
