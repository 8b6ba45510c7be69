/**
 * Gateway nodes for tests: a real TLS corral listener on 127.0.0.1 (port 0) with a `MemoryBroker`,
 * a silent logger and metrics without the default process collectors. Everything started here is
 * drained by {@link stopGateways}.
 */
import { pino } from 'pino';
import { generate } from 'selfsigned';
import { type Authenticate, deviceToken, hmacAuthenticate } from '../../src/auth.js';
import type { Broker } from '../../src/broker.js';
import type { Hello } from '../../src/device-protocol.js';
import { type Gateway, type GatewayOptions, startGateway } from '../../src/gateway.js';
import { MemoryBroker, type MemoryBrokerOptions } from '../../src/memory-broker.js';
import { type HubMessage, MemoryExchangeHub } from '../../src/memory-exchange-hub.js';
import { createMetrics, type GatewayMetrics } from '../../src/metrics.js';
import { closeAllDevices } from './device-client.js';

/** The HMAC secret test gateways accept by default. */
export const SECRET = 'test-secret';

/** A device's token under {@link SECRET}. */
export function token(device: string, secret = SECRET): string {
  return deviceToken(secret, device);
}

let certs: Promise<{ key: string; cert: string }> | undefined;

/** One ECDSA P-256 / SHA-256 certificate per test file. */
export function testCertificate(): Promise<{ key: string; cert: string }> {
  certs ??= generate([{ name: 'commonName', value: 'localhost' }], { keyType: 'ec', algorithm: 'sha256' }).then((p) => ({
    key: p.private,
    cert: p.cert,
  }));
  return certs;
}

/** A running test node. */
export interface TestNode<B extends Broker = MemoryBroker> {
  readonly gateway: Gateway;
  readonly broker: B;
  readonly hub: MemoryExchangeHub;
  readonly metrics: GatewayMetrics;
  readonly port: number;
}

/** What a test may change: any gateway option, and the memory broker's. */
export type TestNodeOptions = Partial<Omit<GatewayOptions, 'broker' | 'tls' | 'logger' | 'metrics'>> & {
  readonly hub?: MemoryExchangeHub;
  readonly brokerOptions?: Partial<MemoryBrokerOptions>;
};

const running: Gateway[] = [];
let nodes = 0;

/** Start a gateway node on a free port with a MemoryBroker on a fresh hub (or the one given). */
export function startTestNode(options: TestNodeOptions = {}): Promise<TestNode> {
  const { hub = new MemoryExchangeHub(), brokerOptions = {}, ...rest } = options;
  return startTestNodeWith(rest, (nodeId) => new MemoryBroker({ nodeId, hub, ...brokerOptions }), hub);
}

/** Start a gateway node on a free port with the broker `make` builds. */
export async function startTestNodeWith<B extends Broker>(
  options: Partial<Omit<GatewayOptions, 'broker' | 'tls' | 'logger' | 'metrics'>>,
  make: (nodeId: string) => B,
  hub = new MemoryExchangeHub(),
): Promise<TestNode<B>> {
  const nodeId = options.nodeId ?? `node-${process.pid}-${++nodes}`;
  const metrics = createMetrics({ defaultMetrics: false });
  let broker: B | undefined;
  const gateway = await startGateway({
    host: '127.0.0.1',
    port: 0,
    tls: await testCertificate(),
    authenticate: hmacAuthenticate({ current: SECRET }),
    logger: pino({ enabled: false }),
    ...options,
    nodeId,
    metrics,
    broker: () => (broker = make(nodeId)),
  });
  running.push(gateway);
  return { gateway, broker: broker!, hub, metrics, port: gateway.listener.port! };
}

/** Close every device client and drain every gateway started by the test. */
export async function stopGateways(): Promise<void> {
  await closeAllDevices();
  await Promise.all(running.splice(0).map((g) => g.drain()));
}

/** The value of a counter or gauge (summed over the series matching `labels`). */
export async function metric(metrics: GatewayMetrics, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = metrics.registry.getSingleMetric(name);
  if (m === undefined) throw new Error(`no metric ${name}`);
  const { values } = await m.get();
  let sum = 0;
  for (const v of values) {
    // Histograms report their buckets, sum and count: count the observations.
    const series = (v as { metricName?: string }).metricName;
    if (series !== undefined && series !== name && series !== `${name}_count`) continue;
    if (Object.entries(labels).every(([k, want]) => String(v.labels[k]) === want)) sum += v.value;
  }
  return sum;
}

/**
 * An `authenticate` whose answers the test gives: each call waits until the test lets it through
 * (the device id it names is accepted).
 */
export function gatedAuthenticate(): {
  authenticate: Authenticate;
  /** Resolves with the `n`th call (0-based) once it was made; `accept()` lets it through. */
  call(n: number): Promise<{ hello: Hello; accept(): void; refuse(): void }>;
} {
  const calls: { hello: Hello; accept(): void; refuse(): void }[] = [];
  const waiting: { n: number; resolve: (c: { hello: Hello; accept(): void; refuse(): void }) => void }[] = [];
  const authenticate: Authenticate = (hello) =>
    new Promise<string | undefined>((resolve) => {
      const call = { hello, accept: () => resolve(hello.device), refuse: () => resolve(undefined) };
      calls.push(call);
      for (let i = waiting.length - 1; i >= 0; i--) {
        if (waiting[i]!.n === calls.length - 1) waiting.splice(i, 1)[0]!.resolve(call);
      }
    });
  return {
    authenticate,
    call: (n) => (calls[n] ? Promise.resolve(calls[n]) : new Promise((resolve) => waiting.push({ n, resolve }))),
  };
}

/** Resolves with the next message put into `queue` on `hub` from now on. */
export function nextEnqueued(hub: MemoryExchangeHub, queue: string): Promise<HubMessage> {
  return new Promise((resolve) => {
    const on = (q: string, m: HubMessage): void => {
      if (q !== queue) return;
      hub.off('enqueue', on);
      resolve(m);
    };
    hub.on('enqueue', on);
  });
}
