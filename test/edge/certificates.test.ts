/**
 * Certificates replaced at run time over a worker pool: one `updateTransport` call on the primary;
 * new handshakes in every worker present the new certificate, a live connection stays, and a
 * session ticket issued before the change still resumes after it.
 */
import { X509Certificate } from 'node:crypto';
import type tls from 'node:tls';
import { afterEach, expect, it } from 'vitest';
import { certificateFor } from '../support/certs.js';
import { connectTls, LineClient } from '../support/clients.js';
import { Pool } from '../support/pool.js';

let pools: Pool[] = [];
let clients: LineClient[] = [];

afterEach(async () => {
  for (const c of clients) c.destroy();
  clients = [];
  for (const p of pools) p.kill();
  await Promise.all(pools.map((p) => p.exited));
  pools = [];
});

const fingerprint = (pem: string): string => new X509Certificate(pem).fingerprint256;
const served = (c: LineClient): string => (c.stream as tls.TLSSocket).getPeerCertificate().fingerprint256;

async function client(port: number, options: tls.ConnectionOptions = {}): Promise<LineClient> {
  const c = new LineClient(await connectTls(port, options));
  clients.push(c);
  return c;
}

it('updateTransport on the primary: every worker presents the new certificate, live connections stay, tickets still resume', async () => {
  const after = await certificateFor('renewed.test');
  const p = await Pool.start({ tls: true, distribution: 'primary' });
  pools.push(p);
  // A live connection on each worker, and a session ticket from before the change.
  const first = await connectTls(p.port);
  const ticket = new Promise<Buffer>((resolve) => first.once('session', resolve));
  const live = [new LineClient(first)];
  clients.push(live[0]!);
  live.push(await client(p.port));
  const livePids = new Set(await Promise.all(live.map((c) => c.request('pid'))));
  expect(livePids.size).toBe(2);
  // The pool's own certificate (its processes made it), the same on both workers.
  const before = served(live[0]!);
  expect(served(live[1]!)).toBe(before);
  expect(before).not.toBe(fingerprint(after.cert));
  const session = await ticket;

  await p.command('updateTransport', { key: after.key, cert: after.cert });

  // New handshakes, on both workers (least-loaded hand-off alternates), get the new certificate.
  const fresh = [await client(p.port), await client(p.port)];
  expect(new Set(await Promise.all(fresh.map((c) => c.request('pid'))))).toEqual(livePids);
  for (const c of fresh) expect(served(c)).toBe(fingerprint(after.cert));
  // The live connections are untouched.
  for (const c of live) expect(await c.request('still here')).toBe('still here');
  // A ticket from before the change resumes: the ticket keys carried into the new context.
  const resumed = await connectTls(p.port, { session });
  const r = new LineClient(resumed);
  clients.push(r);
  expect(resumed.isSessionReused()).toBe(true);
  expect(await r.request('resumed')).toBe('true');
});

it('a bad certificate is refused by the primary and nothing changes', async () => {
  const p = await Pool.start({ tls: true, distribution: 'shared' });
  pools.push(p);
  const before = served(await client(p.port));
  await expect(p.command('updateTransport', { key: 'not a key', cert: 'not a cert' })).rejects.toThrow(/transportOptions/);
  const c = await client(p.port);
  expect(await c.request('ok')).toBe('ok');
  expect(served(c)).toBe(before);
});
