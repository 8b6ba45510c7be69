/**
 * The native load client (bench/native-client, Go, standard library only): built on first use
 * into bench/.build/corral-load, run as child processes whose JSON results are typed here.
 *
 * A Node `tls.connect` client spends more CPU per handshake than the server it loads (~800–930 µs
 * against ~600 µs here), so on two shared cores a Node client is what a storm measures. The Go
 * client spends ~450–730 µs. The scenarios that push a server to its limit (storm, far-away
 * storm, silent-peer flood, resumption storm, overload, attacker, the gateway's uplink and
 * stampede) use it; there is no fallback to the Node clients: without Go, they fail and say how
 * to install it.
 *
 * Every helper spreads its sockets over client processes of at most {@link MAX_PER_PROCESS}
 * each (the per-process open-file limit is 20,000), each process with its own second octet of
 * source addresses (127.<net>.x.y, see {@link sourceAddress}), and kills its processes when this
 * one exits. Times the client reports relative to its own start are turned into wall-clock ms
 * (Date.now()) here, so that processes and servers can be compared.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { MAX_PER_PROCESS } from './client-config.js';
import { type Percentiles, percentiles, shareOf } from './numbers.js';
import { treeStats } from './proc-stats.js';
import { killOnExit } from './server-child.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SOURCE = `${ROOT}bench/native-client`;
const BUILD = `${ROOT}bench/.build`;
const BINARY = `${BUILD}/corral-load`;
/** Source addresses in one second octet: 255 third octets × 250 (bench/native-client sourceAddress). */
const ADDRESSES_PER_NET = 255 * 250;

export { MAX_PER_PROCESS };

let built: string | undefined;

/**
 * Build the native load client (once per process; again only when its sources or the Go
 * version changed) and return the binary's path. Go's caches live in bench/.build, so this
 * works offline and on a fresh clone. Throws, loudly, when `go` is missing.
 */
