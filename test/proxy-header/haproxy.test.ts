/**
 * Conformance against a real sender: HAProxy (/usr/sbin/haproxy, or $HAPROXY) relays loopback
 * connections to small capture servers with `send-proxy` (v1) and `send-proxy-v2` with
 * `proxy-v2-options crc32c,unique-id,authority,ssl,...`, and sends LOCAL / UNKNOWN headers with its
 * health checks. Every header it sends must parse, fed as it arrived, to what the client knows of
 * its own connection. Skipped, with a message, when no haproxy binary is there.
 */
import { join } from 'node:path';
import { type AddressInfo, type Server, type Socket, connect, createServer } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PP2_CLIENT, PP2_SUBTYPE_SSL, PP2_TYPE, type ProxyHeader } from '../../src/proxy-header/header.js';
import { parseProxyHeader } from '../../src/proxy-header/parse.js';
import type { ProxyHeaderParseResult } from '../../src/proxy-header/parse-result.js';
import { testCerts } from '../support/certs.js';
import { freePort, HAPROXY, Haproxy, skipWithoutHaproxy } from '../support/haproxy.js';

if (skipWithoutHaproxy) console.warn(`[haproxy.test] skipped: no haproxy binary at ${HAPROXY} (set HAPROXY to point at one)`);

/** One connection as a capture server saw it: every byte, and the parser's answer after each chunk. */
interface Captured {
  bytes: Buffer;
  answers: ProxyHeaderParseResult[];
}

/** A TCP server on 127.0.0.1 that records each connection until the peer closes it. */
class CaptureServer {
  readonly server: Server;
  private readonly done: Captured[] = [];
  private readonly waiting: { match: (c: Captured) => boolean; resolve: (c: Captured) => void }[] = [];

  constructor() {
    this.server = createServer((socket: Socket) => {
      const chunks: Buffer[] = [];
      const answers: ProxyHeaderParseResult[] = [];
      socket.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        answers.push(parseProxyHeader(Buffer.concat(chunks)));
      });
      socket.on('error', () => {});
      socket.on('end', () => socket.end());
      socket.on('close', () => this.deliver({ bytes: Buffer.concat(chunks), answers }));
    });
  }

  listen(): Promise<number> {
    return new Promise((resolve) => this.server.listen(0, '127.0.0.1', () => resolve((this.server.address() as AddressInfo).port)));
  }

  private deliver(c: Captured): void {
    const i = this.waiting.findIndex((w) => w.match(c));
    if (i === -1) {
      this.done.push(c);
      return;
    }
    const [waiter] = this.waiting.splice(i, 1);
    waiter!.resolve(c);
  }

  /** The first connection whose bytes match (closed ones first, else the next to close). */
  find(match: (c: Captured) => boolean): Promise<Captured> {
    const i = this.done.findIndex(match);
    if (i !== -1) return Promise.resolve(this.done.splice(i, 1)[0]!);
    return new Promise((resolve) => this.waiting.push({ match, resolve }));
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** A capture of a connection from client port `port` (readiness probes and checks come from others). */
function fromPort(port: number): (c: Captured) => boolean {
  return (c) => {
    const result = parseProxyHeader(c.bytes);
    return result.status === 'complete' && result.header.source !== undefined && 'port' in result.header.source && result.header.source.port === port;
  };
}

const anyCapture = (): boolean => true;

/** The header a capture holds; checks that the first final answer while bytes arrived was this one. */
function headerOf(c: Captured): { header: ProxyHeader; payload: Buffer } {
  const final = c.answers.find((a) => a.status !== 'incomplete');
  const whole = parseProxyHeader(c.bytes);
  if (whole.status !== 'complete') expect.fail(`${c.bytes.toString('hex')}: ${JSON.stringify(whole)}`);
  expect(final?.status).toBe('complete');
  if (final?.status === 'complete') expect(final.length).toBe(whole.length);
  return { header: whole.header, payload: c.bytes.subarray(whole.length) };
}

/** Connects, sends `hello`, waits for the other side to close. Resolves with the local port. */
function plainClient(host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port }, () => {
      const local = socket.localPort!;
      socket.end('hello');
      socket.on('close', () => resolve(local));
    });
    socket.on('error', reject);
    socket.resume();
  });
}

