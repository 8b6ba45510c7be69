/**
 * The PROXY protocol on a listener: a real HAProxy (`send-proxy`, `send-proxy-v2` with TLVs) in
 * front of corral over TCP and TLS, single process and worker pools; trusted peers only; bad,
 * late and missing headers; per-address caps on the client the header names.
 */
import net from 'node:net';
import tls from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { buildProxyHeader, type Listener, type ListenerInfo, type ListenerSettings, type RejectEvent } from '../../src/index.js';
import { testCerts } from '../support/certs.js';
import { LineClient, once } from '../support/clients.js';
import { freePort, Haproxy, skipWithoutHaproxy } from '../support/haproxy.js';
import { Pool, type PoolConfig } from '../support/pool.js';
import { edgeListener } from '../support/proxy-listener.js';

const LB = '127.0.0.1';
let listeners: Listener[] = [];
let pools: Pool[] = [];
let proxies: Haproxy[] = [];
let sockets: net.Socket[] = [];

afterEach(async () => {
  for (const s of sockets) s.destroy();
  sockets = [];
  await Promise.all(listeners.map((l) => l.stop({ timeout: 0 })));
  listeners = [];
  for (const p of pools) p.kill();
  await Promise.all(pools.map((p) => p.exited));
  pools = [];
  await Promise.all(proxies.map((h) => h.stop()));
  proxies = [];
});

async function listener(settings: Partial<ListenerSettings>): Promise<Listener> {
  const l = await edgeListener(settings);
  listeners.push(l);
  return l;
}

/** A plain TCP client from `localAddress`, as a line client. */
async function tcp(port: number, localAddress = '127.0.0.1', host = '127.0.0.1'): Promise<LineClient> {
  const s = net.connect({ port, host, ...(host === '::1' ? {} : { localAddress }) });
  sockets.push(s);
  await once(s, 'connect');
  return new LineClient(s);
}

/** A TLS client (not verifying the test certificate) from `localAddress`. */
async function tlsClient(port: number, localAddress: string): Promise<LineClient> {
  // Over its own TCP socket from `localAddress` (tls.connect has no such option).
  const raw = net.connect({ port, host: '127.0.0.1', localAddress });
  sockets.push(raw);
  await once(raw, 'connect');
  const s = tls.connect({ socket: raw, rejectUnauthorized: false, servername: 'corral.test', ALPNProtocols: ['h2'] });
  sockets.push(s);
  await once(s, 'secureConnect');
  return new LineClient(s);
}

/** A raw socket from a trusted peer (this test, on 127.0.0.1), to send headers by hand. */
async function trusted(port: number): Promise<net.Socket> {
  const s = net.connect({ port, host: LB, localAddress: LB });
  sockets.push(s);
  await once(s, 'connect');
  return s;
}

function nextReject(l: Listener): Promise<RejectEvent> {
  return new Promise((resolve) => l.once('reject', resolve));
}

const closed = (s: net.Socket): Promise<void> => new Promise((resolve) => (s.closed ? resolve() : s.once('close', () => resolve())));

/** HAProxy relaying to corral's `port`: v1, v2 (IPv4 and IPv6), TLS passthrough (v2), and TLS terminated with SSL TLVs (v2). */
async function haproxyTo(port: number): Promise<{ v1: number; v2: number; v2six: number; tlsTerm: number }> {
  const certs = await testCerts();
  const p = { v1: await freePort(), v2: await freePort(), v2six: await freePort('::1'), tlsTerm: await freePort() };
  const h = await Haproxy.start(
    (dir) => `
global
  maxconn 1000
defaults
  mode tcp
  timeout connect 2s
  timeout client 20s
  timeout server 20s
frontend v1_in
  bind 127.0.0.1:${p.v1}
  default_backend corral_v1
backend corral_v1
  server s 127.0.0.1:${port} send-proxy
frontend v2_in
  bind 127.0.0.1:${p.v2}
  bind [::1]:${p.v2six}
  default_backend corral_v2
backend corral_v2
  server s 127.0.0.1:${port} send-proxy-v2 proxy-v2-options crc32c,unique-id
frontend tls_term
  bind 127.0.0.1:${p.tlsTerm} ssl crt ${dir}/server.pem alpn h2,http/1.1
  unique-id-format corral-%ci-%cp
  default_backend corral_ssl
backend corral_ssl
  server s 127.0.0.1:${port} send-proxy-v2 proxy-v2-options crc32c,ssl,ssl-cipher,unique-id,authority
`,
    [
      ['127.0.0.1', p.v1],
      ['127.0.0.1', p.v2],
      ['::1', p.v2six],
      ['127.0.0.1', p.tlsTerm],
    ],
    { 'server.pem': `${certs.cert}\n${certs.key}\n` },
  );
  proxies.push(h);
  return p;
}

