/**
 * bench/servers/bare-echo.ts plus what the reconnect-storm scenario needs; the echo, the
 * certificate and the server options are the same (one process, TLS).
 *
 * - stdin `cut`: destroy every connection at once; the listening socket stays. Answers
 *   `{"cut":n,"ms":…}`.
 * - BENCH_RECORD=<file>: record every handshake, written to <file> as JSON when stdin ends:
 *   `start` at 'connection' (bare Node starts the TLS handshake on every accepted socket at once),
 *   `open` at 'secureConnection', `fail` at 'tlsClientError', with the peer's address and port.
 */
import { writeFileSync } from 'node:fs';
import type net from 'node:net';
import { createInterface } from 'node:readline';
import tls from 'node:tls';
import { benchCertificate } from './certificate.js';

/** One recorded event: [kind, address, port, start (ms, wall clock), end (ms), detail]. */
export type BareRecord = [kind: 'start' | 'open' | 'fail', address: string, port: number, start: number, end: number, detail: string];

const recordFile = process.env.BENCH_RECORD;
const records: BareRecord[] = [];
const live = new Set<net.Socket>();

function echo(socket: net.Socket): void {
  live.add(socket);
  socket.on('close', () => live.delete(socket));
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

const server = tls.createServer({ ...(await benchCertificate()), minVersion: 'TLSv1.2' }, echo);
server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: tls.TLSSocket) => {
  if (!recordFile) return;
  const now = Date.now();
  records.push(['fail', socket.remoteAddress ?? '', socket.remotePort ?? 0, now, now, err.code ?? err.message]);
});
if (recordFile) {
  server.on('connection', (socket: net.Socket) => {
    const now = Date.now();
    records.push(['start', socket.remoteAddress ?? '', socket.remotePort ?? 0, now, now, '']);
  });
  server.on('secureConnection', (socket: tls.TLSSocket) => {
    const now = Date.now();
    records.push(['open', socket.remoteAddress ?? '', socket.remotePort ?? 0, now, now, '']);
  });
}
server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, () => {
  process.stdout.write(`${JSON.stringify({ port: (server.address() as net.AddressInfo).port })}\n`);
});
const cut = (): number => {
  const n = live.size;
  for (const s of [...live]) s.destroy();
  live.clear();
  return n;
};
const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (line === 'cut') {
    const t0 = Date.now();
    const n = cut();
    process.stdout.write(`${JSON.stringify({ cut: n, at: t0, ms: Date.now() - t0 })}\n`);
  }
});
rl.on('close', () => {
  if (recordFile) writeFileSync(recordFile, JSON.stringify(records));
  cut();
  server.close();
  process.exit(0);
});
