/**
 * Two gateway nodes behind a real HAProxy (TCP mode, TLS passed through, `send-proxy-v2`): the
 * gateway reads the PROXY header (`proxyHeaderFrom`, as `--proxy-header` sets it), so each node
 * lists its devices with their own addresses, not the balancer's; a device that reconnects through
 * the balancer is taken over across the nodes as usual.
 */
import { afterEach, expect, it } from 'vitest';
import { MemoryExchangeHub } from '../src/memory-exchange-hub.js';
import { freePort, Haproxy, skipWithoutHaproxy } from '../../../test/support/haproxy.js';
import { DeviceClient } from './support/device-client.js';
import { startTestNode, stopGateways, token } from './support/gateway-harness.js';

let proxy: Haproxy | undefined;

afterEach(async () => {
  await stopGateways();
  await proxy?.stop();
  proxy = undefined;
});

it.skipIf(skipWithoutHaproxy)('two nodes behind HAProxy with send-proxy-v2: devices are listed with their own addresses', async () => {
  const hub = new MemoryExchangeHub();
  const a = await startTestNode({ hub, nodeId: 'gw-a', proxyHeaderFrom: ['127.0.0.1'] });
  const b = await startTestNode({ hub, nodeId: 'gw-b', proxyHeaderFrom: ['127.0.0.1'] });
  const front = await freePort();
  proxy = await Haproxy.start(
    () => `
global
  maxconn 200
defaults
  mode tcp
  timeout connect 2s
  timeout client 30s
  timeout server 30s
frontend devices
  bind 127.0.0.1:${front}
  default_backend gateways
backend gateways
  balance roundrobin
  server gw-a 127.0.0.1:${a.port} send-proxy-v2
  server gw-b 127.0.0.1:${b.port} send-proxy-v2
`,
    [['127.0.0.1', front]],
  );
  // Four devices, each from its own address; round robin puts two on each node.
  const devices = ['dev-1', 'dev-2', 'dev-3', 'dev-4'];
  const seen = new Map<string, string>();
  for (const [i, device] of devices.entries()) {
    const from = `127.0.0.${31 + i}`;
    const { client, welcome } = await DeviceClient.hello(front, device, token(device), from);
    seen.set(device, `${from}:${client.socket.localPort}`);
    expect(['gw-a', 'gw-b']).toContain(welcome.node);
  }
  const listed = [...(await a.gateway.devices()), ...(await b.gateway.devices())];
  expect(listed.map((d) => [d.device, d.remote]).sort()).toEqual([...seen.entries()].sort());
  expect((await a.gateway.devices()).length).toBeGreaterThan(0);
  expect((await b.gateway.devices()).length).toBeGreaterThan(0);

  // dev-1 reconnects through the balancer (it lands on the other node): the old session is taken over.
  const { client: again, welcome } = await DeviceClient.hello(front, 'dev-1', token('dev-1'), '127.0.0.39');
  const all = [...(await a.gateway.devices()), ...(await b.gateway.devices())].filter((d) => d.device === 'dev-1');
  await Promise.all([a.gateway.listener.waitForConnections('<=', 3), b.gateway.listener.waitForConnections('<=', 3)]);
  expect(all.find((d) => d.session === welcome.session)?.remote).toBe(`127.0.0.39:${again.socket.localPort}`);
});
