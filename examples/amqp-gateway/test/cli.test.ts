import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { deviceToken } from '../src/auth.js';
import { topology } from '../src/topology.js';
import { AMQP_URL, amqpAddress, amqpUrlVia, deleteTopology, describeRabbit, rabbitBackEnd, uniquePrefix, withChannel } from './support/rabbit.js';
import { TcpProxy } from './support/tcp-proxy.js';
import { testCerts } from '../../../test/support/certs.js';
import { within } from '../../../test/support/within.js';

// The gateway command (src/cli.ts) and the simulator (src/simulate.ts) as a developer runs them
// (`npm run gateway`, `npm run simulate`): child processes on loopback, from the TypeScript sources
// through tsx, corral included (the `corral-source` condition), with the embedded broker, and with
// RabbitMQ when one is reachable. The compiled, packed and installed commands are tested in
// package.test.ts.

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
/** The Node flags of the root package's `gateway` and `simulate` scripts. */
const FROM_SOURCE = ['--conditions', 'corral-source', '--import', 'tsx'];
const CLI = [...FROM_SOURCE, 'examples/amqp-gateway/src/cli.ts'];
const SIMULATE = [...FROM_SOURCE, 'examples/amqp-gateway/src/simulate.ts'];

/** A child process and everything it printed so far. */
interface Proc {
  readonly child: ChildProcess;
  stdout: string;
  stderr: string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const running: Proc[] = [];

afterEach(stopAll);

/** Kill every process group a test started (the gateway's workers and the simulator's children too). */
async function stopAll(): Promise<void> {
  for (const p of running.splice(0)) {
    try {
      process.kill(-p.child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
    await within(p.exited, 5000, 'exit after SIGKILL');
  }
  for (const d of devices.splice(0)) d.socket.destroy();
  await Promise.all(fakes.splice(0).map((f) => f.close()));
}

/** Start `node <args>` in the repository root, leading its own process group. */
function start(args: string[]): Proc {
  // The gateway reads its secrets and broker URL from these too: keep the test's own choices only.
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('CORRAL_GATEWAY_') || k === 'CORRAL_SIMULATE_CHILD') delete env[k];
  const child = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const proc: Proc = {
    child,
    stdout: '',
    stderr: '',
    exited: new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal }))),
  };
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (proc.stdout += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (proc.stderr += s));
  running.push(proc);
  return proc;
}

