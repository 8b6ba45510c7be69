import { EventEmitter } from 'node:events';
import net from 'node:net';
import { type Listener, startListener } from 'corral';
import fc from 'fast-check';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type AdminServer, startAdminServer } from '../src/admin-server.js';
import type { Broker, BrokerEvents, BrokerState } from '../src/broker.js';
import { type DeviceInfo, DevicesUnknown, type Gateway } from '../src/gateway.js';
import { createMetrics } from '../src/metrics.js';

// The admin server against a small purpose-built gateway: a real corral listener (for info()),
// a broker that records the commands it is asked to publish, and a device list the test sets.

/** A broker that records `publishCommand` calls and answers as the test says. */
class RecordingBroker extends EventEmitter<BrokerEvents> implements Broker {
  readonly mode = 'embedded' as const;
  state: BrokerState = 'connected';
  readonly commands: { device: string; body: unknown; options: { id?: string; expirationMs?: number } | undefined }[] = [];
  /** What the next publishCommand does; by default it confirms with the given id or `cmd-<n>`. */
  publish: (device: string, body: unknown, options?: { id?: string; expirationMs?: number }) => Promise<{ id: string }> = async (
    _device,
    _body,
    options,
  ) => ({ id: options?.id ?? `cmd-${this.commands.length}` });
  async start(): Promise<void> {}
  async publishUplink(): Promise<{ ok: true }> {
    return { ok: true };
  }
  async publishPresence(): Promise<void> {}
  async publishCommandEvent(): Promise<void> {}
  async attachDevice(): Promise<void> {}
  async detachDevice(): Promise<void> {}
  async announceTakeover(): Promise<void> {}
  publishCommand(device: string, body: unknown, options?: { id?: string; expirationMs?: number }): Promise<{ id: string }> {
    this.commands.push({ device, body, options });
    return this.publish(device, body, options);
  }
  async stop(): Promise<void> {}
}

const DEVICES: DeviceInfo[] = [
  { device: 'dev-1', session: 's1', connection: 'c1', remote: '127.0.0.1:50000', connectedAt: '2026-01-01T00:00:00.000Z', pid: 1 },
];

let listener: Listener;
let broker: RecordingBroker;
let healthy: boolean;
let admin: AdminServer | undefined;

beforeEach(async () => {
  listener = await startListener({
    name: `admin-test-${process.pid}-${Math.random()}`,
    transportOptions: { host: '127.0.0.1', port: 0 },
    protocol: {},
  });
  broker = new RecordingBroker();
  healthy = true;
  listDevices = async () => DEVICES;
});

afterEach(async () => {
  await admin?.close();
  admin = undefined;
  await listener.stop();
});

/** Scrapes the admin server asked of the gateway (`metricsText`), since the last `start()`. */
let scrapes = 0;
/** What `devices()` does; by default it lists DEVICES. */
let listDevices: () => Promise<DeviceInfo[]> = async () => DEVICES;

async function start(options: { token?: string; maxBodyBytes?: number; commandTimeout?: number } = {}): Promise<AdminServer> {
  const metrics = createMetrics({ defaultMetrics: false });
  scrapes = 0;
  const gateway: Gateway = {
    nodeId: 'gw-test',
    listener,
    broker,
    maxLineLength: 65_536,
    devices: () => listDevices(),
    healthy: () => healthy,
    // As a single-process gateway reports it: its own broker, and `healthy` for the rest.
    health: async () => ({
      ok: healthy && (broker.state === 'connected' || broker.state === 'blocked'),
      draining: false,
      processes: [{ process: 'single', pid: process.pid, broker: broker.state }],
    }),
    metricsText: async () => {
      scrapes++;
      // As a primary's scrape does: an await on its workers' answers.
      await new Promise((resolve) => setTimeout(resolve, 20));
      return metrics.registry.metrics();
    },
    drain: async () => {},
  };
  admin = await startAdminServer({
    port: 0,
    gateway,
    metrics,
    token: options.token,
    logger: pino({ level: 'silent' }),
    ...(options.maxBodyBytes === undefined ? {} : { maxBodyBytes: options.maxBodyBytes }),
    ...(options.commandTimeout === undefined ? {} : { commandTimeout: options.commandTimeout }),
  });
  return admin;
}

