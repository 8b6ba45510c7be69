/**
 * Hold N concurrent connections on the echo example and measure what they cost the server.
 *
 *   npm run build && node --import tsx bench/hold.ts --connections 50000 --workers 4 [--tcp] [--rate 1500]
 *
 * Starts `examples/echo.ts` with `--workers`, opens the connections from several load-client
 * processes (each under 20,000 sockets, source addresses spread over 127.x.y.z), checks one echo on
 * each, and reports: connected, failed, time to connect all, server RSS growth per connection and
 * server CPU per connection (summed over the server's process tree, read from /proc).
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { openConnections } from './lib/load.js';
import { treeStats } from './lib/proc-stats.js';

const { values } = parseArgs({
  options: {
    connections: { type: 'string', default: '50000' },
    workers: { type: 'string', default: '4' },
    distribution: { type: 'string' },
    rate: { type: 'string', default: '1500' },
    tcp: { type: 'boolean', default: false },
    processes: { type: 'string' },
  },
});
const connections = Number(values.connections);
const tls = !values.tcp;

const serverArgs = [
  '--import',
  'tsx',
  'examples/echo.ts',
  '--port',
  '0',
  '--workers',
  values.workers,
  '--max-connections',
  String(Math.ceil(connections * 1.2)),
  ...(tls ? ['--tls'] : []),
  ...(values.distribution ? ['--distribution', values.distribution] : []),
];
const server = spawn(process.execPath, serverArgs, { stdio: ['ignore', 'pipe', 'inherit'] });
const port = await new Promise<number>((resolve, reject) => {
  createInterface({ input: server.stdout! }).on('line', (line) => {
    const m = /listening on .*:(\d+)/.exec(line);
    if (m) resolve(Number(m[1]));
  });
  server.on('exit', (code) => reject(new Error(`echo server exited with ${code}`)));
});
const idle = treeStats(server.pid!);
console.log(`server up on port ${port}: ${idle.pids.length} processes, ${(idle.rssKiB / 1024).toFixed(0)} MiB RSS idle`);

let last = 0;
const result = await openConnections({
  port,
  tls,
  connections,
  rate: Number(values.rate),
  ...(values.processes ? { processes: Number(values.processes) } : {}),
  onProgress: (c, f) => {
    if (Date.now() - last > 5000) {
      last = Date.now();
      process.stdout.write(`  ${c} connected, ${f} failed\n`);
    }
  },
});
const held = treeStats(server.pid!);
const sorted = [...result.latencies].sort((a, b) => a - b);
const pct = (p: number): number => sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? Number.NaN;
const report = {
  transport: tls ? 'tls' : 'tcp',
  workers: values.workers,
  distribution: values.distribution ?? 'default',
  connections,
  connected: result.connected,
  failed: result.failed,
  errors: result.errors,
  secondsToConnectAll: result.ms / 1000,
  connectP50Ms: Number(pct(50).toFixed(1)),
  connectP99Ms: Number(pct(99).toFixed(1)),
  serverProcesses: held.pids.length,
  serverRssIdleMiB: Math.round(idle.rssKiB / 1024),
  serverRssHeldMiB: Math.round(held.rssKiB / 1024),
  rssKiBPerConnection: Number(((held.rssKiB - idle.rssKiB) / Math.max(1, result.connected)).toFixed(1)),
  serverCpuUsPerConnection: Math.round(((held.cpuSeconds - idle.cpuSeconds) / Math.max(1, result.connected)) * 1e6),
};
console.log(JSON.stringify(report, null, 2));
await result.close();
server.kill('SIGTERM');
await new Promise((resolve) => server.on('exit', resolve));
