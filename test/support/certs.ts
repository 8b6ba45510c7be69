import { generate } from 'selfsigned';

/** A server certificate (ECDSA P-256, SHA-256) and a client certificate signed by the same key. */
export interface TestCerts {
  key: string;
  cert: string;
  clientKey: string;
  clientCert: string;
}

/** The certificate recipe every test uses: ECDSA P-256, SHA-256, usable for server and client auth. */
function options(altNames: { type: 2 | 7; value?: string; ip?: string }[]) {
  return {
    keyType: 'ec' as const,
    algorithm: 'sha256',
    extensions: [
      { name: 'basicConstraints' as const, cA: true },
      { name: 'keyUsage' as const, digitalSignature: true, keyCertSign: true },
      { name: 'extKeyUsage' as const, serverAuth: true, clientAuth: true },
      { name: 'subjectAltName' as const, altNames },
    ],
  };
}

let cached: Promise<TestCerts> | undefined;

/** One set of test certificates per test process (generation takes a few ms, but only once). */
export function testCerts(): Promise<TestCerts> {
  cached ??= generate([{ name: 'commonName', value: 'localhost' }], {
    ...options([
      { type: 2, value: 'localhost' },
      { type: 7, ip: '127.0.0.1' },
      { type: 7, ip: '::1' },
    ]),
    clientCertificate: { cn: 'device-1', keyType: 'ec' },
  }).then((p) => ({ key: p.private, cert: p.cert, clientKey: p.clientprivate!, clientCert: p.clientcert! }));
  return cached;
}

const byName = new Map<string, Promise<{ key: string; cert: string }>>();

/** A self-signed certificate for one DNS name (e.g. a second SNI name), once per process. */
export function certificateFor(name: string): Promise<{ key: string; cert: string }> {
  let c = byName.get(name);
  if (!c) {
    c = generate([{ name: 'commonName', value: name }], options([{ type: 2, value: name }])).then((p) => ({ key: p.private, cert: p.cert }));
    byName.set(name, c);
  }
  return c;
}
