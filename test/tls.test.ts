import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import net from 'node:net';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type Connection,
  type HandshakeErrorEvent,
  type Listener,
  type RejectEvent,
  type ListenerOptions,
  type CloseReason,
  type ProtocolHandler,
  type TlsInfo,
  type TlsTransportOptions,
  startListener,
  TlsTransport,
} from '../src/index.js';
import { certificateFor, testCerts } from './support/certs.js';
import { captureClientHello, connectTcp, connectTls, LineClient, once } from './support/clients.js';
import { uniqueName } from './support/transports.js';

// ---- harness ------------------------------------------------------------------------------------

const listeners: Listener[] = [];
const sockets: net.Socket[] = [];
const servers: net.Server[] = [];
const children: ChildProcess[] = [];

afterEach(async () => {
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit');
      child.kill();
      await exited;
    }
  }
  for (const s of sockets.splice(0)) s.destroy();
  for (const s of servers.splice(0)) s.close();
  await Promise.all(listeners.splice(0).map((l) => l.stop({ timeout: 1000 })));
});

/** Remember a client socket for cleanup; its errors (resets, alerts) are the test's business. */
function track<S extends net.Socket>(s: S): S {
  s.on('error', () => {});
  sockets.push(s);
  return s;
}

interface TlsListener {
  listener: Listener;
  port: number;
  /** conn.tls of every connection, in the order they became ready. */
  seen: TlsInfo[];
}

/** A line echo over TLS on loopback that records what each connection learned in its handshake. */
async function startTls(
  transportOptions: Partial<TlsTransportOptions> = {},
  options: Omit<ListenerOptions, 'name' | 'protocol' | 'transport' | 'transportOptions'> = {},
  hooks: Pick<ProtocolHandler, 'onError' | 'onClose'> = {},
): Promise<TlsListener> {
  const c = await testCerts();
  const seen: TlsInfo[] = [];
  const listener = await startListener({
    name: uniqueName('tls'),
    transport: 'tls',
    transportOptions: { host: '127.0.0.1', port: 0, key: c.key, cert: c.cert, ...transportOptions },
    framing: 'line',
    protocol: {
      onReady(conn: Connection) {
        seen.push(conn.tls!);
      },
      onFrame(frame: Buffer, conn: Connection) {
        conn.sendFrame(frame);
      },
      ...hooks,
    },
    ...options,
  });
  listeners.push(listener);
  return { listener, port: listener.port!, seen };
}

async function tlsClient(port: number, options: tls.ConnectionOptions = {}): Promise<LineClient> {
  return new LineClient(track(await connectTls(port, options)));
}

function nextHandshakeError(l: Listener): Promise<HandshakeErrorEvent> {
  return new Promise((resolve) => l.once('handshakeError', resolve));
}

function nextReject(l: Listener): Promise<RejectEvent> {
  return new Promise((resolve) => l.once('reject', resolve));
}

function closed(s: net.Socket): Promise<void> {
  return new Promise((resolve) => (s.destroyed && s.closed ? resolve() : s.once('close', () => resolve())));
}

function fingerprint(pem: string): string {
  return new X509Certificate(pem).fingerprint256;
}

function peerFingerprint(c: LineClient): string {
  return (c.stream as tls.TLSSocket).getPeerCertificate().fingerprint256;
}

/** A second self-signed certificate, for the SNI name `other.test`. */
const otherCert = () => certificateFor('other.test');

/** A real TLS ClientHello, captured from Node's client by a plain TCP server. */
// ---- handshake limits and failures -------------------------------------------------------------

