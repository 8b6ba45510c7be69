/**
 * A listener's sessions resume only on listeners of the same name: corral gives each listener a
 * session id context derived from its name, on `transport: 'tls'` and on a `TlsTransport` object
 * alike. Two listeners given the same ticket keys but different trust settings must not resume each
 * other's sessions: a resumed session carries its client-certificate verdict with it, so a
 * certificate one listener accepted would count as verified by the other.
 *
 * Also pinned: after `update()` changes `ca`, a session made before still resumes, with the verdict
 * it was made with (until `sessionTimeout`), unless the update sets a new `sessionIdContext`.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { TlsTransport } from '../../src/index.js';
import { certificateFor, testCerts } from '../support/certs.js';
import { cleanUp, objectListener, visit } from './sessions.js';

afterEach(cleanUp);

describe.each(['TLSv1.3', 'TLSv1.2'] as const)('session id context of a TlsTransport object, over %s', (version) => {
  const v = { maxVersion: version, minVersion: version } as const;

  it('a session from one listener does not resume on another with other trust settings and the same ticket keys', async () => {
    const c = await testCerts();
    const otherCa = await certificateFor('other-ca.example');
    const ticketKeys = randomBytes(48);
    const server = { host: '127.0.0.1', port: 0, key: c.key, cert: c.cert, ticketKeys };
    // A trusts the devices' CA; B asks for a certificate but trusts another CA (and lets the
    // client in unverified, to report what it thinks of it).
    const a = await objectListener(new TlsTransport({ ...server, requestCert: true, ca: [c.cert] }));
    const b = await objectListener(new TlsTransport({ ...server, requestCert: true, rejectUnauthorized: false, ca: [otherCa.cert] }));
    const device = { key: c.clientKey, cert: c.clientCert };

    const onA = await visit(a, { ...v, ...device });
    expect(onA.authorized).toBe(true);
    expect((await visit(a, { ...v, ...device, session: onA.session })).resumed).toBe(true);
    const onB = await visit(b, { ...v, ...device, session: onA.session });
    expect(onB.resumed).toBe(false);
    expect(onB.authorized).toBe(false);
  });

  it('a sessionIdContext set in the options is kept: listeners that set the same one share sessions', async () => {
    const c = await testCerts();
    const server = { host: '127.0.0.1', port: 0, key: c.key, cert: c.cert, ticketKeys: randomBytes(48), sessionIdContext: 'one-service' };
    const a = await objectListener(new TlsTransport(server));
    const b = await objectListener(new TlsTransport(server));
    const first = await visit(a, v);
    expect((await visit(b, { ...v, session: first.session })).resumed).toBe(true);
  });

  it('after update() changes ca, a session made before resumes with its old verdict until a new sessionIdContext is set', async () => {
    const c = await testCerts();
    const otherCa = await certificateFor('other-ca.example');
    const transport = new TlsTransport({
      host: '127.0.0.1',
      port: 0,
      key: c.key,
      cert: c.cert,
      ticketKeys: randomBytes(48),
      requestCert: true,
      rejectUnauthorized: false,
      ca: [c.cert],
    });
    const l = await objectListener(transport);
    const device = { key: c.clientKey, cert: c.clientCert };
    const first = await visit(l, { ...v, ...device });
    expect(first.authorized).toBe(true);

    // The device's CA is no longer trusted: a full handshake says so, a resumed one does not.
    transport.update({ ca: [otherCa.cert] });
    expect((await visit(l, { ...v, ...device })).authorized).toBe(false);
    const resumed = await visit(l, { ...v, ...device, session: first.session });
    expect(resumed.resumed).toBe(true);
    expect(resumed.authorized).toBe(true);

    // A new session id context in the same kind of update ends every session made before it.
    transport.update({ ca: [otherCa.cert], sessionIdContext: 'devices-ca-2' });
    const after = await visit(l, { ...v, ...device, session: first.session });
    expect(after.resumed).toBe(false);
    expect(after.authorized).toBe(false);
  });
});
