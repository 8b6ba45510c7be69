// Simulated devices for the gateway: many TLS devices that say hello, send uplink messages, time
// their acks, answer commands and reconnect with backoff. See device-fleet.ts for what one device
// does, and docs/gateway.md.
//
//   CORRAL_GATEWAY_SECRET=<s> npm run simulate -- --port 8883 --devices 10 --rate 10 --msgs 5
//   CORRAL_GATEWAY_SECRET=<s> npm run simulate -- --devices 40000 --rate 1000 --msgs 2 --processes 4 --json
//
// Installed, the same command is `corral-simulate`, which runs this file compiled to dist/simulate.js.
// More than 15,000 devices (or --processes k) run in several child processes: this script forks
// itself (the same entry, with the same Node flags), and a child knows it is one by
// CORRAL_SIMULATE_CHILD in its environment.
import { type ChildProcess, fork } from 'node:child_process';
import { parseArgs } from 'node:util';
import { DeviceFleet, type FleetConfig, type FleetProgress, type FleetResult, MAX_DEVICES_PER_PROCESS } from './device-fleet.js';

/** Most client processes: process i sends from 127.(10 + i).x.y on loopback. */
const MAX_PROCESSES = 200;

const USAGE = `usage: corral-simulate [--devices <n>] [--rate <per s>] [--msgs <per device>] [--port <p>] [--host <h>]
                       [--secret <s>] [--interval <ms>] [--prefix-id <id>] [--processes <k>]
                       [--timeout <s>] [--json]

  --devices <n>      simulated devices (default 10; at most ${(MAX_PROCESSES * MAX_DEVICES_PER_PROCESS).toLocaleString('en')})
  --rate <n>         devices that connect per second, over all processes (default 10)
  --msgs <n>         uplink messages per device (default 5)
  --port <p>         the gateway's device port (default 8883)
  --host <h>         the gateway's address (default 127.0.0.1)
  --secret <s>       the gateway's device secret; better in env CORRAL_GATEWAY_SECRET, which the
                     process list does not show. The gateway prints a generated one at start
  --interval <ms>    time between one device's messages; 0 sends them all at once (default 100)
  --prefix-id <id>   device ids are <id>-1, <id>-2, … (default dev)
  --processes <k>    client processes (default: 1 per ${MAX_DEVICES_PER_PROCESS.toLocaleString('en')} devices; at most ${MAX_PROCESSES},
                     and no more than devices)
  --timeout <s>      give up after this many seconds (default 300)
  --json             print the summary as one JSON line on stdout (the text goes to stderr)

Stops when every device has an answer to each of its messages. Exit code 0 when every device
connected and every message was acked, 1 otherwise, 2 for a usage error.
`;

/** How long one connection attempt may take, TLS handshake and welcome included. */
const CONNECT_TIMEOUT_MS = 10_000;

/** Messages between the parent and a child process. */
type ToChild = { t: 'stop' };
type FromChild = { t: 'progress'; progress: FleetProgress; window: UplinkWindow } | { t: 'done' } | { t: 'result'; result: FleetResult };
/** When a fleet sent its first uplink and had its last answer (ms since the epoch; 0 if none). */
type UplinkWindow = Pick<FleetResult, 'firstSentAt' | 'lastAnswerAt'>;

// ---- a child process: one fleet, driven by the parent ---------------------------------------
if (process.env.CORRAL_SIMULATE_CHILD && process.send) {
  const fleet = new DeviceFleet(JSON.parse(process.env.CORRAL_SIMULATE_CHILD) as FleetConfig);
  const send = (m: FromChild): void => void process.send!(m);
  // Ctrl-C reaches the whole process group: the parent decides when to stop, and tells us.
  process.on('SIGINT', () => {});
  process.on('SIGTERM', () => {});
  process.on('disconnect', () => process.exit(0));
  const ticker = setInterval(() => send({ t: 'progress', progress: fleet.snapshot(), window: fleet.uplinkWindow() }), 250);
  process.on('message', async (m: ToChild) => {
    if (m.t !== 'stop') return;
    clearInterval(ticker);
    const result = await fleet.stop();
    process.send!({ t: 'result', result } satisfies FromChild, () => process.exit(0));
  });
  void fleet.done.then(() => send({ t: 'done' }));
  fleet.start();
} else {
  await main();
}