/** Wait until `pattern` matches what `proc` printed on `stream`; fail with its output after `ms`. */
async function waitFor(proc: Proc, pattern: RegExp, ms = 60_000, stream: 'stdout' | 'stderr' = 'stdout'): Promise<RegExpMatchArray> {
  const deadline = Date.now() + ms;
  for (;;) {
    const m = proc[stream].match(pattern);
    if (m) return m;
    if (proc.child.exitCode !== null || proc.child.signalCode !== null || Date.now() > deadline) {
      throw new Error(`no ${pattern} on ${stream} (exit ${proc.child.exitCode})\n--- stdout\n${proc.stdout}\n--- stderr\n${proc.stderr}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A started gateway: its process and the ports it printed. */
interface RunningGateway {
  readonly proc: Proc;
  readonly port: number;
  readonly admin: string;
}

/** Start the gateway and wait for its listening and admin lines. */
async function startGateway(args: string[]): Promise<RunningGateway> {
  const proc = start([...CLI, '--port', '0', '--admin-port', '0', '--log-level', 'warn', ...args]);
  const [, port] = await waitFor(proc, /^corral gateway listening on 127\.0\.0\.1:(\d+) \(tls, node [\w-]+.*\)$/m);
  const [, admin] = await waitFor(proc, /^admin API on (http:\/\/127\.0\.0\.1:\d+) /m);
  return { proc, port: Number(port), admin: admin! };
}

/** Run the simulator to the end; resolve with its exit code and its JSON summary. */
async function simulate(port: number, secret: string, args: string[]): Promise<{ code: number | null; summary: Record<string, unknown>; proc: Proc }> {
  return simulatorSummary(start([...SIMULATE, '--port', String(port), '--secret', secret, '--json', '--timeout', '60', ...args]));
}

/** Wait for a started simulator (with --json) to exit; resolve with its exit code and its JSON summary. */
async function simulatorSummary(proc: Proc): Promise<{ code: number | null; summary: Record<string, unknown>; proc: Proc }> {
  const { code } = await within(proc.exited, 90_000, 'simulator exit');
  const last = proc.stdout.trim().split('\n').at(-1) ?? '';
  let summary: Record<string, unknown>;
  try {
    summary = JSON.parse(last) as Record<string, unknown>;
  } catch {
    throw new Error(`no JSON summary from the simulator (exit ${code})\n--- stdout\n${proc.stdout}\n--- stderr\n${proc.stderr}`);
  }
  return { code, summary, proc };
}

/** A hand-driven device: one TLS connection speaking the device protocol. */
interface TestDevice {
  readonly socket: tls.TLSSocket;
  /** The next line from the gateway, parsed. */
  next(): Promise<Record<string, unknown>>;
  send(message: object): void;
  readonly closed: Promise<void>;
}
const devices: TestDevice[] = [];

/** Call `onMessage` with each JSON line `socket` receives (the device protocol, either way). */
function onJsonLines(socket: tls.TLSSocket, onMessage: (m: Record<string, unknown>) => void): void {
  let buffer = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    buffer += chunk;
    let i: number;
    while ((i = buffer.indexOf('\n')) !== -1) {
      const m = JSON.parse(buffer.slice(0, i)) as Record<string, unknown>;
      buffer = buffer.slice(i + 1);
      onMessage(m);
    }
  });
}

async function connectDevice(port: number, device: string, secret: string): Promise<TestDevice> {
  const socket = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false });
  const lines: Record<string, unknown>[] = [];
  const waiters: ((m: Record<string, unknown>) => void)[] = [];
  onJsonLines(socket, (m) => {
    const w = waiters.shift();
    if (w) w(m);
    else lines.push(m);
  });
  socket.on('error', () => {});
  const d: TestDevice = {
    socket,
    next: () => within(lines.length > 0 ? Promise.resolve(lines.shift()!) : new Promise((resolve) => waiters.push(resolve)), 10_000, 'a line from the gateway'),
    send: (message) => socket.write(`${JSON.stringify(message)}\n`),
    closed: new Promise((resolve) => socket.once('close', () => resolve())),
  };
  devices.push(d);
  await within(new Promise((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject)), 10_000, 'TLS connect');
  d.send({ type: 'hello', device, token: deviceToken(secret, device) });
  expect(await d.next()).toMatchObject({ type: 'welcome' });
  return d;
}

/** A stand-in for a gateway's device port: it welcomes every hello and answers each `msg` as told. */
interface FakeGateway {
  readonly port: number;
  /** Resolves when a device first ends its side of a connection. */
  readonly ended: Promise<void>;
  close(): Promise<void>;
}
const fakes: FakeGateway[] = [];

/**
 * Start a {@link FakeGateway}. `answer(connection, id)` says what a `msg` gets on the n-th
 * connection (from 0): a line to send, the line and then a close, or nothing. With `halfOpen`, a
 * device's end is not answered with the fake's own: the device waits for its close.
 */
async function fakeGateway(answer: (connection: number, id: string) => { line: object; close?: boolean } | undefined, halfOpen = false): Promise<FakeGateway> {
  const { key, cert } = await testCerts();
  let connections = 0;
  const sockets = new Set<tls.TLSSocket>();
  let onEnd!: () => void;
  const ended = new Promise<void>((resolve) => (onEnd = resolve));
  const server = tls.createServer({ key, cert, allowHalfOpen: halfOpen }, (socket) => {
    const n = connections++;
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.once('end', onEnd);
    socket.on('error', () => {});
    onJsonLines(socket, (m) => {
      if (m.type === 'hello') socket.write(`${JSON.stringify({ type: 'welcome', node: 'fake', session: `s-${n}` })}\n`);
      else if (m.type === 'msg') {
        const a = answer(n, String(m.id));
        if (a) socket.write(`${JSON.stringify(a.line)}\n`);
        if (a?.close) socket.end();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const fake: FakeGateway = {
    port: (server.address() as { port: number }).port,
    ended,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      }),
  };
  fakes.push(fake);
  return fake;
}

/** The pids of `pid`'s child processes. */
function childrenOf(pid: number): number[] {
  return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
}

/** POST a command through the admin API. */
function postCommand(admin: string, device: string, body: string, token?: string): Promise<Response> {
  return fetch(`${admin}/devices/${device}/commands`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token === undefined ? {} : { authorization: `Bearer ${token}` }) },
    body,
  });
}

describe('corral-gateway with the embedded broker', () => {
  it('prints where it listens and a simulate command; simulated devices get every ack', { timeout: 120_000 }, async () => {
    const gw = await startGateway([]);
    expect(gw.proc.stdout).toMatch(/^broker: embedded/m);
    expect(gw.proc.stderr).toContain('no --amqp-url: using the embedded in-process broker (single process only; uplinks are kept in memory)');
    expect(gw.proc.stderr).toContain('no --admin-token: POST /devices/:id/commands is disabled');
    // No --secret: it made one, printed it, and printed a ready-to-run simulate command with it.
    const [, secret] = await waitFor(gw.proc, /^device secret \(generated, not stored anywhere\): (\S+)$/m);
    expect(secret).toMatch(/^[0-9a-f]{48}$/); // never starts with '-' (parseArgs would take it for a flag)
    // The secret in the environment, not on the simulator's command line (the process list shows that).
    expect(gw.proc.stdout).toContain(`simulate devices: CORRAL_GATEWAY_SECRET=${secret} npm run simulate -- --port ${gw.port} --devices 10 --rate 10 --msgs 5`);

    const sim = await simulate(gw.port, secret!, ['--devices', '5', '--msgs', '3', '--rate', '50', '--interval', '10']);
    expect(sim.code).toBe(0);
    expect(sim.summary).toMatchObject({ devices: 5, connected: 5, acks: 15, nacks: 0, expected: 15, complete: true, stoppedBy: 'done' });
    expect(sim.summary.p50Ms).toEqual(expect.any(Number));
    expect(sim.summary.p99Ms).toEqual(expect.any(Number));
    expect(sim.proc.stderr).toMatch(/^uplink: 15 acks, 0 nacks of 15 messages/m);

    // The same through two simulator processes.
    const sim2 = await simulate(gw.port, secret!, ['--devices', '6', '--msgs', '2', '--rate', '100', '--processes', '2', '--prefix-id', 'two']);
    expect(sim2.summary).toMatchObject({ processes: 2, connected: 6, acks: 12, complete: true });

    const health = await fetch(`${gw.admin}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'ok', mode: 'embedded', broker: 'connected' });
    const metrics = await (await fetch(`${gw.admin}/metrics`)).text();
    expect(metrics).toMatch(/^gateway_uplink_acked_total 27$/m);
    expect(metrics).toMatch(/^corral_listener_opened 11$/m);

    // No --admin-token: commands are disabled.
    expect((await postCommand(gw.admin, 'dev-1', '{"body":1}', 'guess')).status).toBe(403);

    // A wrong secret: the simulator's device gives up at once instead of retrying.
    const wrong = await simulate(gw.port, 'not-the-secret', ['--devices', '1', '--msgs', '1']);
    expect(wrong.code).toBe(1);
    expect(wrong.summary).toMatchObject({ connected: 0, acks: 0, complete: false, errors: { unauthorized: 1 } });
  });

  it('lists connected devices and delivers a command from the admin API to its device', { timeout: 60_000 }, async () => {
    const gw = await startGateway(['--secret', 's3cret', '--admin-token', 'adm1n', '--node-id', 'gw-cmd']);
    const device = await connectDevice(gw.port, 'door-7', 's3cret');

    const list = (await (await fetch(`${gw.admin}/devices`)).json()) as { device: string }[];
    expect(list).toEqual([expect.objectContaining({ device: 'door-7', session: expect.any(String), remote: expect.stringMatching(/^127\.0\.0\.1:\d+$/) })]);

    expect((await postCommand(gw.admin, 'door-7', '{"body":{"unlock":true}}')).status).toBe(401);
    expect((await postCommand(gw.admin, 'door-7', '{"body":{"unlock":true}}', 'wrong')).status).toBe(401);
    expect((await postCommand(gw.admin, 'door-7', '{"body":', 'adm1n')).status).toBe(400);
    expect((await postCommand(gw.admin, 'door-7', JSON.stringify({ body: 'x'.repeat(70_000) }), 'adm1n')).status).toBe(413);

    const res = await postCommand(gw.admin, 'door-7', '{"body":{"unlock":true},"id":"op-1"}', 'adm1n');
    expect(res.status).toBe(202);
    expect(await res.json()).toEqual({ id: 'op-1', device: 'door-7' });
    expect(await device.next()).toEqual({ type: 'cmd', id: 'op-1', body: { unlock: true } });
    device.send({ type: 'cmd_ack', id: 'op-1' });

    // An id the gateway makes up comes back in the 202 and in the cmd.
    const second = await postCommand(gw.admin, 'door-7', '{"body":"lock"}', 'adm1n');
    const { id } = (await second.json()) as { id: string };
    expect(await device.next()).toEqual({ type: 'cmd', id, body: 'lock' });
    device.send({ type: 'cmd_ack', id });
  });

  it('SIGTERM: /healthz answers 503 while it drains, devices are closed, exit code 0', { timeout: 60_000 }, async () => {
    const gw = await startGateway(['--secret', 's', '--drain-delay', '2000']);
    const device = await connectDevice(gw.port, 'dev-drain', 's');
    expect((await fetch(`${gw.admin}/healthz`)).status).toBe(200);

    gw.proc.child.kill('SIGTERM');
    await waitFor(gw.proc, /^draining on SIGTERM: \/healthz answers 503; closing devices in 2000 ms$/m, 10_000);
    const health = await fetch(`${gw.admin}/healthz`);
    expect(health.status).toBe(503);
    expect(await health.json()).toMatchObject({ status: 'draining' });

    await within(device.closed, 15_000, 'the device is closed by the drain');
    expect(await within(gw.proc.exited, 15_000, 'gateway exit')).toEqual({ code: 0, signal: null });
    expect(gw.proc.stdout).toMatch(/^drained in \d+ ms; exiting$/m);
  });

  it('refuses --workers without --amqp-url, and a bad flag, with exit code 2', { timeout: 30_000 }, async () => {
    const workers = start([...CLI, '--workers', '2']);
    expect(await within(workers.exited, 20_000, 'exit')).toEqual({ code: 2, signal: null });
    expect(workers.stderr).toContain('--workers needs --amqp-url: worker processes cannot share the in-process broker');

    const bad = start([...CLI, '--prot', '1']);
    expect(await within(bad.exited, 20_000, 'exit')).toEqual({ code: 2, signal: null });
    expect(bad.stderr).toMatch(/Unknown option '--prot'/);
    expect(bad.stderr).toContain('usage: corral-gateway');

    const both = start([...CLI, '--amqp-url', 'amqp://127.0.0.1', '--amqp-url-file', '/nonexistent']);
    expect(await within(both.exited, 20_000, 'exit')).toEqual({ code: 2, signal: null });
    expect(both.stderr).toContain('give --amqp-url or --amqp-url-file, not both');

    const queue = start([...CLI, '--uplink-queue', 'q']);
    expect(await within(queue.exited, 20_000, 'exit')).toEqual({ code: 2, signal: null });
    expect(queue.stderr).toContain('--uplink-queue needs --amqp-url');
  });
});

