/**
 * One storm-client process: `count` devices that all connect at once; an attempt (TCP connect, TLS
 * handshake, first echo) that takes longer than `deadline` ms is abandoned (the socket is closed)
 * and retried after 1 s × 2ⁿ (capped at 30 s) times a random factor in [0.5, 1.5). Reports, per
 * device, how many attempts it took, plus every abandoned attempt's source address, local port and
 * time (to match against handshakes the server started after the client gave up).
 *
 * With `reconnect`, the devices first connect at a modest rate and hold their connections (setup,
 * retried without counting), report `ready`, and wait for the parent's `storm` message (answered
 * with `armed`). From then on, a device whose connection closes — the server cut it — starts the
 * storm sequence above at once; times are measured from the `storm` message, whose wall-clock time
 * is reported as `epoch`.
 *
 * Started by bench/lib/storm.ts; not meant to be run by hand.
 */
import tls from 'node:tls';
import { sourceAddress } from './client-config.js';

export interface StormClientConfig {
  port: number;
  host: string;
  count: number;
  net: number;
  deadline: number;
  /** Stop retrying after this long, in ms (bounds the run). */
  giveUpAfter: number;
  /** Connect and hold first, storm when the held connections are cut (see above). */
  reconnect?: {
    /** Setup connects started per second by this process. */
    rate: number;
    /** Most setup connects in flight at once in this process. */
    inFlight: number;
  };
}

/** Why an attempt was abandoned: its deadline passed, or the server closed or reset it first. */
export type AbandonReason = 'deadline' | 'closed' | 'error';

export type StormClientMessage =
  | { t: 'progress'; connected: number; attempts: number }
  | { t: 'ready'; connected: number; setupFailures: number }
  | { t: 'armed' }
  | {
      t: 'done';
      connected: number;
      attempts: number[];
      /** ms from the storm's start until each device connected. */
      connectedAt: number[];
      abandoned: { port: number; address: string; at: number; reason?: AbandonReason }[];
      /** Wall-clock time (Date.now()) of the storm's start, the origin of every `at` above. */
      epoch?: number;
    };

if (process.send && process.env.CORRAL_STORM_CLIENT) {
  const cfg = JSON.parse(process.env.CORRAL_STORM_CLIENT) as StormClientConfig;
  let start = Date.now();
  const attempts = new Array<number>(cfg.count).fill(0);
  const connectedAt: number[] = [];
  const abandoned: { port: number; address: string; at: number; reason?: AbandonReason }[] = [];
  const held = new Set<tls.TLSSocket>();
  let pending = cfg.count;
  let armed = cfg.reconnect === undefined;
  let closing = false;
  let reported = false;

  const address = (i: number): string => sourceAddress(cfg.net, i);

  /** One connection: resolves true once the first echo came back, false when it failed or timed out. */
  const connect = (i: number, deadline: number, onOutcome: (ok: boolean, socket: tls.TLSSocket, reason: AbandonReason) => void): void => {
    // tls.connect passes localAddress on to the TCP connect (its type does not list it).
    const opts = { port: cfg.port, host: cfg.host, localAddress: address(i) };
    const socket = tls.connect({ ...opts, rejectUnauthorized: false });
    let done = false;
    const finish = (ok: boolean, reason: AbandonReason): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      onOutcome(ok, socket, reason);
    };
    const timer = setTimeout(() => finish(false, 'deadline'), deadline);
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => finish(d.startsWith('hi'), 'closed'));
    socket.on('error', () => finish(false, 'error'));
    socket.on('close', () => finish(false, 'closed'));
    socket.once('secureConnect', () => socket.write('hi\n'));
  };

  const hold = (i: number, socket: tls.TLSSocket): void => {
    held.add(socket);
    socket.once('close', () => {
      held.delete(socket);
      if (closing) return;
      if (armed) attempt(i);
      else setup(i); // lost before the storm: connect again quietly
    });
  };

  const attempt = (i: number): void => {
    attempts[i]!++;
    connect(i, cfg.deadline, (ok, socket, reason) => {
      if (ok) {
        connectedAt.push(Date.now() - start);
        if (cfg.reconnect) {
          // Held, but a second cut is not part of this storm: no reconnect after this.
          held.add(socket);
          socket.once('close', () => held.delete(socket));
        } else held.add(socket);
        if (--pending === 0) report();
        return;
      }
      if (socket.localPort !== undefined) abandoned.push({ port: socket.localPort, address: address(i), at: Date.now() - start, reason });
      socket.destroy();
      if (Date.now() - start > cfg.giveUpAfter) {
        if (--pending === 0) report();
        return;
      }
      const n = attempts[i]! - 1;
      const backoff = Math.min(30_000, 1000 * 2 ** n) * (0.5 + Math.random());
      setTimeout(() => attempt(i), backoff);
    });
  };

  // ---- setup (reconnect mode): connect every device at a bounded rate and hold it ----
  let setupStarted = 0;
  let setupActive = 0;
  let setupDone = 0;
  let setupFailures = 0;
  let setupTimer: NodeJS.Timeout | undefined;
  const setup = (i: number): void => {
    setupActive++;
    connect(i, 30_000, (ok, socket) => {
      setupActive--;
      if (ok) {
        hold(i, socket);
        if (++setupDone === cfg.count) {
          clearInterval(setupTimer);
          process.send!({ t: 'ready', connected: held.size, setupFailures } satisfies StormClientMessage);
        }
      } else {
        setupFailures++;
        socket.destroy();
        setTimeout(() => setup(i), 1000);
      }
      pumpSetup();
    });
  };
  const setupBegan = Date.now();
  const pumpSetup = (): void => {
    if (!cfg.reconnect) return;
    const due = Math.min(cfg.count, Math.floor(((Date.now() - setupBegan) / 1000) * cfg.reconnect.rate) + 1);
    while (setupStarted < due && setupActive < cfg.reconnect.inFlight) setup(setupStarted++);
    if (setupStarted >= cfg.count) clearInterval(setupTimer);
  };

  const report = (): void => {
    if (reported) return;
    reported = true;
    clearInterval(ticker);
    process.send!({
      t: 'done',
      connected: connectedAt.length,
      attempts,
      connectedAt,
      abandoned,
      ...(cfg.reconnect ? { epoch: start } : {}),
    } satisfies StormClientMessage);
  };
  const ticker = setInterval(() => {
    if (!armed) return;
    process.send!({ t: 'progress', connected: connectedAt.length, attempts: attempts.reduce((a, b) => a + b, 0) } satisfies StormClientMessage);
  }, 500);

  if (cfg.reconnect) {
    setupTimer = setInterval(pumpSetup, 20);
    pumpSetup();
  } else {
    for (let i = 0; i < cfg.count; i++) attempt(i);
  }
  process.on('message', (m: { t: string }) => {
    if (m.t === 'storm' && !armed) {
      armed = true;
      start = Date.now();
      // Bound the storm even if some connection is never cut: report what there is.
      setTimeout(report, cfg.giveUpAfter + cfg.deadline + 35_000).unref();
      process.send!({ t: 'armed' } satisfies StormClientMessage);
    } else if (m.t === 'close') {
      closing = true;
      for (const s of held) s.destroy();
      process.exit(0);
    }
  });
  process.on('disconnect', () => process.exit(0));
}
