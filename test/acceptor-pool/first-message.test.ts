/**
 * The acceptor pool reading first messages, through a test transport whose reads are exactly the
 * chunks a test feeds (a kernel may merge or split them; here every split is chosen): a ClientHello
 * split at every byte is admitted once, complete, and not a byte early; what cannot start a
 * ClientHello is refused at the first byte that tells; a peer that leaves while silent or waiting
 * costs no handshake. The first-message check is the real TLS transport's.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { AcceptorPool, type AcceptorPoolOptions } from '../../src/acceptor-pool/acceptor-pool.js';
import type { RejectReason } from '../../src/acceptor-pool/acceptor-pool-stats.js';
import type { AcceptedSocket, Transport, TransportConnection } from '../../src/index.js';
import { TlsTransport } from '../../src/index.js';
import { testCerts } from '../support/certs.js';
import { captureClientHello } from '../support/clients.js';

interface FakeSocket extends AcceptedSocket {
  destroyed: boolean;
  /** What was put back for the handshake to read. */
  unread: Buffer[];
  feed(chunk: Buffer): void;
  end(): void;
}

let seq = 0;
function fakeSocket(address = '192.0.2.1'): FakeSocket & { wire(d: (c: Buffer) => void, e: () => void): void } {
  let onData: ((chunk: Buffer) => void) | undefined;
  let onEnd: (() => void) | undefined;
  return {
    remoteAddress: address,
    remotePort: ++seq,
    destroyed: false,
    unread: [],
    destroy() {
      this.destroyed = true;
    },
    feed: (chunk) => onData?.(chunk),
    end: () => onEnd?.(),
    wire(d, e) {
      onData = d;
      onEnd = e;
    },
  };
}

const pools: AcceptorPool[] = [];
afterEach(() => {
  for (const p of pools.splice(0)) p.close();
});

const defaults: AcceptorPoolOptions = {
  maxConnections: 1024,
  maxHandshakes: 1024,
  handshakeBatch: 1024,
  handshakeTimeout: 60_000,
  maxWaiting: 100,
  waitTimeout: 60_000,
  admission: 'fifo',
  adaptiveTarget: 100,
  overflow: 'close',
  clientFirst: true,
  silentTimeout: 60_000,
  maxSilent: 100,
  maxSilentPerSource: 100,
  sourcePrefix: { ipv4: 32, ipv6: 64 },
  proxyHeader: undefined,
  access: undefined,
  connectionRate: undefined,
  connectionRatePerSource: undefined,
  maxConnectionsPerAddress: Infinity,
};

/** The end of this turn of the event loop, where the pool admits what arrived in it. */
const turnEnd = async (): Promise<void> => {
  // Two turns: a first message joins the queue at the end of the turn after the one it arrived in.
  for (let i = 0; i < 2; i++) await new Promise((resolve) => setImmediate(resolve));
};

/** A pool over a transport with TLS's first-message check, whose handshakes never finish. */
async function pool(options: Partial<AcceptorPoolOptions> = {}) {
  const c = await testCerts();
  const tls = new TlsTransport({ key: c.key, cert: c.cert });
  const started: Buffer[] = [];
  const rejected: RejectReason[] = [];
  let gaveUpReports = 0;
  const transport: Transport = {
    name: 'fake-tls',
    secure: false,
    clientFirst: true,
    earlyEndIsDeparture: true,
    listen: () => Promise.reject(new Error('not used')),
    firstMessageLength: (head) => tls.firstMessageLength(head),
    readFirstBytes: (s, onData, onEnd) => (s as ReturnType<typeof fakeSocket>).wire(onData, onEnd),
    unread: (s, head) => {
      (s as FakeSocket).unread.push(head);
      (s as ReturnType<typeof fakeSocket>).wire(() => {}, () => {});
    },
    handshake: (s) => {
      const f = s as FakeSocket;
      started.push(Buffer.concat(f.unread));
      return new Promise<TransportConnection>(() => {});
    },
  };
  const p = new AcceptorPool(transport, { ...defaults, ...options }, { kind: 'handshake' }, {
    handshaken: () => {},
    handshakeFailed: () => {},
    rejected: (_s, reason) => rejected.push(reason),
    released: () => {},
    changed: () => {
      gaveUpReports++;
    },
    wantsPeerAddress: () => false,
    overflowed: () => {},
  });
  pools.push(p);
  return { p, started, rejected, changes: () => gaveUpReports };
}

