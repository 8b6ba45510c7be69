/**
 * How many connections Node accepts per turn of a busy event loop.
 *
 *   node --import tsx bench/accept-per-turn.ts [--sockets 1] [--turn-ms 50] [--connects 2000]
 *
 * A server process keeps its event loop busy (each turn, a setImmediate callback spins for
 * `--turn-ms`) while a client process (forked) opens `--connects` TCP connections, 100 every
 * 50 ms. The server counts the connections it accepts in each turn and prints the counts. With
 * `--sockets n` > 1 it listens on n sockets bound to the same port with `reusePort` (Node >= 22.12).
 *
 * Measured on 2026-12-06 (Node 20.20.2, libuv 1.46.0; Node 24.22.3, libuv 1.52.1): one socket,
 * one connection accepted per turn, on both; four `reusePort` sockets (Node 24), four per turn.
 * libuv accepts one connection per readiness of a listening socket per loop iteration (since
 * 1.45), so a process whose turns are long accepts at its turn rate, whatever its backlog.
 */
import { fork } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

if (process.argv[2] === '--client') {
  const port = Number(process.argv[3]);
  const connects = Number(process.argv[4]);
  const sockets: net.Socket[] = [];
  const timer = setInterval(() => {
    for (let i = 0; i < 100 && sockets.length < connects; i++) {
      const socket = net.connect(port, '127.0.0.1');
      socket.on('error', () => {});
      sockets.push(socket);
    }
    if (sockets.length >= connects) clearInterval(timer);
  }, 50);
  process.on('disconnect', () => {
    clearInterval(timer);
    for (const s of sockets) s.destroy();
  });
} else {
  const { values } = parseArgs({
    options: {
      sockets: { type: 'string', default: '1' },
      'turn-ms': { type: 'string', default: '50' },
      connects: { type: 'string', default: '2000' },
      turns: { type: 'string', default: '50' },
    },
  });
  const sockets = Number(values.sockets);
  const turnMs = Number(values['turn-ms']);
  const turns = Number(values.turns);
  let accepted = 0;
  let clientReady = false;
  const counts: number[] = [];
  const onConnection = (socket: net.Socket): void => {
    accepted++;
    socket.destroy();
  };
  const servers: net.Server[] = [];
  const listen = (port: number): Promise<number> => {
    const server = net.createServer({ pauseOnConnect: true }, onConnection);
    servers.push(server);
    return new Promise((resolve) =>
      server.listen({ port, host: '127.0.0.1', backlog: 1024, ...(sockets > 1 ? { reusePort: true } : {}) }, () =>
        resolve((server.address() as net.AddressInfo).port),
      ),
    );
  };
  const port = await listen(0);
  for (let i = 1; i < sockets; i++) await listen(port);
  const client = fork(fileURLToPath(import.meta.url), ['--client', String(port), values.connects], { execArgv: process.execArgv });
  client.on('spawn', () => (clientReady = true));
  const turn = (): void => {
    const end = Date.now() + turnMs;
    while (Date.now() < end) {
      // busy: the turn is the application's work
    }
    // Count from the first turn in which anything was accepted (the client takes a moment to start).
    if (clientReady && (accepted > 0 || counts.length > 0)) counts.push(accepted);
    accepted = 0;
    if (counts.length < turns) {
      setImmediate(turn);
      return;
    }
    client.disconnect();
    for (const s of servers) s.close();
    const total = counts.reduce((a, b) => a + b, 0);
    console.log(
      `${process.version} (libuv ${process.versions.uv}), ${sockets} listening socket(s), turns of ${turnMs} ms: ` +
        `accepted per turn ${counts.join(' ')}; ${total} in ${turns} turns (${Math.round((total * 1000) / (turns * turnMs))}/s)`,
    );
  };
  setImmediate(turn);
}
