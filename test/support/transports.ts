import { rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import type { Listener, ListenerOptions } from '../../src/index.js';
import { testCerts } from './certs.js';
import { connectTcp, connectTls, once } from './clients.js';
import { MemoryTransport } from './memory-transport.js';

/**
 * One transport under test, as the shared suites see it (MQTT.js's abstract client suite pattern):
 * how to configure a listener on it and how to open a client connection to that listener.
 */
export interface TransportCase {
  readonly name: 'tcp' | 'tls' | 'unix' | 'memory';
  /** Fresh transport settings for one listener. */
  listenerOptions(): Promise<Pick<ListenerOptions, 'transport' | 'transportOptions'>>;
  /** A connected client stream (after the TLS handshake, for TLS). */
  connect(listener: Listener): Promise<Duplex>;
  /** Remove what the case created (socket files). */
  cleanup(): void;
}

let unixSeq = 0;

function tcpCase(): TransportCase {
  return {
    name: 'tcp',
    listenerOptions: async () => ({ transport: 'tcp', transportOptions: { host: '127.0.0.1', port: 0 } }),
    connect: (l) => connectTcp(l.port!),
    cleanup: () => {},
  };
}

function tlsCase(): TransportCase {
  return {
    name: 'tls',
    listenerOptions: async () => {
      const c = await testCerts();
      return { transport: 'tls', transportOptions: { host: '127.0.0.1', port: 0, key: c.key, cert: c.cert } };
    },
    connect: (l) => connectTls(l.port!),
    cleanup: () => {},
  };
}

function unixCase(): TransportCase {
  const paths: string[] = [];
  return {
    name: 'unix',
    listenerOptions: async () => {
      const path = join(tmpdir(), `corral-test-${process.pid}-${++unixSeq}.sock`);
      paths.push(path);
      return { transport: 'tcp', transportOptions: { path } };
    },
    connect: async (l) => {
      const a = l.address;
      if (a.family !== 'unix') throw new Error('not a unix listener');
      const s = net.connect({ path: a.path });
      await once(s, 'connect');
      return s;
    },
    cleanup: () => {
      for (const p of paths.splice(0)) rmSync(p, { force: true });
    },
  };
}

function memoryCase(): TransportCase {
  const transports = new Map<string, MemoryTransport>();
  return {
    name: 'memory',
    listenerOptions: async () => {
      const t = new MemoryTransport();
      transports.set(t.address, t);
      return { transport: t };
    },
    connect: async (l) => {
      const a = l.address;
      if (a.family !== 'memory') throw new Error('not a memory listener');
      return transports.get(a.address)!.connect();
    },
    cleanup: () => transports.clear(),
  };
}

/** Every transport the shared suites run over. */
export function transportCases(): TransportCase[] {
  return [tcpCase(), tlsCase(), unixCase(), memoryCase()];
}

let nameSeq = 0;

/** A listener name unique within this test process. */
export function uniqueName(prefix = 'test'): string {
  return `${prefix}-${process.pid}-${++nameSeq}`;
}
