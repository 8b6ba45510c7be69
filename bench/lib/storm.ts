import { fileURLToPath } from 'node:url';
import { type ForkedClient, forkClient } from './fork-client.js';
import { shareOf, sums } from './numbers.js';
import type { AbandonReason, StormClientConfig, StormClientMessage } from './storm-client.js';

const CLIENT = fileURLToPath(new URL('./storm-client.ts', import.meta.url));

/** What both kinds of storm take: `devices` TLS devices split over `processes` client processes. */
interface StormOptions {
  port: number;
  devices: number;
  processes: number;
  /** Per attempt, in ms. Default 5000. */
  deadline?: number;
  /** Stop retrying after this long, in ms. Default 120,000. */
  giveUpAfter?: number;
}

/** Start the storm client processes (source addresses 127.<50+i>.x.y); `reconnect` as in StormClientConfig. */
function startStormClients(o: StormOptions, reconnect?: StormClientConfig['reconnect']): ForkedClient<StormClientMessage>[] {
  return Array.from({ length: o.processes }, (_, i) => {
    const cfg: StormClientConfig = {
      port: o.port,
      host: '127.0.0.1',
      count: shareOf(o.devices, o.processes, i),
      net: 50 + i,
      deadline: o.deadline ?? 5000,
      giveUpAfter: o.giveUpAfter ?? 120_000,
      ...(reconnect ? { reconnect } : {}),
    };
    return forkClient<StormClientMessage>(CLIENT, 'CORRAL_STORM_CLIENT', cfg, { name: `storm client ${i}` });
  });
}

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
export async function runStorm(o: StormOptions): Promise<StormResult> {
  const children = startStormClients(o);
  const results = await Promise.all(children.map((c) => c.message('done')));
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
      await Promise.all(children.map((c) => c.close()));
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
export async function prepareReconnectStorm(
  o: StormOptions & {
    /** Setup connects per second, over all processes. */
    rate: number;
    /** Setup connects in flight at once, over all processes. Default 256. */
    inFlight?: number;
    /** Default 180,000 ms. */
    setupTimeoutMs?: number;
    onProgress?: (connected: number, attempts: number) => void;
  },
): Promise<ReconnectStorm> {
  const children = startStormClients(o, { rate: o.rate / o.processes, inFlight: Math.max(1, Math.floor((o.inFlight ?? 256) / o.processes)) });
  const progress = new Map<number, { connected: number; attempts: number }>();
  children.forEach((client, i) =>
    client.on('progress', (m) => {
      progress.set(i, m);
      if (o.onProgress) {
        const total = sums(progress.values(), ['connected', 'attempts']);
        o.onProgress(total.connected, total.attempts);
      }
    }),
  );
  let setup: Extract<StormClientMessage, { t: 'ready' }>[];
  try {
    const timeout = new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error(`storm setup: devices not all connected within ${o.setupTimeoutMs ?? 180_000} ms`)), o.setupTimeoutMs ?? 180_000).unref(),
    );
    setup = await Promise.race([Promise.all(children.map((c) => c.message('ready'))), timeout]);
  } catch (err) {
    for (const c of children) c.kill();
    throw err;
  }
  return {
    held: setup.reduce((a, r) => a + r.connected, 0),
    setupFailures: setup.reduce((a, r) => a + r.setupFailures, 0),
    arm: async () => {
      for (const c of children) c.send({ t: 'storm' });
      await Promise.all(children.map((c) => c.message('armed')));
    },
    result: async () => {
      const results = await Promise.all(children.map((c) => c.message('done')));
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
    close: async () => {
      await Promise.all(children.map((c) => c.close(10_000)));
    },
  };
}
