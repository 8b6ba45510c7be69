import { type ProtocolHandler, startListener } from 'corral';

// One handler object, shared by every connection: send each line back.
const echo: ProtocolHandler = {
  async onFrame(line, conn) {
    // sendFrame adds the line ending back. If the peer reads slower than it writes,
    // wait: nothing else is delivered to this connection until the promise settles.
    if (!conn.sendFrame(line)) await conn.drained();
  },
};

async function main(): Promise<void> {
  const listener = await startListener({
    name: 'echo',
    transportOptions: { host: '127.0.0.1', port: 5555 },
    protocol: echo,
    framing: 'line', // one frame per line, \n or \r\n
    maxConnections: 10_000, // beyond this, new sockets wait, paused
  });
  console.log(`echo listening on port ${listener.port}`);

  process.once('SIGTERM', async () => {
    const result = await listener.stop(); // refuse new clients, let replies in flight finish, close
    console.log(`stopped: ${result.closedGracefully} closed, ${result.forced} forced`);
    process.exit(0);
  });
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
