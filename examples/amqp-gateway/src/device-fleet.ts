/**
 * A fleet of simulated devices in one process, for `simulate.ts`. Each device:
 *
 * 1. connects over TLS (the certificate is not checked), from a source address spread over
 *    127.<net>.x.y when the gateway is on loopback, so the ephemeral port range is never the limit;
 * 2. sends its hello with its HMAC token and waits for `welcome`;
 * 3. sends its uplink messages (`{"type":"msg","id","topic":"telemetry","body"}`), one every
 *    `interval` ms, and times each until its `ack` (or `nack`);
 * 4. answers every `cmd` with `cmd_ack`, and pings when it has been quiet for a while;
 * 5. when disconnected (`taken_over`, `shutting_down`, a network error, a timeout), reconnects after
 *    1 s × 2ⁿ (capped at 30 s) × a random factor in [0.5, 1.5), n counting failures since its last
 *    welcome, and sends again every message not yet answered (at-least-once: same ids). A `nack`
 *    `shutting_down` is not an answer: that message goes again too.
 *
 * A device refused with `unauthorized` gives up. The fleet is done when every device has had an
 * answer to each of its messages, or has given up.
 */
import { performance } from 'node:perf_hooks';
import tls from 'node:tls';
import { lineFraming } from 'corral';
import { deviceToken } from './auth.js';

/** The gateway's replies: one JSON message per line (a simulated device accepts lines up to 1 MiB). */
const deviceLines = lineFraming({ maxLength: 1024 * 1024 });

/** Sockets one process may hold: under the 20,000-descriptor limit, with room to spare. */
export const MAX_DEVICES_PER_PROCESS = 15_000;

/** What one process simulates. */
export interface FleetConfig {
  readonly host: string;
  readonly port: number;
  readonly secret: string;
  /** Device ids are `<idPrefix>-<n>` for n from `first` to `first + count - 1`. */
  readonly idPrefix: string;
  readonly first: number;
  readonly count: number;
  /** First connections started per second by this process (reconnects follow their backoff). */
  readonly rate: number;
  /** Uplink messages per device. */
  readonly msgs: number;
  /** Milliseconds between one device's messages (0: all at once). */
  readonly interval: number;
  /** Second octet of the source addresses (127.<net>.x.y), or `undefined` to let the OS choose. */
  readonly net: number | undefined;
  /** Give up one connection attempt without a welcome after this many ms. */
  readonly connectTimeout: number;
}

/** Counters, as the progress line shows them. */
export interface FleetProgress {
  /** Devices connected (welcomed) now. */
  connected: number;
  /** Devices welcomed at least once. */
  everConnected: number;
  acks: number;
  nacks: number;
  /** Connection attempts that ended before a welcome. */
  failed: number;
  /** Welcomed connections that ended. */
  disconnects: number;
  /** Commands received (and acknowledged). */
  commands: number;
  /** Devices with an answer to each of their messages, or that gave up. */
  done: number;
}

/** Everything a fleet measured. */
export interface FleetResult extends FleetProgress {
  /** Failed attempts and disconnects, by cause (`ECONNREFUSED`, `timeout`, `taken_over`, `nack:<reason>`, …). */
  errors: Record<string, number>;
  /** Uplink ack latency of every acked message, in ms. */
  latencies: number[];
  /** When the first uplink was sent and the last answer arrived (ms since the epoch; 0 if none). */
  firstSentAt: number;
  lastAnswerAt: number;
}

/** Seconds without writing anything after which a device pings (the gateway closes silent devices). */
const PING_AFTER_MS = 30_000;

/** The simulated devices of one process. */
export class DeviceFleet {
  private readonly devices: SimulatedDevice[] = [];
  private readonly progress: FleetProgress = { connected: 0, everConnected: 0, acks: 0, nacks: 0, failed: 0, disconnects: 0, commands: 0, done: 0 };
  private readonly errors: Record<string, number> = {};
  private readonly latencies: number[] = [];
  private firstSentAt = 0;
  private lastAnswerAt = 0;
  private started = 0;
  private stopping = false;
  private pacer: NodeJS.Timeout | undefined;
  private pinger: NodeJS.Timeout | undefined;
  private resolveDone!: () => void;
  /** Resolves when every device is done (see {@link FleetProgress.done}). */
  readonly done = new Promise<void>((resolve) => (this.resolveDone = resolve));