describe('reading first messages', () => {
  it('admits a ClientHello split at every byte once, complete, and not a byte early', async () => {
    const hello = await captureClientHello();
    // One handshake per split point, none of which finishes: more than 1,024 on Node 24, whose
    // ClientHello (with a post-quantum key share) is over 1,500 bytes.
    const { p, started, rejected } = await pool({ maxConnections: Infinity, maxHandshakes: 4096 });
    for (let k = 1; k < hello.length; k++) {
      const s = fakeSocket();
      p.admit(s);
      s.feed(hello.subarray(0, k));
      await turnEnd();
      expect(started).toHaveLength(k - 1);
      s.feed(hello.subarray(k));
      await turnEnd();
      expect(started).toHaveLength(k);
      expect(started[k - 1]!.equals(hello)).toBe(true);
    }
    expect(rejected).toEqual([]);
    expect(p.stats.silent).toBe(0);
  });

  it('admits a ClientHello sent byte by byte, with what followed it put back too', async () => {
    const hello = await captureClientHello({ maxVersion: 'TLSv1.2' });
    const { p, started } = await pool();
    const s = fakeSocket();
    p.admit(s);
    const bytes = Buffer.concat([hello, Buffer.from([0x17, 0x03, 0x03])]);
    for (let i = 0; i < hello.length; i++) s.feed(bytes.subarray(i, i + 1));
    await turnEnd();
    expect(started).toHaveLength(1);
    expect(started[0]!.equals(hello)).toBe(true);
  });

  it.each([
    ['an HTTP request', Buffer.from('GET / HTTP/1.1\r\n')],
    ['an SSLv2-style hello', Buffer.from([0x80, 0x2e, 0x01, 0x03, 0x01])],
    ['an alert record', Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02])],
    ['a handshake record that is not a ClientHello', Buffer.from([0x16, 0x03, 0x03, 0x00, 0x04, 0x02, 0, 0, 0])],
    ['an empty record', Buffer.from([0x16, 0x03, 0x01, 0x00, 0x00])],
    ['a record over 2^14 bytes', Buffer.from([0x16, 0x03, 0x01, 0x40, 0x01])],
  ])('closes %s as malformed, at the first byte that tells', async (_what, bytes) => {
    const { p, started, rejected } = await pool();
    const s = fakeSocket();
    p.admit(s);
    let fed = 0;
    while (rejected.length === 0 && fed < bytes.length) s.feed(bytes.subarray(fed, ++fed));
    expect(rejected).toEqual(['malformed']);
    expect(s.destroyed).toBe(true);
    expect(started).toEqual([]);
    expect(fed).toBeLessThanOrEqual(6);
  });

  it('a peer that leaves before its ClientHello is complete gave up; no handshake, nothing rejected', async () => {
    const { p, started, rejected } = await pool();
    const s = fakeSocket();
    p.admit(s);
    s.feed(Buffer.from([0x16, 0x03]));
    s.end();
    expect(p.stats).toMatchObject({ silent: 0, gaveUp: 1 });
    expect(s.destroyed).toBe(true);
    expect(started).toEqual([]);
    expect(rejected).toEqual([]);
  });

  it('a peer that leaves while its ClientHello waits for a slot leaves the queue and costs no handshake', async () => {
    const hello = await captureClientHello();
    const { p, started } = await pool({ maxHandshakes: 1 });
    const first = fakeSocket();
    p.admit(first);
    first.feed(hello);
    await turnEnd();
    const [a, b, c] = [fakeSocket(), fakeSocket(), fakeSocket()];
    for (const s of [a, b, c]) {
      p.admit(s);
      s.feed(hello);
    }
    await turnEnd();
    expect(p.stats).toMatchObject({ handshaking: 1, waiting: 3 });
    b.end(); // b's client gave up (its deadline passed): it closed its end
    expect(p.stats).toMatchObject({ waiting: 2, gaveUp: 1 });
    expect(b.destroyed).toBe(true);
    expect(started).toHaveLength(1);
  });

  it('a ClientHello that arrives with its end (a client that gave up in the kernel accept queue) costs no handshake', async () => {
    const hello = await captureClientHello();
    const { p, started } = await pool();
    const s = fakeSocket();
    p.admit(s);
    s.feed(hello);
    s.end();
    await turnEnd();
    expect(started).toEqual([]);
    expect(p.stats).toMatchObject({ gaveUp: 1, waiting: 0, handshaking: 0 });
  });
});