async function main(): Promise<void> {
  const usageError = (message: string): never => {
    process.stderr.write(`corral-simulate: ${message}\n\n${USAGE}`);
    process.exit(2);
  };
  const integer = (flag: string, value: string, min: number, max: number): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || n < min || n > max) usageError(`--${flag} must be an integer from ${min} to ${max}, got "${value}"`);
    return n;
  };
  let values;
  try {
    values = parseArgs({
      options: {
        devices: { type: 'string', default: '10' },
        rate: { type: 'string', default: '10' },
        msgs: { type: 'string', default: '5' },
        port: { type: 'string', default: '8883' },
        host: { type: 'string', default: '127.0.0.1' },
        secret: { type: 'string' },
        interval: { type: 'string', default: '100' },
        'prefix-id': { type: 'string', default: 'dev' },
        processes: { type: 'string' },
        timeout: { type: 'string', default: '300' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
    }).values;
  } catch (err) {
    return usageError((err as Error).message);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  // At most MAX_PROCESSES processes of MAX_DEVICES_PER_PROCESS each: on loopback, process i sends
  // from 127.(10 + i).x.y, so more processes would need a second octet over 255.
  const devices = integer('devices', values.devices, 1, MAX_PROCESSES * MAX_DEVICES_PER_PROCESS);
  const rate = integer('rate', values.rate, 1, 1_000_000);
  const msgs = integer('msgs', values.msgs, 0, 1_000_000);
  const port = integer('port', values.port, 1, 65535);
  const interval = integer('interval', values.interval, 0, 3_600_000);
  const timeout = integer('timeout', values.timeout, 1, 7 * 86_400);
  if (values.secret === '') usageError('--secret must not be empty');
  const secret = values.secret ?? (process.env.CORRAL_GATEWAY_SECRET || undefined) ?? usageError('the device secret is required: set CORRAL_GATEWAY_SECRET (or give --secret); the gateway prints a generated one at start');
  const idPrefix = values['prefix-id'];
  if (!/^[A-Za-z0-9_:-]{1,100}$/.test(idPrefix)) usageError(`--prefix-id must be 1–100 characters of A-Z a-z 0-9 _ : -, got "${idPrefix}"`);
  const minProcesses = Math.ceil(devices / MAX_DEVICES_PER_PROCESS);
  // No more processes than devices (a process without devices is only a cost).
  const processes = Math.min(devices, Math.max(minProcesses, values.processes === undefined ? 1 : integer('processes', values.processes, 1, MAX_PROCESSES)));
  const host = values.host;
  // On loopback, each process sends from its own 127.<net>.x.y addresses: no ephemeral-port limit.
  const loopback = /^127\.\d+\.\d+\.\d+$/.test(host);
  const human = values.json ? process.stderr : process.stdout;

  // ---- the fleets: in this process, or one per child process ----
  const parts: Part[] = [];
  let first = 1;
  for (let i = 0; i < processes; i++) {
    const count = Math.floor(devices / processes) + (i < devices % processes ? 1 : 0);
    const config: FleetConfig = {
      host,
      port,
      secret,
      idPrefix,
      first,
      count,
      rate: rate / processes,
      msgs,
      interval,
      net: loopback ? 10 + i : undefined,
      connectTimeout: CONNECT_TIMEOUT_MS,
    };
    first += count;
    parts.push(processes === 1 ? localPart(config) : childPart(config));
  }

  // ---- progress on stderr ----
  const began = Date.now();
  const tty = process.stderr.isTTY;
  const total = (): FleetProgress => sum(parts.map((p) => p.progress()));
  const progressLine = (): string => {
    const p = total();
    const s = ((Date.now() - began) / 1000).toFixed(1);
    return `[${s} s] connected ${p.connected}/${devices}, acks ${p.acks}/${devices * msgs}, nacks ${p.nacks}, failed ${p.failed}, disconnects ${p.disconnects}, commands ${p.commands}`;
  };
  const ticker = setInterval(() => process.stderr.write(tty ? `\r\x1b[2K${progressLine()}` : `${progressLine()}\n`), tty ? 250 : 1000);

  // ---- until done, timeout or a signal ----
  let timer: NodeJS.Timeout | undefined;
  const outcome = await new Promise<'done' | 'timeout' | NodeJS.Signals>((resolve) => {
    void Promise.all(parts.map((p) => p.done)).then(() => resolve('done'));
    timer = setTimeout(() => resolve('timeout'), timeout * 1000);
    // `on`, not `once`: under npm one Ctrl-C arrives twice (npm passes on the signal the terminal
    // already sent the whole process group), and a second signal without a listener would end the
    // process before its summary. Later ones are ignored while the devices close (10 s at most).
    process.on('SIGINT', () => resolve('SIGINT'));
    process.on('SIGTERM', () => resolve('SIGTERM'));
  });
  clearTimeout(timer);
  clearInterval(ticker);
  if (tty) process.stderr.write(`\r\x1b[2K${progressLine()}\n`);
  const results = await Promise.all(parts.map((p) => p.stop()));

  // ---- summary ----
  const r = sum(results);
  const latencies = results.flatMap((x) => x.latencies).sort((a, b) => a - b);
  const errors: Record<string, number> = {};
  for (const x of results) for (const [k, v] of Object.entries(x.errors)) errors[k] = (errors[k] ?? 0) + v;
  const firstSent = Math.min(...results.map((x) => x.firstSentAt || Infinity));
  const lastAnswer = Math.max(...results.map((x) => x.lastAnswerAt));
  const uplinkSeconds = Number.isFinite(firstSent) && lastAnswer > firstSent ? (lastAnswer - firstSent) / 1000 : 0;
  const expected = devices * msgs;
  const complete = outcome === 'done' && r.everConnected === devices && r.acks === expected;
  const summary = {
    devices,
    processes,
    connected: r.everConnected,
    failed: r.failed,
    disconnects: r.disconnects,
    acks: r.acks,
    nacks: r.nacks,
    expected,
    commands: r.commands,
    p50Ms: round(percentile(latencies, 0.5)),
    p99Ms: round(percentile(latencies, 0.99)),
    msgsPerSecond: uplinkSeconds > 0 ? round(r.acks / uplinkSeconds) : null,
    durationMs: Date.now() - began,
    stoppedBy: outcome,
    complete,
    errors,
  };
  function why(stop: typeof outcome): string {
    const unauthorized = errors.unauthorized ?? 0;
    const exited = errors.child_exited ?? 0;
    return [
      stop === 'timeout' ? `timed out after ${timeout} s` : stop !== 'done' ? `stopped by ${stop}` : '',
      exited > 0 ? `${exited} simulator process${exited === 1 ? '' : 'es'} exited early, with ${results.reduce((a, x, i) => a + (x.errors.child_exited ? parts[i]!.devices : 0), 0)} devices` : '',
      r.nacks > 0 ? `${r.nacks} messages nacked` : '',
      unauthorized > 0 ? `${unauthorized} devices refused as unauthorized` : '',
    ]
      .filter(Boolean)
      .join(', ') || 'some devices did not finish';
  }
  const ms = (v: number | null): string => (v === null ? '–' : `${v} ms`);
  human.write(
    [
      `${complete ? 'done' : `incomplete (${why(outcome)})`}: ` +
        `${devices} devices over ${processes} process${processes === 1 ? '' : 'es'} in ${(summary.durationMs / 1000).toFixed(1)} s`,
      `connected ${r.everConnected}/${devices}, failed attempts ${r.failed}, disconnects ${r.disconnects}`,
      `uplink: ${r.acks} acks, ${r.nacks} nacks of ${expected} messages` +
        (summary.msgsPerSecond === null ? '' : `, ${summary.msgsPerSecond} msgs/s`) +
        `; ack latency p50 ${ms(summary.p50Ms)}, p99 ${ms(summary.p99Ms)}`,
      `commands answered: ${r.commands}`,
      ...(Object.keys(errors).length === 0 ? [] : [`errors: ${Object.entries(errors).map(([k, v]) => `${k} ${v}`).join(', ')}`]),
    ].join('\n') + '\n',
  );
  if (values.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
  process.exit(complete ? 0 : 1);
}

/** One process's share of the devices, as the parent sees it. */
interface Part {
  /** Its share of the devices. */
  readonly devices: number;
  progress(): FleetProgress;
  readonly done: Promise<void>;
  stop(): Promise<FleetResult>;
}

/** The devices run in this process. */
function localPart(config: FleetConfig): Part {
  const fleet = new DeviceFleet(config);
  fleet.start();
  return { devices: config.count, progress: () => fleet.snapshot(), done: fleet.done, stop: () => fleet.stop() };
}

/** The devices run in a child process: this script again, with the config in its environment. */
function childPart(config: FleetConfig): Part {
  const child: ChildProcess = fork(process.argv[1]!, [], {
    env: { ...process.env, CORRAL_SIMULATE_CHILD: JSON.stringify(config) },
    execArgv: process.execArgv,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    serialization: 'advanced',
  });
  let progress: FleetProgress = { connected: 0, everConnected: 0, acks: 0, nacks: 0, failed: 0, disconnects: 0, commands: 0, done: 0 };
  let window: UplinkWindow = { firstSentAt: 0, lastAnswerAt: 0 };
  let result: FleetResult | undefined;
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      // Died without its result: its devices' connections went with it (the progress line says so).
      if (result === undefined) progress = { ...progress, connected: 0, everConnected: 0 };
      resolve();
    }),
  );
  const done = new Promise<void>((resolve) => {
    void exited.then(resolve); // a child that died is done too (its devices did not finish)
    child.on('message', (m: FromChild) => {
      if (m.t === 'progress') ({ progress, window } = m);
      else if (m.t === 'done') resolve();
      else if (m.t === 'result') result = m.result;
    });
  });
  return {
    devices: config.count,
    progress: () => progress,
    done,
    stop: async () => {
      if (child.connected) child.send({ t: 'stop' } satisfies ToChild);
      const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(killer);
      // A child that died early reports what it last said, with its time window (so that its acks
      // are not divided by the other processes' time): its devices count as neither done nor
      // connected (`progress` was cleared at its exit); its latencies are lost.
      return result ?? { ...progress, errors: { child_exited: 1 }, latencies: [], ...window };
    },
  };
}

/** Add up counters field by field. */
function sum<T extends FleetProgress>(xs: T[]): FleetProgress {
  const s: FleetProgress = { connected: 0, everConnected: 0, acks: 0, nacks: 0, failed: 0, disconnects: 0, commands: 0, done: 0 };
  for (const x of xs) for (const k of Object.keys(s) as (keyof FleetProgress)[]) s[k] += x[k];
  return s;
}

/** The q-quantile of sorted values (nearest rank), or null when there are none. */
function percentile(sorted: number[], q: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

function round(v: number | null): number | null {
  return v === null ? null : Math.round(v * 10) / 10;
}
