/**
 * The silent stage on its own: a ClientHello record split at every byte (and byte by byte) is
 * admitted exactly once, complete; what cannot start a ClientHello is refused at the first byte
 * that says so. The stage reads through a function, so the chunks here are exactly the reads.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { type SilentCloseReason, SilentSockets } from '../../src/acceptor-pool/silent-sockets.js';
import type { AcceptedSocket } from '../../src/index.js';
import { TlsTransport } from '../../src/index.js';
import { testCerts } from '../support/certs.js';
import { captureClientHello } from '../support/clients.js';

interface FakeSocket extends AcceptedSocket {
  destroyed: boolean;
  feed(chunk: Buffer): void;
  end(): void;
}

function fakeSocket(): FakeSocket {
  let onData: (chunk: Buffer) => void = () => {};
  let onEnd: () => void = () => {};
  const s: FakeSocket & { wire(d: (c: Buffer) => void, e: () => void): void } = {
    remoteAddress: '192.0.2.1',
    remotePort: 1234,
    destroyed: false,
    destroy() {
      this.destroyed = true;
    },
    feed: (chunk) => onData(chunk),
    end: () => onEnd(),
    wire(d, e) {
      onData = d;
      onEnd = e;
    },
  };
  return s;
}

let stages: SilentSockets[] = [];
afterEach(() => {
  for (const st of stages.splice(0)) st.clear(() => {});
});

async function stage(): Promise<{ st: SilentSockets; spoke: Buffer[]; closed: SilentCloseReason[]; gaveUp: number[] }> {
  const c = await testCerts();
  const tls = new TlsTransport({ key: c.key, cert: c.cert });
  const spoke: Buffer[] = [];
  const closed: SilentCloseReason[] = [];
  const gaveUp: number[] = [];
  const st = new SilentSockets(
    { silentTimeout: 60_000, maxSilent: 100, maxSilentPerSource: 100, sourcePrefix: { ipv4: 32, ipv6: 64 } },
    (socket, onData, onEnd) => (socket as unknown as { wire(d: typeof onData, e: typeof onEnd): void }).wire(onData, onEnd),
    (head) => tls.firstMessageLength(head),
    { spoke: (_s, head) => spoke.push(head), closed: (_s, reason) => closed.push(reason), gaveUp: () => gaveUp.push(1) },
  );
  stages.push(st);
  return { st, spoke, closed, gaveUp };
}

describe('the silent stage', () => {
  it('admits a ClientHello split at every byte once, complete, and not a byte early', async () => {
    const hello = await captureClientHello();
    const { st, spoke, closed } = await stage();
    for (let k = 1; k < hello.length; k++) {
      const s = fakeSocket();
      st.add(s, Date.now());
      s.feed(hello.subarray(0, k));
      expect(spoke).toHaveLength(k - 1);
      s.feed(hello.subarray(k));
      expect(spoke).toHaveLength(k);
      expect(spoke[k - 1]!.equals(hello)).toBe(true);
    }
    expect(closed).toEqual([]);
    expect(st.size).toBe(0);
  });

  it('admits a ClientHello sent byte by byte, with what followed it', async () => {
    const hello = await captureClientHello({ maxVersion: 'TLSv1.2' });
    const { st, spoke } = await stage();
    const s = fakeSocket();
    st.add(s, Date.now());
    const extra = Buffer.from([0x17, 0x03, 0x03]);
    const bytes = Buffer.concat([hello, extra]);
    for (let i = 0; i < hello.length; i++) s.feed(bytes.subarray(i, i + 1));
    expect(spoke).toHaveLength(1);
    expect(spoke[0]!.equals(hello)).toBe(true);
  });

  it.each([
    ['an HTTP request', Buffer.from('GET / HTTP/1.1\r\n')],
    ['an SSLv2-style hello', Buffer.from([0x80, 0x2e, 0x01, 0x03, 0x01])],
    ['an alert record', Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02])],
    ['a handshake record that is not a ClientHello', Buffer.from([0x16, 0x03, 0x03, 0x00, 0x04, 0x02, 0, 0, 0])],
    ['an empty record', Buffer.from([0x16, 0x03, 0x01, 0x00, 0x00])],
    ['a record over 2^14 bytes', Buffer.from([0x16, 0x03, 0x01, 0x40, 0x01])],
  ])('closes %s as malformed, at the first byte that tells', async (_what, bytes) => {
    const { st, spoke, closed } = await stage();
    const s = fakeSocket();
    st.add(s, Date.now());
    let fed = 0;
    while (closed.length === 0 && fed < bytes.length) s.feed(bytes.subarray(fed, ++fed));
    expect(closed).toEqual(['malformed']);
    expect(s.destroyed).toBe(true);
    expect(spoke).toEqual([]);
    expect(fed).toBeLessThanOrEqual(6);
  });

  it('a peer that ends before its ClientHello is complete gave up; it is destroyed', async () => {
    const { st, gaveUp } = await stage();
    const s = fakeSocket();
    st.add(s, Date.now());
    s.feed(Buffer.from([0x16, 0x03]));
    s.end();
    expect(gaveUp).toHaveLength(1);
    expect(s.destroyed).toBe(true);
    expect(st.size).toBe(0);
  });
});
