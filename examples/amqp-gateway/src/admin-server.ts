/**
 * The gateway's admin API: a small HTTP server (node:http), bound to 127.0.0.1 unless told
 * otherwise.
 *
 * | route | answer |
 * |---|---|
 * | `GET /metrics` | Prometheus text: the gateway's metrics over every process (with workers, each worker's registry aggregated with the primary's: counters and gauges summed), plus corral's listener counters from `listener.info()` (summed over workers) |
 * | `GET /healthz` | 200 `{"status":"ok",…}`; 503 `draining` once a drain began, 503 `unavailable` while a process's broker is not connected (every worker's, asked at each request) |
 * | `GET /devices` | 200, a JSON array of the connected devices (`Gateway.devices()`); 503 when a worker did not answer in time |
 * | `POST /devices/:id/commands` | body `{"body": any, "expirationMs"?: n, "id"?: s}` → publish to `<prefix>.down` → 202 `{"id",…}` |
 *
 * POST needs `Authorization: Bearer <token>` (compared in constant time); with no token configured
 * it is disabled (403), since a command may unlock a door. Errors are JSON `{"error": "…"}`: 400
 * bad JSON or fields, 401 missing or wrong token, 404 unknown route, 405 wrong method, 413 body
 * over the limit, 503/504 broker unavailable or slow. No input crashes the process: a failure
 * inside a route answers 500 and is logged.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ListenerInfo } from 'corral';
import type { Logger } from 'pino';
import { Gauge, Registry } from 'prom-client';
import { DEVICE_ID, encode, MAX_BODY_DEPTH, MESSAGE_ID, nestedDeeperThan } from './device-protocol.js';
import { DevicesUnknown, type Gateway, type NodeHealth } from './gateway.js';
import type { GatewayMetrics } from './metrics.js';

/** Options of {@link startAdminServer}. */
export interface AdminServerOptions {
  /** Address to bind. Default `127.0.0.1`: the admin API is not for the open network. */
  readonly host?: string;
  /** Port to bind; 0 picks a free one (read it back from {@link AdminServer.port}). */
  readonly port: number;
  readonly gateway: Gateway;
  readonly metrics: GatewayMetrics;
  /** The bearer token `POST` requires. `undefined`: commands are disabled (403). */
  readonly token: string | undefined;
  readonly logger: Logger;
  /** Largest request body, in bytes; more is refused with 413. Default 65536. */
  readonly maxBodyBytes?: number;
  /** How long a command publish may take before the request answers 504 (ms). Default 10000. */
  readonly commandTimeout?: number;
}

/** A running admin server. */
export interface AdminServer {
  /** The bound port (the real one when asked for port 0). */
  readonly port: number;
  /** `http://host:port`. */
  readonly url: string;
  /** From now on `/healthz` answers 503 `draining` (call it when a drain begins). */
  startDraining(): void;
  /** Stop listening and close every open admin connection. */
  close(): Promise<void>;
}

