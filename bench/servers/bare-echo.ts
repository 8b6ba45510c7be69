/**
 * The bare Node line-echo server corral is compared with: `net.createServer` / `tls.createServer`,
 * the same line framing (split on `\n`, answer each line), the same certificate, one process.
 * It is what a careful hand-written server looks like: no admission control, no limits.
 * Configured by BENCH_SERVER (JSON, {@link EchoServerConfig}; other fields are ignored); prints
 * `{"port":…}`; stops on stdin end. For the reconnect-storm scenario:
 *
 * - `cut: true`: the stdin line `cut` destroys every connection at once; the listening socket
 *   stays. Answers `{"cut":n,"at":…,"ms":…}`.
 * - `record: <file>` (with `tls`): record every handshake, written to <file> as JSON when stdin
 *   ends: `start` at 'connection' (bare Node starts the TLS handshake on every accepted socket at
 *   once), `open` at 'secureConnection', `fail` at 'tlsClientError', with the peer's address and port.
 *
 * `honorCipherOrder: false`, as corral: both follow the client's cipher-suite preference, so both
 * negotiate the same suite (why it matters, measured: docs/transports.md, "Cipher suites").
 *
 * `port`, `ticketKeys` (hex) and `noDelay` are passed to `listen` and `tls.createServer`; stdin `usage` and
 * `trace` answer with its CPU and event-loop use (bench/servers/usage-trace.ts).
 */
import net from 'node:net';
import tls from 'node:tls';
import { benchCertificate } from './certificate.js';
import { HandshakeRecorder } from './handshake-record.js';
import { LiveConnections } from './live-connections.js';
import { announcePort, answerStdin, type EchoServerConfig, readConfig } from './server-io.js';
import { UsageTrace, usageNow } from './usage-trace.js';

const { tls: secure, cut, record, port, ticketKeys, noDelay }: EchoServerConfig = readConfig();
const usage = new UsageTrace();
const live = cut ? new LiveConnections<net.Socket>() : undefined;
const recorder = record ? new HandshakeRecorder(record) : undefined;

function echo(socket: net.Socket): void {
  if (live) {
    live.add(socket);
    socket.on('close', () => live.delete(socket));
  }
  let pending = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    pending += chunk;
    let i: number;
    while ((i = pending.indexOf('\n')) !== -1) {
      socket.write(`${pending.slice(0, i)}\n`);
      pending = pending.slice(i + 1);
    }
  });
  socket.on('error', () => socket.destroy());
}

const server = secure
  ? tls.createServer({ ...(await benchCertificate()), minVersion: 'TLSv1.2', honorCipherOrder: false, ...(ticketKeys ? { ticketKeys: Buffer.from(ticketKeys, 'hex') } : {}), ...(noDelay ? { noDelay: true } : {}) }, echo)
  : net.createServer({ ...(noDelay ? { noDelay: true } : {}) }, echo);
server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: tls.TLSSocket) => recorder?.add('fail', socket.remoteAddress, socket.remotePort, err.code ?? err.message));
if (recorder) {
  server.on('connection', (socket: net.Socket) => recorder.add('start', socket.remoteAddress, socket.remotePort));
  server.on('secureConnection', (socket: tls.TLSSocket) => recorder.add('open', socket.remoteAddress, socket.remotePort));
}
server.listen({ host: '127.0.0.1', port: port ?? 0, backlog: 4096 }, () => announcePort((server.address() as net.AddressInfo).port));
answerStdin({ usage: usageNow, trace: () => ({ samples: usage.samples() }), ...(live ? { cut: () => live.cut() } : {}) }, () => {
  recorder?.write();
  live?.cut();
  server.close();
  process.exit(0);
});