describe('TLS handshake failures', () => {
  it('a client that never sends its ClientHello holds no slot and is closed at silentTimeout; others connect meanwhile', async () => {
    const { listener, port } = await startTls({}, { silentTimeout: 300, maxHandshakes: 1, maxConnections: 1 });
    const rejected = nextReject(listener);
    const silent = track(await connectTcp(port));
    silent.resume();
    const silentClosed = closed(silent);

    // maxHandshakes and maxConnections are 1: were the silent socket holding a slot, this would wait.
    const c = await tlsClient(port);
    expect(await c.request('meanwhile')).toBe('meanwhile');
    expect((await listener.info()).silent).toBe(1);

    await silentClosed;
    const event = await rejected;
    expect(event.reason).toBe('silent_timeout');
    expect(event.remoteAddress).toBe('127.0.0.1');
    const info = await listener.info();
    expect(info.rejected.silent_timeout).toBe(1);
    expect(info.gaveUp).toBe(0); // closed by corral, counted once (as rejected), not as a peer that left
    expect(info.handshakeFailures).toEqual({ timeout: 0, stalled: 0, error: 0 });
    expect(info.silent).toBe(0);
    expect(info.handshaking).toBe(0);
    expect(info.opened).toBe(1);
    expect(await c.request('still fine')).toBe('still fine');
  });

  it('garbage instead of a ClientHello is closed before OpenSSL sees it, counted as malformed; the listener keeps serving', async () => {
    const { listener, port } = await startTls();
    const rejected = nextReject(listener);
    const raw = track(await connectTcp(port));
    raw.resume();
    const rawClosed = closed(raw);
    raw.write('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n');
    await rawClosed;
    expect((await rejected).reason).toBe('malformed');
    const info = await listener.info();
    expect(info.rejected.malformed).toBe(1);
    expect(info.handshakeFailures).toEqual({ timeout: 0, stalled: 0, error: 0 });
    expect(info.handshaking).toBe(0);
    expect(info.opened).toBe(0);
    const c = await tlsClient(port);
    expect(await c.request('after garbage')).toBe('after garbage');
  });

  it('a TLS record that is not a ClientHello is malformed; a ClientHello record with a bad body is a handshake error', async () => {
    const hello = await captureClientHello();
    const { listener, port } = await startTls();
    // An alert record (type 21) where the ClientHello should be.
    const rejected = nextReject(listener);
    const alert = track(await connectTcp(port));
    alert.resume();
    alert.write(Buffer.from([21, 3, 3, 0, 2, 2, 40]));
    await closed(alert);
    expect((await rejected).reason).toBe('malformed');
    // A handshake record of the right length that OpenSSL then refuses: past corral's check.
    const failed = nextHandshakeError(listener);
    const bad = Buffer.from(hello);
    bad.fill(0xee, 9, 40); // inside the ClientHello body: version and random mangled
    bad[9] = 0x01; // an impossible legacy_version 0x01ee
    const mangled = track(await connectTcp(port));
    mangled.resume();
    mangled.write(bad);
    await closed(mangled);
    expect((await failed).kind).toBe('error');
    const info = await listener.info();
    expect(info.rejected.malformed).toBe(1);
    expect(info.handshakeFailures.error).toBe(1);
  });

  it('a client that disconnects mid-handshake is counted and gives its handshake slot back', async () => {
    const hello = await captureClientHello();
    const { listener, port } = await startTls({}, { maxHandshakes: 1 });
    const failed = nextHandshakeError(listener);
    const raw = track(await connectTcp(port));
    raw.write(hello);
    await once(raw, 'data'); // the server's first flight: the handshake is under way
    expect((await listener.info()).handshaking).toBe(1);
    raw.destroy();

    const event = await failed;
    expect(event.kind).toBe('error');
    const info = await listener.info();
    expect(info.handshaking).toBe(0);
    expect(info.active).toBe(0);
    expect(info.handshakeFailures).toEqual({ timeout: 0, stalled: 0, error: 1 });
    // maxHandshakes is 1: a leaked slot would leave this client waiting.
    const c = await tlsClient(port);
    expect(await c.request('slot is free')).toBe('slot is free');
  });

  it('stop() cuts a stalled handshake at its deadline and has counted and reported it when it resolves', async () => {
    const hello = await captureClientHello();
    const { listener, port } = await startTls();
    const order: string[] = [];
    listener.on('handshakeError', (e) => order.push(`handshakeError ${e.kind}`));
    listener.on('stop', () => order.push('stop'));
    const raw = track(await connectTcp(port));
    raw.write(hello);
    await once(raw, 'data'); // the server's first flight; the client never answers it
    const result = await listener.stop({ timeout: 100 });
    expect(result).toMatchObject({ connections: 0, abandoned: 1 });
    const info = await listener.info();
    expect(info.handshaking).toBe(0);
    expect(info.active).toBe(0);
    expect(info.handshakeFailures.error).toBe(1);
    expect(order).toEqual(['handshakeError error', 'stop']);
  });

  it('refuses TLS 1.1 (minimum TLSv1.2), which the same client negotiates with a server that allows it', async (ctx) => {
    const c = await testCerts();
    // OpenSSL 3 refuses TLS < 1.2 at the default security level on both ends, so the old client
    // lowers its own level; a plain Node server allowing TLS 1.1 proves the client really speaks it.
    const old: tls.ConnectionOptions = { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT:@SECLEVEL=0' };
    const control = tls.createServer({ key: c.key, cert: c.cert, minVersion: 'TLSv1', ciphers: 'DEFAULT:@SECLEVEL=0' }, (s) => s.end());
    servers.push(control);
    await new Promise<void>((resolve) => control.listen(0, '127.0.0.1', resolve));
    let controlProtocol: string | null = null;
    try {
      const s = track(await connectTls((control.address() as net.AddressInfo).port, old));
      controlProtocol = s.getProtocol();
      s.destroy();
    } catch (err) {
      ctx.skip(`this OpenSSL cannot negotiate TLS 1.1 even at @SECLEVEL=0 (${(err as Error).message}): no old client to refuse`);
    }
    expect(controlProtocol).toBe('TLSv1.1');

    const { listener, port, seen } = await startTls();
    const failed = nextHandshakeError(listener);
    const s = track(tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false, ...old }));
    const clientError = once<Error>(s, 'error');
    const outcome = await new Promise<string>((resolve) => {
      s.once('secureConnect', () => resolve(`connected with ${s.getProtocol()}`));
      s.once('close', () => resolve('closed'));
    });
    expect(outcome).toBe('closed');
    expect(await clientError).toBeInstanceOf(Error);
    const event = await failed;
    expect(event.kind).toBe('error');
    expect((await listener.info()).handshakeFailures).toEqual({ timeout: 0, stalled: 0, error: 1 });

    // TLS 1.2 is still accepted.
    const ok = await tlsClient(port, { maxVersion: 'TLSv1.2' });
    expect(await ok.request('v1.2')).toBe('v1.2');
    expect(seen.map((t) => t.protocol)).toEqual(['TLSv1.2']);
  });
});