/** An error answer: the status and the message that goes into `{"error": …}`. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** Start the admin server. Resolves once it listens. */
export async function startAdminServer(options: AdminServerOptions): Promise<AdminServer> {
  const { gateway, metrics, logger } = options;
  const host = options.host ?? '127.0.0.1';
  const maxBodyBytes = options.maxBodyBytes ?? 65_536;
  const commandTimeout = options.commandTimeout ?? 10_000;
  const listenerMetrics = new ListenerMetrics();
  let draining = false;
  // Concurrent reads share one computation: a scrape asks every worker and aggregates, ~2–5 ms of
  // CPU, and a client pipelining thousands of GETs on one connection would otherwise start them all
  // at once (a hostile trial's 87,000 pipelined GET /metrics held devices off for 25 s).
  const metricsText = singleFlight(async () => {
    listenerMetrics.set(await gateway.listener.info());
    return (await gateway.metricsText()) + (await listenerMetrics.registry.metrics());
  });
  const health = singleFlight((): Promise<NodeHealth> => gateway.health());
  const devices = singleFlight(() => gateway.devices());

  async function route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = pathOf(req.url ?? '/');
    const method = req.method ?? 'GET';
    const allow = (methods: string[]): void => {
      if (!methods.includes(method)) throw new HttpError(405, `${method} is not allowed on ${path}`, { allow: methods.join(', ') });
    };

    if (path === '/metrics') {
      allow(['GET', 'HEAD']);
      const text = await metricsText();
      res.writeHead(200, { 'content-type': metrics.registry.contentType });
      res.end(method === 'HEAD' ? undefined : text);
      return;
    }
    if (path === '/healthz') {
      allow(['GET', 'HEAD']);
      // A blocked broker (RabbitMQ's memory or disk alarm) is still connected, and blocks every
      // node alike: taking this one out of the load balancer would not help, so it stays healthy.
      const node = await health();
      const status = draining || node.draining ? 'draining' : node.ok ? 'ok' : 'unavailable';
      reply(
        res,
        status === 'ok' ? 200 : 503,
        { status, node: gateway.nodeId, mode: gateway.broker.mode, broker: gateway.broker.state, processes: node.processes },
        method,
      );
      return;
    }
    if (path === '/devices') {
      allow(['GET', 'HEAD']);
      const list = await devices().catch((err: unknown) => {
        if (err instanceof DevicesUnknown) throw new HttpError(503, err.message, { 'retry-after': '1' });
        throw err;
      });
      reply(res, 200, list, method);
      return;
    }
    const command = /^\/devices\/([^/]+)\/commands$/.exec(path);
    if (command) {
      allow(['POST']);
      authorize(req.headers.authorization, options.token);
      let device: string;
      try {
        device = decodeURIComponent(command[1]!);
      } catch {
        throw new HttpError(400, 'the device id is not valid percent-encoding');
      }
      if (!DEVICE_ID.test(device)) throw new HttpError(400, 'invalid device id: 1–128 characters of A-Z a-z 0-9 _ : -');
      const request = parseCommand(await readBody(req, maxBodyBytes));
      // The line the device would get (an id the broker gives is a 36-character UUID): over the
      // devices' line bound it would be dead-lettered `too_large`, so it is refused here.
      const line = encode({ type: 'cmd', id: request.id ?? '00000000-0000-0000-0000-000000000000', body: request.body });
      const lineBytes = Buffer.byteLength(line);
      if (lineBytes > gateway.maxLineLength) {
        throw new HttpError(413, `the command would be a line of ${lineBytes} bytes to the device, over its ${gateway.maxLineLength}`);
      }
      const published = await within(
        gateway.broker.publishCommand(device, request.body, {
          ...(request.id === undefined ? {} : { id: request.id }),
          ...(request.expirationMs === undefined ? {} : { expirationMs: request.expirationMs }),
        }),
        commandTimeout,
      ).catch((err: unknown) => {
        if (err instanceof HttpError) throw err;
        logger.warn({ err, device }, 'command publish failed');
        throw new HttpError(503, `the broker refused the command: ${(err as Error).message ?? String(err)}`);
      });
      logger.info({ device, command: published.id }, 'command published');
      reply(res, 202, { id: published.id, device });
      return;
    }
    throw new HttpError(404, `no route ${path}`);
  }

  const server = http.createServer((req, res) => {
    // Pipelining is bounded: a client with more than MAX_PIPELINED requests unanswered on one
    // connection is not a scraper or an operator; its connection is closed (its answers would
    // otherwise pile up unread in this process).
    const socket = req.socket;
    const inFlight = (pipelined.get(socket) ?? 0) + 1;
    pipelined.set(socket, inFlight);
    res.once('close', () => pipelined.set(socket, (pipelined.get(socket) ?? 1) - 1));
    if (inFlight > MAX_PIPELINED) {
      if (inFlight === MAX_PIPELINED + 1) logger.warn({ remote: socket.remoteAddress, max: MAX_PIPELINED }, 'admin client pipelined too many requests: connection closed');
      socket.destroy();
      return;
    }
    route(req, res).catch((err: unknown) => {
      const known = err instanceof HttpError;
      if (!known) logger.error({ err, method: req.method, url: req.url }, 'admin request failed');
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const status = known ? err.status : 500;
      // A refused body is not kept: the connection closes after the answer.
      const close = status === 413 || !req.complete;
      const answer = (): void => {
        if (res.headersSent || res.destroyed) return;
        res.writeHead(status, {
          'content-type': 'application/json',
          ...(known ? err.headers : {}),
          ...(close ? { connection: 'close' } : {}),
        });
        res.end(`${JSON.stringify({ error: known ? err.message : 'internal error' })}\n`);
      };
      if (status !== 413 || req.complete) return answer();
      // Over the limit: read the rest of the body and throw it away, then answer and close. Closed
      // with its input unread, the socket would be reset, and a client that sends its whole body
      // before reading (most do) would see the reset instead of the 413. Bounded by requestTimeout.
      req.resume();
      req.once('end', answer);
      req.once('close', answer);
    });
  });
  // Bounded patience with slow clients: the admin API answers quickly or not at all.
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  server.on('clientError', (err, socket) => {
    // Unparseable HTTP: answer 400 if the socket still can, never throw.
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    else socket.destroy();
    logger.debug({ err }, 'admin client error');
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => logger.error({ err }, 'admin server error'));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    startDraining: () => {
      draining = true;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Requests one connection may have unanswered at once (HTTP/1.1 pipelining); more closes it. */
const MAX_PIPELINED = 16;
/** Requests unanswered per admin connection. */
const pipelined = new WeakMap<object, number>();

/** `fn`, called once for all callers while a call is under way: they share its outcome. */
function singleFlight<T>(fn: () => Promise<T>): () => Promise<T> {
  let current: Promise<T> | undefined;
  return () => {
    current ??= fn().finally(() => {
      current = undefined;
    });
    return current;
  };
}

/** The path of a request target, without its query (`//x` is a path here, not a host). */
function pathOf(target: string): string {
  const path = target.split('?', 1)[0]!;
  if (path.startsWith('/')) return path;
  try {
    return new URL(path).pathname; // absolute form: GET http://host/healthz HTTP/1.1
  } catch {
    return path;
  }
}

/** Send a JSON answer (no body for HEAD). */
function reply(res: http.ServerResponse, status: number, body: unknown, method = 'GET'): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(method === 'HEAD' ? undefined : text);
}

/** Check `Authorization: Bearer <token>` in constant time; throw 403 (disabled) or 401. */
function authorize(header: string | undefined, token: string | undefined): void {
  if (token === undefined) {
    throw new HttpError(403, 'commands are disabled: start the gateway with --admin-token to enable them');
  }
  const given = /^Bearer +(\S+) *$/i.exec(header ?? '')?.[1];
  // Hash both sides first: timingSafeEqual needs equal lengths, and the hash hides the length.
  const digest = (s: string): Buffer => createHash('sha256').update(s).digest();
  if (given === undefined || !timingSafeEqual(digest(given), digest(token))) {
    throw new HttpError(401, 'missing or wrong bearer token', { 'www-authenticate': 'Bearer realm="corral-gateway"' });
  }
}

/**
 * Read a request body of at most `limit` bytes; 413 beyond it (announced or actual). Past the limit
 * the rest is read and thrown away, not left unread: a socket closed with unread input is reset,
 * and the client would see the reset instead of the 413.
 */
function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
  const tooLarge = (): HttpError => new HttpError(413, `the body is over ${limit} bytes`);
  if (Number(req.headers['content-length'] ?? 0) > limit) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (chunk: Buffer) => {
      if (over) return;
      size += chunk.length;
      if (size <= limit) {
        chunks.push(chunk);
        return;
      }
      over = true;
      chunks.length = 0;
      reject(tooLarge());
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    // The client went away mid-body ('aborted'): its request, not a failure of this server.
    req.on('error', () => reject(new HttpError(400, 'the request ended before its body')));
    req.on('close', () => {
      if (!req.complete) reject(new HttpError(400, 'the request ended before its body'));
    });
  });
}

