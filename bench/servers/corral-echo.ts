/**
 * corral line-echo server for benchmarks, configured by the BENCH_SERVER environment variable
 * (JSON: listener options plus `tls`). Prints `{"port":…}` once listening; answers the stdin line
 * `info` with the listener's info() as one JSON line; stops on stdin end.
 */
import { createInterface } from 'node:readline';
import { type ListenerOptions, startListener } from '../../src/index.js';
import { benchCertificate } from './certificate.js';

const { tls, ...options } = JSON.parse(process.env.BENCH_SERVER ?? '{}') as Partial<ListenerOptions> & { tls?: boolean };
const cert = tls ? await benchCertificate() : undefined;
const listener = await startListener({
  name: 'bench-echo',
  framing: 'line',
  protocol: {
    onFrame(line, conn) {
      conn.sendFrame(line);
    },
  },
  transport: tls ? 'tls' : 'tcp',
  transportOptions: { host: '127.0.0.1', port: 0, backlog: 4096, ...(cert ?? {}) },
  ...options,
});
if (listener.role !== 'worker') {
  process.stdout.write(`${JSON.stringify({ port: listener.port })}\n`);
  const rl = createInterface({ input: process.stdin });
  rl.on('line', async (line) => {
    if (line === 'info') process.stdout.write(`${JSON.stringify(await listener.info())}\n`);
  });
  rl.on('close', async () => {
    await listener.stop({ timeout: 1000 });
    process.exit(0);
  });
}