const captures = { tls: new CaptureServer(), v1: new CaptureServer(), v2: new CaptureServer(), checkV1: new CaptureServer(), checkV2: new CaptureServer() };
let capturePorts: Record<keyof typeof captures, number>;
const ports = { tls: 0, v1: 0, v1six: 0, v2: 0, v2six: 0 };
let haproxy: Haproxy | undefined;

describe.skipIf(skipWithoutHaproxy)('headers sent by a real haproxy', () => {
  beforeAll(async () => {
    const certs = await testCerts();
    const c = (capturePorts = {
      tls: await captures.tls.listen(),
      v1: await captures.v1.listen(),
      v2: await captures.v2.listen(),
      checkV1: await captures.checkV1.listen(),
      checkV2: await captures.checkV2.listen(),
    });
    ports.tls = await freePort('127.0.0.1');
    ports.v1 = await freePort('127.0.0.1');
    ports.v1six = await freePort('::1');
    ports.v2 = await freePort('127.0.0.1');
    ports.v2six = await freePort('::1');
    const config = (dir: string): string => `
global
  maxconn 100
defaults
  mode tcp
  timeout connect 2s
  timeout client 5s
  timeout server 5s
frontend tls_in
  bind 127.0.0.1:${ports.tls} ssl crt ${join(dir, 'server.pem')} ca-file ${join(dir, 'ca.pem')} verify optional alpn h2,http/1.1
  unique-id-format %{+X}o%ci:%cp_%fi:%fp_%Ts_%rt:%pid
  default_backend to_tls_capture
backend to_tls_capture
  server s 127.0.0.1:${c.tls} send-proxy-v2 proxy-v2-options crc32c,unique-id,authority,ssl,cert-cn,ssl-cipher,cert-sig,cert-key
frontend v1_in
  bind 127.0.0.1:${ports.v1}
  bind [::1]:${ports.v1six}
  default_backend to_v1_capture
backend to_v1_capture
  server s 127.0.0.1:${c.v1} send-proxy
frontend v2_in
  bind 127.0.0.1:${ports.v2}
  bind [::1]:${ports.v2six}
  default_backend to_v2_capture
backend to_v2_capture
  server s 127.0.0.1:${c.v2} send-proxy-v2 proxy-v2-options crc32c
backend checks_v1
  server s 127.0.0.1:${c.checkV1} check check-send-proxy inter 200 fall 1000
backend checks_v2
  server s 127.0.0.1:${c.checkV2} send-proxy-v2 check check-send-proxy inter 200 fall 1000
`;
    haproxy = await Haproxy.start(
      config,
      [['127.0.0.1', ports.tls], ['127.0.0.1', ports.v1], ['::1', ports.v1six], ['127.0.0.1', ports.v2], ['::1', ports.v2six]],
      { 'server.pem': `${certs.cert}\n${certs.key}\n`, 'ca.pem': certs.cert },
    );
  });

  afterAll(async () => {
    await haproxy?.stop();
    await Promise.all(Object.values(captures).map((c) => c.close()));
  });

  it('send-proxy over IPv4 and IPv6: TCP4 and TCP6 lines with the client address and port', async () => {
    const port4 = await plainClient('127.0.0.1', ports.v1);
    const v4 = headerOf(await captures.v1.find(fromPort(port4)));
    expect(v4.header).toMatchObject({
      version: 1,
      command: 'proxy',
      transport: 'tcp4',
      source: { address: '127.0.0.1', port: port4 },
      destination: { address: '127.0.0.1', port: ports.v1 },
    });
    expect(v4.payload.toString()).toBe('hello');
    const port6 = await plainClient('::1', ports.v1six);
    const v6 = headerOf(await captures.v1.find(fromPort(port6)));
    expect(v6.header).toMatchObject({ transport: 'tcp6', source: { address: '::1', port: port6 }, destination: { address: '::1', port: ports.v1six } });
    expect(v6.payload.toString()).toBe('hello');
  });

  it('send-proxy-v2 with crc32c over IPv4 and IPv6: the checksum verifies', async () => {
    const port4 = await plainClient('127.0.0.1', ports.v2);
    const v4 = headerOf(await captures.v2.find(fromPort(port4)));
    expect(v4.header).toMatchObject({ version: 2, transport: 'tcp4', source: { address: '127.0.0.1', port: port4 }, destination: { address: '127.0.0.1', port: ports.v2 } });
    expect(v4.header.crc32c).toEqual(expect.any(Number));
    const port6 = await plainClient('::1', ports.v2six);
    const v6 = headerOf(await captures.v2.find(fromPort(port6)));
    expect(v6.header).toMatchObject({ transport: 'tcp6', source: { address: '::1', port: port6 }, destination: { address: '::1', port: ports.v2six } });
    expect(v6.header.crc32c).toEqual(expect.any(Number));
    expect(v6.payload.toString()).toBe('hello');
  });

  it('send-proxy-v2 behind TLS with a client certificate: CRC32C, ALPN, AUTHORITY, UNIQUE_ID and every SSL sub-TLV', async () => {
    const certs = await testCerts();
    const client = await new Promise<{ port: number; protocol: string; cipher: string }>((resolve, reject) => {
      const socket = tlsConnect(
        { host: '127.0.0.1', port: ports.tls, servername: 'localhost', ca: certs.cert, cert: certs.clientCert, key: certs.clientKey, ALPNProtocols: ['h2'] },
        () => {
          const info = { port: socket.localPort!, protocol: socket.getProtocol()!, cipher: socket.getCipher().name };
          socket.end('hello');
          socket.on('close', () => resolve(info));
        },
      );
      socket.on('error', reject);
      socket.resume();
    });
    const { header, payload } = headerOf(await captures.tls.find(fromPort(client.port)));
    expect(payload.toString()).toBe('hello');
    expect(header).toMatchObject({
      version: 2,
      command: 'proxy',
      transport: 'tcp4',
      source: { address: '127.0.0.1', port: client.port },
      destination: { address: '127.0.0.1', port: ports.tls },
      authority: 'localhost',
    });
    expect(header.alpn?.toString()).toBe('h2');
    expect(header.crc32c).toEqual(expect.any(Number));
    expect(header.uniqueId?.toString()).toMatch(new RegExp(`^7F000001:${client.port.toString(16).toUpperCase().padStart(4, '0')}_`));
    expect(header.ssl).toMatchObject({
      client: PP2_CLIENT.SSL | PP2_CLIENT.CERT_CONN | PP2_CLIENT.CERT_SESS,
      verify: 0,
      version: client.protocol,
      cn: 'device-1',
      cipher: client.cipher,
    });
    expect(header.ssl?.sigAlg).toMatch(/SHA256/i);
    expect(header.ssl?.keyAlg).toMatch(/EC/);
    const types = header.tlvs.map((t) => t.type);
    for (const t of [PP2_TYPE.CRC32C, PP2_TYPE.ALPN, PP2_TYPE.AUTHORITY, PP2_TYPE.UNIQUE_ID, PP2_TYPE.SSL]) expect(types).toContain(t);
    expect(header.ssl?.tlvs.map((t) => t.type)).toEqual(expect.arrayContaining(Object.values(PP2_SUBTYPE_SSL)));
  });

  it('behind TLS without a client certificate: client is just SSL, and verify is 0 although nothing was verified', async () => {
    const certs = await testCerts();
    const port = await new Promise<number>((resolve, reject) => {
      const socket = tlsConnect({ host: '127.0.0.1', port: ports.tls, servername: 'localhost', ca: certs.cert }, () => {
        const local = socket.localPort!;
        socket.end('hello');
        socket.on('close', () => resolve(local));
      });
      socket.on('error', reject);
      socket.resume();
    });
    const { header } = headerOf(await captures.tls.find(fromPort(port)));
    expect(header.alpn).toBeUndefined();
    expect(header.ssl).toMatchObject({ client: PP2_CLIENT.SSL, verify: 0 });
    expect(header.ssl?.cn).toBeUndefined();
  });

  it('health checks with check-send-proxy: a TCP4 line of the check connection in v1, a LOCAL header in v2', async () => {
    // v1: the check connection's own addresses, as the spec recommends for health checks.
    const v1 = headerOf(await captures.checkV1.find(anyCapture));
    expect(v1.header).toMatchObject({ version: 1, command: 'proxy', transport: 'tcp4', destination: { address: '127.0.0.1', port: capturePorts.checkV1 } });
    const v2 = headerOf(await captures.checkV2.find(anyCapture));
    expect(v2.header).toMatchObject({ version: 2, command: 'local', transport: 'unknown' });
    expect(v2.header.source).toBeUndefined();
  });
});
