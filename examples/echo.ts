// A line-echo server on corral's public API: every line a client sends comes back unchanged
// (a line ending in \r\n comes back ending in \n) — except `whoami`, answered with the client's
// address as corral sees it (behind a load balancer with --proxy-header: the original client's).
//
//   npm run example:echo -- --port 9443 --tls
//   openssl s_client -connect 127.0.0.1:9443 -quiet      (then type a line)
//
// Outside this repository, copy this file and `npm install corral selfsigned`; the imports stay.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { type Connection, type ListenerOptions, type ProtocolHandler, startListener } from 'corral';
import { generate } from 'selfsigned'; // only for --tls without --cert: a throwaway certificate

const USAGE = `usage: echo [--port <p>] [--host <h>] [--tls [--cert <file> --key <file>]] [--max-connections <n>]
            [--workers <n|auto>] [--distribution <reuseport|shared|primary>]
            [--proxy-header <cidr,...>] [--proxy-header-optional]

  --port <p>             TCP port to listen on; 0 picks a free one (default 5555)
  --host <h>             address to bind (default 127.0.0.1)
  --tls                  serve TLS; without --cert/--key, a self-signed certificate is made
  --cert <file>          PEM certificate chain (with --key; implies --tls)
  --key <file>           PEM private key (with --cert; implies --tls)
  --max-connections <n>  most connections at once; more clients wait, unread (default 1024)
  --workers <n|auto>     run over n worker processes (auto: cores and open-file limit decide)
  --distribution <d>     how workers share the port: reuseport, shared or primary
                         (default: reuseport where Node supports it, else shared)
  --proxy-header <cidrs> read a PROXY protocol header (v1 or v2, e.g. HAProxy's send-proxy)
                         from these load balancers (comma-separated CIDRs or addresses);
                         connections from anywhere else are refused
  --proxy-header-optional  with --proxy-header: the header may be missing, and other peers
                         connect directly
`;

/** Print what went wrong and the usage on stderr, and exit 2 (a usage error). */
function usageError(message: string): never {
  process.stderr.write(`echo: ${message}\n\n${USAGE}`);
  process.exit(2);
}

/** Parse a non-negative integer flag, or exit with a usage error. */
function integer(flag: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < min || n > max) usageError(`--${flag} must be an integer from ${min} to ${max}, got "${value}"`);
  return n;
}