export function buildNativeClient(): string {
  if (built) return built;
  const version = spawnSync('go', ['version'], { encoding: 'utf8' });
  if (version.error || version.status !== 0) {
    const why = (version.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT' ? '`go` is not on the PATH' : `\`go version\` failed: ${version.stderr || version.error?.message}`;
    throw new Error(`the native load client needs Go: apt-get install -y golang-go (${why}; bench/native-client is built with go build)`);
  }
  const hash = createHash('sha256').update(version.stdout);
  for (const f of readdirSync(SOURCE).filter((f) => (f.endsWith('.go') && !f.endsWith('_test.go')) || f === 'go.mod').sort()) {
    hash.update(f).update('\0').update(readFileSync(`${SOURCE}/${f}`)).update('\0');
  }
  const digest = hash.digest('hex');
  const stamp = `${BINARY}.sha256`;
  if (existsSync(BINARY) && existsSync(stamp) && readFileSync(stamp, 'utf8') === digest) return (built = BINARY);
  mkdirSync(BUILD, { recursive: true });
  const env = {
    ...process.env,
    GOCACHE: `${BUILD}/go-cache`,
    GOPATH: `${BUILD}/go-path`,
    GOFLAGS: '',
    GOPROXY: 'off',
    GOTOOLCHAIN: 'local',
    GO111MODULE: 'on',
    CGO_ENABLED: '0',
  };
  const r = spawnSync('go', ['build', '-trimpath', '-o', BINARY, '.'], { cwd: SOURCE, env, encoding: 'utf8' });
  if (r.error || r.status !== 0) {
    throw new Error(`building the native load client failed (go build in bench/native-client): ${r.error?.message ?? ''}${r.stderr ?? ''}`);
  }
  writeFileSync(stamp, digest);
  return (built = BINARY);
}

/** A line of a client's stdout, tagged by `t`. */
interface Tagged {
  readonly t: string;
}

/** A running corral-load process. */
export interface NativeProcess {
  readonly child: ChildProcess;
  readonly name: string;
  /** Resolves once the process has exited, however it ended. */
  readonly exited: Promise<void>;
  /** The first stdout line tagged `t`, before or after this call; rejects if the process exits without one. */
  message<M extends Tagged>(t: string): Promise<M>;
  /** Write one line to its stdin (a command: `storm`, `stop`). */
  send(line: string): void;
  /** CPU seconds it has used so far (from /proc). */
  cpuSeconds(): number;
  /** End its stdin (it stops, prints its result if it has not yet, and exits); SIGKILL after `killAfterMs`. */
  close(killAfterMs?: number): Promise<void>;
  /** SIGKILL it unless it has exited. */
  kill(): void;
}

/** The options every connecting subcommand takes (the shared flags of bench/native-client). */
export interface NativeCommon {
  port: number;
  host?: string;
  /** The echo line. Default `hi`. */
  line?: string;
  minTls?: '1.2' | '1.3';
  maxTls?: '1.2' | '1.3';
  /** Emulated distance, ms: every write of the client goes out this much later. */
  delayMs?: number;
  /** With `delayMs`: delay the first write (the ClientHello) too. Default true. */
  delayFirst?: boolean;
  /** Second octet of the first process's source addresses; further processes take the next ones. */
  net: number;
  /** Hard bound per process, seconds. */
  maxSeconds?: number;
  /**
   * Speak examples/amqp-gateway's device protocol instead of the line echo: `hello` (hello →
   * welcome) or `msg` (hello → welcome, then one msg → its ack). Needs `gatewaySecret`.
   */
  gateway?: 'hello' | 'msg';
  /** With `gateway`: the gateway's device secret, passed in the client's environment (never on its command line). */
  gatewaySecret?: string;
  /** With `gateway`: device ids are `<prefix>-<source address, dots as _>` (probe: `<prefix>-probe-<i>`). Default `bench`. */
  devicePrefix?: string;
}

function commonArgs(o: NativeCommon, net: number): string[] {
  const a = ['-port', String(o.port), '-net', String(net), '-stdin'];
  if (o.host !== undefined) a.push('-host', o.host);
  if (o.line !== undefined) a.push('-line', o.line);
  if (o.minTls !== undefined) a.push('-min-tls', o.minTls);
  if (o.maxTls !== undefined) a.push('-max-tls', o.maxTls);
  if (o.delayMs !== undefined) a.push('-delay', String(o.delayMs));
  if (o.delayFirst !== undefined) a.push(`-delay-first=${o.delayFirst}`);
  if (o.maxSeconds !== undefined) a.push('-max-seconds', String(o.maxSeconds));
  if (o.gateway !== undefined) a.push('-gateway', o.gateway);
  if (o.devicePrefix !== undefined) a.push('-device-prefix', o.devicePrefix);
  return a;
}

/** The environment a client process needs beyond this one's: the gateway secret, if any. */
function commonEnv(o: NativeCommon): Record<string, string> {
  return o.gatewaySecret === undefined ? {} : { CORRAL_GATEWAY_SECRET: o.gatewaySecret };
}

/**
 * For the overload scenario's processes (capacity and arrivals): one Go scheduler thread each
 * (`GOMAXPROCS=1`). With Go's default (one per core) a client process keeps up to two threads
 * runnable beside the server's one, and the kernel shares the cores per thread: measured
 * 2026-12-07 (one run of the scenario each way, same machine), the server got 0.69–0.73 of a
 * core at 3× with the default and 0.78–0.85 with one thread, the client's CPU per handshake fell
 * from ~525 to ~465 µs at capacity, and the arrivals still all started (no level void).
 */
const ONE_SCHEDULER_THREAD = { GOMAXPROCS: '1' } as const;

/**
 * Start `corral-load <subcommand> <args>`; stdin piped (-stdin: its end means stop), stderr
 * inherited; `env` is added to this process's environment (credentials go there, not in `args`).
 */
export function spawnNative(
  subcommand: string,
  args: readonly string[],
  name = `corral-load ${subcommand}`,
  env: Record<string, string> = {},
  nice?: number,
): NativeProcess {
  const command = [buildNativeClient(), subcommand, ...args];
  if (nice !== undefined) {
    if (!Number.isInteger(nice) || nice < 1 || nice > 19) throw new RangeError(`nice increment must be an integer from 1 to 19, got ${nice}`);
    command.unshift('nice', '-n', String(nice));
  }
  const child = spawn(command[0]!, command.slice(1), { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, ...env } });
  killOnExit(child);
  child.stdin!.on('error', () => {}); // EPIPE once it has exited
  const gone = (): boolean => child.exitCode !== null || child.signalCode !== null;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const exitError = (t: string): Error => new Error(`${name} exited (code ${child.exitCode}, signal ${child.signalCode}) before printing '${t}'`);
  // Its output read to the end: what it printed last (a large result line, say) can still be in the
  // pipe at 'exit', so a missing line is decided only at 'close'.
  let closed = false;
  const slots = new Map<string, { promise: Promise<Tagged>; resolve(m: Tagged): void; reject(e: Error): void }>();
  const slot = (t: string) => {
    let s = slots.get(t);
    if (!s) {
      let resolve!: (m: Tagged) => void;
      let reject!: (e: Error) => void;
      const promise = new Promise<Tagged>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      promise.catch(() => {}); // a line nobody waits for is no unhandled rejection
      s = { promise, resolve, reject };
      slots.set(t, s);
      if (closed) reject(exitError(t));
    }
    return s;
  };
  createInterface({ input: child.stdout! }).on('line', (line) => {
    if (!line.startsWith('{')) return;
    try {
      const m = JSON.parse(line) as Tagged;
      if (typeof m.t === 'string') slot(m.t).resolve(m);
    } catch {
      // not one of ours
    }
  });
  child.once('close', () => {
    closed = true;
    for (const [t, s] of slots) s.reject(exitError(t));
  });
  const kill = (): void => {
    if (!gone()) child.kill('SIGKILL');
  };
  return {
    child,
    name,
    exited,
    message: <M extends Tagged>(t: string) => slot(t).promise as Promise<M>,
    send: (line) => {
      if (!gone() && child.stdin!.writable) child.stdin!.write(`${line}\n`);
    },
    cpuSeconds: () => (child.pid !== undefined && !gone() ? treeStats(child.pid).cpuSeconds : 0),
    close: async (killAfterMs = 30_000) => {
      if (gone()) return;
      child.stdin!.end();
      const timer = setTimeout(kill, killAfterMs).unref();
      await exited;
      clearTimeout(timer);
    },
    kill,
  };
}

