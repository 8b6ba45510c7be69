/**
 * The acceptor pool's admission by work: silent sockets hold no slot (over every transport),
 * per-source and global bounds on silent sockets (dual-stack included), the first-message check,
 * handshakes started per event-loop turn, and leases given back exactly once on every path.
 */
import { execFile } from 'node:child_process';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type Connection,
  InvalidOptionError,
  type Listener,
  type ListenerInfo,
  type ListenerOptions,
  type RejectEvent,
  startListener,
  type Transport,
} from '../../src/index.js';
import { testCerts } from '../support/certs.js';
import { captureClientHello, connectTcp, LineClient, once } from '../support/clients.js';
import { MemoryTransport } from '../support/memory-transport.js';
import { echoProtocol } from '../support/protocols.js';
import { transportCases, uniqueName } from '../support/transports.js';

const run = promisify(execFile);

let started: Listener[] = [];
let streams: Duplex[] = [];

afterEach(async () => {
  for (const s of streams.splice(0)) s.destroy();
  await Promise.all(started.splice(0).map((l) => l.stop({ timeout: 1000 })));
});

type Extra = Omit<Partial<ListenerOptions>, 'name' | 'transport' | 'transportOptions'>;

async function listen(base: Pick<ListenerOptions, 'transport' | 'transportOptions'>, options: Extra = {}): Promise<Listener> {
  const l = await startListener({ name: uniqueName('pool'), protocol: echoProtocol, framing: 'line', ...base, ...options });
  started.push(l);
  return l;
}