// ---- command line ---------------------------------------------------------------------------
function parse() {
  try {
    return parseArgs({
      options: {
        port: { type: 'string', default: '5555' },
        host: { type: 'string', default: '127.0.0.1' },
        tls: { type: 'boolean', default: false },
        cert: { type: 'string' },
        key: { type: 'string' },
        'max-connections': { type: 'string' },
        workers: { type: 'string' },
        distribution: { type: 'string' },
        'proxy-header': { type: 'string' },
        'proxy-header-optional': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true, // an unknown flag, a missing value or a stray argument throws
    }).values;
  } catch (err) {
    return usageError((err as Error).message);
  }
}
const args = parse();
if (args.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
const port = integer('port', args.port, 0, 65535);
const maxConnections = args['max-connections'] === undefined ? undefined : integer('max-connections', args['max-connections'], 1, 2 ** 31 - 1);
if ((args.cert === undefined) !== (args.key === undefined)) usageError('--cert and --key go together');
const tls = args.tls || args.cert !== undefined;
const workers = args.workers === undefined ? undefined : args.workers === 'auto' ? 'auto' : integer('workers', args.workers, 1, 256);
const distribution = args.distribution;
if (distribution !== undefined && !['reuseport', 'shared', 'primary'].includes(distribution)) {
  usageError(`--distribution must be reuseport, shared or primary, got "${distribution}"`);
}

const proxyFrom = args['proxy-header']?.split(',').map((s) => s.trim()).filter((s) => s !== '');
if (proxyFrom !== undefined && proxyFrom.length === 0) usageError('--proxy-header needs at least one CIDR or address');
if (args['proxy-header-optional'] && proxyFrom === undefined) usageError('--proxy-header-optional needs --proxy-header');

// ---- TLS material ---------------------------------------------------------------------------
let certificate: { cert: string; key: string } | undefined;
if (tls && args.cert !== undefined && args.key !== undefined) {
  const read = (flag: string, file: string): string => {
    try {
      return readFileSync(file, 'utf8');
    } catch (err) {
      return usageError(`cannot read --${flag} ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
  };
  certificate = { cert: read('cert', args.cert), key: read('key', args.key) };
} else if (tls && process.env.ECHO_SELF_SIGNED) {
  // A worker process (see --workers): use the certificate the primary made, not a new one.
  certificate = JSON.parse(process.env.ECHO_SELF_SIGNED) as { cert: string; key: string };
} else if (tls) {
  // ECDSA P-256 signed with SHA-256: cheap handshakes. (selfsigned defaults to RSA with SHA-1.)
  const pems = await generate([{ name: 'commonName', value: 'localhost' }], { keyType: 'ec', algorithm: 'sha256' });
  certificate = { cert: pems.cert, key: pems.private };
  // Workers re-run this script: hand them this certificate through the environment they inherit.
  process.env.ECHO_SELF_SIGNED = JSON.stringify(certificate);
}

// ---- the protocol ---------------------------------------------------------------------------
// One handler object shared by every connection (see docs/protocols.md for classes and
// factories). With `framing: 'line'`, each frame is one line without its ending.
const echo: ProtocolHandler = {
  async onFrame(line, conn) {
    if (line.toString() === 'whoami') {
      // conn.remote is the client: the socket's peer, or the client a trusted PROXY header named.
      const who = describe(conn.remote);
      conn.sendFrame(conn.proxy ? `${who} (via ${describe(conn.proxy.peer)})` : who);
      return;
    }
    // sendFrame appends '\n'. It returns false once the peer stops reading: wait for the buffer
    // to drain. While this promise is pending corral reads nothing more from this peer.
    if (!conn.sendFrame(line)) await conn.drained();
  },
};

/** An address as `whoami` prints it: `127.0.0.1 50412`. */
function describe(a: Connection['remote']): string {
  return a.family === 'IPv4' || a.family === 'IPv6' ? `${a.address} ${a.port}` : a.family;
}

// ---- the listener ---------------------------------------------------------------------------
const options: ListenerOptions = {
  name: 'echo',
  protocol: echo,
  framing: 'line',
  ...(maxConnections === undefined ? {} : { maxConnections }),
  ...(workers === undefined ? {} : { workers }),
  ...(distribution === undefined ? {} : { distribution: distribution as 'reuseport' | 'shared' | 'primary' }),
  ...(proxyFrom === undefined ? {} : { proxyHeader: args['proxy-header-optional'] ? 'optional' : true, proxyHeaderFrom: proxyFrom }),
  ...(certificate === undefined
    ? { transport: 'tcp', transportOptions: { host: args.host, port } }
    : { transport: 'tls', transportOptions: { host: args.host, port, ...certificate } }),
};

const listener = await startListener(options).catch((err: Error) => {
  // A ListenError names the address that could not be bound and why (EADDRINUSE, EACCES, ...).
  process.stderr.write(`echo: ${err.message}\n`);
  return process.exit(1);
});
// With --workers this script also runs in every worker process, where startListener joined the
// primary's listener and serves until the primary stops it: only the primary prints and handles
// signals. (Not `await new Promise(() => {})` in workers: a worker that exits with a top-level
// await still pending gets a warning and exit code 13 from Node.)
if (listener.role !== 'worker') await primary();

async function primary(): Promise<void> {
  const host = args.host.includes(':') ? `[${args.host}]` : args.host;
  const pool = workers === undefined ? '' : `, ${(await listener.info()).workers.length} workers, ${(await listener.info()).distribution}`;
  console.log(`echo listening on ${host}:${listener.port} (${tls ? 'tls' : 'tcp'}${pool})`);

  // ---- shutdown -------------------------------------------------------------------------------
  // stop() refuses new clients, asks every connection to close, force-closes what is still open
  // at the deadline (`shutdownTimeout`, 5 s by default; see docs/draining.md), and reports.
  let stopping = false;
  async function shutdown(signal: NodeJS.Signals): Promise<void> {
    if (stopping) return; // under npm and tsx, one Ctrl-C can arrive twice
    stopping = true;
    const result = await listener.stop();
    console.log(`echo stopped on ${signal}: ${JSON.stringify(result)}`);
    process.exit(0);
  }
  process.on('SIGINT', shutdown);
  process.on('SIGTERM', shutdown);
}