/** What the client reports about itself: CPU (µs, user + system) and handshakes completed. */
export interface ClientCost {
  cpuUs: number;
  fullHandshakes: number;
  resumedHandshakes: number;
}

/** The sum of several processes' costs. */
export function addCosts(costs: readonly ClientCost[]): ClientCost {
  return {
    cpuUs: costs.reduce((a, c) => a + c.cpuUs, 0),
    fullHandshakes: costs.reduce((a, c) => a + c.fullHandshakes, 0),
    resumedHandshakes: costs.reduce((a, c) => a + c.resumedHandshakes, 0),
  };
}

/** Client CPU per handshake completed, µs (null: none completed). */
export function cpuPerHandshake(c: ClientCost): number | null {
  const n = c.fullHandshakes + c.resumedHandshakes;
  return n > 0 ? Math.round(c.cpuUs / n) : null;
}

/** How many processes `sockets` need, at most {@link MAX_PER_PROCESS} each (at least `min`). */
function processesFor(sockets: number, min = 1): number {
  return Math.max(min, Math.ceil(sockets / MAX_PER_PROCESS));
}

/** Run processes to their `done` line; kill them all if one fails. */
async function allDone<R>(procs: readonly NativeProcess[]): Promise<R[]> {
  try {
    return await Promise.all(procs.map((p) => p.message<R & Tagged>('done')));
  } catch (err) {
    for (const p of procs) p.kill();
    throw err;
  } finally {
    await Promise.all(procs.map((p) => p.close(10_000)));
  }
}

// ---------------------------------------------------------------- storm

/**
 * Why a storm attempt failed (bench/native-client classify); with `gateway`, also `nack` (the
 * message was refused) and `gateway:<code>` (the gateway sent an error line, e.g. `gateway:overloaded`).
 */
export type FailReason = 'deadline' | 'refused' | 'closed' | 'error' | 'mismatch' | 'nack' | `gateway:${string}`;

/** Where a storm attempt failed: the TCP connect, the TLS handshake, the echo; with `gateway`, waiting for the welcome or the ack instead of the echo. */
export type FailStage = 'connect' | 'handshake' | 'echo' | 'welcome' | 'ack';

/** A failed storm attempt: source address, local port (0: the TCP connect never completed), when, why, where. */
export interface FailedAttempt {
  address: string;
  port: number;
  at: number;
  reason: FailReason;
  stage: FailStage;
}

/** Options of {@link runNativeStorm} and {@link prepareNativeStorm}. */
export interface NativeStormOptions extends NativeCommon {
  devices: number;
  /** Client processes (more when one would hold over MAX_PER_PROCESS). Default 1. */
  processes?: number;
  /** ms per attempt. Default 5000. */
  deadlineMs?: number;
  /** Default 1000 ms. */
  backoffBaseMs?: number;
  /** Default 30,000 ms. */
  backoffCapMs?: number;
  /** No retry after this long, ms. Default 120,000. */
  giveUpMs?: number;
  /** Devices started per second over all processes (default: all at once). */
  connectRate?: number;
  /** Each device keeps its TLS session cache across attempts. */
  resume?: boolean;
  /**
   * Run the client processes with their niceness raised by this much (`nice -n`, 1–19: a lower
   * priority than the server's), so that on a small machine the client's threads do not take CPU
   * the server's event loop wants. Default: the runner's priority.
   */
  nice?: number;
  /**
   * With `resume`: a failed attempt keeps the device's ticket (default true; crypto/tls drops it
   * after any failed resumption, even a connection reset by a server that is going down).
   */
  keepTicket?: boolean;
}