/** Resolve with `info()` once `pred` holds (polling the counters: admission has no event for every state). */
async function until(l: Listener, what: string, pred: (i: ListenerInfo) => boolean, timeout = 5000): Promise<ListenerInfo> {
  const deadline = Date.now() + timeout;
  for (;;) {
    const info = await l.info();
    if (pred(info)) return info;
    if (Date.now() > deadline) throw new Error(`${what} not reached: ${JSON.stringify(info)}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

function track<T extends Duplex>(s: T): T {
  s.on('error', () => {});
  streams.push(s);
  return s;
}

/** A TCP socket from `localAddress` that connects and says nothing (its peer reads until it closes). */
async function silentPeer(port: number, host: string, localAddress?: string): Promise<net.Socket> {
  const s = track(net.connect({ port, host, ...(localAddress ? { localAddress } : {}) }));
  await once(s, 'connect');
  s.resume();
  return s;
}

function closed(s: Duplex): Promise<void> {
  return new Promise((resolve) => (s.destroyed ? resolve() : s.once('close', () => resolve())));
}

describe('an application listener that throws', () => {
  it("cannot stop corral's own work half-way: three silent sockets time out, all are closed and counted, each error is thrown again on its own", async () => {
    const fixture = fileURLToPath(new URL('../fixtures/throwing-listeners.ts', import.meta.url));
    const { stdout } = await run(process.execPath, ['--import', 'tsx', fixture], { timeout: 20_000 });
    expect(JSON.parse(stdout.trim())).toEqual({ rejects: 3, rejected: 3, silent: 0, escaped: 3 });
  });
});

describe.each(transportCases())('silent sockets over $name', (tc) => {
  afterEach(() => tc.cleanup());

  it('hold no slot: with one handshake and one connection allowed, a real client is served while 20 silent peers wait', async () => {
    const l = await listen(await tc.listenerOptions(), { clientFirst: true, maxHandshakes: 1, maxConnections: 1, maxWaiting: 1 });
    const silent: Duplex[] = [];
    for (let i = 0; i < 20; i++) {
      const s = track(await (tc.name === 'tls' ? tcpToTls(l) : tc.connect(l)));
      s.resume();
      silent.push(s);
    }
    await until(l, '20 silent', (i) => i.silent === 20);
    const real = new LineClient(track(await tc.connect(l)));
    expect(await real.request('served')).toBe('served');
    expect(await l.info()).toMatchObject({ silent: 20, waiting: 0, connections: 1, active: 1, rejected: { queue_full: 0 } });
    // One of them speaks at last: it waits for the slot the real client holds, and gets it.
    if (tc.name !== 'tls') {
      const late = new LineClient(silent[0]!);
      late.send('late');
      await until(l, 'one waiting', (i) => i.waiting === 1 && i.silent === 19);
      real.end();
      expect(await late.line()).toBe('late');
    }
  });
});

/** A raw TCP connection to a TLS listener (a peer that never sends a ClientHello). */
function tcpToTls(l: Listener): Promise<net.Socket> {
  return connectTcp(l.port!);
}

describe('silent sockets: bounds', () => {
  async function tlsListener(options: Extra = {}, host = '127.0.0.1'): Promise<Listener> {
    const c = await testCerts();
    return listen({ transport: 'tls', transportOptions: { host, port: 0, key: c.key, cert: c.cert } }, options);
  }

  it('a source over maxSilentPerSource loses its oldest silent socket; other sources keep theirs', async () => {
    const l = await tlsListener({ maxSilentPerSource: 3 });
    const rejects: RejectEvent[] = [];
    l.on('reject', (e) => rejects.push(e));
    const fromA = [];
    const ports: (number | undefined)[] = [];
    for (let i = 0; i < 5; i++) {
      fromA.push(await silentPeer(l.port!, '127.0.0.1', '127.0.0.2'));
      ports.push(fromA[i]!.localPort);
    }
    const fromB = [];
    for (let i = 0; i < 3; i++) fromB.push(await silentPeer(l.port!, '127.0.0.1', '127.0.0.3'));
    await Promise.all([closed(fromA[0]!), closed(fromA[1]!)]);
    const info = await until(l, '6 silent', (i) => i.silent === 6);
    expect(info.rejected.source_limit).toBe(2);
    expect(rejects.map((r) => [r.reason, r.remoteAddress, r.remotePort])).toEqual([
      ['source_limit', '127.0.0.2', ports[0]],
      ['source_limit', '127.0.0.2', ports[1]],
    ]);
    for (const s of [...fromA.slice(2), ...fromB]) expect(s.destroyed).toBe(false);
  });

  it('maxSilentPerSource holds after the stage shrank back under it: new sockets still count against their source', async () => {
    const l = await tlsListener({ maxSilentPerSource: 2 });
    // Three silent sockets: the stage passes the bound, and sources are counted from then on.
    const a = [await silentPeer(l.port!, '127.0.0.1', '127.0.0.2'), await silentPeer(l.port!, '127.0.0.1', '127.0.0.2')];
    const b = await silentPeer(l.port!, '127.0.0.1', '127.0.0.3');
    await until(l, '3 silent', (i) => i.silent === 3);
    for (const s of a) s.destroy();
    await until(l, '1 silent', (i) => i.silent === 1);
    // Back under the bound in all; four more from A: two of them go.
    const more = [];
    for (let i = 0; i < 4; i++) more.push(await silentPeer(l.port!, '127.0.0.1', '127.0.0.2'));
    await Promise.all([closed(more[0]!), closed(more[1]!)]);
    const info = await until(l, '3 silent', (i) => i.silent === 3);
    expect(info.rejected.source_limit).toBe(2);
    for (const s of [b, ...more.slice(2)]) expect(s.destroyed).toBe(false);
  });

  it('on a dual-stack listener, IPv4 clients are grouped by their IPv4 address, IPv6 clients by /64', async () => {
    const l = await tlsListener({ maxSilentPerSource: 2 }, '::');
    // Four IPv4 clients from two addresses: they arrive as ::ffff:127.0.0.x, two per source.
    const v4 = [];
    for (const from of ['127.0.0.2', '127.0.0.2', '127.0.0.3', '127.0.0.3']) v4.push(await silentPeer(l.port!, '127.0.0.1', from));
    await until(l, '4 silent', (i) => i.silent === 4);
    // Three from ::1, one /64: the oldest of them goes.
    const v6 = [];
    for (let i = 0; i < 3; i++) v6.push(await silentPeer(l.port!, '::1'));
    await closed(v6[0]!);
    const info = await until(l, '6 silent', (i) => i.silent === 6);
    expect(info.rejected.source_limit).toBe(1);
    for (const s of [...v4, ...v6.slice(1)]) expect(s.destroyed).toBe(false);
  });

  it('over maxSilent the listener loses its oldest silent socket, whatever its source', async () => {
    const l = await tlsListener({ maxSilent: 3 });
    const peers = [];
    for (let i = 0; i < 4; i++) peers.push(await silentPeer(l.port!, '127.0.0.1', `127.0.1.${i + 1}`));
    await closed(peers[0]!);
    const info = await until(l, '3 silent', (i) => i.silent === 3);
    expect(info.rejected.silent_limit).toBe(1);
    expect(info.gaveUp).toBe(0);
  });

  it('count once, as rejected, never also as gaveUp: a timeout, a limit and a drain', async () => {
    const l = await tlsListener({ silentTimeout: 300, maxSilent: 2 });
    const peers = [];
    for (let i = 0; i < 3; i++) peers.push(await silentPeer(l.port!, '127.0.0.1', `127.0.2.${i + 1}`));
    await closed(peers[0]!); // over maxSilent: the oldest goes
    await Promise.all(peers.slice(1).map(closed)); // the others at silentTimeout
    const late = await silentPeer(l.port!, '127.0.0.1');
    await until(l, 'one silent', (i) => i.silent === 1);
    const drained = l.drain({ timeout: 1000 });
    await closed(late);
    await drained;
    const info = await l.info();
    expect(info.rejected).toMatchObject({ silent_limit: 1, silent_timeout: 2, shutdown: 1 });
    expect(info.gaveUp).toBe(0);
    expect(info.accepted).toBe(4);
  });

  it('silent sockets opened together are closed over the last quarter of silentTimeout, none sooner, none later, not all at once', async () => {
    const timeout = 2000;
    const l = await tlsListener({ silentTimeout: timeout });
    const began = Date.now();
    const peers = await Promise.all(Array.from({ length: 40 }, (_, i) => silentPeer(l.port!, '127.0.0.1', `127.0.3.${i + 1}`)));
    const held = await Promise.all(peers.map((p) => closed(p).then(() => Date.now() - began)));
    // Each was accepted after `began` and closed at the start of its tick (a thousandth of the
    // timeout), no sooner than ¾ of the timeout after it was accepted, no later than the timeout
    // (the slack: the connects themselves, and a loaded machine's event loop).
    expect(Math.min(...held)).toBeGreaterThanOrEqual(timeout * 0.75 - timeout / 1000 - 1);
    expect(Math.max(...held)).toBeLessThanOrEqual(timeout + 500);
    // 40 deadlines drawn from 500 ms: all within 100 ms of each other has a chance of about 1e-23.
    expect(Math.max(...held) - Math.min(...held)).toBeGreaterThan(100);
    expect((await l.info()).rejected.silent_timeout).toBe(40);
  });

  it('a timeout shorter than a tick still closes every silent socket, also one accepted in the millisecond of a sweep', async () => {
    const l = await tlsListener({ silentTimeout: 1 });
    // One after another: sweeps (every millisecond while a socket is silent) and accepts interleave.
    const peers = [];
    for (let i = 0; i < 100; i++) peers.push(await silentPeer(l.port!, '127.0.0.1', `127.0.5.${i + 1}`));
    await Promise.all(peers.map(closed));
    expect(await until(l, 'all 100 closed', (i) => i.rejected.silent_timeout === 100)).toMatchObject({ silent: 0 });
  });

  it('silent sockets whose timeout passed while the event loop was blocked are all closed at the next sweep', async () => {
    const l = await tlsListener({ silentTimeout: 500 });
    // A first socket, closed by a sweep: the next sweep starts from there.
    await closed(await silentPeer(l.port!, '127.0.0.1', '127.0.4.100'));
    const peers = await Promise.all(Array.from({ length: 20 }, (_, i) => silentPeer(l.port!, '127.0.0.1', `127.0.4.${i + 1}`)));
    // Four timeouts' worth of ticks (of 1 ms) pass with no sweep: far more ticks since the last
    // sweep than there are ticks holding a socket.
    const end = Date.now() + 2000;
    while (Date.now() < end);
    await Promise.all(peers.map(closed));
    expect(await l.info()).toMatchObject({ silent: 0, rejected: { silent_timeout: 21 } });
  });

  it('a waiting TLS peer that sends far more than its ClientHello is closed as malformed: what a waiting socket holds stays bounded', async () => {
    const l = await tlsListener({ maxConnections: 1 });
    const holder = track(tls.connect({ port: l.port!, host: '127.0.0.1', rejectUnauthorized: false }));
    await once(holder, 'secureConnect');
    const hello = await captureClientHello();
    const rejected = new Promise<RejectEvent>((resolve) => l.once('reject', resolve));
    // A ClientHello, then (as no TLS client does before the ServerHello) 100 KB more, in pieces.
    const peer = await silentPeer(l.port!, '127.0.0.1');
    peer.write(hello);
    await until(l, 'one waiting', (i) => i.waiting === 1);
    for (let i = 0; i < 100; i++) peer.write(Buffer.alloc(1000, 0x17));
    expect((await rejected).reason).toBe('malformed');
    await closed(peer);
    // The same in one write: the read that completes the ClientHello brings it all.
    const burst = await silentPeer(l.port!, '127.0.0.1');
    burst.write(Buffer.concat([hello, Buffer.alloc(60_000, 0x17)]));
    await closed(burst);
    expect(await l.info()).toMatchObject({ waiting: 0, silent: 0, gaveUp: 0, rejected: { malformed: 2 } });
    expect(await new LineClient(holder).request('still served')).toBe('still served');
  });

  it('a ClientHello cut short and never finished holds no slot and is closed at silentTimeout', async () => {
    const l = await tlsListener({ silentTimeout: 300, maxHandshakes: 1, maxConnections: 1 });
    const rejected = new Promise<RejectEvent>((resolve) => l.once('reject', resolve));
    const hello = await captureClientHello();
    const partial = await silentPeer(l.port!, '127.0.0.1');
    partial.write(hello.subarray(0, 40));
    const c = track(tls.connect({ port: l.port!, host: '127.0.0.1', rejectUnauthorized: false }));
    await once(c, 'secureConnect');
    expect(await new LineClient(c).request('meanwhile')).toBe('meanwhile');
    expect((await rejected).reason).toBe('silent_timeout');
    await closed(partial);
    expect(await l.info()).toMatchObject({ silent: 0, handshaking: 0, opened: 1, gaveUp: 0, rejected: { silent_timeout: 1 } });
  });

  it('a ClientHello sent in two pieces is admitted once it is complete', async () => {
    const l = await tlsListener();
    const hello = await captureClientHello();
    const s = await silentPeer(l.port!, '127.0.0.1');
    s.pause();
    s.write(hello.subarray(0, 7));
    await until(l, 'silent with a partial record', (i) => i.silent === 1);
    s.write(hello.subarray(7));
    await until(l, 'handshaking', (i) => i.silent === 0 && i.handshaking === 1);
    s.resume();
  });

  it('a peer that closes before it speaks is counted as given up, not as a failure', async () => {
    const l = await tlsListener();
    const s = await silentPeer(l.port!, '127.0.0.1');
    await until(l, 'silent', (i) => i.silent === 1);
    s.end();
    const info = await until(l, 'given up', (i) => i.gaveUp === 1);
    expect(info).toMatchObject({ silent: 0, handshakeFailures: { error: 0, timeout: 0, stalled: 0 } });
    expect(Object.values(info.rejected).reduce((a, b) => a + b, 0)).toBe(0);
  });

  it('a TCP listener speaks first by default: silent clients are served (greeted) at once', async () => {
    const l = await listen(
      { transport: 'tcp', transportOptions: { host: '127.0.0.1', port: 0 } },
      { protocol: { onReady: (conn: Connection) => void conn.sendFrame('hello') } },
    );
    const c = new LineClient(track(await connectTcp(l.port!)));
    expect(await c.line()).toBe('hello');
    expect(await l.info()).toMatchObject({ silent: 0, connections: 1 });
  });

  it('rejects clientFirst with a transport that cannot read first bytes, and bad bounds', async () => {
    const bare: Transport = {
      name: 'bare',
      secure: false,
      listen: () => Promise.reject(new Error('not used')),
      handshake: () => {
        throw new Error('not used');
      },
    };
    await expect(startListener({ name: uniqueName('bad'), protocol: echoProtocol, transport: bare, clientFirst: true })).rejects.toThrow(InvalidOptionError);
    for (const bad of [{ maxSilentPerSource: 0 }, { silentTimeout: -1 }, { sourcePrefix: { ipv6: 129 } }, { clientFirst: 'yes' }, { handshakeBatch: 0 }]) {
      await expect(
        startListener({ name: uniqueName('bad'), protocol: echoProtocol, ...(bad as Extra) }),
      ).rejects.toThrow(InvalidOptionError);
    }
  });
});

describe('handshakes per event-loop turn', () => {
  it('starts at most handshakeBatch handshakes in one turn; the rest start in the following turns', async () => {
    // The memory transport's handshake runs synchronously: count its calls per turn of the loop.
    let turn = 0;
    const turns: number[] = [];
    class CountingTransport extends MemoryTransport {
      override handshake(socket: Parameters<MemoryTransport['handshake']>[0]): ReturnType<MemoryTransport['handshake']> {
        turns.push(turn);
        return super.handshake(socket);
      }
    }
    const t = new CountingTransport();
    const l = await listen({ transport: t }, { handshakeBatch: 3 });
    let ticking = true;
    const tick = (): void => {
      turn++;
      if (ticking) setImmediate(tick);
    };
    setImmediate(tick);
    const clients = Array.from({ length: 10 }, () => new LineClient(track(t.connect())));
    await l.waitForConnections('==', 10);
    ticking = false;
    const perTurn = new Map<number, number>();
    for (const n of turns) perTurn.set(n, (perTurn.get(n) ?? 0) + 1);
    expect(turns).toHaveLength(10);
    expect(Math.max(...perTurn.values())).toBeLessThanOrEqual(3);
    expect(perTurn.size).toBeGreaterThanOrEqual(4);
    expect(await clients[9]!.request('last')).toBe('last');
  });
});

describe('leases: every path gives a slot of maxConnections back exactly once', () => {
  const crashing = {
    onFrame(frame: Buffer, conn: Connection) {
      const line = frame.toString();
      if (line === 'crash') throw new Error('crash requested');
      if (line === 'uncount') conn.removeFromCount();
      conn.sendFrame(frame);
    },
  };

  async function oneSlot(options: Extra = {}): Promise<Listener> {
    return listen({ transport: 'tcp', transportOptions: { host: '127.0.0.1', port: 0 } }, { maxConnections: 1, protocol: crashing, ...options });
  }

  /** A client served in the only slot, and one waiting behind it. */
  async function heldAndWaiting(l: Listener): Promise<{ held: LineClient; next: LineClient }> {
    const held = new LineClient(track(await connectTcp(l.port!)));
    expect(await held.request('in')).toBe('in');
    const next = new LineClient(track(await connectTcp(l.port!)));
    next.send('waiting');
    await until(l, 'one waiting', (i) => i.waiting === 1);
    return { held, next };
  }

  it.each([
    ['the peer closes', (c: LineClient) => c.end()],
    ['the handler crashes', (c: LineClient) => c.send('crash')],
    ['the connection leaves the count', (c: LineClient) => c.send('uncount')],
  ])('when %s, the waiting client gets the slot, and the count never goes below zero', async (_what, act) => {
    const l = await oneSlot();
    const { held, next } = await heldAndWaiting(l);
    act(held);
    expect(await next.line()).toBe('waiting');
    const info = await l.info();
    expect(info.active).toBe(1);
    // The removed connection closes later: its lease was given back already, not twice.
    held.end();
    next.end();
    await l.waitForConnections('==', 0);
    expect((await l.info()).active).toBe(0);
    const again = new LineClient(track(await connectTcp(l.port!)));
    expect(await again.request('again')).toBe('again');
    expect((await l.info()).active).toBe(1);
  });

  it('a drain that forces connections closed gives their slots back', async () => {
    const l = await oneSlot({ protocol: { ...crashing, onShutdown() {} } });
    const { next } = await heldAndWaiting(l);
    const result = await l.drain({ timeout: 50 });
    expect(result).toMatchObject({ forced: 1, abandoned: 1 });
    await closed(next.stream);
    expect(await l.info()).toMatchObject({ active: 0, connections: 0, waiting: 0 });
    await l.resume();
    const c = new LineClient(track(await connectTcp(l.port!)));
    expect(await c.request('after drain')).toBe('after drain');
  });
});