/** A validated `POST /devices/:id/commands` body. */
interface CommandRequest {
  readonly body: unknown;
  readonly id: string | undefined;
  readonly expirationMs: number | undefined;
}

/** Parse and check a command request body; 400 with the reason if it is not one. */
function parseCommand(raw: Buffer): CommandRequest {
  let value: unknown;
  try {
    value = JSON.parse(raw.toString('utf8'));
  } catch {
    throw new HttpError(400, 'the body is not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new HttpError(400, 'the body must be a JSON object: {"body": any, "expirationMs"?: number, "id"?: string}');
  }
  const o = value as Record<string, unknown>;
  if (!('body' in o)) throw new HttpError(400, 'field "body" is missing');
  if (nestedDeeperThan(o.body, MAX_BODY_DEPTH)) throw new HttpError(400, `field "body" is nested deeper than ${MAX_BODY_DEPTH} levels`);
  const { id, expirationMs } = o;
  // The device acknowledges with this id, so it must be one a device may send back (MESSAGE_ID).
  if (id !== undefined && (typeof id !== 'string' || !MESSAGE_ID.test(id))) {
    throw new HttpError(400, 'field "id" must be 1–128 printable ASCII characters without spaces');
  }
  if (expirationMs !== undefined && (typeof expirationMs !== 'number' || !Number.isInteger(expirationMs) || expirationMs < 1 || expirationMs > 2 ** 31 - 1)) {
    throw new HttpError(400, 'field "expirationMs" must be a positive integer (milliseconds)');
  }
  return { body: o.body, id, expirationMs };
}

/** Resolve with `promise`, or reject with 504 after `ms`. */
async function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new HttpError(504, `the broker did not confirm the command within ${ms} ms; it may still be delivered`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * corral's listener counters as Prometheus gauges, set from `listener.info()` at each scrape. In a
 * primary with workers, info() sums the workers, so these cover the whole node.
 */
class ListenerMetrics {
  readonly registry = new Registry();
  private readonly gauge = (name: string, help: string, labelNames: string[] = []): Gauge =>
    new Gauge({ name: `corral_listener_${name}`, help, labelNames, registers: [this.registry] });
  private readonly connections = this.gauge('connections', 'Live device connections (all workers).');
  private readonly active = this.gauge('active', 'Connections counting against maxConnections, plus handshakes in progress.');
  private readonly maxConnections = this.gauge('max_connections', 'The maxConnections limit.');
  private readonly handshaking = this.gauge('handshaking', 'TLS handshakes in progress.');
  private readonly waiting = this.gauge('waiting', 'Sockets waiting, paused and unread, for a slot.');
  private readonly accepted = this.gauge('accepted', 'Sockets accepted since start (a count, exposed as a gauge).');
  private readonly opened = this.gauge('opened', 'Connections that completed their handshake since start.');
  private readonly closed = this.gauge('closed', 'Connections closed since start.');
  private readonly rejected = this.gauge('rejected', 'Sockets closed unserved since start, by reason.', ['reason']);
  private readonly handshakeFailures = this.gauge('handshake_failures', 'Failed TLS handshakes since start, by kind.', ['kind']);
  private readonly handlerCrashes = this.gauge('handler_crashes', 'Device handler hooks that threw since start.');
  private readonly workers = this.gauge('workers', 'Worker processes, by status.', ['status']);
  private readonly workerConnections = this.gauge('worker_connections', 'Live connections per worker process.', ['worker']);
  private readonly workerRestarts = this.gauge('worker_restarts', 'Restarts per worker slot.', ['worker']);

  set(info: ListenerInfo): void {
    this.connections.set(info.connections);
    this.active.set(info.active);
    this.maxConnections.set(info.maxConnections);
    this.handshaking.set(info.handshaking);
    this.waiting.set(info.waiting);
    this.accepted.set(info.accepted);
    this.opened.set(info.opened);
    this.closed.set(info.closed);
    this.handlerCrashes.set(info.handlerCrashes);
    for (const [reason, n] of Object.entries(info.rejected)) this.rejected.set({ reason }, n);
    for (const [kind, n] of Object.entries(info.handshakeFailures)) this.handshakeFailures.set({ kind }, n);
    // Workers come and go: drop the old label sets before writing the current ones.
    this.workers.reset();
    this.workerConnections.reset();
    this.workerRestarts.reset();
    const byStatus = new Map<string, number>();
    for (const w of info.workers) {
      byStatus.set(w.status, (byStatus.get(w.status) ?? 0) + 1);
      this.workerConnections.set({ worker: String(w.index) }, w.connections);
      this.workerRestarts.set({ worker: String(w.index) }, w.restarts);
    }
    for (const [status, n] of byStatus) this.workers.set({ status }, n);
  }
}
