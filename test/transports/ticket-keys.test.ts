/**
 * Session resumption for returning devices: tickets that stay valid across a restart with the same
 * keys, a list of keys in which the first encrypts and every key decrypts (this pins Node's
 * undocumented ticket-key callback of the secure context on each Node version corral supports),
 * keys kept across certificate reloads, and resumption with client certificates (mTLS needs a
 * session id context).
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { InvalidOptionError, TlsTransport } from '../../src/index.js';
import { testCerts } from '../support/certs.js';
import { uniqueName } from '../support/transports.js';
import { cleanUp, objectListener, tlsListener, visit } from './sessions.js';

afterEach(cleanUp);

const key = (): Buffer => randomBytes(48);

describe.each(['TLSv1.3', 'TLSv1.2'] as const)('session tickets over %s', (version) => {
  const v = { maxVersion: version, minVersion: version } as const;

  it('resume across a restart with the same key (and name); a different key means a full handshake', async () => {
    const k1 = key();
    const name = uniqueName('restart');
    const before = await tlsListener({ ticketKeys: k1 }, name);
    const first = await visit(before, v);
    expect(first.resumed).toBe(false);
    await before.stop({ timeout: 500 });
    const after = await tlsListener({ ticketKeys: k1 }, name);
    expect((await visit(after, { ...v, session: first.session })).resumed).toBe(true);
    await after.stop({ timeout: 500 });
    const stranger = await tlsListener({ ticketKeys: key() }, name);
    expect((await visit(stranger, { ...v, session: first.session })).resumed).toBe(false);
  });

  it('with a list of keys, the first encrypts and every key decrypts; an old ticket is renewed under the first', async () => {
    const [k1, k2] = [key(), key()];
    // Listeners of one service (one session id context), here side by side.
    const sessionIdContext = 'one-service';
    const old = await tlsListener({ ticketKeys: k1, sessionIdContext });
    const { session: underK1 } = await visit(old, v);
    const rotated = await tlsListener({ ticketKeys: [k2, k1], sessionIdContext });
    const renewed = await visit(rotated, { ...v, session: underK1 });
    expect(renewed.resumed).toBe(true);
    expect(renewed.session.equals(underK1)).toBe(false);
    // The renewed ticket is under k2: a listener that only knows k2 resumes it.
    const onlyK2 = await tlsListener({ ticketKeys: [k2], sessionIdContext });
    expect((await visit(onlyK2, { ...v, session: renewed.session })).resumed).toBe(true);
    // A fresh ticket from the rotated listener is under k2 too, not k1.
    const fresh = await visit(rotated, v);
    const onlyK1 = await tlsListener({ ticketKeys: [k1], sessionIdContext });
    expect((await visit(onlyK1, { ...v, session: fresh.session })).resumed).toBe(false);
    expect((await visit(onlyK2, { ...v, session: fresh.session })).resumed).toBe(true);
  });

  it('keeps its keys across a certificate reload', async () => {
    const c = await testCerts();
    const transport = new TlsTransport({ host: '127.0.0.1', port: 0, key: c.key, cert: c.cert });
    const l = await objectListener(transport, uniqueName('reload'));
    const { session } = await visit(l, v);
    // Reload the certificate and key: the ticket made before still resumes.
    transport.update({ key: c.key, cert: c.cert });
    expect((await visit(l, { ...v, session })).resumed).toBe(true);
  });

  it('resumes a client that presented a certificate (mutual TLS)', async () => {
    const c = await testCerts();
    const l = await tlsListener({ requestCert: true, ca: [c.cert], ticketKeys: key() });
    const device = { key: c.clientKey, cert: c.clientCert };
    const first = await visit(l, { ...v, ...device });
    expect(first.resumed).toBe(false);
    expect((await visit(l, { ...v, ...device, session: first.session })).resumed).toBe(true);
  });
});

describe('ticketKeys option', () => {
  it('rejects keys that are not 48 bytes, an empty list, and two keys with one name', async () => {
    const k = key();
    const same = Buffer.concat([k.subarray(0, 16), randomBytes(32)]);
    for (const ticketKeys of [Buffer.alloc(32), [], [k, same], ['not a buffer']]) {
      await expect(tlsListener({ ticketKeys: ticketKeys as Buffer[] })).rejects.toThrow(InvalidOptionError);
    }
  });
});