describe('corral-simulate', () => {
  const ack = (id: string) => ({ line: { type: 'ack', id } });

  it('a nack shutting_down is not an answer: the device sends that message again on its next connection', { timeout: 60_000 }, async () => {
    // A node that is draining: the first connection's message gets `nack shutting_down` and a close.
    const fake = await fakeGateway((connection, id) => (connection === 0 ? { line: { type: 'nack', id, reason: 'shutting_down' }, close: true } : ack(id)));
    const sim = await simulate(fake.port, 's', ['--devices', '1', '--msgs', '1']);
    expect(sim.code).toBe(0);
    expect(sim.summary).toMatchObject({ acks: 1, nacks: 0, complete: true, disconnects: 1, errors: { 'nack:shutting_down': 1 } });
  });

  it('Ctrl-C under npm (the same SIGINT twice) still ends with the summary', { timeout: 60_000 }, async () => {
    // Never answers (the run would go on), and leaves a device's end unanswered, so that the
    // simulator is still closing its devices (up to 2 s) when the second SIGINT comes.
    const fake = await fakeGateway(() => undefined, true);
    const proc = start([...SIMULATE, '--port', String(fake.port), '--secret', 's', '--json', '--devices', '2', '--msgs', '1']);
    await waitFor(proc, /connected 2\/2/, 30_000, 'stderr');
    proc.child.kill('SIGINT');
    await within(fake.ended, 10_000, 'a device ending its connection after the first SIGINT');
    proc.child.kill('SIGINT');
    const sim = await simulatorSummary(proc);
    expect(sim.code).toBe(1);
    expect(sim.summary).toMatchObject({ stoppedBy: 'SIGINT', connected: 2, complete: false });
    expect(proc.stderr).toMatch(/^incomplete \(stopped by SIGINT\)/m);
  });

  it('no more processes than devices; bounds on --devices and an empty --secret are usage errors', { timeout: 60_000 }, async () => {
    const fake = await fakeGateway((_, id) => ack(id));
    const sim = await simulate(fake.port, 's', ['--devices', '2', '--msgs', '1', '--processes', '12']);
    expect(sim.summary).toMatchObject({ devices: 2, processes: 2, acks: 2, complete: true });

    // 200 processes of 15,000: process i sends from 127.(10 + i).x.y, and the second octet ends at 255.
    const many = start([...SIMULATE, '--secret', 's', '--devices', '3000001']);
    expect(await within(many.exited, 20_000, 'exit')).toEqual({ code: 2, signal: null });
    expect(many.stderr).toContain('--devices must be an integer from 1 to 3000000, got "3000001"');

    const empty = start([...SIMULATE, '--secret=']);
    expect(await within(empty.exited, 20_000, 'exit')).toEqual({ code: 2, signal: null });
    expect(empty.stderr).toContain('--secret must not be empty');
  });

  it('a child process that dies: the summary says so, and its devices no longer count as connected', { timeout: 90_000 }, async () => {
    const fake = await fakeGateway((_, id) => ack(id));
    // Two processes of 2 devices, 200 messages each, one every 25 ms: 5 s of uplink, so that the
    // child is still sending when it is killed, however late this test sees the progress line.
    const proc = start([...SIMULATE, '--port', String(fake.port), '--secret', 's', '--json', '--devices', '4', '--processes', '2', '--msgs', '200', '--interval', '25']);
    await waitFor(proc, /connected 4\/4/, 30_000, 'stderr');
    const [child] = childrenOf(proc.child.pid!);
    process.kill(child!, 'SIGKILL');
    const sim = await simulatorSummary(proc);
    expect(sim.code).toBe(1);
    expect(sim.summary).toMatchObject({ complete: false, connected: 2, errors: { child_exited: 1 } });
    expect(proc.stderr).toMatch(/^incomplete \(1 simulator process exited early, with 2 devices\)/m);
    expect(proc.stderr).toMatch(/^connected 2\/4,/m);
    // The other process's devices got all their acks; the dead one's count what it reported.
    expect(sim.summary.acks).toBeGreaterThanOrEqual(400);
    expect(sim.summary.acks).toBeLessThan(800);
  });
});