/** A storm's outcome over all its processes; every time in wall-clock ms (Date.now()). */
export interface NativeStormResult {
  devices: number;
  /** Devices whose storm started (reconnect: whose connection closed after arming). */
  stormed: number;
  /** Devices back. */
  connected: number;
  /** Devices back with a resumed handshake. */
  resumedDevices: number;
  /** Storm attempts of each device. */
  attempts: number[];
  /** When each device that came back did. */
  connectedAt: number[];
  /** Every failed attempt: source address, local port (0: the TCP connect never completed), when, why, where. */
  abandoned: FailedAttempt[];
  /** TCP connects refused. */
  refused: number;
  /** The storm's start: the earliest of the processes' starts (or armings, with `reconnect`). */
  epoch: number;
  /** The client processes over the storm alone. */
  stormCost: ClientCost;
  /** The client processes over their whole run. */
  cost: ClientCost;
  /** A process was cut short by its time bound. */
  truncated: boolean;
}

interface StormDone extends Tagged {
  truncated: boolean;
  devices: number;
  stormed: number;
  connected: number;
  resumedDevices: number;
  attempts: number[];
  connectedAt: number[];
  abandoned: FailedAttempt[];
  refused: number;
  epoch: number;
  cpuUs: number;
  fullHandshakes: number;
  resumedHandshakes: number;
  storm: ClientCost;
}

function mergeStorm(results: readonly StormDone[]): NativeStormResult {
  const out: NativeStormResult = {
    devices: 0,
    stormed: 0,
    connected: 0,
    resumedDevices: 0,
    attempts: [],
    connectedAt: [],
    abandoned: [],
    refused: 0,
    epoch: Math.min(...results.map((r) => r.epoch)),
    stormCost: addCosts(results.map((r) => r.storm)),
    cost: addCosts(results),
    truncated: results.some((r) => r.truncated),
  };
  for (const r of results) {
    out.devices += r.devices;
    out.stormed += r.stormed;
    out.connected += r.connected;
    out.resumedDevices += r.resumedDevices;
    out.refused += r.refused;
    for (const a of r.attempts) out.attempts.push(a);
    for (const t of r.connectedAt) out.connectedAt.push(r.epoch + t);
    for (const a of r.abandoned) out.abandoned.push({ ...a, at: r.epoch + a.at });
  }
  return out;
}

function stormArgs(o: NativeStormOptions, devices: number, processes: number): string[] {
  const a = ['-devices', String(devices)];
  if (o.deadlineMs !== undefined) a.push('-deadline', String(o.deadlineMs));
  if (o.backoffBaseMs !== undefined) a.push('-backoff-base', String(o.backoffBaseMs));
  if (o.backoffCapMs !== undefined) a.push('-backoff-cap', String(o.backoffCapMs));
  if (o.giveUpMs !== undefined) a.push('-give-up', String(o.giveUpMs));
  if (o.connectRate !== undefined) a.push('-connect-rate', String(o.connectRate / processes));
  if (o.resume) a.push('-resume');
  if (o.keepTicket !== undefined) a.push(`-keep-ticket=${o.keepTicket}`);
  return a;
}

function startStormProcesses(o: NativeStormOptions, extra: (processes: number) => string[]): NativeProcess[] {
  const processes = processesFor(o.devices, o.processes);
  const maxSeconds = o.maxSeconds ?? Math.ceil(((o.giveUpMs ?? 120_000) + (o.deadlineMs ?? 5000) + 45_000) / 1000 + 300);
  return Array.from({ length: processes }, (_, i) =>
    spawnNative(
      'storm',
      [...commonArgs({ ...o, maxSeconds }, o.net + i), ...stormArgs(o, shareOf(o.devices, processes, i), processes), ...extra(processes)],
      `corral-load storm ${i}`,
      commonEnv(o),
      o.nice,
    ),
  );
}

/**
 * A cold storm: every device connects at once (or at `connectRate`) with the deadline and backoff
 * of a reconnect storm; resolves when every device is back or has given up. The connections are
 * closed before it resolves.
 */
export async function runNativeStorm(o: NativeStormOptions): Promise<NativeStormResult> {
  return mergeStorm(await allDone<StormDone>(startStormProcesses(o, () => [])));
}

/** A cold storm from {@link startNativeStorm}, whose devices hold their connections until `close()`. */
export interface NativeHeldStorm {
  /** Resolves once every device is back or has given up; the devices that came back still hold their connections. */
  readonly done: Promise<NativeStormResult>;
  /** CPU seconds the client processes have used so far. */
  cpuSeconds(): number;
  /** Close every connection and end the processes. */
  close(): Promise<void>;
}

/**
 * A cold storm, as {@link runNativeStorm}, whose devices keep their connections open after `done`
 * until `close()`: the server can be measured holding them (memory per device).
 */
