/**
 * One steady-state client process. Phase 1 (on `{ t: 'connect' }`): open `count` connections (TCP connect, or
 * TCP connect plus TLS handshake) at up to `rate` per second with at most `inFlight` in progress,
 * each from a source address spread over 127.<net>.x.y, and hold them; report the connect time.
 * Phase 2 (on `{ t: 'lines' }`): every connection exchanges `lines` lines with the echo server, one
 * at a time (write a line, wait for the same line back), `linesInFlight` connections at once;
 * report every round trip's latency. Phase 3 (on `{ t: 'close' }`): close everything and exit.
 * Talks to bench/lib/steady.ts over IPC; not meant to be run by hand. Stays under the
 * 20,000-descriptor limit: the driver never gives one process more than `MAX_PER_PROCESS`.
 */
import net from 'node:net';
import tls from 'node:tls';
import { type ConnectClientConfig, sourceAddress } from './client-config.js';

/** A steady client's config; a connect (counted by `inFlight`) is TCP connect plus TLS handshake. */
export interface SteadyClientConfig extends ConnectClientConfig {
  /**
   * Index of the first source address (127.<net>.1.1 is index 0). Each run should start at fresh
   * addresses: closed connections leave TIME_WAIT entries on theirs for a minute, and once tens of
   * thousands crowd a few addresses, binding a source port gets slow and connects stall.
   */
  firstAddress: number;
  /**
   * Connects retried after failing (a device reconnects): a server that sheds waiting sockets
   * under a saturating closed-loop client (corral's wait timeout) still ends up holding them all.
   */
  retries: number;
  /** Lines each connection exchanges in phase 2. */
  lines: number;
  /** Bytes per line, newline included. */
  lineBytes: number;
  /** Connections exchanging lines at once in phase 2. */
  linesInFlight: number;
  /** Give up a line round trip after this many ms (the connection is then dropped). */
  lineTimeout: number;
}

export type SteadyClientMessage =
  | { t: 'ready' }
  | { t: 'connected'; connected: number; failed: number; retried: number; errors: Record<string, number>; ms: number; latencies: number[] }
  | { t: 'lines-done'; lines: number; failed: number; errors: Record<string, number>; ms: number; latencies: number[] }
  | { t: 'closed' };

export type SteadyClientCommand = { t: 'connect' } | { t: 'lines' } | { t: 'close' };

