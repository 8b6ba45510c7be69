/**
 * The bare Node line-echo server corral is compared with: `net.createServer` / `tls.createServer`,
 * the same line framing (split on `\n`, answer each line), the same certificate, one process.
 * Configured by BENCH_SERVER (JSON: { tls?: boolean }); prints `{"port":…}`; stops on stdin end.
 * It is what a careful hand-written server looks like: no admission control, no limits.
 */
import net from 'node:net';
import { createInterface } from 'node:readline';
import tls from 'node:tls';
import { benchCertificate } from './certificate.js';

const { tls: secure } = JSON.parse(process.env.BENCH_SERVER ?? '{}') as { tls?: boolean };

function echo(socket: net.Socket): void {
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

const server = secure ? tls.createServer({ ...(await benchCertificate()), minVersion: 'TLSv1.2' }, echo) : net.createServer(echo);
server.on('tlsClientError', () => {});
server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, () => {
  process.stdout.write(`${JSON.stringify({ port: (server.address() as net.AddressInfo).port })}\n`);
});
createInterface({ input: process.stdin }).on('close', () => {
  server.close();
  process.exit(0);
});
