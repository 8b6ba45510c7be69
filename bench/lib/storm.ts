import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { AbandonReason, StormClientConfig, StormClientMessage } from './storm-client.js';

const CLIENT = fileURLToPath(new URL('./storm-client.ts', import.meta.url));

/** The outcome of one reconnect storm. */
export interface StormResult {
  devices: number;
  connected: number;
  /** ms until the last device connected. */
  allBackMs: number;
  attemptsPerDevice: number;
  /** Client attempts abandoned at the deadline, with their source address and port. */
  abandoned: { port: number; address: string; at: number }[];
  connectedAt: number[];
  close(): Promise<void>;
}

/** Run a storm of `devices` TLS devices (split over `processes`, each under 15,000) against `port`. */
export async function runStorm(o: { port: number; devices: number; processes: number; deadline?: number; giveUpAfter?: number }): Promise<StormResult> {
  const children: ChildProcess[] = [];
  const results = await Promise.all(
    Array.from({ length: o.processes }, (_, i) => {
      const count = Math.floor(o.devices / o.processes) + (i < o.devices % o.processes ? 1 : 0);
      const cfg: StormClientConfig = { port: o.port, host: '127.0.0.1', count, net: 50 + i, deadline: o.deadline ?? 5000, giveUpAfter: o.giveUpAfter ?? 120_000 };
      const child = fork(CLIENT, [], {
        env: { ...process.env, CORRAL_STORM_CLIENT: JSON.stringify(cfg) },
        execArgv: ['--import', 'tsx'],
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        serialization: 'advanced',
      });
      children.push(child);
      return new Promise<Extract<StormClientMessage, { t: 'done' }>>((resolve, reject) => {
        child.on('message', (m: StormClientMessage) => {
          if (m.t === 'done') resolve(m);
        });
        child.on('exit', (code) => reject(new Error(`storm client exited with ${code}`)));
      });
    }),
  );
  const attempts = results.flatMap((r) => r.attempts);
  const connectedAt = results.flatMap((r) => r.connectedAt);
  return {
    devices: o.devices,
    connected: connectedAt.length,
    allBackMs: connectedAt.reduce((a, b) => Math.max(a, b), 0),
    attemptsPerDevice: attempts.reduce((a, b) => a + b, 0) / o.devices,
    abandoned: results.flatMap((r) => r.abandoned),
    connectedAt,
    close: async () => {
      await Promise.all(
        children.map(
          (c) =>
            new Promise<void>((resolve) => {
              c.once('exit', () => resolve());
              c.send({ t: 'close' });
            }),
        ),
      );
    },
  };
}

/** What the devices of a reconnect storm did, every time in wall-clock ms (Date.now()). */
export interface ReconnectStormResult {
  devices: number;
  /** Devices back after the cut. */
  connected: number;
  /** When each device that came back did (wall clock). */
  connectedAt: number[];
  /** Storm attempts of each device (the first reconnect included). */
  attempts: number[];
  /** Attempts abandoned by the client, with source address, local port and wall-clock time. */
  abandoned: { port: number; address: string; at: number; reason?: AbandonReason }[];
}

/** A reconnect storm prepared by {@link prepareReconnectStorm}: devices connected and holding. */
export interface ReconnectStorm {
  /** Devices connected and holding (all of them once prepared). */
  readonly held: number;
  /** Setup connects that failed and were retried. */
  readonly setupFailures: number;
  /** Tell every client process that the next cut is the storm; resolves once all have armed. */
  arm(): Promise<void>;
  /** Resolves once every device is back or has given up (after `giveUpAfter`). */
  result(): Promise<ReconnectStormResult>;
  /** Close every held connection and end the client processes. */
  close(): Promise<void>;
}

/**
 * Connect `devices` TLS devices (over `processes` client processes, source addresses 127.<50+i>.x.y)
 * at `rate` per second and hold them; resolves once all are connected. Then `arm()`, cut the
 * connections on the server, and `result()` tells when each device came back: every device
 * reconnects at once when its connection closes, with a `deadline` per attempt (default 5 s) and
 * backoff 1 s × 2ⁿ (capped at 30 s) × [0.5, 1.5), until `giveUpAfter` (default 120 s).
 */