// ---- what a connection learns from its handshake ----------------------------------------------------

describe('connection TLS details', () => {
  it('protocol, SNI servername, ALPN, and session resumption with a TLS 1.3 ticket', async () => {
    const { port, seen } = await startTls({ ALPNProtocols: ['h2', 'corral'] });

    const first = track(tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false, servername: 'localhost', ALPNProtocols: ['corral'] }));
    const ticket = once<Buffer>(first, 'session');
    await once(first, 'secureConnect');
    const c1 = new LineClient(first);
    expect(await c1.request('first')).toBe('first');
    const session = await ticket;
    c1.end();
    await c1.closed;

    expect(seen[0]).toMatchObject({
      protocol: 'TLSv1.3',
      servername: 'localhost',
      alpnProtocol: 'corral',
      resumed: false,
      authorized: false,
      peerCertificate: null,
    });
    expect(seen[0]!.cipher).toEqual(expect.any(String));

    const second = await tlsClient(port, { servername: 'localhost', ALPNProtocols: ['corral'], session });
    expect(await second.request('second')).toBe('second');
    expect((second.stream as tls.TLSSocket).isSessionReused()).toBe(true);
    expect(seen[1]).toMatchObject({ protocol: 'TLSv1.3', servername: 'localhost', resumed: true });

    // No SNI (an IP address) and no ALPN: both null.
    const plain = await tlsClient(port);
    expect(await plain.request('third')).toBe('third');
    expect(seen[2]).toMatchObject({ protocol: 'TLSv1.3', servername: null, alpnProtocol: null, resumed: false });
  });

  it("the cipher suite is the client's choice by default (unlike tls.createServer), the server's with honorCipherOrder", async () => {
    const suites = ['TLS_AES_128_GCM_SHA256', 'TLS_CHACHA20_POLY1305_SHA256', 'TLS_AES_256_GCM_SHA384'];
    const negotiated = async (port: number, clientOrder: readonly string[]): Promise<string> => {
      const c = await tlsClient(port, { ciphers: clientOrder.join(':') });
      expect(await c.request('x')).toBe('x');
      return (c.stream as tls.TLSSocket).getCipher().name;
    };
    const byClient = await startTls();
    expect(await negotiated(byClient.port, suites)).toBe('TLS_AES_128_GCM_SHA256');
    expect(await negotiated(byClient.port, [...suites].reverse())).toBe('TLS_AES_256_GCM_SHA384');
    expect(byClient.seen.map((t) => t.cipher)).toEqual(['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384']);

    const byServer = await startTls({ honorCipherOrder: true, ciphers: 'TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384' });
    expect(await negotiated(byServer.port, suites)).toBe('TLS_CHACHA20_POLY1305_SHA256');
    expect(await negotiated(byServer.port, [...suites].reverse())).toBe('TLS_CHACHA20_POLY1305_SHA256');
  });

  it('SNI: a client asking for other.test gets that certificate, other names the default', async () => {
    const c = await testCerts();
    const other = await otherCert();
    const { port, seen } = await startTls({ sni: { 'other.test': { key: other.key, cert: other.cert } } });

    const a = await tlsClient(port, { servername: 'other.test' });
    expect(peerFingerprint(a)).toBe(fingerprint(other.cert));
    const b = await tlsClient(port, { servername: 'localhost' });
    expect(peerFingerprint(b)).toBe(fingerprint(c.cert));
    const d = await tlsClient(port);
    expect(peerFingerprint(d)).toBe(fingerprint(c.cert));
    // A verifying client trusts the other.test certificate for that name.
    const strict = await tlsClient(port, { servername: 'other.test', ca: [other.cert], rejectUnauthorized: true });
    expect(await strict.request('verified')).toBe('verified');
    expect(seen.map((t) => t.servername)).toEqual(['other.test', 'localhost', null, 'other.test']);
  });

  it('update() serves new certificates to new connections; open connections keep theirs', async () => {
    const c = await testCerts();
    const other = await otherCert();
    const transport = new TlsTransport({ host: '127.0.0.1', port: 0, key: c.key, cert: c.cert });
    const listener = await startListener({
      name: uniqueName('tls-update'),
      transport,
      framing: 'line',
      protocol: {
        onFrame(frame: Buffer, conn: Connection) {
          conn.sendFrame(frame);
        },
      },
    });
    listeners.push(listener);

    const before = await tlsClient(listener.port!);
    expect(peerFingerprint(before)).toBe(fingerprint(c.cert));
    transport.update({ key: other.key, cert: other.cert });
    const after = await tlsClient(listener.port!);
    expect(peerFingerprint(after)).toBe(fingerprint(other.cert));
    expect(await after.request('new cert')).toBe('new cert');
    expect(await before.request('old cert')).toBe('old cert');
    expect(peerFingerprint(before)).toBe(fingerprint(c.cert));
  });
});

