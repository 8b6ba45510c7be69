/**
 * Out of file descriptors: a listener in a child process with a low open-file limit (`ulimit -n`)
 * stops accepting before the process runs out (a connect then is refused, never accepted and
 * closed), counts it, keeps its live connections, and accepts again once descriptors are free.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, expect, it } from 'vitest';
import type { ListenerInfo } from '../../src/index.js';
import { LineClient } from '../support/clients.js';

const FIXTURE = fileURLToPath(new URL('../fixtures/few-descriptors.ts', import.meta.url));
let child: ChildProcess | undefined;
let sockets: net.Socket[] = [];

afterEach(async () => {
  for (const s of sockets) s.destroy();
  sockets = [];
  if (child && child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((resolve) => child!.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  }
  child = undefined;
});

/** Connect; resolves with a line client once connected, or with the error code. */
function attempt(port: number): Promise<LineClient | string> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    sockets.push(s);
    s.once('connect', () => resolve(new LineClient(s)));
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

it('near the descriptor limit: the listener stops accepting before libuv would accept and close, keeps its connections, and recovers', { timeout: 60_000 }, async () => {
  const events: { event: string; code?: string; port?: number; info?: ListenerInfo }[] = [];
  const waiters: { match: (e: (typeof events)[number]) => boolean; resolve: (e: (typeof events)[number]) => void }[] = [];
  child = spawn('bash', ['-c', `ulimit -n 128 && exec "${process.execPath}" --import tsx "${FIXTURE}"`], { stdio: ['pipe', 'pipe', 'inherit'] });
  createInterface({ input: child.stdout! }).on('line', (line) => {
    const e = JSON.parse(line) as (typeof events)[number];
    events.push(e);
    for (const w of waiters.splice(0)) {
      if (w.match(e)) w.resolve(e);
      else waiters.push(w);
    }
  });
  const next = (match: (e: (typeof events)[number]) => boolean, after = 0): Promise<(typeof events)[number]> => {
    const past = events.slice(after).find(match);
    return past ? Promise.resolve(past) : new Promise((resolve) => waiters.push({ match, resolve }));
  };
  const { port } = await next((e) => e.event === 'listening');

  // Open connections until one is refused. Every connect accepted before that is served: none is
  // accepted and closed (what libuv does to the backlog once accept has failed with EMFILE).
  const served: LineClient[] = [];
  let refused: string | undefined;
  for (let i = 0; i < 200 && refused === undefined; i++) {
    const c = await attempt(port!);
    if (typeof c === 'string') {
      refused = c;
      break;
    }
    const reply = await c.request(`hello ${i}`).catch(() => 'closed unserved');
    expect(reply).toBe(`hello ${i}`);
    served.push(c);
  }
  expect(refused).toBe('ECONNREFUSED');
  expect(served.length).toBeGreaterThan(10);

  // The live connections are untouched, and the back-off is counted.
  for (const c of served) expect(await c.request('still here')).toBe('still here');
  const mark = events.length;
  child.stdin!.write('info\n');
  const { info } = await next((e) => e.event === 'info', mark);
  expect(info).toMatchObject({ status: 'running', connections: served.length });
  expect(info!.descriptorBackoffs).toBeGreaterThanOrEqual(1);

  // Descriptors free up: it accepts again once its back-off ends (refused attempts until then).
  for (const c of served.splice(0, 20)) c.destroy();
  let back: LineClient | undefined;
  for (let i = 0; i < 400 && back === undefined; i++) {
    const c = await attempt(port!);
    if (typeof c !== 'string') back = c;
    else await new Promise((r) => setTimeout(r, 25));
  }
  expect(back).toBeDefined();
  expect(await back!.request('back')).toBe('back');
});
