/**
 * One load-client process: opens `count` connections (TCP or TLS) to a line-echo server at a
 * bounded rate, each from a source address spread over 127.<a>.<b>.<c> so the ephemeral port
 * range is never the limit, checks one echo per connection, then holds them open until told to
 * close (or for `holdMs`). Reports to its parent over IPC. Stays under the 20,000-descriptor limit:
 * the parent never gives one process more than `MAX_PER_PROCESS` connections.
 *
 * Started by bench/lib/load.ts; not meant to be run by hand.
 */
import net from 'node:net';
import tls from 'node:tls';
import { type ConnectClientConfig, sourceAddress } from './client-config.js';

/** A load client's config; a connect (counted by `inFlight`) is TCP connect, TLS handshake and first echo. */
export type LoadClientConfig = ConnectClientConfig;

export type LoadClientMessage =
  | { t: 'progress'; connected: number; failed: number; errors: Record<string, number> }
  | { t: 'done'; connected: number; failed: number; errors: Record<string, number>; ms: number; latencies: number[] }
  | { t: 'closed' };

if (process.send && process.env.CORRAL_LOAD_CLIENT) {
  const cfg = JSON.parse(process.env.CORRAL_LOAD_CLIENT) as LoadClientConfig;
  const sockets: net.Socket[] = [];
  const errors: Record<string, number> = {};
  const latencies: number[] = [];
  let connected = 0;
  let failed = 0;
  let started = 0;
  let active = 0;
  const began = Date.now();

  const source = (i: number): string => sourceAddress(cfg.net, Math.floor(i / cfg.perAddress));

  const attempt = (i: number): void => {
    active++;
    const t0 = performance.now();
    const opts = { port: cfg.port, host: cfg.host, localAddress: source(i) };
    const socket: net.Socket = cfg.tls ? tls.connect({ ...opts, rejectUnauthorized: false }) : net.connect(opts);
    let settled = false;
    const finish = (ok: boolean, code?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      active--;
      if (ok) {
        connected++;
        latencies.push(performance.now() - t0);
        sockets.push(socket);
      } else {
        failed++;
        errors[code ?? 'unknown'] = (errors[code ?? 'unknown'] ?? 0) + 1;
        socket.destroy();
      }
      pump();
    };
    const timer = setTimeout(() => finish(false, 'TIMEOUT'), cfg.connectTimeout);
    let got = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      got += d;
      if (got.includes('\n')) finish(got.startsWith('hello'));
    });
    socket.on('error', (err: NodeJS.ErrnoException) => finish(false, err.code ?? err.message));
    socket.on('close', () => finish(false, 'CLOSED'));
    socket.once(cfg.tls ? 'secureConnect' : 'connect', () => socket.write('hello\n'));
  };

  // Start connections on a clock (rate per second), never more than inFlight at once.
  let timer: NodeJS.Timeout | undefined;
  const pump = (): void => {
    const due = Math.min(cfg.count, Math.floor(((Date.now() - began) / 1000) * cfg.rate) + 1);
    while (started < due && active < cfg.inFlight) attempt(started++);
    if (started >= cfg.count && active === 0) {
      clearInterval(timer);
      process.send!({ t: 'done', connected, failed, errors, ms: Date.now() - began, latencies } satisfies LoadClientMessage);
    }
  };
  timer = setInterval(() => {
    pump();
    process.send!({ t: 'progress', connected, failed, errors } satisfies LoadClientMessage);
  }, 50);
  pump();

  process.on('message', (m: { t: string }) => {
    if (m.t !== 'close') return;
    let left = sockets.length;
    if (left === 0) process.send!({ t: 'closed' } satisfies LoadClientMessage, () => process.exit(0));
    for (const s of sockets) {
      s.once('close', () => {
        if (--left === 0) process.send!({ t: 'closed' } satisfies LoadClientMessage, () => process.exit(0));
      });
      s.destroy();
    }
  });
  process.on('disconnect', () => process.exit(0));
}
