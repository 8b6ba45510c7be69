/**
 * Helpers for session-resumption tests: a TLS line listener that reports, per connection, whether
 * it resumed a session and whether the client certificate was authorized, and a client visit that
 * returns those and the newest session ticket. Every listener and socket is cleaned up by
 * `cleanUp()` (call it in afterEach).
 */
import tls from 'node:tls';
import { type Connection, type Listener, startListener, type TlsTransport, type TlsTransportOptions } from '../../src/index.js';
import { testCerts } from '../support/certs.js';
import { LineClient, once } from '../support/clients.js';
import { uniqueName } from '../support/transports.js';

const started: Listener[] = [];
const sockets: tls.TLSSocket[] = [];

export async function cleanUp(): Promise<void> {
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(started.splice(0).map((l) => (l.status === 'stopped' ? undefined : l.stop({ timeout: 500 }))));
}

/** Echo, but `resumed` and `authorized` are answered with what the connection's TLS says. */
const sessionProtocol = {
  onFrame(frame: Buffer, conn: Connection) {
    const line = frame.toString();
    if (line === 'resumed') conn.sendFrame(String(conn.tls?.resumed));
    else if (line === 'authorized') conn.sendFrame(String(conn.tls?.authorized));
    else conn.sendFrame(frame);
  },
};

/** A listener on `transport: 'tls'` with the test certificate and `transportOptions`. */
export async function tlsListener(transportOptions: Partial<TlsTransportOptions>, name = uniqueName('sessions')): Promise<Listener> {
  const c = await testCerts();
  const l = await startListener({
    name,
    transport: 'tls',
    transportOptions: { host: '127.0.0.1', port: 0, key: c.key, cert: c.cert, ...transportOptions },
    framing: 'line',
    protocol: sessionProtocol,
  });
  started.push(l);
  return l;
}

/** A listener on a TlsTransport object the test built. */
export async function objectListener(transport: TlsTransport, name = uniqueName('sessions')): Promise<Listener> {
  const l = await startListener({ name, transport, framing: 'line', protocol: sessionProtocol });
  started.push(l);
  return l;
}

export interface Visit {
  resumed: boolean;
  authorized: boolean;
  session: Buffer;
}

/** Connect (offering `options.session`), ask what the server saw, and return it with the newest session. */
export async function visit(l: { readonly port: number | undefined }, options: tls.ConnectionOptions = {}): Promise<Visit> {
  const s = tls.connect({ port: l.port!, host: '127.0.0.1', rejectUnauthorized: false, ...options });
  s.on('error', () => {});
  sockets.push(s);
  let session: Buffer | undefined;
  s.on('session', (b: Buffer) => (session = b));
  await once(s, 'secureConnect');
  const c = new LineClient(s);
  const resumed = (await c.request('resumed')) === 'true';
  const authorized = (await c.request('authorized')) === 'true';
  // TLS 1.3 tickets arrive after the handshake; one echo round trip later they are in.
  await c.request('sync');
  // A TLS 1.2 client learns of a renewed ticket only through its session, not the event.
  session ??= s.getSession();
  c.end();
  await c.closed;
  // A resumed session gets no new ticket unless the server renews it: keep the one offered.
  const kept = session ?? (options.session as Buffer | undefined);
  if (kept === undefined) throw new Error('no session ticket received');
  return { resumed, authorized, session: kept };
}
