import { type ProtocolHandler, startListener } from 'corral';

// One handler object, shared by every connection: send each line back.
const echo: ProtocolHandler = {
  async onFrame(line, conn) {
    // sendFrame adds the line ending back. If the peer reads slower than it writes,
    // wait: reading from this connection pauses until the promise settles.
    if (!conn.sendFrame(line)) await conn.drained();
  },
};

const listener = await startListener({
  name: 'echo',
  transportOptions: { host: '127.0.0.1', port: 5555 },
  protocol: echo,
  framing: 'line', // one frame per line, \n or \r\n
  maxConnections: 10_000, // beyond this, new sockets wait, paused and unread
});
console.log(`echo listening on port ${listener.port}`);

process.once('SIGTERM', async () => {
  const result = await listener.stop(); // refuse new clients, close the live ones
  console.log(`stopped: ${result.closedGracefully} closed, ${result.forced} forced`);
  process.exit(0);
});