export async function prepareReconnectStorm(o: {
  port: number;
  devices: number;
  processes: number;
  rate: number;
  inFlight?: number;
  deadline?: number;
  giveUpAfter?: number;
  setupTimeoutMs?: number;
  onProgress?: (connected: number, attempts: number) => void;
}): Promise<ReconnectStorm> {
  const children: ChildProcess[] = [];
  const progress = new Map<number, { connected: number; attempts: number }>();
  const done: Promise<Extract<StormClientMessage, { t: 'done' }>>[] = [];
  const armed: Promise<void>[] = [];
  const ready: Promise<Extract<StormClientMessage, { t: 'ready' }>>[] = [];
  const kill = (): void => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  };
  for (let i = 0; i < o.processes; i++) {
    const count = Math.floor(o.devices / o.processes) + (i < o.devices % o.processes ? 1 : 0);
    const cfg: StormClientConfig = {
      port: o.port,
      host: '127.0.0.1',
      count,
      net: 50 + i,
      deadline: o.deadline ?? 5000,
      giveUpAfter: o.giveUpAfter ?? 120_000,
      reconnect: { rate: o.rate / o.processes, inFlight: Math.max(1, Math.floor((o.inFlight ?? 256) / o.processes)) },
    };
    const child = fork(CLIENT, [], {
      env: { ...process.env, CORRAL_STORM_CLIENT: JSON.stringify(cfg) },
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      serialization: 'advanced',
    });
    children.push(child);
    const exited = new Promise<never>((_, reject) => child.on('exit', (code) => reject(new Error(`storm client ${i} exited with ${code}`))));
    exited.catch(() => {});
    const waitFor = <T extends StormClientMessage['t']>(t: T): Promise<Extract<StormClientMessage, { t: T }>> =>
      Promise.race([
        new Promise<Extract<StormClientMessage, { t: T }>>((resolve) => {
          const on = (m: StormClientMessage): void => {
            if (m.t !== t) return;
            child.off('message', on);
            resolve(m as Extract<StormClientMessage, { t: T }>);
          };
          child.on('message', on);
        }),
        exited,
      ]);
    child.on('message', (m: StormClientMessage) => {
      if (m.t !== 'progress') return;
      progress.set(i, m);
      if (o.onProgress) {
        let c = 0;
        let a = 0;
        for (const p of progress.values()) {
          c += p.connected;
          a += p.attempts;
        }
        o.onProgress(c, a);
      }
    });
    ready.push(waitFor('ready'));
    done.push(waitFor('done'));
    armed.push(waitFor('armed').then(() => undefined));
  }
  for (const p of [...done, ...armed]) p.catch(() => {});
  let setup: Extract<StormClientMessage, { t: 'ready' }>[];
  try {
    const timeout = new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error(`storm setup: devices not all connected within ${o.setupTimeoutMs ?? 180_000} ms`)), o.setupTimeoutMs ?? 180_000).unref(),
    );
    setup = await Promise.race([Promise.all(ready), timeout]);
  } catch (err) {
    kill();
    throw err;
  }
  const close = async (): Promise<void> => {
    await Promise.all(
      children.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve();
            c.once('exit', () => resolve());
            try {
              c.send({ t: 'close' });
            } catch {
              c.kill('SIGKILL');
            }
            setTimeout(() => c.kill('SIGKILL'), 10_000).unref();
          }),
      ),
    );
  };
  return {
    held: setup.reduce((a, r) => a + r.connected, 0),
    setupFailures: setup.reduce((a, r) => a + r.setupFailures, 0),
    arm: async () => {
      for (const c of children) c.send({ t: 'storm' });
      await Promise.all(armed);
    },
    result: async () => {
      const results = await Promise.all(done);
      const out: ReconnectStormResult = { devices: o.devices, connected: 0, connectedAt: [], attempts: [], abandoned: [] };
      for (const r of results) {
        const epoch = r.epoch ?? 0;
        out.connected += r.connected;
        for (const t of r.connectedAt) out.connectedAt.push(epoch + t);
        for (const a of r.attempts) out.attempts.push(a);
        for (const a of r.abandoned) out.abandoned.push({ ...a, at: epoch + a.at });
      }
      return out;
    },
    close,
  };
}
