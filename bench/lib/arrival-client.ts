/**
 * One open-loop arrival-client process: from `startAt` for `durationMs`, new TLS clients arrive at
 * `rate` per second whether or not earlier ones are done (a late clock catches up at once). Each
 * has `deadline` ms for TCP connect, TLS handshake and one echoed line, then closes; one that is
 * not done by then gives up and closes. Source addresses rotate over 127.<net>.x.y every
 * `perAddress` arrivals. Reports, at the end of the window, when each success completed; then
 * closes whatever is still open and exits. Never holds more than `maxOpen` sockets (an arrival
 * beyond it is counted as `CLIENT_LIMIT`), so it stays under the 20,000-descriptor limit.
 *
 * Started by bench/scenarios/overload.ts; not meant to be run by hand.
 */
import tls from 'node:tls';
import { sourceAddress } from './client-config.js';

export interface ArrivalClientConfig {
  port: number;
  host: string;
  /** Arrivals per second from this process. */
  rate: number;
  durationMs: number;
  deadline: number;
  net: number;
  perAddress: number;
  maxOpen: number;
}

export type ArrivalClientMessage =
  | { t: 'ready' }
  | {
      t: 'done';
      /** Arrivals started (attempted). */
      started: number;
      /** ms from the start at which each success completed. */
      completedAt: number[];
      /** Arrival-to-echo latency of each success, in ms. */
      latencies: number[];
      /** Attempts that hit the deadline. */
      timedOut: number;
      /** Attempts that failed before the deadline, by error code (`CLOSED`: closed by the server). */
      failed: Record<string, number>;
      /** Still in progress when the window closed. */
      open: number;
      maxOpen: number;
      /** ms the arrival clock ran behind at its worst (open loop falling behind). */
      maxLagMs: number;
    };

export type ArrivalClientCommand = { t: 'go'; startAt: number };

if (process.send && process.env.CORRAL_ARRIVAL_CLIENT) {
  const cfg = JSON.parse(process.env.CORRAL_ARRIVAL_CLIENT) as ArrivalClientConfig;
  const open = new Set<tls.TLSSocket>();
  const completedAt: number[] = [];
  const latencies: number[] = [];
  const failed: Record<string, number> = {};
  let timedOut = 0;
  let started = 0;
  let maxOpen = 0;
  let maxLagMs = 0;
  let start = 0;
  let running = false;

  const fail = (code: string): void => void (failed[code] = (failed[code] ?? 0) + 1);
  const address = (i: number): string => sourceAddress(cfg.net, Math.floor(i / cfg.perAddress));

  // One client context for every arrival: building one per connection (tls.connect's default)
  // costs the client a third of its CPU per handshake and changes nothing the server sees.
  const secureContext = tls.createSecureContext();
  const arrive = (i: number): void => {
    if (open.size >= cfg.maxOpen) return fail('CLIENT_LIMIT');
    const t0 = performance.now();
    // tls.connect passes localAddress on to the TCP connect (its type does not list it).
    const options = { port: cfg.port, host: cfg.host, localAddress: address(i), rejectUnauthorized: false, secureContext };
    const socket = tls.connect(options as tls.ConnectionOptions);
    open.add(socket);
    maxOpen = Math.max(maxOpen, open.size);
    let settled = false;
    const finish = (outcome: 'ok' | 'timeout' | string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      open.delete(socket);
      socket.destroy();
      if (!running) return;
      if (outcome === 'ok') {
        const now = performance.now();
        completedAt.push(now - start);
        latencies.push(now - t0);
      } else if (outcome === 'timeout') timedOut++;
      else fail(outcome);
    };
    const timer = setTimeout(() => finish('timeout'), cfg.deadline);
    let got = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      got += d;
      if (got.includes('\n')) finish(got.startsWith('hi') ? 'ok' : 'MISMATCH');
    });
    socket.on('error', (err: NodeJS.ErrnoException) => finish(err.code ?? err.message));
    socket.on('close', () => finish('CLOSED'));
    socket.once('secureConnect', () => socket.write('hi\n'));
  };

  const tick = (): void => {
    const elapsed = performance.now() - start;
    const window = Math.min(elapsed, cfg.durationMs);
    const due = Math.floor((window / 1000) * cfg.rate);
    if (due > started) maxLagMs = Math.max(maxLagMs, elapsed - (started / cfg.rate) * 1000);
    while (started < due) arrive(started++);
    if (elapsed >= cfg.durationMs) {
      clearInterval(clock);
      running = false;
      const message: ArrivalClientMessage = {
        t: 'done',
        started,
        completedAt,
        latencies,
        timedOut,
        failed,
        open: open.size,
        maxOpen,
        maxLagMs: Math.round(maxLagMs),
      };
      for (const s of open) s.destroy();
      open.clear();
      process.send!(message, undefined, undefined, () => process.exit(0));
    }
  };

  let clock: NodeJS.Timeout | undefined;
  process.on('message', (m: ArrivalClientCommand) => {
    if (m.t !== 'go') return;
    const wait = Math.max(0, m.startAt - Date.now());
    setTimeout(() => {
      start = performance.now();
      running = true;
      clock = setInterval(tick, 2);
    }, wait);
  });
  process.on('disconnect', () => process.exit(0));
  process.send({ t: 'ready' } satisfies ArrivalClientMessage);
}
