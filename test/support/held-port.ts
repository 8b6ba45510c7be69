/** A loopback port held by a plain server of the test's own process, for the tests of port checks. */
import net from 'node:net';

/** A port (0: any) on 127.0.0.1 held by a plain server, with SO_REUSEPORT if asked (Node >= 22.12). */
export async function holdPort(port: number, reusePort = false): Promise<{ port: number; close: () => Promise<void> }> {
  const taken = net.createServer();
  await new Promise<void>((resolve) => taken.listen({ host: '127.0.0.1', port, ...(reusePort ? { reusePort: true } : {}) } as net.ListenOptions, resolve));
  return { port: (taken.address() as net.AddressInfo).port, close: () => new Promise<void>((resolve) => taken.close(() => resolve())) };
}