export function startNativeStorm(o: NativeStormOptions): NativeHeldStorm {
  const procs = startStormProcesses(o, () => []);
  const done = Promise.all(procs.map((p) => p.message<StormDone>('done'))).then(mergeStorm, (err: unknown) => {
    procs.forEach((p) => p.kill());
    throw err;
  });
  done.catch(() => {});
  return {
    done,
    cpuSeconds: () => procs.reduce((a, p) => a + p.cpuSeconds(), 0),
    close: async () => {
      await Promise.all(procs.map((p) => p.close(15_000)));
    },
  };
}

/** What a reconnect storm's processes reported once every device was connected. */
export interface NativeStormReady {
  connected: number;
  setupFailures: number;
  /** Devices holding a session ticket (with `resume`). */
  resumable: number;
  /** Longest setup of the processes, ms. */
  setupMs: number;
}

/** A reconnect storm from {@link prepareNativeStorm}. */
export interface NativeReconnectStorm {
  /** Resolves once every device is connected and holding. */
  readonly ready: Promise<NativeStormReady>;
  /** Arm: from now on, a device whose connection closes storms back. Resolves once all processes armed. */
  storm(): Promise<void>;
  /** Resolves once every device is back or has given up (or the storm's time bound passed). */
  readonly done: Promise<NativeStormResult>;
  /** CPU seconds the client processes have used so far. */
  cpuSeconds(): number;
  /** Close every connection and end the processes. */
  close(): Promise<void>;
}

/**
 * A reconnect storm: devices connect at `setupRate` per second (`setupInFlight` at once, over all
 * processes) and hold; after `storm()`, a device whose connection closes (the server cut it, or its
 * process died) reconnects at once, then with backoff. `done` resolves with the storm's outcome.
 */
export function prepareNativeStorm(o: NativeStormOptions & { setupRate: number; setupInFlight?: number }): NativeReconnectStorm {
  const procs = startStormProcesses(o, (processes) => [
    '-reconnect',
    '-setup-rate',
    String(o.setupRate / processes),
    '-setup-in-flight',
    String(Math.max(1, Math.floor((o.setupInFlight ?? 256) / processes))),
  ]);
  const killAll = (): void => procs.forEach((p) => p.kill());
  const ready = Promise.all(procs.map((p) => p.message<NativeStormReady & Tagged>('ready'))).then(
    (rs) => ({
      connected: rs.reduce((a, r) => a + r.connected, 0),
      setupFailures: rs.reduce((a, r) => a + r.setupFailures, 0),
      resumable: rs.reduce((a, r) => a + r.resumable, 0),
      setupMs: Math.max(...rs.map((r) => r.setupMs)),
    }),
    (err: unknown) => {
      killAll();
      throw err;
    },
  );
  const done = Promise.all(procs.map((p) => p.message<StormDone>('done'))).then(mergeStorm);
  ready.catch(() => {});
  done.catch(() => {});
  return {
    ready,
    storm: async () => {
      for (const p of procs) p.send('storm');
      await Promise.all(procs.map((p) => p.message('armed')));
    },
    done,
    cpuSeconds: () => procs.reduce((a, p) => a + p.cpuSeconds(), 0),
    close: async () => {
      await Promise.all(procs.map((p) => p.close(15_000)));
    },
  };
}

// ---------------------------------------------------------------- overload, capacity

/** Options of {@link runNativeOverload}. */
export interface NativeOverloadOptions extends NativeCommon {
  /** New devices per second, over all processes. */
  rate: number;
  seconds: number;
  /** Default 5000. */
  deadlineMs?: number;
  /** Not counted in `good`, ms. Default 1000. */
  warmupMs?: number;
  /** An arrival later than this is skipped rather than started in a burst, ms. Default 200. */
  maxLagMs?: number;
  /** Processes (more when the sockets in flight at the deadline could pass MAX_PER_PROCESS). */
  processes?: number;
}

/** Open-loop arrivals, over all processes. */
export interface NativeOverloadResult {
  offered: number;
  started: number;
  skipped: { late: number; maxOpen: number };
  succeeded: number;
  /** Succeeded within [warmup, seconds]. */
  good: number;
  goodWindowMs: number;
  failed: Record<string, number>;
  unfinished: number;
  latency: Percentiles | null;
  maxLagMs: number;
  lagP99Ms: number;
  maxOpen: number;
  processes: number;
  cost: ClientCost;
  truncated: boolean;
}

interface OverloadDone extends Tagged, ClientCost {
  truncated: boolean;
  offered: number;
  started: number;
  skipped: { late: number; maxOpen: number };
  succeeded: number;
  good: number;
  goodWindowMs: number;
  failed: Record<string, number>;
  unfinished: number;
  latencies: number[];
  maxLagMs: number;
  lagP99Ms: number;
  maxOpen: number;
}

