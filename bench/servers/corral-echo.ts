/**
 * corral line-echo server for benchmarks, configured by the BENCH_SERVER environment variable
 * (JSON: listener options plus {@link EchoServerConfig}). Prints `{"port":…}` once listening;
 * answers the stdin line `info` with the listener's info() as one JSON line; stops on stdin end.
 * For the reconnect-storm scenario (one process, no `workers`):
 *
 * - `cut: true`: the stdin line `cut` destroys every connection at once (no drain, no
 *   close_notify: an outage as the devices see it); the process and its listening socket stay.
 *   Answers `{"cut":n,"at":…,"ms":…}`.
 * - `record: <file>`: record every handshake, written to <file> as JSON when stdin ends, each
 *   with the peer's address and port and wall-clock times: `start` when corral starts a handshake
 *   (the TLS transport's `handshake()`, wrapped: the diagnostics channels report a failed
 *   handshake only when it ends), `open` (corral:connection:open; its start is now − handshakeMs),
 *   `fail` (corral:handshake:error, at the failure) and `reject` (corral:overload:reject). With
 *   `record` and `tls` the transport is the same TlsTransport corral builds for `transport: 'tls'`,
 *   passed as an object, so the listener runs the same code.
 *
 * `port`, `ticketKeys` (hex) and `noDelay` go into `transportOptions`; stdin `usage` and `trace` answer with
 * its CPU and event-loop use (bench/servers/usage-trace.ts).
 */
import diagnosticsChannel from 'node:diagnostics_channel';
import {
  type Connection,
  type ConnectionOpenMessage,
  type HandshakeErrorMessage,
  type ListenerOptions,
  type OverloadRejectMessage,
  startListener,
  TlsTransport,
} from 'corral';
import { benchCertificate } from './certificate.js';
import { HandshakeRecorder } from './handshake-record.js';
import { LiveConnections } from './live-connections.js';
import { announcePort, answerStdin, readConfig } from './server-io.js';
import { UsageTrace, usageNow } from './usage-trace.js';

const { tls, cut, record, port, ticketKeys, noDelay, ...options } = readConfig<Partial<ListenerOptions>>();
const usage = new UsageTrace();
const live = cut ? new LiveConnections<Connection>() : undefined;
const recorder = record ? new HandshakeRecorder(record) : undefined;
if (recorder) {
  diagnosticsChannel.subscribe('corral:connection:open', (m) => {
    const { remote, handshakeMs } = m as ConnectionOpenMessage;
    if ('port' in remote) recorder.add('open', remote.address, remote.port, '', handshakeMs);
  });
  diagnosticsChannel.subscribe('corral:handshake:error', (m) => {
    const { remoteAddress, remotePort, kind } = m as HandshakeErrorMessage;
    recorder.add('fail', remoteAddress, remotePort, kind);
  });
  diagnosticsChannel.subscribe('corral:overload:reject', (m) => {
    const { remoteAddress, remotePort, reason } = m as OverloadRejectMessage;
    recorder.add('reject', remoteAddress, remotePort, reason);
  });
}

/** corral's TLS transport, recording when each handshake starts. */
class RecordingTlsTransport extends TlsTransport {
  override handshake(socket: Parameters<TlsTransport['handshake']>[0]): ReturnType<TlsTransport['handshake']> {
    recorder?.add('start', socket.remoteAddress, socket.remotePort);
    return super.handshake(socket);
  }
}

const cert = tls ? await benchCertificate() : undefined;
const transportOptions = {
  host: '127.0.0.1',
  port: port ?? 0,
  backlog: 4096,
  ...(noDelay ? { noDelay: true } : {}),
  ...(cert ?? {}),
  ...(tls && ticketKeys ? { ticketKeys: Buffer.from(ticketKeys, 'hex') } : {}),
};
const listener = await startListener({
  name: 'bench-echo',
  framing: 'line',
  protocol: {
    ...(live
      ? {
          onReady(conn: Connection) {
            live.add(conn);
          },
          onClose(conn: Connection) {
            live.delete(conn);
          },
        }
      : {}),
    onFrame(line, conn) {
      conn.sendFrame(line);
    },
  },
  ...(tls && recorder ? { transport: new RecordingTlsTransport(transportOptions) } : { transport: tls ? 'tls' : 'tcp', transportOptions }),
  ...options,
});
if (listener.role !== 'worker') {
  announcePort(listener.port!); // a TCP or TLS listener: it has a port
  answerStdin({ info: () => listener.info(), usage: usageNow, trace: () => ({ samples: usage.samples() }), ...(live ? { cut: () => live.cut() } : {}) }, async () => {
    recorder?.write();
    live?.cut();
    await listener.stop({ timeout: 1000 });
    process.exit(0);
  });
}