  constructor(readonly config: FleetConfig) {
    for (let i = 0; i < config.count; i++) {
      const id = `${config.idPrefix}-${config.first + i}`;
      this.devices.push(new SimulatedDevice(this, id, deviceToken(config.secret, id), this.sourceAddress(i)));
    }
  }

  /** Start connecting, `rate` devices per second. */
  start(): void {
    if (this.devices.length === 0) this.resolveDone();
    const began = Date.now();
    const pace = (): void => {
      const due = Math.min(this.devices.length, Math.floor(((Date.now() - began) / 1000) * this.config.rate) + 1);
      while (this.started < due && !this.stopping) this.devices[this.started++]!.connect();
      if (this.started >= this.devices.length) clearInterval(this.pacer);
    };
    this.pacer = setInterval(pace, 20);
    pace();
    this.pinger = setInterval(() => {
      const now = performance.now();
      for (const d of this.devices) d.pingIfQuiet(now);
    }, 5000);
  }

  /** A snapshot of the counters. */
  snapshot(): FleetProgress {
    return { ...this.progress };
  }

  /** When the first uplink was sent and the last answer came, so far. */
  uplinkWindow(): Pick<FleetResult, 'firstSentAt' | 'lastAnswerAt'> {
    return { firstSentAt: this.firstSentAt, lastAnswerAt: this.lastAnswerAt };
  }

  /** Stop reconnecting, close every connection, and report. */
  async stop(): Promise<FleetResult> {
    this.stopping = true;
    clearInterval(this.pacer);
    clearInterval(this.pinger);
    await Promise.all(this.devices.map((d) => d.close()));
    return { ...this.progress, errors: { ...this.errors }, latencies: this.latencies, firstSentAt: this.firstSentAt, lastAnswerAt: this.lastAnswerAt };
  }

  // ---- what the devices report ----
  get isStopping(): boolean {
    return this.stopping;
  }
  count(key: keyof FleetProgress, delta = 1): void {
    this.progress[key] += delta;
    if (key === 'done' && this.progress.done === this.devices.length) this.resolveDone();
  }
  error(cause: string): void {
    this.errors[cause] = (this.errors[cause] ?? 0) + 1;
  }
  sent(): void {
    if (this.firstSentAt === 0) this.firstSentAt = Date.now();
  }
  answered(latencyMs: number | undefined): void {
    this.lastAnswerAt = Date.now();
    if (latencyMs === undefined) this.count('nacks');
    else {
      this.count('acks');
      this.latencies.push(latencyMs);
    }
  }

  /** 127.<net>.x.y, 1,000 devices per address, or nothing when the gateway is not on loopback. */
  private sourceAddress(i: number): string | undefined {
    if (this.config.net === undefined) return undefined;
    const a = Math.floor(i / 1000);
    return `127.${this.config.net}.${Math.floor(a / 250) + 1}.${(a % 250) + 1}`;
  }
}

/** One simulated device: its connection, its messages and its backoff. */
class SimulatedDevice {
  private socket: tls.TLSSocket | undefined;
  private online = false;
  /** Failed attempts since the last welcome: the n of the backoff. */
  private failures = 0;
  private retry: NodeJS.Timeout | undefined;
  private sender: NodeJS.Timeout | undefined;
  /** Messages sent for the first time so far. */
  private next = 0;
  /** Messages sent and not answered: id → performance.now() when first sent. */
  private readonly unanswered = new Map<string, number>();
  private answered = 0;
  private finished = false;
  private everWelcomed = false;
  private lastWrite = 0;

  constructor(
    private readonly fleet: DeviceFleet,
    readonly id: string,
    private readonly token: string,
    private readonly localAddress: string | undefined,
  ) {}

  connect(): void {
    if (this.fleet.isStopping) return;
    const { host, port, connectTimeout } = this.fleet.config;
    const socket = tls.connect({ host, port, rejectUnauthorized: false, ...(this.localAddress ? { localAddress: this.localAddress } : {}) });
    this.socket = socket;
    let cause: string | undefined;
    const timer = setTimeout(() => {
      cause ??= 'timeout';
      socket.destroy();
    }, connectTimeout);
    socket.setNoDelay(true);
    socket.once('secureConnect', () => this.write({ type: 'hello', device: this.id, token: this.token }));
    // The gateway's replies are lines: corral's own line framer splits them (and bounds their length).
    const framer = deviceLines.createFramer();
    socket.on('data', (chunk: Buffer) => {
      let line: Buffer | undefined;
      try {
        framer.push(chunk);
        line = framer.next();
      } catch {
        cause ??= 'bad_line';
        socket.destroy();
        return;
      }
      while (line !== undefined) {
        let m: { type?: unknown; id?: unknown; code?: unknown };
        try {
          m = JSON.parse(line.toString('utf8')) as typeof m;
          line = framer.next();
        } catch {
          cause ??= 'bad_line';
          socket.destroy();
          return;
        }
        if (m.type === 'welcome') {
          clearTimeout(timer);
          this.welcomed();
        } else if (m.type === 'error') {
          cause ??= String(m.code);
        } else this.receive(m);
      }
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      cause ??= err.code ?? err.message;
    });
    socket.on('close', () => {
      clearTimeout(timer);
      this.closed(cause ?? 'closed');
    });
  }