/**
 * Open-loop arrivals: `rate` new devices per second for `seconds`, each a fresh source address,
 * one attempt each (no retry). Split over processes so that no process can hold more than
 * MAX_PER_PROCESS sockets (rate × deadline in flight at worst); each process gets enough second
 * octets for its arrivals (`net`, `net + 1`, …).
 */
export async function runNativeOverload(o: NativeOverloadOptions): Promise<NativeOverloadResult> {
  const deadline = o.deadlineMs ?? 5000;
  const processes = processesFor(o.rate * (deadline / 1000) * 1.2, o.processes);
  const perProcess = (o.rate / processes) * o.seconds;
  const netsEach = Math.ceil(perProcess / ADDRESSES_PER_NET);
  const procs = Array.from({ length: processes }, (_, i) => {
    const a = [...commonArgs(o, o.net + i * netsEach), '-rate', String(o.rate / processes), '-seconds', String(o.seconds), '-deadline', String(deadline)];
    a.push('-max-open', String(MAX_PER_PROCESS));
    if (o.warmupMs !== undefined) a.push('-warmup', String(o.warmupMs));
    if (o.maxLagMs !== undefined) a.push('-max-lag', String(o.maxLagMs));
    return spawnNative('overload', a, `corral-load overload ${i}`, { ...commonEnv(o), ...ONE_SCHEDULER_THREAD });
  });
  const rs = await allDone<OverloadDone>(procs);
  const failed: Record<string, number> = {};
  for (const r of rs) for (const [k, v] of Object.entries(r.failed)) failed[k] = (failed[k] ?? 0) + v;
  const sum = (f: (r: OverloadDone) => number): number => rs.reduce((a, r) => a + f(r), 0);
  return {
    offered: sum((r) => r.offered),
    started: sum((r) => r.started),
    skipped: { late: sum((r) => r.skipped.late), maxOpen: sum((r) => r.skipped.maxOpen) },
    succeeded: sum((r) => r.succeeded),
    good: sum((r) => r.good),
    goodWindowMs: rs[0]!.goodWindowMs,
    failed,
    unfinished: sum((r) => r.unfinished),
    latency: percentiles(rs.flatMap((r) => r.latencies)),
    maxLagMs: Math.max(...rs.map((r) => r.maxLagMs)),
    lagP99Ms: Math.max(...rs.map((r) => r.lagP99Ms)),
    maxOpen: sum((r) => r.maxOpen),
    processes,
    cost: addCosts(rs),
    truncated: rs.some((r) => r.truncated),
  };
}

/** Closed-loop handshakes per second. */
export interface NativeCapacityResult extends ClientCost {
  concurrency: number;
  completed: number;
  /** Completed after the warmup. */
  counted: number;
  handshakesPerSecond: number;
  failed: Record<string, number>;
  latency: Percentiles | null;
  /** Client CPU after the warmup, µs. */
  countedCpuUs?: number;
  truncated: boolean;
}

/** Closed loop: `concurrency` workers each connect, handshake, echo, close, again, for `seconds`. */
export async function runNativeCapacity(o: NativeCommon & { concurrency: number; seconds: number; warmupMs?: number; deadlineMs?: number }): Promise<NativeCapacityResult> {
  const a = [...commonArgs(o, o.net), '-concurrency', String(o.concurrency), '-seconds', String(o.seconds)];
  if (o.warmupMs !== undefined) a.push('-warmup', String(o.warmupMs));
  if (o.deadlineMs !== undefined) a.push('-deadline', String(o.deadlineMs));
  const [r] = await allDone<NativeCapacityResult & Tagged>([spawnNative('capacity', a, undefined, { ...commonEnv(o), ...ONE_SCHEDULER_THREAD })]);
  return r!;
}

// ---------------------------------------------------------------- silent peers, probe

/** Kinds of hostile peer (bench/native-client/silent.go). */
export type SilentKind = 'silent' | 'partial-hello' | 'hello-then-silent' | 'handshake-then-silent';

/** Options of {@link holdSilent}. */
export interface SilentOptions extends NativeCommon {
  count: number;
  /** Source addresses the sockets are spread over (1: all from one address). */
  addresses: number;
  kind: SilentKind;
  /** Hold this long once all are open, at most (stop() ends it earlier). */
  seconds: number;
  /** Reopen a socket the server closed. Default true. */
  reopen?: boolean;
  partialBytes?: number;
  minCycleMs?: number;
  openRate?: number;
}

/** What the hostile sockets saw, over all processes. */
export interface SilentResult extends ClientCost {
  kind: SilentKind;
  count: number;
  opened: number;
  reopened: number;
  closedByServer: number;
  closedHow: Record<string, number>;
  openFailures: Record<string, number>;
  openAtEnd: number;
  /** How long the server held each socket it closed, from the TCP connect, ms (null: it closed none). */
  heldMs: Percentiles | null;
  truncated: boolean;
}