if (process.send && process.env.CORRAL_STEADY_CLIENT) {
  const cfg = JSON.parse(process.env.CORRAL_STEADY_CLIENT) as SteadyClientConfig;
  const send = (m: SteadyClientMessage, then?: () => void): void => {
    if (then) process.send!(m, undefined, undefined, then);
    else process.send!(m);
  };
  const sockets: net.Socket[] = [];
  const errors: Record<string, number> = {};
  const count = (code: string): void => void (errors[code] = (errors[code] ?? 0) + 1);

  // ---- Phase 1: connect and hold.
  const connectLatencies: number[] = [];
  let connected = 0;
  let failed = 0;
  let retried = 0;
  let started = 0;
  let active = 0;
  let began = 0;

  const source = (i: number): string => sourceAddress(cfg.net, cfg.firstAddress + Math.floor(i / cfg.perAddress));

  // One client context for every connection: building one per connection (tls.connect's default)
  // costs the client a third of its CPU per handshake and changes nothing the server sees.
  const secureContext = cfg.tls ? tls.createSecureContext() : undefined;
  /** Connect number `i`; `t0` is its first attempt's start (latency counts from there). */
  const attempt = (i: number, tries = 0, t0 = performance.now()): void => {
    if (tries === 0) active++;
    const opts = { port: cfg.port, host: cfg.host, localAddress: source(i) };
    const socket: net.Socket = cfg.tls ? tls.connect({ ...opts, rejectUnauthorized: false, secureContext }) : net.connect(opts);
    let settled = false;
    const finish = (ok: boolean, code?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (!ok) {
        count(code ?? 'unknown');
        socket.destroy();
        if (tries < cfg.retries) {
          retried++;
          setTimeout(() => attempt(i, tries + 1, t0), 50);
          return;
        }
      }
      active--;
      if (ok) {
        connected++;
        connectLatencies.push(performance.now() - t0);
        sockets.push(socket);
      } else failed++;
      pump();
    };
    const timer = setTimeout(() => finish(false, 'TIMEOUT'), cfg.connectTimeout);
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (!settled) finish(false, err.code ?? err.message);
    });
    socket.on('close', () => {
      if (!settled) finish(false, 'CLOSED');
    });
    socket.once(cfg.tls ? 'secureConnect' : 'connect', () => finish(true));
  };

  let ticker: NodeJS.Timeout | undefined;
  let reported = false;
  const pump = (): void => {
    const due = Math.min(cfg.count, Math.floor(((performance.now() - began) / 1000) * cfg.rate) + 1);
    while (started < due && active < cfg.inFlight) attempt(started++);
    if (started >= cfg.count && active === 0 && !reported) {
      reported = true;
      clearInterval(ticker);
      send({ t: 'connected', connected, failed, retried, errors: { ...errors }, ms: performance.now() - began, latencies: connectLatencies });
    }
  };
  const connectAll = (): void => {
    began = performance.now();
    ticker = setInterval(pump, 5);
    pump();
  };

  // ---- Phase 2: lines, one at a time per connection.
  const runLines = (): void => {
    const pad = 'x'.repeat(Math.max(0, cfg.lineBytes - 1 - 24));
    const latencies: number[] = [];
    let lineFailed = 0;
    let next = 0;
    let running = 0;
    const t0 = performance.now();
    const lineErrors: Record<string, number> = {};

    const converse = (socket: net.Socket, id: number): void => {
      running++;
      let k = 0;
      let expected = '';
      let got = '';
      let sentAt = 0;
      let timer: NodeJS.Timeout | undefined;
      const done = (code?: string): void => {
        clearTimeout(timer);
        socket.removeListener('data', onData);
        socket.removeListener('close', onClose);
        if (code !== undefined) {
          lineFailed += cfg.lines - k;
          lineErrors[code] = (lineErrors[code] ?? 0) + 1;
          socket.destroy();
        }
        running--;
        schedule();
      };
      const sendLine = (): void => {
        expected = `${String(id).padStart(10, '0')} ${String(k).padStart(12, '0')} ${pad}`.slice(0, cfg.lineBytes - 1);
        got = '';
        sentAt = performance.now();
        timer = setTimeout(() => done('TIMEOUT'), cfg.lineTimeout);
        socket.write(`${expected}\n`);
      };
      const onData = (chunk: string): void => {
        got += chunk;
        const nl = got.indexOf('\n');
        if (nl === -1) return;
        clearTimeout(timer);
        if (got.slice(0, nl).replace(/\r$/, '') !== expected) return done('MISMATCH');
        latencies.push(performance.now() - sentAt);
        if (++k === cfg.lines) return done();
        sendLine();
      };
      const onClose = (): void => done('CLOSED');
      socket.setEncoding('utf8');
      socket.on('data', onData);
      socket.on('close', onClose);
      sendLine();
    };

    const schedule = (): void => {
      while (running < cfg.linesInFlight && next < sockets.length) {
        const s = sockets[next]!;
        const id = next++;
        if (s.destroyed) {
          lineFailed += cfg.lines;
          continue;
        }
        converse(s, id);
      }
      if (running === 0 && next >= sockets.length) {
        send({ t: 'lines-done', lines: latencies.length, failed: lineFailed, errors: lineErrors, ms: performance.now() - t0, latencies });
      }
    };
    schedule();
  };

  process.on('message', (m: SteadyClientCommand) => {
    if (m.t === 'connect') connectAll();
    else if (m.t === 'lines') runLines();
    else if (m.t === 'close') {
      for (const s of sockets) s.destroy();
      send({ t: 'closed' }, () => process.exit(0));
    }
  });
  process.on('disconnect', () => process.exit(0));
  send({ t: 'ready' });
}
