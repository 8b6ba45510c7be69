/**
 * `acceptors`: several listening sockets on one port in one process (SO_REUSEPORT), since Node
 * accepts one connection per listening socket per turn of the event loop. Checked on the kernel's
 * own list of listening sockets (/proc/net/tcp), with real connections on every one.
 */
import type net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { InvalidOptionError, type Listener, ListenError, startListener, supportsReusePort, TcpTransport } from '../../src/index.js';
import { connectTcp, LineClient } from '../support/clients.js';
import { holdPort } from '../support/held-port.js';
import { echoProtocol } from '../support/protocols.js';
import { uniqueName } from '../support/transports.js';
import { listeningSockets } from '../support/listening-sockets.js';

let started: Listener[] = [];
let sockets: net.Socket[] = [];

afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(started.splice(0).map((l) => (l.status === 'stopped' ? undefined : l.stop({ timeout: 500 }))));
});


describe('acceptors', () => {
  it('rejects a count that is not an integer from 1 to 64, and more than 1 on a Unix socket', () => {
    for (const acceptors of [0, 1.5, 65, '2']) {
      expect(() => new TcpTransport({ acceptors } as never)).toThrow(InvalidOptionError);
    }
    expect(() => new TcpTransport({ path: '/tmp/corral-acceptors.sock', acceptors: 2 })).toThrow(/TCP port/);
    expect(() => new TcpTransport({ acceptors: 1 })).not.toThrow();
  });

  it.runIf(!supportsReusePort())('says that more than 1 needs SO_REUSEPORT where Node has none', () => {
    expect(() => new TcpTransport({ acceptors: 2 })).toThrow(/Node >= 22\.12/);
  });

  it.runIf(supportsReusePort() && process.platform === 'linux')(
    'on a port another process holds with SO_REUSEPORT: the start rejects (address in use) instead of sharing it; reusePort: true shares it, as asked',
    async () => {
      const taken = await holdPort(0, true);
      try {
        const port = taken.port;
        const start = (extra: object) =>
          startListener({ name: uniqueName('acceptors'), transport: 'tcp', transportOptions: { host: '127.0.0.1', port, acceptors: 2, ...extra }, framing: 'line', protocol: echoProtocol });
        const err = await start({}).then(
          (l) => (started.push(l), undefined),
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(ListenError);
        expect((err as ListenError).code).toBe('CORRAL_ADDRESS_IN_USE');
        expect(listeningSockets(port)).toBe(1);
        const sharing = await start({ reusePort: true });
        started.push(sharing);
        expect(listeningSockets(port)).toBe(3);
      } finally {
        await taken.close();
      }
    },
  );

  it.runIf(supportsReusePort() && process.platform === 'linux')(
    'opens that many listening sockets on one port, serves connections on each, and closes them all',
    async () => {
      const listener = await startListener({
        name: uniqueName('acceptors'),
        transport: 'tcp',
        transportOptions: { host: '127.0.0.1', port: 0, acceptors: 4 },
        framing: 'line',
        protocol: echoProtocol,
      });
      started.push(listener);
      const port = listener.port!;
      expect(listeningSockets(port)).toBe(4);
      // The kernel spreads connects over the four sockets by a hash of their addresses: with 40
      // (each from its own port) every one is very likely used; each must be echoed either way.
      const clients = await Promise.all(
        Array.from({ length: 40 }, async () => {
          const socket = await connectTcp(port);
          sockets.push(socket);
          return new LineClient(socket);
        }),
      );
      const answers = await Promise.all(clients.map((c, i) => c.request(`line ${i}`)));
      expect(answers).toEqual(clients.map((_, i) => `line ${i}`));
      await listener.suspend();
      expect(listeningSockets(port)).toBe(0);
      await listener.resume();
      expect(listeningSockets(port)).toBe(4);
      await listener.stop({ timeout: 500 });
      expect(listeningSockets(port)).toBe(0);
    },
  );
});