/** Hostile sockets held open: `holding` once all are open, `stop()` to end and get the result. */
export interface SilentPeers {
  readonly holding: Promise<{ open: number; openFailures: Record<string, number> }>;
  stop(): Promise<SilentResult>;
}

/** Open `count` hostile sockets of one kind (bench/native-client silent) and hold them. */
export function holdSilent(o: SilentOptions): SilentPeers {
  const processes = processesFor(o.count);
  const procs = Array.from({ length: processes }, (_, i) => {
    const count = shareOf(o.count, processes, i);
    // One address for all: every process uses the same one (its ports are the kernel's to share).
    const addresses = o.addresses === 1 ? 1 : Math.max(1, shareOf(o.addresses, processes, i));
    const a = [...commonArgs({ ...o, maxSeconds: o.maxSeconds ?? o.seconds + 60 }, o.addresses === 1 ? o.net : o.net + i)];
    a.push('-count', String(count), '-addresses', String(addresses), '-kind', o.kind, '-seconds', String(o.seconds));
    if (o.reopen !== undefined) a.push(`-reopen=${o.reopen}`);
    if (o.partialBytes !== undefined) a.push('-partial-bytes', String(o.partialBytes));
    if (o.minCycleMs !== undefined) a.push('-min-cycle', String(o.minCycleMs));
    if (o.openRate !== undefined) a.push('-open-rate', String(o.openRate / processes));
    return spawnNative('silent', a, `corral-load silent ${i}`);
  });
  type Holding = Tagged & { open: number; openFailures: Record<string, number> };
  const holding = Promise.all(procs.map((p) => p.message<Holding>('holding'))).then((hs) => {
    const openFailures: Record<string, number> = {};
    for (const h of hs) for (const [k, v] of Object.entries(h.openFailures)) openFailures[k] = (openFailures[k] ?? 0) + v;
    return { open: hs.reduce((a, h) => a + h.open, 0), openFailures };
  });
  holding.catch(() => procs.forEach((p) => p.kill()));
  return {
    holding,
    stop: async () => {
      for (const p of procs) p.send('stop');
      const rs = await allDone<SilentResult & Tagged & { heldMs: SilentResult['heldMs'] }>(procs);
      const merge = (f: (r: SilentResult) => Record<string, number>): Record<string, number> => {
        const out: Record<string, number> = {};
        for (const r of rs) for (const [k, v] of Object.entries(f(r))) out[k] = (out[k] ?? 0) + v;
        return out;
      };
      const sum = (f: (r: SilentResult) => number): number => rs.reduce((a, r) => a + f(r), 0);
      const held = rs.map((r) => r.heldMs).filter((h): h is NonNullable<typeof h> => h !== null);
      return {
        kind: o.kind,
        count: o.count,
        opened: sum((r) => r.opened),
        reopened: sum((r) => r.reopened),
        closedByServer: sum((r) => r.closedByServer),
        closedHow: merge((r) => r.closedHow),
        openFailures: merge((r) => r.openFailures),
        openAtEnd: sum((r) => r.openAtEnd),
        // Per-process percentiles; with several processes, the worst of each (the sets here fit one process).
        heldMs: held.length === 0 ? null : { p50: Math.max(...held.map((h) => h.p50)), p90: Math.max(...held.map((h) => h.p90)), p99: Math.max(...held.map((h) => h.p99)), max: Math.max(...held.map((h) => h.max)) },
        ...addCosts(rs),
        truncated: rs.some((r) => r.truncated),
      };
    },
  };
}

/** A probe's samples: every attempt's time (failures included, at the time they took to fail). */
export interface ProbeResult extends ClientCost {
  samples: number;
  latencies: number[];
  failed: Record<string, number>;
  failedAt: number[];
  p50: number;
  p90: number;
  p99: number;
  max: number;
  truncated: boolean;
}

/**
 * `samples` sequential attempts (connect, handshake, echo), each within `deadlineMs` (default
 * 10,000); past `maxSeconds` (default 300) the result holds the samples taken so far (`truncated`).
 */
export async function runNativeProbe(o: NativeCommon & { samples: number; intervalMs?: number; deadlineMs?: number }): Promise<ProbeResult> {
  const a = [...commonArgs(o, o.net), '-samples', String(o.samples)];
  if (o.intervalMs !== undefined) a.push('-interval', String(o.intervalMs));
  if (o.deadlineMs !== undefined) a.push('-deadline', String(o.deadlineMs));
  const [r] = await allDone<ProbeResult & Tagged>([spawnNative('probe', a, undefined, commonEnv(o))]);
  return r!;
}