describeRabbit('corral-gateway with RabbitMQ', () => {
  let cleanup: { prefix: string; node: string; slots: string[] } | undefined;

  afterEach(async () => {
    if (!cleanup) return;
    await stopAll(); // first: a live gateway would declare its queue again
    const { prefix, node, slots } = cleanup;
    cleanup = undefined;
    // Every process of the gateway declared the downlink queue of its slot.
    await withChannel(async (channel, model) => {
      let ch = channel;
      for (const slot of slots) {
        await ch.deleteQueue(topology(prefix).nodeQueue(node, slot)).catch(async () => {
          ch = await model.createChannel();
          ch.on('error', () => undefined);
        });
      }
    });
    await deleteTopology(prefix, []);
  });

  /** Start a gateway on RabbitMQ under a fresh prefix, remembered for cleanup. */
  async function startAmqpGateway(node: string, args: string[]): Promise<RunningGateway & { prefix: string }> {
    const prefix = uniquePrefix(`cli-${node}`);
    cleanup = { prefix, node, slots: ['0', 'primary', '1'] };
    const gw = await startGateway(['--amqp-url', AMQP_URL, '--prefix', prefix, '--node-id', node, ...args]);
    return { ...gw, prefix };
  }

  for (const workers of [[], ['--workers', '2']]) {
    it(`${workers.join(' ') || 'one process'}: a command from the admin API reaches its device`, { timeout: 60_000 }, async () => {
      const gw = await startAmqpGateway('gw-c', [...workers, '--secret', 'c', '--admin-token', 't']);
      const device = await connectDevice(gw.port, 'door-1', 'c');
      for (let i = 0; i < 4; i++) {
        const res = await postCommand(gw.admin, 'door-1', JSON.stringify({ body: i, id: `op-${i}` }), 't');
        expect(res.status).toBe(202);
        expect(await device.next()).toEqual({ type: 'cmd', id: `op-${i}`, body: i });
        device.send({ type: 'cmd_ack', id: `op-${i}` });
      }
    });
  }

  it('--workers 2: /metrics, /devices and /healthz of the node cover every worker', { timeout: 60_000 }, async () => {
    const gw = await startAmqpGateway('gw-v', ['--workers', '2', '--secret', 'v', '--admin-token', 't']);
    // Six devices over the two workers (the kernel spreads them; the test checks both got some).
    const ds = [];
    for (let i = 0; i < 6; i++) ds.push(await connectDevice(gw.port, `lamp-${i}`, 'v'));
    const listed = (await (await fetch(`${gw.admin}/devices`)).json()) as { device: string; pid: number }[];
    expect(listed.map((d) => d.device).sort()).toEqual(ds.map((_, i) => `lamp-${i}`));
    // Each device acknowledges one command.
    for (const [i, d] of ds.entries()) {
      expect((await postCommand(gw.admin, `lamp-${i}`, JSON.stringify({ body: 'on', id: `on-${i}` }), 't')).status).toBe(202);
      expect(await d.next()).toMatchObject({ type: 'cmd', id: `on-${i}` });
      d.send({ type: 'cmd_ack', id: `on-${i}` });
    }
    // The acks are counted by the workers that hold the devices; the node's /metrics sums them.
    const deadline = Date.now() + 10_000;
    let metrics = '';
    while (Date.now() < deadline) {
      metrics = await (await fetch(`${gw.admin}/metrics`)).text();
      if (/^gateway_downlink_acked_total 6$/m.test(metrics)) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(metrics).toMatch(/^gateway_device_connections 6$/m);
    expect(metrics).toMatch(/^gateway_downlink_acked_total 6$/m);
    expect(metrics).toMatch(/^gateway_hellos_total\{outcome="welcome"\} 6$/m);
    const health = (await (await fetch(`${gw.admin}/healthz`)).json()) as { status: string; processes: { process: string; broker: string }[] };
    expect(health.status).toBe('ok');
    expect(health.processes.map((p) => p.process).sort()).toEqual(['0', '1', 'primary']);
    for (const p of health.processes) expect(p.broker).toBe('connected');

    // A worker that does not answer (paused): its counters still count, with its last answer, and
    // /devices answers 503 rather than a list without its devices.
    const victim = listed[0]!.pid;
    const onVictim = listed.filter((d) => d.pid === victim).length;
    process.kill(victim, 'SIGSTOP');
    try {
      const paused = await (await fetch(`${gw.admin}/metrics`)).text();
      expect(paused).toMatch(/^gateway_downlink_acked_total 6$/m);
      expect(paused).toMatch(/^gateway_hellos_total\{outcome="welcome"\} 6$/m);
      expect((await fetch(`${gw.admin}/devices`)).status).toBe(503);
    } finally {
      process.kill(victim, 'SIGCONT');
    }
    // A worker that exits: its counters stay in the node's sums (a counter that went down would be
    // a reset to Prometheus); its devices leave the gauge.
    process.kill(victim, 'SIGKILL');
    const after = Date.now() + 20_000;
    while (Date.now() < after) {
      metrics = await (await fetch(`${gw.admin}/metrics`)).text();
      if (new RegExp(`^gateway_device_connections ${6 - onVictim}$`, 'm').test(metrics)) break;
      expect(metrics).toMatch(/^gateway_downlink_acked_total 6$/m);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(metrics).toMatch(new RegExp(`^gateway_device_connections ${6 - onVictim}$`, 'm'));
    expect(metrics).toMatch(/^gateway_downlink_acked_total 6$/m);
    expect(metrics).toMatch(/^gateway_hellos_total\{outcome="welcome"\} 6$/m);
  });

  it('--workers 2: /healthz of the node is 200 within 1 s of RabbitMQ accepting again after an outage, and uplinks sent meanwhile are acked', { timeout: 90_000 }, async () => {
    // Every process of the node reaches RabbitMQ through a proxy the test cuts for 5 s.
    const proxy = new TcpProxy(amqpAddress());
    try {
      const url = amqpUrlVia(await proxy.start());
      const prefix = uniquePrefix('cli-gw-o');
      cleanup = { prefix, node: 'gw-o', slots: ['0', 'primary', '1'] };
      const gw = await startGateway(['--amqp-url', url, '--prefix', prefix, '--node-id', 'gw-o', '--workers', '2', '--secret', 'o']);
      await rabbitBackEnd.bindUplinkQueue(prefix, `${prefix}.app`, '#');
      const ds = [];
      for (let i = 0; i < 6; i++) ds.push(await connectDevice(gw.port, `meter-${i}`, 'o'));
      for (const d of ds) d.send({ type: 'msg', id: 'm-0', topic: 't', body: 0 });
      for (const d of ds) expect(await d.next()).toEqual({ type: 'ack', id: 'm-0' });
      const healthz = async (): Promise<number> => {
        const res = await fetch(`${gw.admin}/healthz`);
        await res.arrayBuffer();
        return res.status;
      };
      expect(await healthz()).toBe(200);

      proxy.pause();
      proxy.cut();
      const downBy = Date.now() + 5000;
      while ((await healthz()) !== 503 && Date.now() < downBy) await new Promise((r) => setTimeout(r, 50));
      expect(await healthz()).toBe(503);
      for (const d of ds) d.send({ type: 'msg', id: 'm-1', topic: 't', body: 1 });
      await new Promise((r) => setTimeout(r, 5000)); // the outage itself
      const backAt = Date.now();
      proxy.resume();
      const acked = Promise.all(ds.map(async (d) => ({ line: await d.next(), at: Date.now() })));
      let okAt: number | undefined;
      while (okAt === undefined && Date.now() - backAt < 10_000) {
        if ((await healthz()) === 200) okAt = Date.now();
        else await new Promise((r) => setTimeout(r, 50));
      }
      const acks = await acked;
      const lastAck = Math.max(...acks.map((a) => a.at)) - backAt;
      console.info(`--workers 2 outage: /healthz 200 ${okAt === undefined ? 'never' : okAt - backAt} ms, last of 6 acks ${lastAck} ms after RabbitMQ accepted again`);
      expect(acks.map((a) => a.line)).toEqual(ds.map(() => ({ type: 'ack', id: 'm-1' })));
      expect(okAt! - backAt).toBeLessThanOrEqual(1000);
      expect(lastAck).toBeLessThanOrEqual(3000);
      const health = (await (await fetch(`${gw.admin}/healthz`)).json()) as { processes: { broker: string }[] };
      expect(health.processes.map((p) => p.broker)).toEqual(['connected', 'connected', 'connected']);

      const got = await rabbitBackEnd.read(prefix, `${prefix}.app`, 12, 10_000);
      expect(new Set(got.map((m) => `${String(m.headers['device-id'])}/${m.messageId}`)).size).toBe(12);
    } finally {
      await stopAll();
      await proxy.close();
    }
  });

  it('--workers 2: a worker killed while RabbitMQ is unreachable is restarted, waits for RabbitMQ, and the node stays up and recovers', { timeout: 90_000 }, async () => {
    const proxy = new TcpProxy(amqpAddress());
    try {
      const url = amqpUrlVia(await proxy.start());
      const prefix = uniquePrefix('cli-gw-w');
      cleanup = { prefix, node: 'gw-w', slots: ['0', 'primary', '1'] };
      const gw = await startGateway(['--amqp-url', url, '--prefix', prefix, '--node-id', 'gw-w', '--workers', '2', '--secret', 'w']);
      const health = async (): Promise<{ status: number; processes: { process: string; pid: number; broker: string }[] }> => {
        const res = await fetch(`${gw.admin}/healthz`);
        const body = (await res.json()) as { processes: { process: string; pid: number; broker: string }[] };
        return { status: res.status, processes: body.processes };
      };
      const before = await health();
      expect(before.status).toBe(200);
      const victim = before.processes.find((p) => p.process === '0')!.pid;

      proxy.pause();
      proxy.cut();
      process.kill(victim, 'SIGKILL');
      // corral restarts the worker; its first connect fails. Before the fix it exited, was
      // restarted 5 times in ~3 s, and the whole node stopped. Now it waits, reconnecting.
      await new Promise((r) => setTimeout(r, 8000));
      expect(gw.proc.child.exitCode).toBe(null);
      const during = await health();
      expect(during.status).toBe(503);
      const restarted = during.processes.find((p) => p.process === '0');
      expect(restarted?.pid).not.toBe(victim);
      expect(restarted?.broker).toBe('reconnecting');
      // A hello meanwhile is refused `overloaded` (on whichever worker takes it).
      const refused = tls.connect({ port: gw.port, host: '127.0.0.1', rejectUnauthorized: false });
      refused.on('error', () => {});
      await within(new Promise((resolve) => refused.once('secureConnect', resolve)), 10_000, 'TLS connect');
      refused.write(`${JSON.stringify({ type: 'hello', device: 'tap-x', token: deviceToken('w', 'tap-x') })}\n`);
      const answer = await within(new Promise<string>((resolve) => refused.once('data', (b: Buffer) => resolve(b.toString('utf8')))), 10_000, 'an answer');
      expect(JSON.parse(answer.trim())).toMatchObject({ type: 'error', code: 'overloaded' });
      refused.destroy();

      proxy.resume();
      const deadline = Date.now() + 15_000;
      let after = await health();
      while (after.status !== 200 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
        after = await health();
      }
      expect(after.status).toBe(200);
      expect(after.processes.map((p) => p.broker)).toEqual(['connected', 'connected', 'connected']);
      // Both workers serve devices again.
      const ds = [];
      for (let i = 0; i < 6; i++) ds.push(await connectDevice(gw.port, `tap-${i}`, 'w'));
      for (const d of ds) d.send({ type: 'ping' });
      for (const d of ds) expect(await d.next()).toEqual({ type: 'pong' });
    } finally {
      await stopAll();
      await proxy.close();
    }
  });

  it('--workers 2: a worker killed with SIGKILL: commands published before its devices are back reach them, none goes to the offline queue', { timeout: 90_000 }, async () => {
    const gw = await startAmqpGateway('gw-k', ['--workers', '2', '--secret', 'k', '--admin-token', 't']);
    const names = Array.from({ length: 8 }, (_, i) => `valve-${i}`);
    const ds = new Map<string, TestDevice>();
    for (const name of names) ds.set(name, await connectDevice(gw.port, name, 'k'));
    const listed = (await (await fetch(`${gw.admin}/devices`)).json()) as { device: string; pid: number }[];
    const victim = listed.find((d) => d.device === 'valve-0')!.pid;
    const theirs = listed.filter((d) => d.pid === victim).map((d) => d.device);
    process.kill(victim, 'SIGKILL');
    await within(Promise.all(theirs.map((name) => ds.get(name)!.closed)), 10_000, 'the killed worker’s devices disconnected');
    // Commands for them now, while they are connected nowhere: RabbitMQ routes them, through the
    // bindings the dead worker left, into its slot's queue.
    for (const name of theirs) expect((await postCommand(gw.admin, name, JSON.stringify({ body: 'close', id: `close-${name}` }), 't')).status).toBe(202);
    // The worker is restarted in its slot and takes its queue over (every process connected again).
    const deadline = Date.now() + 30_000;
    for (;;) {
      const health = (await (await fetch(`${gw.admin}/healthz`)).json()) as { processes: { process: string; broker: string }[] };
      if (health.processes.length === 3 && health.processes.every((p) => p.broker === 'connected')) break;
      if (Date.now() > deadline) throw new Error(`the worker was not restarted: ${JSON.stringify(health)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    // The devices come back, each to whichever worker the kernel gives it, and get their command.
    for (const name of theirs) {
      const d = await connectDevice(gw.port, name, 'k');
      expect(await d.next()).toEqual({ type: 'cmd', id: `close-${name}`, body: 'close' });
      d.send({ type: 'cmd_ack', id: `close-${name}` });
    }
    await withChannel(async (ch) => expect((await ch.checkQueue(topology(gw.prefix).downOffline)).messageCount).toBe(0));
  });

  it('--workers 2: simulated devices get every ack; the primary serves the listener counters of its workers', { timeout: 120_000 }, async () => {
    // The workers re-run src/cli.ts with the primary's Node flags: tsx and corral-source again.
    const gw = await startAmqpGateway('gw-w', ['--workers', '2', '--secret', 'w']);
    expect(gw.proc.stdout).toMatch(/^corral gateway listening on .*, 2 workers, \w+\)$/m);
    expect(gw.proc.stdout).toContain(`broker: ${redacted(AMQP_URL)}, prefix ${gw.prefix}`);
    const password = new URL(AMQP_URL).password;
    if (password) expect(gw.proc.stdout).not.toContain(`:${password}@`);

    // A back end: one queue taking every uplink (without one, uplinks are nacked as unroutable).
    await withChannel(async (channel) => {
      const { queue } = await channel.assertQueue('', { exclusive: true });
      await channel.bindQueue(queue, `${gw.prefix}.up`, '#');

      const sim = await simulate(gw.port, 'w', ['--devices', '5', '--msgs', '3', '--rate', '50']);
      expect(sim.summary).toMatchObject({ connected: 5, acks: 15, nacks: 0, complete: true });
      expect((await channel.checkQueue(queue)).messageCount).toBe(15);
    });

    const metrics = await (await fetch(`${gw.admin}/metrics`)).text();
    expect(metrics).toMatch(/^corral_listener_workers\{status="ready"\} 2$/m);
    expect(metrics).toMatch(/^corral_listener_opened 5$/m);
    expect((await fetch(`${gw.admin}/healthz`)).status).toBe(200);

    gw.proc.child.kill('SIGTERM');
    expect(await within(gw.proc.exited, 30_000, 'gateway exit')).toEqual({ code: 0, signal: null });
  });
});

/** A URL without its password, as the gateway prints it. */
function redacted(url: string): string {
  const u = new URL(url);
  u.password = '';
  return u.toString();
}
