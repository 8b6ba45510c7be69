/**
 * One listener, whatever its processes: the same options and events behave the same for a
 * single-process listener and for a worker pool (distributions `shared` and `primary`). Each case
 * runs the same server (test/fixtures/pool.ts) in a child process, driven the same way.
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { ListenerInfo } from '../src/index.js';
import { captureClientHello, connectTcp, LineClient, once } from './support/clients.js';
import { Pool, type PoolConfig } from './support/pool.js';

let pools: Pool[] = [];
let sockets: net.Socket[] = [];

afterEach(async () => {
  for (const s of sockets) s.destroy();
  sockets = [];
  for (const p of pools) p.kill();
  await Promise.all(pools.map((p) => p.exited));
  pools = [];
});

const kinds: readonly [string, PoolConfig][] = [
  ['single process', { single: true }],
  ["worker pool, distribution 'shared'", { distribution: 'shared' }],
  ["worker pool, distribution 'primary'", { distribution: 'primary' }],
];

async function start(config: PoolConfig): Promise<Pool> {
  const p = await Pool.start(config);
  pools.push(p);
  return p;
}

async function client(p: Pool): Promise<LineClient> {
  const s = await connectTcp(p.port);
  sockets.push(s);
  return new LineClient(s);
}

describe.each(kinds)('%s', (_kind, base) => {
  it('drain({ rate }) asks connections to shut down at that rate', async () => {
    const p = await start({ ...base, announceShutdown: true });
    const cs = await Promise.all(Array.from({ length: 4 }, () => client(p)));
    for (const c of cs) expect(await c.request('warm')).toBe('warm');
    const drained = p.command<{ connections: number; closedGracefully: number }>('drain', { timeout: 5000, rate: 2 });
    const at = (await Promise.all(cs.map((c) => c.line()))).map((l) => Number(l.split(' ')[1]));
    expect(await drained).toMatchObject({ connections: 4, closedGracefully: 4 });
    // 4 connections at 2 a second: about 1.5 s from the first request to the last (at once: ~0).
    expect(Math.max(...at) - Math.min(...at)).toBeGreaterThan(700);
  });

  it('a drain at a rate of one connection in months paces with timers Node can hold (no TimeoutOverflowWarning)', async () => {
    const p = await start({ ...base, announceShutdown: true });
    const cs = await Promise.all(Array.from({ length: 2 }, () => client(p)));
    for (const c of cs) expect(await c.request('warm')).toBe('warm');
    const drained = p.command('drain', { timeout: 60_000, rate: 1e-7 });
    // The first connection is asked at once; the second would be in ~4 months, past Node's longest
    // timer (2^31 - 1 ms, ~24.8 days).
    const asked = await Promise.race(cs.map((c) => c.line()));
    expect(asked).toMatch(/^shutdown /);
    // A stop during the drain asks the rest at once and ends it.
    await p.stop(200);
    await drained.catch(() => undefined);
    expect(p.stderr).not.toMatch(/TimeoutOverflowWarning/);
  });

  it('a failed TLS handshake is published on corral:handshake:error by the process that ran it', async () => {
    const p = await start({ ...base, tls: true });
    const hello = await captureClientHello();
    const s = await connectTcp(p.port);
    sockets.push(s);
    s.write(hello);
    // The server answered the ClientHello: the handshake runs. The client now leaves mid-handshake.
    await once(s, 'data');
    s.destroy();
    const event = await p.waitEvent('handshakeErrorChannel');
    const expectedRole = base.single ? 'single' : 'worker';
    expect(event.detail).toMatchObject({ listener: 'pool', kind: 'error', role: expectedRole });
    const info = await p.command<ListenerInfo>('info');
    expect(info.handshakeFailures).toEqual({ timeout: 0, stalled: 0, error: 1 });
  });

  it('askWorkers reaches every worker (a single listener asks itself); a failing or missing answer is reported', async () => {
    const p = await start(base);
    const c = await client(p);
    expect(await c.request('hi')).toBe('hi');
    const answers = await p.command<{ index: number; pid: number; ok: boolean; value?: { pid: number; payload: unknown; connections: number }; error?: string }[]>('ask', 'about');
    expect(answers).toHaveLength(base.single ? 1 : 2);
    for (const a of answers) expect(a).toMatchObject({ ok: true, value: { pid: a.pid, payload: { asked: true } } });
    expect(new Set(answers.map((a) => a.pid)).size).toBe(answers.length);
    // The one connection is in exactly one process.
    expect(answers.reduce((n, a) => n + (a.value?.connections ?? 0), 0)).toBe(1);
    const failing = await p.command<{ ok: boolean; error?: string }[]>('ask', 'fails');
    for (const a of failing) expect(a).toMatchObject({ ok: false, error: expect.stringContaining('this answer fails') });
    const missing = await p.command<{ ok: boolean; error?: string }[]>('ask', 'nobody');
    for (const a of missing) expect(a).toMatchObject({ ok: false, error: expect.stringContaining('no answer for "nobody"') });
  });

  it('info() has the same fields and counts the same way', async () => {
    const p = await start(base);
    const cs = await Promise.all(Array.from({ length: 3 }, () => client(p)));
    for (const c of cs) expect(await c.request('hi')).toBe('hi');
    // A pool's primary counts from its workers' reports (at most ~20 ms old): see all three first.
    await p.command('wait', 3);
    for (const c of cs) c.end();
    await p.command('wait', 0);
    const info = await p.command<ListenerInfo>('info');
    expect(Object.keys(info).sort()).toEqual(
      [
        'name', 'status', 'role', 'distribution', 'transport', 'address', 'maxConnections', 'maxHandshakes', 'admission', 'refusing',
        'overflows', 'active', 'connections', 'silent', 'handshaking', 'waiting', 'accepted', 'gaveUp', 'opened', 'closed', 'rejected',
        'handshakeFailures', 'handlerCrashes', 'handlerRestarts', 'descriptorBackoffs', 'workers',
      ].sort(),
    );
    expect(info).toMatchObject({
      name: 'pool',
      status: 'running',
      role: base.single ? 'single' : 'primary',
      distribution: base.single ? null : base.distribution,
      transport: 'tcp',
      address: { address: '127.0.0.1', port: p.port },
      maxConnections: 1024,
      active: 0,
      connections: 0,
      waiting: 0,
      handshaking: 0,
      accepted: 3,
      opened: 3,
      closed: 3,
      handlerCrashes: 0,
      rejected: { queue_full: 0, wait_timeout: 0, shutdown: 0, silent_timeout: 0, source_limit: 0, silent_limit: 0, malformed: 0 },
      handshakeFailures: { timeout: 0, stalled: 0, error: 0 },
    });
    expect(info.workers).toHaveLength(base.single ? 0 : 2);
  });
});