describe.skipIf(skipWithoutHaproxy)('behind a real HAProxy', () => {
  it('TCP, send-proxy and send-proxy-v2: the handler sees the original client (IPv4 and IPv6), the proxy as conn.proxy', async () => {
    const l = await listener({ proxyHeader: true, proxyHeaderFrom: [LB] });
    const p = await haproxyTo(l.port!);
    const a = await tcp(p.v1, '127.0.0.5');
    expect(await a.request('whoami')).toBe(`127.0.0.5 ${(a.stream as net.Socket).localPort}`);
    expect(JSON.parse(await a.request('proxy'))).toMatchObject({ version: 1, transport: 'tcp4', peer: { address: LB } });
    const b = await tcp(p.v2, '127.0.0.6');
    expect(await b.request('whoami')).toBe(`127.0.0.6 ${(b.stream as net.Socket).localPort}`);
    expect(JSON.parse(await b.request('proxy'))).toMatchObject({ version: 2, transport: 'tcp4', crc32c: true });
    const c = await tcp(p.v2six, '::1', '::1');
    expect(await c.request('whoami')).toBe(`::1 ${(c.stream as net.Socket).localPort}`);
    // Every accepted socket came from HAProxy; none was refused.
    const info = await l.info();
    // Every header HAProxy sent was read (a stray connect from elsewhere could count as untrusted).
    expect(info.rejected).toMatchObject({ proxy_invalid: 0, proxy_timeout: 0 });
  });

  it('TLS, HAProxy passing TLS through with send-proxy-v2: the PROXY header comes before the ClientHello', async () => {
    const certs = await testCerts();
    const l = await listener({ transport: 'tls', transportOptions: { host: '127.0.0.1', port: 0, key: certs.key, cert: certs.cert }, proxyHeader: true, proxyHeaderFrom: [LB] });
    const p = await haproxyTo(l.port!);
    const c = await tlsClient(p.v2, '127.0.0.7');
    expect(await c.request('whoami')).toBe(`127.0.0.7 ${(c.stream as tls.TLSSocket).localPort}`);
  });

  it('HAProxy terminating TLS: the v2 TLVs (SSL version and cipher, unique id, authority, crc32c) reach the handler', async () => {
    const l = await listener({ proxyHeader: true, proxyHeaderFrom: [LB] });
    const p = await haproxyTo(l.port!);
    const c = await tlsClient(p.tlsTerm, '127.0.0.8');
    const port = (c.stream as tls.TLSSocket).localPort;
    const info = JSON.parse(await c.request('proxy'));
    expect(info).toMatchObject({ version: 2, crc32c: true, uniqueId: `corral-127.0.0.8-${port}`, authority: 'corral.test', ssl: { version: expect.stringMatching(/^TLSv1\.[23]$/) } });
    expect(info.ssl.cipher).toEqual(expect.any(String));
    expect(await c.request('whoami')).toBe(`127.0.0.8 ${port}`);
  });

  it('per-address cap on the client the header names; the proxy itself is exempt', async () => {
    const l = await listener({ proxyHeader: true, proxyHeaderFrom: [LB], maxConnectionsPerAddress: 1 });
    const p = await haproxyTo(l.port!);
    const a = await tcp(p.v2, '127.0.0.9');
    expect(await a.request('first')).toBe('first');
    const refused = nextReject(l);
    const b = await tcp(p.v2, '127.0.0.9');
    b.send('second');
    await b.closed;
    expect((await refused).reason).toBe('address_limit');
    expect((await refused).remoteAddress).toBe('127.0.0.9');
    // Another client through the same proxy is served: the proxy's address is not the source.
    const c = await tcp(p.v2, '127.0.0.10');
    expect(await c.request('other')).toBe('other');
    // HAProxy may retry a backend connection that was closed at once (its `retries`): at least one.
    expect((await l.info()).rejected.address_limit).toBeGreaterThanOrEqual(1);
  });

  it.each(['shared', 'primary'] as const)('worker pool (%s), TLS behind HAProxy: each worker sees the original clients', async (distribution) => {
    const pool = await Pool.start({ tls: true, distribution, proxyHeader: true, proxyHeaderFrom: [LB] } as PoolConfig);
    pools.push(pool);
    const p = await haproxyTo(pool.port);
    const seen = new Set<string>();
    for (const from of ['127.0.0.11', '127.0.0.12', '127.0.0.13', '127.0.0.14']) {
      const c = await tlsClient(p.v2, from);
      const who = await c.request('whoami');
      expect(who).toBe(`${from} ${(c.stream as tls.TLSSocket).localPort}`);
      seen.add(await c.request('pid'));
    }
    const info = await pool.command<ListenerInfo>('info');
    // Every header HAProxy sent was read (a stray connect from elsewhere could count as untrusted).
    expect(info.rejected).toMatchObject({ proxy_invalid: 0, proxy_timeout: 0 });
  });
});

