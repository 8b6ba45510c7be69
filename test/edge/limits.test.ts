/**
 * Limits at the edge, on real sockets: connection rates (per source: refused; per listener: held),
 * access rules replaced at run time (single process and workers), per-address caps, alarms.
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { AlarmEvent, Listener, ListenerInfo, ListenerSettings, RejectEvent } from '../../src/index.js';
import { LineClient, once } from '../support/clients.js';
import { Pool, type PoolConfig } from '../support/pool.js';
import { edgeListener } from '../support/proxy-listener.js';

let listeners: Listener[] = [];
let pools: Pool[] = [];
let sockets: net.Socket[] = [];

afterEach(async () => {
  for (const s of sockets) s.destroy();
  sockets = [];
  await Promise.all(listeners.map((l) => l.stop({ timeout: 0 })));
  listeners = [];
  for (const p of pools) p.kill();
  await Promise.all(pools.map((p) => p.exited));
  pools = [];
});

async function listener(settings: Partial<ListenerSettings>): Promise<Listener> {
  const l = await edgeListener(settings);
  listeners.push(l);
  return l;
}

async function from(port: number, localAddress: string): Promise<LineClient> {
  const s = net.connect({ port, host: '127.0.0.1', localAddress });
  sockets.push(s);
  await once(s, 'connect');
  return new LineClient(s);
}

function rejects(l: Listener): RejectEvent[] {
  const seen: RejectEvent[] = [];
  l.on('reject', (e) => seen.push(e));
  return seen;
}

function nextReject(l: Listener): Promise<RejectEvent> {
  return new Promise((resolve) => l.once('reject', resolve));
}

describe('connectionRatePerSource', () => {
  it('closes a source over its rate at once (rate_limited); other sources are served', async () => {
    // A burst of 2, then one a minute: the third connect within the test is over the rate.
    const l = await listener({ connectionRatePerSource: { rate: 1 / 60, burst: 2 } });
    const a = await from(l.port!, '127.0.0.31');
    const b = await from(l.port!, '127.0.0.31');
    expect(await a.request('a')).toBe('a');
    expect(await b.request('b')).toBe('b');
    const refused = nextReject(l);
    const c = await from(l.port!, '127.0.0.31');
    c.send('c');
    await c.closed;
    expect(await refused).toMatchObject({ reason: 'rate_limited', remoteAddress: '127.0.0.31' });
    const d = await from(l.port!, '127.0.0.32');
    expect(await d.request('d')).toBe('d');
    expect((await l.info()).rejected.rate_limited).toBe(1);
  });
});

describe('connectionRate', () => {
  it('holds sockets over the listener rate in the wait queue and serves them in turn; none is closed', async () => {
    const l = await listener({ connectionRate: { rate: 4, burst: 1 } });
    const seen = rejects(l);
    const cs = await Promise.all(['127.0.0.33', '127.0.0.34', '127.0.0.35'].map((a) => from(l.port!, a)));
    for (const c of cs) c.send('hi');
    // The first is served from the burst; the others wait their token (4 a second).
    const first = await Promise.race(cs.map((c) => c.line()));
    expect(first).toBe('hi');
    expect((await l.info()).waiting).toBeGreaterThanOrEqual(1);
    await l.waitForConnections('==', 3, { timeout: 5000 });
    expect(seen).toEqual([]);
  });
});

describe('access rules', () => {
  it('single process: denied addresses are closed at accept (denied); rules change at run time', async () => {
    const l = await listener({ access: ['deny 127.0.0.40/30'] });
    const refused = nextReject(l);
    const a = await from(l.port!, '127.0.0.41');
    a.send('x');
    await a.closed;
    expect(await refused).toMatchObject({ reason: 'denied', remoteAddress: '127.0.0.41' });
    const b = await from(l.port!, '127.0.0.45');
    expect(await b.request('ok')).toBe('ok');
    // An allow-list replaces the rules: now only 127.0.0.41 may connect; the live connection stays.
    await l.setAccessRules(['allow 127.0.0.41', 'deny all']);
    const c = await from(l.port!, '127.0.0.41');
    expect(await c.request('allowed now')).toBe('allowed now');
    const denied = nextReject(l);
    const d = await from(l.port!, '127.0.0.46');
    d.send('x');
    await d.closed;
    expect((await denied).reason).toBe('denied');
    expect(await b.request('still here')).toBe('still here');
    await expect(l.setAccessRules(['permit 10.0.0.0/8' as 'allow x'])).rejects.toThrow(/a rule is 'allow <cidr>'/);
  });

  it.each(['shared', 'primary'] as const)('worker pool (%s): setAccessRules reaches every worker, and workers started later', async (distribution) => {
    const pool = await Pool.start({ distribution } as PoolConfig);
    pools.push(pool);
    await pool.command('setAccess', ['deny 127.0.0.50']);
    for (let i = 0; i < 4; i++) {
      const s = net.connect({ port: pool.port, host: '127.0.0.1', localAddress: '127.0.0.50' });
      sockets.push(s);
      s.on('error', () => {});
      await new Promise<void>((resolve) => s.once('close', () => resolve()));
    }
    const ok = await from(pool.port, '127.0.0.51');
    expect(await ok.request('ok')).toBe('ok');
    const info = await pool.command<ListenerInfo>('info');
    expect(info.rejected.denied).toBe(4);
  });
});

describe('maxConnectionsPerAddress', () => {
  it('caps the sockets one IPv4 address holds; a closed one frees its place', async () => {
    const l = await listener({ maxConnectionsPerAddress: 2 });
    const a = await from(l.port!, '127.0.0.60');
    const b = await from(l.port!, '127.0.0.60');
    expect(await a.request('a')).toBe('a');
    expect(await b.request('b')).toBe('b');
    const refused = nextReject(l);
    const c = await from(l.port!, '127.0.0.60');
    c.send('c');
    await c.closed;
    expect((await refused).reason).toBe('address_limit');
    a.end();
    await a.closed;
    await l.waitForConnections('==', 1);
    const d = await from(l.port!, '127.0.0.60');
    expect(await d.request('d')).toBe('d');
  });
});

describe('alarms', () => {
  it('fires once when connections reach the threshold, and not again within its cooldown', async () => {
    const called: AlarmEvent[] = [];
    const l = await listener({ alarms: { busy: { threshold: 2, cooldown: 60_000, callback: (e) => called.push(e) } } });
    const events: AlarmEvent[] = [];
    l.on('alarm', (e) => events.push(e));
    const cs: LineClient[] = [];
    for (let i = 0; i < 4; i++) {
      const c = await from(l.port!, '127.0.0.70');
      expect(await c.request('x')).toBe('x');
      cs.push(c);
    }
    expect(events).toEqual([{ listener: l.name, name: 'busy', threshold: 2, connections: 2 }]);
    expect(called).toEqual(events);
  });

  it('with no cooldown, fires on every change at or over the threshold', async () => {
    const l = await listener({ alarms: { busy: { threshold: 1, cooldown: 0 } } });
    const events: AlarmEvent[] = [];
    l.on('alarm', (e) => events.push(e));
    const a = await from(l.port!, '127.0.0.71');
    expect(await a.request('x')).toBe('x');
    const b = await from(l.port!, '127.0.0.71');
    expect(await b.request('x')).toBe('x');
    expect(events.map((e) => e.connections)).toContain(2);
  });
});