// ---------------------------------------------------------------- fleet, attack

/** Options of {@link runNativeFleet}. */
export interface NativeFleetOptions extends NativeCommon {
  devices: number;
  /** Devices started per second. */
  rate: number;
  /** Source addresses the devices share (device i uses address i mod addresses). */
  addresses: number;
  /** ms per device. Default 5000. */
  deadlineMs?: number;
}

/** A fleet's devices: one attempt each (connect, handshake, echo). */
export interface NativeFleetResult extends ClientCost {
  devices: number;
  started: number;
  succeeded: number;
  failed: Record<string, number>;
  /** Each success's time from its TCP connect to its echo, ms. */
  latencies: number[];
  latency: Percentiles | null;
  /** The parts of the successes' latency, ms: TCP connect; TLS handshake after it; echo after that. */
  stages: Record<'connect' | 'handshake' | 'echo', Percentiles | null>;
  /** How late the client clock started devices, ms. */
  maxLagMs: number;
  lagP99Ms: number;
  seconds: number;
  truncated: boolean;
}

/**
 * Devices arriving steadily from a few source addresses (bench/native-client fleet): `devices`
 * of them, `rate` a second, one attempt each within `deadlineMs`; resolves when every device has
 * succeeded or failed. One process (rate × deadline sockets at most).
 */
export async function runNativeFleet(o: NativeFleetOptions): Promise<NativeFleetResult> {
  const a = [...commonArgs(o, o.net), '-devices', String(o.devices), '-rate', String(o.rate), '-addresses', String(o.addresses)];
  if (o.deadlineMs !== undefined) a.push('-deadline', String(o.deadlineMs));
  const [r] = await allDone<NativeFleetResult & Tagged>([spawnNative('fleet', a, undefined, commonEnv(o))]);
  return r!;
}

/** How an attack connect ended (bench/native-client attack.go). */
export type AttackOutcome = 'answered' | 'closed' | 'refused' | 'deadline' | 'error';

/** Options of {@link startNativeAttack}. */
export interface NativeAttackOptions extends NativeCommon {
  /** Connects per second. */
  rate: number;
  /** Longest the attack runs; `stop()` ends it earlier. */
  seconds: number;
  /** Source addresses (default 1: one attacking host). */
  addresses?: number;
  /** `hello`: a replayed ClientHello (no client crypto); `handshake`: a full crypto/tls handshake. Default `hello`. */
  kind?: 'hello' | 'handshake';
  /** ms per connect. Default 2000. */
  deadlineMs?: number;
  /** Run the attacker with its niceness raised by this much (`nice -n`, 1–19). Default: the runner's priority. */
  nice?: number;
}

/** What an attack's connects met. */
export interface NativeAttackResult extends ClientCost {
  kind: 'hello' | 'handshake';
  rate: number;
  addresses: number;
  offered: number;
  started: number;
  skipped: { late: number; maxOpen: number };
  outcomes: Partial<Record<AttackOutcome, number>>;
  /** How long it attacked, s. */
  seconds: number;
  startedPerSecond: number;
  /** From the TCP connect to the server's close, over the connects it closed unanswered, ms. */
  closedAfterMs: Percentiles | null;
  /** From the TCP connect to the server's answer, over the answered connects, ms. */
  answeredAfterMs: Percentiles | null;
  maxOpen: number;
  truncated: boolean;
}

/** A running attack from {@link startNativeAttack}. */
export interface NativeAttack {
  /** CPU seconds the attacker has used so far. */
  cpuSeconds(): number;
  /** End the attack (if its time is not up yet), wait for the connects in flight, and return what they met. */
  stop(): Promise<NativeAttackResult>;
}

/**
 * One attacking host (bench/native-client attack): `rate` connects a second from one source
 * address, each a ClientHello waiting for the server's answer, for `seconds` or until `stop()`.
 * One process (rate × deadline sockets at most).
 */
export function startNativeAttack(o: NativeAttackOptions): NativeAttack {
  const a = [...commonArgs(o, o.net), '-rate', String(o.rate), '-seconds', String(o.seconds)];
  if (o.addresses !== undefined) a.push('-addresses', String(o.addresses));
  if (o.kind !== undefined) a.push('-kind', o.kind);
  if (o.deadlineMs !== undefined) a.push('-deadline', String(o.deadlineMs));
  const proc = spawnNative('attack', a, undefined, {}, o.nice);
  const done = allDone<NativeAttackResult & Tagged>([proc]).then(([r]) => r!);
  done.catch(() => {});
  return {
    cpuSeconds: () => proc.cpuSeconds(),
    stop: async () => {
      proc.send('stop');
      return done;
    },
  };
}