describe('PROXY headers from trusted and untrusted peers', () => {
  it('with proxyHeader: true, a peer that is not a trusted proxy is refused (proxy_untrusted)', async () => {
    const l = await listener({ proxyHeader: true, proxyHeaderFrom: ['127.0.0.200'] });
    const refused = nextReject(l);
    const s = (await tcp(l.port!, '127.0.0.21')).stream as net.Socket;
    await closed(s);
    expect(await refused).toMatchObject({ reason: 'proxy_untrusted', remoteAddress: '127.0.0.21' });
  });

  it("with 'optional', other peers connect directly, and a trusted peer may leave the header out", async () => {
    const l = await listener({ proxyHeader: 'optional', proxyHeaderFrom: [LB] });
    const direct = await tcp(l.port!, '127.0.0.22');
    expect(await direct.request('whoami')).toBe(`127.0.0.22 ${(direct.stream as net.Socket).localPort}`);
    const lb = new LineClient(await trusted(l.port!));
    expect(await lb.request('whoami')).toBe(`${LB} ${(lb.stream as net.Socket).localPort}`);
    expect(await lb.request('proxy')).toBe('null');
  });

  it('a header built by hand from a trusted peer names the client, IPv6 included; LOCAL is the proxy itself', async () => {
    const l = await listener({ proxyHeader: true, proxyHeaderFrom: [LB] });
    const s = await trusted(l.port!);
    s.write(buildProxyHeader({ command: 'proxy', transport: 'tcp6', source: { address: '2001:db8::7', port: 4242 }, destination: { address: '2001:db8::1', port: 443 } }, { version: 2 }));
    const c = new LineClient(s);
    expect(await c.request('whoami')).toBe('2001:db8::7 4242');
    const local = await trusted(l.port!);
    local.write(buildProxyHeader({ command: 'local', transport: 'unknown' }, { version: 2 }));
    const d = new LineClient(local);
    expect(await d.request('whoami')).toBe(`${LB} ${local.localPort}`);
  });

  it('a malformed header closes the socket, counted (proxy_invalid); a missing one times out (proxy_timeout)', async () => {
    const l = await listener({ proxyHeader: true, proxyHeaderFrom: [LB], proxyHeaderTimeout: 200 });
    const bad = nextReject(l);
    const s = await trusted(l.port!);
    s.write('PROXY TCP4 300.1.2.3 127.0.0.1 1 2\r\n');
    await closed(s);
    expect(await bad).toMatchObject({ reason: 'proxy_invalid', detail: expect.stringMatching(/^[a-z_0-9]+: PROXY header: /) });
    const late = nextReject(l);
    const t = await trusted(l.port!);
    await closed(t);
    expect((await late).reason).toBe('proxy_timeout');
    expect((await l.info()).rejected).toMatchObject({ proxy_invalid: 1, proxy_timeout: 1 });
  });

  it('sockets waiting for their header (a balancer that sends it only once its client speaks) are bounded by maxSilent: the oldest goes (silent_limit)', async () => {
    const l = await listener({ proxyHeader: true, proxyHeaderFrom: [LB], maxSilent: 2 });
    const rejected = nextReject(l);
    const first = await trusted(l.port!);
    await trusted(l.port!);
    await trusted(l.port!);
    await closed(first);
    expect((await rejected).reason).toBe('silent_limit');
    expect(await l.info()).toMatchObject({ silent: 2, gaveUp: 0, rejected: { silent_limit: 1, proxy_timeout: 0 } });
  });

  it('per-address caps group IPv6 clients by prefix (/64 by default), behind PROXY', async () => {
    const l = await listener({ proxyHeader: true, proxyHeaderFrom: [LB], maxConnectionsPerAddress: 1 });
    const from = async (address: string): Promise<LineClient> => {
      const s = await trusted(l.port!);
      s.write(buildProxyHeader({ command: 'proxy', transport: 'tcp6', source: { address, port: 1000 }, destination: { address: '2001:db8::1', port: 443 } }, { version: 1 }));
      return new LineClient(s);
    };
    const a = await from('2001:db8:0:1::1');
    expect(await a.request('a')).toBe('a');
    const refused = nextReject(l);
    const b = await from('2001:db8:0:1::2');
    b.send('b');
    await b.closed;
    expect(await refused).toMatchObject({ reason: 'address_limit', remoteAddress: '2001:db8:0:1::2' });
    const c = await from('2001:db8:0:2::1');
    expect(await c.request('c')).toBe('c');
  });
});
