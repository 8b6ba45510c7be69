/**
 * bench/servers/corral-echo.ts plus what the reconnect-storm scenario needs; the echo, the
 * certificate and the listener options are the same. Single process (no `workers`).
 *
 * - stdin `cut`: destroy every connection at once (no drain, no close_notify: an outage as the
 *   devices see it); the process and its listening socket stay. Answers `{"cut":n,"ms":…}`.
 * - BENCH_RECORD=<file>: record every handshake, written to <file> as JSON when stdin ends, each
 *   with the peer's address and port and wall-clock times: `start` when corral starts a handshake
 *   (the TLS transport's `handshake()`, wrapped: the diagnostics channels report a failed
 *   handshake only when it ends), `open` (corral:connection:open; its start is now − handshakeMs),
 *   `fail` (corral:handshake:error, at the failure) and `reject` (corral:overload:reject). With
 *   BENCH_RECORD the transport is the same TlsTransport corral builds for `transport: 'tls'`,
 *   passed as an object, so the listener runs the same code.
 */
import diagnosticsChannel from 'node:diagnostics_channel';
import { writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import {
  type Connection,
  type ConnectionOpenMessage,
  type HandshakeErrorMessage,
  type ListenerOptions,
  type OverloadRejectMessage,
  startListener,
  TlsTransport,
} from '../../src/index.js';
import { benchCertificate } from './certificate.js';

/** One recorded event: [kind, address, port, start (ms, wall clock), end (ms), detail]. */
export type HandshakeRecord = [kind: 'start' | 'open' | 'fail' | 'reject', address: string, port: number, start: number, end: number, detail: string];

const { tls, ...options } = JSON.parse(process.env.BENCH_SERVER ?? '{}') as Partial<ListenerOptions> & { tls?: boolean };
const recordFile = process.env.BENCH_RECORD;
const records: HandshakeRecord[] = [];
if (recordFile) {
  diagnosticsChannel.subscribe('corral:connection:open', (m) => {
    const { remote, handshakeMs } = m as ConnectionOpenMessage;
    const now = Date.now();
    if ('port' in remote) records.push(['open', remote.address, remote.port, now - handshakeMs, now, '']);
  });
  diagnosticsChannel.subscribe('corral:handshake:error', (m) => {
    const { remoteAddress, remotePort, kind } = m as HandshakeErrorMessage;
    const now = Date.now();
    records.push(['fail', remoteAddress ?? '', remotePort ?? 0, now, now, kind]);
  });
  diagnosticsChannel.subscribe('corral:overload:reject', (m) => {
    const { remoteAddress, remotePort, reason } = m as OverloadRejectMessage;
    const now = Date.now();
    records.push(['reject', remoteAddress ?? '', remotePort ?? 0, now, now, reason]);
  });
}

/** corral's TLS transport, recording when each handshake starts. */
class RecordingTlsTransport extends TlsTransport {
  override handshake(socket: Parameters<TlsTransport['handshake']>[0]): ReturnType<TlsTransport['handshake']> {
    const now = Date.now();
    records.push(['start', socket.remoteAddress ?? '', socket.remotePort ?? 0, now, now, '']);
    return super.handshake(socket);
  }
}

const live = new Set<Connection>();
const cert = tls ? await benchCertificate() : undefined;
const transportOptions = { host: '127.0.0.1', port: 0, backlog: 4096, ...(cert ?? {}) };
const listener = await startListener({
  name: 'bench-echo',
  framing: 'line',
  protocol: {
    onReady(conn) {
      live.add(conn);
    },
    onFrame(line, conn) {
      conn.sendFrame(line);
    },
    onClose(conn) {
      live.delete(conn);
    },
  },
  ...(tls && recordFile ? { transport: new RecordingTlsTransport(transportOptions) } : { transport: tls ? 'tls' : 'tcp', transportOptions }),
  ...options,
});
const cut = (): number => {
  const n = live.size;
  for (const conn of [...live]) conn.destroy();
  live.clear();
  return n;
};
process.stdout.write(`${JSON.stringify({ port: listener.port })}\n`);
const rl = createInterface({ input: process.stdin });
rl.on('line', async (line) => {
  if (line === 'info') process.stdout.write(`${JSON.stringify(await listener.info())}\n`);
  else if (line === 'cut') {
    const t0 = Date.now();
    const n = cut();
    process.stdout.write(`${JSON.stringify({ cut: n, at: t0, ms: Date.now() - t0 })}\n`);
  }
});
rl.on('close', async () => {
  if (recordFile) writeFileSync(recordFile, JSON.stringify(records));
  cut();
  await listener.stop({ timeout: 1000 });
  process.exit(0);
});
