/**
 * Drive the steady-state load client (bench/lib/steady-client.ts) over one or more processes:
 * connect and hold N connections, then have each exchange M lines one at a time, then close.
 */
import { fileURLToPath } from 'node:url';
import { MAX_PER_PROCESS } from './client-config.js';
import { forkClient } from './fork-client.js';
import { shareOf } from './numbers.js';
import type { SteadyClientCommand, SteadyClientConfig, SteadyClientMessage } from './steady-client.js';

const CLIENT = fileURLToPath(new URL('./steady-client.ts', import.meta.url));

/** Options of {@link startSteadyClient}. */
export interface SteadyOptions {
  port: number;
  tls: boolean;
  connections: number;
  /** Connection attempts offered per second, over all processes. */
  rate: number;
  /** Connects in progress at once, over all processes. */
  inFlight: number;
  lines: number;
  /** Bytes per line, newline included. Default 64. */
  lineBytes?: number;
  /** Connections exchanging lines at once, over all processes. Default 256. */
  linesInFlight?: number;
  /** Client processes (more are used when needed to stay under MAX_PER_PROCESS each). Default 1. */
  processes?: number;
  /** Pin the client processes to these CPUs (`taskset -c`). */
  cpus?: string;
  /** First second octet of the source addresses; process i uses 127.<net + i>.x.y. Default 20. */
  net?: number;
  /**
   * Index of the first source address in each process's 127.<net>.x.y range. Default: the next
   * unused block of this module (16 addresses per client process and run), so that no two runs
   * share source addresses and none inherits another's TIME_WAIT entries.
   */
  firstAddress?: number;
  /** Times a failed connect is retried. Default 5. */
  retries?: number;
}

/** What the connect phase achieved. */
export interface ConnectPhase {
  connected: number;
  /** Connections that failed every attempt. */
  failed: number;
  /** Attempts that failed and were retried (each failure's code is in `errors`). */
  retried: number;
  errors: Record<string, number>;
  /** From the first attempt to the last process done, in ms. */
  ms: number;
  /** Connect (and handshake) latency of each connection, in ms. */
  latencies: number[];
  /** CPU seconds the client processes spent connecting (to tell when the client, not the server, is the limit). */
  clientCpuSeconds: number;
}

/** What the line phase achieved. */
export interface LinePhase {
  lines: number;
  failed: number;
  errors: Record<string, number>;
  ms: number;
  /** Round-trip latency of each line, in ms. */
  latencies: number[];
  /** CPU seconds the client processes spent on the lines. */
  clientCpuSeconds: number;
}

/** A steady-state load client that has connected and holds its connections. */
export interface SteadyClient {
  readonly connect: ConnectPhase;
  /** Exchange the lines on every held connection (once per client: it answers the first call's lines). */
  lines(): Promise<LinePhase>;
  /** CPU seconds the client processes have used so far. */
  cpuSeconds(): number;
  /** Close every connection and end the client processes. */
  close(): Promise<void>;
}

function merge(into: Record<string, number>, from: Record<string, number>): void {
  for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
}

let addressBlock = 0;
/** The first index of a fresh block of at least `size` source addresses (blocks of 16), wrapping at 62,000. */
function nextAddressBlock(size: number): number {
  const blocks = Math.max(1, Math.ceil(size / 16));
  const first = (addressBlock * 16) % 62_000;
  addressBlock += blocks;
  return first;
}

/** Start the client processes and resolve once every connection is open (or failed). */
export async function startSteadyClient(o: SteadyOptions): Promise<SteadyClient> {
  const processes = Math.max(o.processes ?? 1, Math.ceil(o.connections / MAX_PER_PROCESS));
  const firstAddress = o.firstAddress ?? nextAddressBlock(Math.ceil(o.connections / processes / 1000));
  const children = Array.from({ length: processes }, (_, i) => {
    const cfg: SteadyClientConfig = {
      port: o.port,
      host: '127.0.0.1',
      tls: o.tls,
      count: shareOf(o.connections, processes, i),
      rate: o.rate / processes,
      inFlight: Math.max(1, Math.floor(o.inFlight / processes)),
      net: (o.net ?? 20) + i,
      perAddress: 1000,
      firstAddress,
      connectTimeout: 30_000,
      retries: o.retries ?? 5,
      lines: o.lines,
      lineBytes: o.lineBytes ?? 64,
      linesInFlight: Math.max(1, Math.floor((o.linesInFlight ?? 256) / processes)),
      lineTimeout: 30_000,
    };
    return forkClient<SteadyClientMessage, SteadyClientCommand>(CLIENT, 'CORRAL_STEADY_CLIENT', cfg, { name: `steady client ${i}`, ...(o.cpus !== undefined ? { cpus: o.cpus } : {}) });
  });
  /** Every process's message of type `t`; SIGKILL them all if one exits first. */
  const expect = async <T extends SteadyClientMessage['t']>(t: T): Promise<Extract<SteadyClientMessage, { t: T }>[]> => {
    try {
      return await Promise.all(children.map((c) => c.message(t)));
    } catch (err) {
      for (const c of children) c.kill();
      throw err;
    }
  };
  const cpuSeconds = (): number => children.reduce((a, c) => a + c.cpuSeconds(), 0);
  const command = (m: SteadyClientCommand): void => {
    for (const c of children) c.send(m);
  };

  await expect('ready');
  const cpuBefore = cpuSeconds();
  command({ t: 'connect' });
  const done = await expect('connected');
  const connect: ConnectPhase = { connected: 0, failed: 0, retried: 0, errors: {}, ms: 0, latencies: [], clientCpuSeconds: cpuSeconds() - cpuBefore };
  for (const r of done) {
    connect.connected += r.connected;
    connect.failed += r.failed;
    connect.retried += r.retried;
    merge(connect.errors, r.errors);
    connect.ms = Math.max(connect.ms, r.ms);
    for (const x of r.latencies) connect.latencies.push(x);
  }
  return {
    connect,
    lines: async () => {
      const cpu0 = cpuSeconds();
      command({ t: 'lines' });
      const all = await expect('lines-done');
      const phase: LinePhase = { lines: 0, failed: 0, errors: {}, ms: 0, latencies: [], clientCpuSeconds: cpuSeconds() - cpu0 };
      for (const r of all) {
        phase.lines += r.lines;
        phase.failed += r.failed;
        merge(phase.errors, r.errors);
        phase.ms = Math.max(phase.ms, r.ms);
        for (const x of r.latencies) phase.latencies.push(x);
      }
      return phase;
    },
    cpuSeconds,
    close: async () => {
      await Promise.all(children.map((c) => c.close(15_000)));
    },
  };
}