// ---- TLS errors after the handshake ------------------------------------------------------------------

describe('TLS errors after the handshake', () => {
  /** An application-data record of 32 bytes that no key decrypts. */
  const CORRUPT_RECORD = Buffer.concat([Buffer.from([0x17, 3, 3, 0, 32]), Buffer.alloc(32, 7)]);

  interface Ended {
    errors: string[];
    reason: CloseReason;
  }

  /** A TLS line echo whose handler records the errors and the close reason of its first connection. */
  async function startRecording(): Promise<{ listener: Listener; port: number; ended: Promise<Ended> }> {
    const errors: string[] = [];
    let done!: (e: Ended) => void;
    const ended = new Promise<Ended>((resolve) => (done = resolve));
    const { listener, port } = await startTls(
      {},
      {},
      {
        onError(err: Error) {
          errors.push((err as { code?: string }).code ?? err.message);
        },
        onClose(_conn: Connection, reason: CloseReason) {
          done({ errors, reason });
        },
      },
    );
    return { listener, port, ended };
  }

  it('a corrupt record closes the connection with an error the handler hears of; the listener keeps serving', async () => {
    const { listener, port, ended } = await startRecording();
    const raw = track(await connectTcp(port));
    const c = new LineClient(track(tls.connect({ socket: raw, rejectUnauthorized: false })));
    expect(await c.request('before')).toBe('before');
    raw.write(CORRUPT_RECORD);
    const { errors, reason } = await ended;
    expect(reason).toBe('error');
    expect(errors).toHaveLength(1);
    await closed(raw);
    expect((await listener.info()).connections).toBe(0);
    const d = await tlsClient(port);
    expect(await d.request('after')).toBe('after');
  });

  it("a corrupt record in the same segment as the client's Finished: the same, and no uncaught error", async () => {
    const { listener, port, ended } = await startRecording();
    const raw = track(await connectTcp(port));
    // The client's second flight (its Finished) goes out with a corrupt record behind it, in one
    // write: the server reads both at once, the error arriving as the handshake completes.
    let writes = 0;
    const wire = new Duplex({
      read() {},
      write(chunk: Buffer, _encoding, cb) {
        writes++;
        raw.write(writes === 2 ? Buffer.concat([chunk, CORRUPT_RECORD]) : chunk, cb);
      },
    });
    raw.on('data', (d: Buffer) => wire.push(d));
    raw.on('close', () => wire.destroy());
    track(tls.connect({ socket: wire as unknown as net.Socket, rejectUnauthorized: false }) as unknown as net.Socket);
    const { errors, reason } = await ended;
    expect(writes).toBeGreaterThanOrEqual(2);
    expect(reason).toBe('error');
    expect(errors).toHaveLength(1);
    expect((await listener.info()).connections).toBe(0);
    const d = await tlsClient(port);
    expect(await d.request('after')).toBe('after');
  });

  it('more client-initiated TLS 1.2 renegotiations than tls.CLIENT_RENEG_LIMIT close the connection (ERR_TLS_SESSION_ATTACK)', async () => {
    const { port, ended } = await startRecording();
    const s = track(await connectTls(port, { maxVersion: 'TLSv1.2' }));
    const renegotiate = (): Promise<Error | null> =>
      new Promise((resolve) => {
        if (!s.renegotiate({ rejectUnauthorized: false }, (err) => resolve(err))) resolve(new Error('not renegotiated'));
        s.once('close', () => resolve(new Error('closed')));
      });
    for (let i = 0; i < tls.CLIENT_RENEG_LIMIT; i++) expect(await renegotiate()).toBeNull();
    void renegotiate();
    const { errors, reason } = await ended;
    expect(errors).toEqual(['ERR_TLS_SESSION_ATTACK']);
    expect(reason).toBe('error');
    await closed(s);
  });
});