  /** Ping if nothing was written for a while. */
  pingIfQuiet(now: number): void {
    if (this.online && now - this.lastWrite > PING_AFTER_MS) this.write({ type: 'ping' });
  }

  /** Close for good (the run is over). */
  close(): Promise<void> {
    clearTimeout(this.retry);
    clearInterval(this.sender);
    const socket = this.socket;
    if (!socket || socket.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      socket.once('close', () => resolve());
      socket.end();
      setTimeout(() => socket.destroy(), 2000).unref();
    });
  }

  private welcomed(): void {
    this.online = true;
    this.failures = 0;
    this.fleet.count('connected');
    if (!this.everWelcomed) {
      this.everWelcomed = true;
      this.fleet.count('everConnected');
    }
    // At-least-once: what was sent but not answered before a disconnect goes again, same ids (the
    // latency of a message sent again counts from the new send: it measures the gateway).
    for (const id of this.unanswered.keys()) {
      this.unanswered.set(id, performance.now());
      this.sendMessage(id);
    }
    const { msgs, interval } = this.fleet.config;
    if (msgs === 0) this.finish();
    if (interval === 0) {
      while (this.next < msgs) this.sendMessage(this.newMessage());
    } else if (this.next < msgs) {
      this.sender = setInterval(() => {
        if (this.next < msgs) this.sendMessage(this.newMessage());
        else clearInterval(this.sender);
      }, interval);
    }
  }

  private receive(m: { type?: unknown; id?: unknown; reason?: unknown }): void {
    const id = String(m.id);
    if (m.type === 'ack' || m.type === 'nack') {
      const sentAt = this.unanswered.get(id);
      if (sentAt === undefined) return; // a second answer to a message sent twice
      if (m.type === 'nack' && m.reason === 'shutting_down') {
        // Not an answer: the node is closing this session, and the device sends the message again
        // on its next connection (docs/gateway.md, "Draining"), as one unanswered at a cut.
        this.fleet.error('nack:shutting_down');
        return;
      }
      this.unanswered.delete(id);
      if (m.type === 'ack') this.fleet.answered(performance.now() - sentAt);
      else {
        this.fleet.error(`nack:${String(m.reason)}`);
        this.fleet.answered(undefined);
      }
      if (++this.answered === this.fleet.config.msgs) this.finish();
    } else if (m.type === 'cmd') {
      this.fleet.count('commands');
      this.write({ type: 'cmd_ack', id });
    }
  }

  private newMessage(): string {
    const id = `m-${++this.next}`;
    this.unanswered.set(id, performance.now());
    this.fleet.sent();
    return id;
  }

  private sendMessage(id: string): void {
    const seq = Number(id.slice(2));
    this.write({ type: 'msg', id, topic: 'telemetry', body: { seq, at: new Date().toISOString(), temperature: 20 + Math.round(Math.random() * 100) / 10 } });
  }

  private write(message: object): void {
    if (!this.socket || this.socket.destroyed) return;
    this.lastWrite = performance.now();
    this.socket.write(`${JSON.stringify(message)}\n`);
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.fleet.count('done');
  }

  private closed(cause: string): void {
    clearInterval(this.sender);
    this.socket = undefined;
    const wasOnline = this.online;
    this.online = false;
    if (wasOnline) this.fleet.count('connected', -1);
    if (this.fleet.isStopping) return; // closed by stop(): not a failure
    this.fleet.count(wasOnline ? 'disconnects' : 'failed');
    this.fleet.error(cause);
    if (cause === 'unauthorized') {
      this.finish(); // a wrong secret does not get better by retrying
      return;
    }
    const delay = Math.min(1000 * 2 ** this.failures, 30_000) * (0.5 + Math.random());
    this.failures++;
    this.retry = setTimeout(() => this.connect(), delay);
  }
}
