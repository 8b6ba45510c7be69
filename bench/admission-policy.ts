/**
 * Which admission policy recovers best from a reconnect storm? Runs the same storm against a
 * single-process corral TLS echo server with each policy, in one run, and prints a table.
 *
 *   npm run build && node --import tsx bench/admission-policy.ts [--devices 6000]
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import type { ListenerInfo } from '../src/index.js';
import { treeStats } from './lib/proc-stats.js';
import { runStorm } from './lib/storm.js';

const { values } = parseArgs({
  options: {
    devices: { type: 'string', default: '6000' },
    policies: { type: 'string', default: 'fifo,lifo,adaptive' },
    target: { type: 'string' },
  },
});
const devices = Number(values.devices);

async function server(admission: string) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'bench/servers/corral-echo.ts'], {
    env: { ...process.env, BENCH_SERVER: JSON.stringify({
        tls: true,
        admission,
        maxConnections: 30_000,
        maxWaiting: 15_000,
        ...(values.target ? { adaptiveTarget: Number(values.target) } : {}),
      }) },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout! });
  const next = () => new Promise<string>((resolve) => lines.once('line', resolve));
  const { port } = JSON.parse(await next()) as { port: number };
  return {
    child,
    port,
    info: async () => {
      child.stdin!.write('info\n');
      return JSON.parse(await next()) as ListenerInfo;
    },
    stop: async () => {
      child.stdin!.end();
      await new Promise((r) => child.on('exit', r));
    },
  };
}

const rows = [];
for (const policy of values.policies.split(',')) {
  const s = await server(policy);
  const cpu0 = treeStats(s.child.pid!).cpuSeconds;
  const storm = await runStorm({ port: s.port, devices, processes: 2 });
  const info = await s.info();
  const cpu = treeStats(s.child.pid!).cpuSeconds - cpu0;
  await storm.close();
  await s.stop();
  const row = {
    policy,
    devices,
    connected: storm.connected,
    allBackS: Number((storm.allBackMs / 1000).toFixed(1)),
    attemptsPerDevice: Number(storm.attemptsPerDevice.toFixed(2)),
    serverHandshakes: info.opened,
    wastedHandshakes: info.opened - storm.connected,
    wastedPct: Number((((info.opened - storm.connected) / Math.max(1, info.opened)) * 100).toFixed(1)),
    rejected: info.rejected,
    handshakeFailures: info.handshakeFailures,
    serverCpuS: Number(cpu.toFixed(1)),
  };
  console.log(JSON.stringify(row));
  rows.push(row);
}
console.table(rows.map(({ rejected, handshakeFailures, ...r }) => r));