/** POST a command; `body` is sent as given (a string) or as JSON. */
function postCommand(server: AdminServer, device: string, body: unknown, token?: string): Promise<Response> {
  return fetch(`${server.url}/devices/${device}/commands`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

/** Send raw bytes and return everything the server answers before it closes. */
function raw(server: AdminServer, bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(server.port, '127.0.0.1', () => socket.end(bytes));
    let got = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => (got += d));
    socket.on('error', reject);
    socket.on('close', () => resolve(got));
  });
}

describe('admin server', () => {
  it('binds 127.0.0.1 by default and reports the real port when asked for port 0', async () => {
    const server = await start();
    expect(server.port).toBeGreaterThan(0);
    expect(server.url).toBe(`http://127.0.0.1:${server.port}`);
  });

  it('GET /healthz: 200 ok; 503 unavailable while the broker is down or the gateway unhealthy; 503 draining', async () => {
    const server = await start();
    let res = await fetch(`${server.url}/healthz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ status: 'ok', node: 'gw-test', mode: 'embedded', broker: 'connected' });

    broker.state = 'reconnecting';
    res = await fetch(`${server.url}/healthz`);
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ status: 'unavailable', broker: 'reconnecting' });

    broker.state = 'blocked'; // connected, but RabbitMQ blocks publishes: every node alike
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);

    broker.state = 'connected';
    healthy = false;
    expect((await fetch(`${server.url}/healthz`)).status).toBe(503);

    healthy = true;
    server.startDraining();
    res = await fetch(`${server.url}/healthz`);
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ status: 'draining' });
  });

  it('GET /devices: the gateway’s device list as a JSON array', async () => {
    const server = await start();
    const res = await fetch(`${server.url}/devices`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(await res.json()).toEqual(DEVICES);
  });

  it('GET /devices: 503 with Retry-After when a worker did not answer, never a list without its devices', async () => {
    const server = await start();
    listDevices = () => Promise.reject(new DevicesUnknown([1]));
    const res = await fetch(`${server.url}/devices`);
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('1');
    expect(((await res.json()) as { error: string }).error).toMatch(/worker 1 did not answer/);
  });

  it('bounds pipelining: 200 GETs of /metrics sent at once on one connection close it, after one scrape', async () => {
    const server = await start();
    const socket = net.connect(server.port, '127.0.0.1');
    socket.on('error', () => undefined);
    let got = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => (got += d));
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.write('GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n'.repeat(200));
    await closed;
    expect(got.match(/^HTTP\/1\.1 200/gm)?.length ?? 0).toBeLessThan(200);
    // The first 16 shared one scrape; the rest were never started.
    expect(scrapes).toBe(1);
    // Everyone else is served.
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${server.url}/metrics`)).status).toBe(200);
  });

  it('GET /metrics: the gateway registry and corral’s listener counters, in Prometheus text', async () => {
    const server = await start();
    const res = await fetch(`${server.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await res.text();
    expect(text).toMatch(/^# TYPE gateway_device_connections gauge$/m);
    expect(text).toMatch(/^corral_listener_connections 0$/m);
    expect(text).toMatch(/^corral_listener_max_connections \d+$/m);
    expect(text).toMatch(/^corral_listener_rejected\{reason="queue_full"\} 0$/m);
  });

  it('POST is disabled (403) without a configured token, whatever the request carries', async () => {
    const server = await start();
    const res = await postCommand(server, 'dev-1', { body: { unlock: true } }, 'anything');
    expect(res.status).toBe(403);
    expect(((await res.json()) as { error: string }).error).toMatch(/--admin-token/);
    expect(broker.commands).toEqual([]);
  });

  it('POST needs the bearer token: 401 without it or with a wrong one, 202 with it', async () => {
    const server = await start({ token: 's3cret-token' });
    let res = await postCommand(server, 'dev-1', { body: 1 });
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer/);
    res = await postCommand(server, 'dev-1', { body: 1 }, 's3cret-tokeN');
    expect(res.status).toBe(401);
    res = await postCommand(server, 'dev-1', { body: 1 }, 's3cret-token-and-more');
    expect(res.status).toBe(401);
    expect(broker.commands).toEqual([]);

    res = await postCommand(server, 'dev-1', { body: { unlock: true } }, 's3cret-token');
    expect(res.status).toBe(202);
    expect(await res.json()).toEqual({ id: 'cmd-1', device: 'dev-1' });
    expect(broker.commands).toEqual([{ device: 'dev-1', body: { unlock: true }, options: {} }]);
  });

  it('POST passes id and expirationMs on, and decodes a percent-encoded device id', async () => {
    const server = await start({ token: 't' });
    const res = await postCommand(server, 'site%3A7', { body: null, id: 'op-42', expirationMs: 5000 }, 't');
    expect(res.status).toBe(202);
    expect(await res.json()).toEqual({ id: 'op-42', device: 'site:7' });
    expect(broker.commands).toEqual([{ device: 'site:7', body: null, options: { id: 'op-42', expirationMs: 5000 } }]);
  });

  it('POST refuses what is not a command with 400', async () => {
    const server = await start({ token: 't' });
    const cases: [string, unknown][] = [
      ['dev-1', '{"body": '], // bad JSON
      ['dev-1', ''], // empty
      ['dev-1', [1, 2]], // not an object
      ['dev-1', { nobody: 1 }], // no body
      ['dev-1', { body: 1, id: 'has space' }], // an id the device could not send back
      ['dev-1', { body: 1, id: 7 }],
      ['dev-1', { body: 1, expirationMs: -1 }],
      ['dev-1', { body: 1, expirationMs: 1.5 }],
      ['dev-1', { body: 1, expirationMs: '100' }],
      ['dev-1', `{"body":${'['.repeat(30_000)}${']'.repeat(30_000)}}`], // too deep to publish as JSON
      ['dev.1', { body: 1 }], // a dot would be a routing-key separator
      ['%E0%A4%A', { body: 1 }], // bad percent-encoding
    ];
    for (const [device, body] of cases) {
      const res = await postCommand(server, device, body, 't');
      expect({ device, body, status: res.status }).toEqual({ device, body, status: 400 });
      expect(typeof ((await res.json()) as { error: unknown }).error).toBe('string');
    }
    expect(broker.commands).toEqual([]);
  });

  it('POST refuses a body over the limit with 413, announced or streamed', async () => {
    const server = await start({ token: 't', maxBodyBytes: 1024 });
    const big = JSON.stringify({ body: 'x'.repeat(100_000) });
    let res = await postCommand(server, 'dev-1', big, 't');
    expect(res.status).toBe(413);

    // No content-length: chunked, so the limit is found while reading.
    const chunked = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < 50; i++) controller.enqueue(new TextEncoder().encode('x'.repeat(1000)));
        controller.close();
      },
    });
    res = await fetch(`${server.url}/devices/dev-1/commands`, {
      method: 'POST',
      headers: { authorization: 'Bearer t' },
      body: chunked,
      duplex: 'half',
    } as RequestInit);
    expect(res.status).toBe(413);
    expect(broker.commands).toEqual([]);

    // A client that sends all of a large body before it reads (most do) gets the 413, not a reset.
    const size = 8 * 1024 * 1024;
    const answer = await raw(server, `POST /devices/dev-1/commands HTTP/1.1\r\nhost: x\r\nauthorization: Bearer t\r\ncontent-length: ${size}\r\n\r\n${'x'.repeat(size)}`);
    expect(answer).toMatch(/^HTTP\/1\.1 413 /);
    // The server still answers.
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
  });

  it('POST refuses with 413 a command within the body limit whose line to the device would be over 64 KiB', async () => {
    const server = await start({ token: 't' });
    // A request of 65,536 bytes; the `cmd` line adds its type and a 36-character id.
    const res = await postCommand(server, 'dev-1', { body: 'x'.repeat(65_536 - 11) }, 't');
    expect(res.status).toBe(413);
    expect(((await res.json()) as { error: string }).error).toMatch(/line of \d+ bytes/);
    expect(broker.commands).toEqual([]);
    expect((await postCommand(server, 'dev-1', { body: 'x'.repeat(65_000) }, 't')).status).toBe(202);
  });

  it('answers 503 when the broker refuses the command and 504 when it does not confirm in time', async () => {
    const server = await start({ token: 't', commandTimeout: 100 });
    broker.publish = async () => {
      throw new Error('channel closed');
    };
    let res = await postCommand(server, 'dev-1', { body: 1 }, 't');
    expect(res.status).toBe(503);
    expect(((await res.json()) as { error: string }).error).toMatch(/channel closed/);

    broker.publish = () => new Promise(() => {});
    res = await postCommand(server, 'dev-1', { body: 1 }, 't');
    expect(res.status).toBe(504);
  });

  it('404 for an unknown route, 405 with Allow for a wrong method', async () => {
    const server = await start({ token: 't' });
    expect((await fetch(`${server.url}/nope`)).status).toBe(404);
    expect((await fetch(`${server.url}/devices/dev-1`)).status).toBe(404);
    expect((await fetch(`${server.url}/devices/dev-1/commands/x`, { method: 'POST' })).status).toBe(404);
    let res = await fetch(`${server.url}/metrics`, { method: 'DELETE' });
    expect(res.status).toBe(405);
    expect(res.headers.get('allow')).toBe('GET, HEAD');
    res = await fetch(`${server.url}/devices/dev-1/commands`);
    expect(res.status).toBe(405);
    expect(res.headers.get('allow')).toBe('POST');
    expect((await fetch(`${server.url}/healthz`, { method: 'HEAD' })).status).toBe(200);
  });

  it('survives garbage: malformed HTTP gets a 400, random requests get a known status', async () => {
    const server = await start({ token: 't', maxBodyBytes: 256 });
    expect(await raw(server, 'NOT HTTP AT ALL\r\n\r\n')).toMatch(/^HTTP\/1\.1 400/);
    expect(await raw(server, 'GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n')).toMatch(/^HTTP\/1\.1 400/);
    expect(await raw(server, `GET /${'a'.repeat(20_000)} HTTP/1.1\r\nHost: x\r\n${'X-Big: y\r\n'.repeat(2000)}\r\n`)).toMatch(/^HTTP\/1\.1 4\d\d/);

    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'),
        fc.oneof(
          fc.constantFrom('/metrics', '/healthz', '/devices', '/devices/dev-1/commands', '/devices//commands', '/devices/%/commands'),
          fc.webPath(),
          fc.string().map((s) => `/devices/${encodeURIComponent(s)}/commands`),
        ),
        fc.oneof(fc.string({ maxLength: 400 }), fc.json().map((j) => `{"body":${j}}`), fc.jsonValue().map((v) => JSON.stringify(v))),
        fc.boolean(),
        async (method, path, body, withToken) => {
          const res = await fetch(`${server.url}${path.startsWith('/') ? path : `/${path}`}`, {
            method,
            headers: withToken ? { authorization: 'Bearer t' } : {},
            ...(method === 'GET' ? {} : { body }),
          });
          await res.arrayBuffer();
          expect([200, 202, 400, 401, 404, 405, 413]).toContain(res.status);
        },
      ),
      { numRuns: 150 },
    );
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
  });
});
