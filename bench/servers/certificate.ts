import { generate } from 'selfsigned';

/** The certificate every benchmark server uses: ECDSA P-256, signed with SHA-256. */
export async function benchCertificate(): Promise<{ key: string; cert: string }> {
  const pems = await generate([{ name: 'commonName', value: 'localhost' }], { keyType: 'ec', algorithm: 'sha256' });
  return { key: pems.private, cert: pems.cert };
}