// ---- mutual TLS -------------------------------------------------------------------------------------

describe('mutual TLS', () => {
  it('requestCert with ca: a client certificate signed by the CA is accepted, a client without one is refused', async () => {
    const c = await testCerts();
    const { listener, port, seen } = await startTls({ requestCert: true, ca: [c.cert] });

    const device = await tlsClient(port, { key: c.clientKey, cert: c.clientCert });
    expect(await device.request('device')).toBe('device');
    expect(seen[0]).toMatchObject({ authorized: true, authorizationError: null });
    expect((seen[0]!.peerCertificate as { subject?: { CN?: string } }).subject?.CN).toBe('device-1');

    const failed = nextHandshakeError(listener);
    // TLS 1.3: the client may see secureConnect before the server's alert, so wait for the close.
    const anonymous = track(tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false }));
    const a = new LineClient(anonymous);
    a.send('let me in');
    await a.closed;
    await expect(a.line()).rejects.toThrow('connection closed');
    expect((await failed).kind).toBe('error');
    const info = await listener.info();
    expect(info.handshakeFailures).toEqual({ timeout: 0, stalled: 0, error: 1 });
    expect(info.opened).toBe(1);
    expect(seen).toHaveLength(1);
  });

  it('with rejectUnauthorized false, unverified clients are accepted and told apart by authorized/authorizationError', async () => {
    const c = await testCerts();
    const other = await otherCert();
    const { port, seen } = await startTls({ requestCert: true, rejectUnauthorized: false, ca: [c.cert] });

    const anonymous = await tlsClient(port);
    expect(await anonymous.request('anonymous')).toBe('anonymous');
    const stranger = await tlsClient(port, { key: other.key, cert: other.cert });
    expect(await stranger.request('stranger')).toBe('stranger');
    const device = await tlsClient(port, { key: c.clientKey, cert: c.clientCert });
    expect(await device.request('device')).toBe('device');

    expect(seen[0]).toMatchObject({ authorized: false, peerCertificate: null });
    expect(seen[0]!.authorizationError).toEqual(expect.any(String));
    expect(seen[1]).toMatchObject({ authorized: false });
    expect(seen[1]!.authorizationError).toEqual(expect.any(String));
    expect((seen[1]!.peerCertificate as { subject?: { CN?: string } }).subject?.CN).toBe('other.test');
    expect(seen[2]).toMatchObject({ authorized: true, authorizationError: null });
  });
});

// ---- a real external client --------------------------------------------------------------------------

const hasOpenssl = spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0;

describe('openssl s_client', () => {
  it.skipIf(!hasOpenssl)('gets its line echoed', async () => {
    const { port, seen } = await startTls();
    const child = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-quiet'], {
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: 10_000,
    });
    children.push(child);
    let out = '';
    let err = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => {
      err += d;
    });
    const echoed = new Promise<void>((resolve, reject) => {
      child.stdout.setEncoding('utf8');
      child.stdout.on('data', (d: string) => {
        out += d;
        if (out.includes('hello from openssl\n')) resolve();
      });
      child.on('exit', (code, signal) => reject(new Error(`openssl exited (${code ?? signal}) before the echo; stdout=${out} stderr=${err}`)));
      child.on('error', reject);
    });
    child.stdin.write('hello from openssl\n');
    await echoed;
    expect(seen).toHaveLength(1);
    expect(seen[0]!.protocol).toMatch(/^TLSv1\.[23]$/);
  });
});
