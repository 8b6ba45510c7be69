// The device gateway as a command: TLS devices on one side, RabbitMQ (or the embedded in-process
// broker) on the other, and a small admin HTTP API. See docs/gateway.md.
//
//   npm run gateway                                  (embedded broker, self-signed certificate)
//   CORRAL_GATEWAY_AMQP_URL=amqp://guest:guest@127.0.0.1 npm run gateway -- --node-id gw-1 --workers 4 --uplink-queue devices.backend
//   CORRAL_GATEWAY_SECRET=<s> npm run simulate -- --port 8883 --devices 10 --rate 10 --msgs 5
//
// Installed (the packed package), the same commands are `corral-gateway` and `corral-simulate`,
// which run this file compiled to dist/cli.js.
//
// With --workers this script also runs in every worker process (corral re-runs the entry script,
// see docs/workers.md): everything up to startGateway runs everywhere, the rest in the primary.
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { generate } from 'selfsigned';
import { type AdminServer, startAdminServer } from './admin-server.js';
import { AmqpBroker } from './amqp-broker.js';
import { hmacAuthenticate } from './auth.js';
import { declareUplinkQueue } from './uplink-queue.js';
import { type Gateway, startGateway } from './gateway.js';
import { currentWorker } from 'corral';
import { createLogger, isLogLevel, LOG_LEVELS, moduleLogger } from './logger.js';
import { MemoryBroker } from './memory-broker.js';
import { createMetrics } from './metrics.js';

const USAGE = `usage: corral-gateway [--port <p>] [--host <h>] [--amqp-url-file <f>] [--node-id <id>] [--prefix <p>]
                      [--uplink-queue <q>] [--secret-file <f>] [--previous-secret-file <f>]
                      [--cert <file> --key <file>] [--admin-port <p>] [--admin-host <h>] [--admin-token-file <f>]
                      [--workers <n>] [--max-connections <n>] [--max-connecting <n>] [--connect-rate-per-source <r>[,<burst>]]
                      [--drain-delay <ms>] [--proxy-header <cidrs>]
                      [--log-level <l>]

  Credentials (the AMQP URL with its password, the device secrets, the admin token) come from the
  environment or from a file: a flag's value shows in the process list (ps) of every user of the
  machine. Each also has a flag (--amqp-url, --secret, …); a flag or a file wins over its
  environment variable, and a flag together with its file is a usage error.

  --port <p>             device TLS port; 0 picks a free one (default 8883)
  --host <h>             address devices connect to (default 127.0.0.1)
  --amqp-url-file <f>    file holding the RabbitMQ URL, e.g. amqp://user:pass@host:5672/vhost
                         (env CORRAL_GATEWAY_AMQP_URL); without one the embedded in-process broker
                         is used (one process only)
  --uplink-queue <q>     declare the durable queue <q> bound to every uplink (<prefix>.up, '#'): for a
                         first run against a fresh RabbitMQ, where nothing is bound and every uplink
                         is nacked "unroutable"; a back end declares and binds its own queues
  --node-id <id>         this node's id, unique among the gateway nodes on one broker: it names the
                         node's downlink queue (default: the host name)
  --prefix <p>           prefix of every exchange and queue name (default devices)
  --secret-file <f>      file holding the HMAC secret of the device tokens (env CORRAL_GATEWAY_SECRET;
                         default: a random one, printed at start)
  --previous-secret-file <f>
                         the secret before a rotation, still accepted (env CORRAL_GATEWAY_PREVIOUS_SECRET)
  --cert <file>          PEM certificate chain for the device port (with --key; default: self-signed)
  --key <file>           PEM private key (with --cert)
  --admin-port <p>       admin HTTP API port; 0 picks a free one (default 9100)
  --admin-host <h>       admin API address (default 127.0.0.1: keep it off the open network)
  --admin-token-file <f> file holding the bearer token for POST /devices/:id/commands
                         (env CORRAL_GATEWAY_ADMIN_TOKEN); without one commands are disabled
  --workers <n>          run the device listener over n worker processes (needs RabbitMQ)
  --max-connections <n>  most devices held, over all workers (default 60000)
  --max-connecting <n>   most connections in their TLS handshake or hello at once, over all workers (default 128)
  --connect-rate-per-source <r>[,<burst>]
                         connects a second (burst: at once, default r rounded up) one source address
                         may make; beyond, closed at accept. Default none (devices behind one NAT
                         share an address); set it where one address must not hold the set-up window
  --proxy-header <cidrs> behind a load balancer that sends a PROXY protocol header (HAProxy's
                         send-proxy-v2): read it from these balancers (comma-separated CIDRs or
                         addresses) so devices are known by their own addresses; connections from
                         anywhere else are refused
  --drain-delay <ms>     on SIGTERM, answer 503 on /healthz for this long before closing devices, so
                         a load balancer stops sending new ones first (default 0)
  --log-level <l>        ${LOG_LEVELS.join(', ')} (default info)
`;

/** Print what went wrong and the usage on stderr, and exit 2 (a usage error). */
function usageError(message: string): never {
  process.stderr.write(`corral-gateway: ${message}\n\n${USAGE}`);
  process.exit(2);
}

/** Parse an integer flag, or exit with a usage error. */
function integer(flag: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < min || n > max) usageError(`--${flag} must be an integer from ${min} to ${max}, got "${value}"`);
  return n;
}

/** `<rate>[,<burst>]`: a positive number a second, and a whole burst >= 1. */
function rateLimit(flag: string, value: string): { rate: number; burst: number } {
  const m = /^(\d+(?:\.\d+)?)(?:,(\d+))?$/.exec(value);
  const rate = Number(m?.[1]);
  const burst = m?.[2] === undefined ? Math.max(1, Math.ceil(rate)) : Number(m[2]);
  if (!m || !(rate > 0) || burst < 1) usageError(`--${flag} must be <rate>[,<burst>] (rate > 0 a second, burst a whole number >= 1), got "${value}"`);
  return { rate, burst };
}

// ---- command line ---------------------------------------------------------------------------
function parse() {
  try {
    return parseArgs({
      options: {
        port: { type: 'string', default: '8883' },
        host: { type: 'string', default: '127.0.0.1' },
        'amqp-url': { type: 'string' },
        'amqp-url-file': { type: 'string' },
        'node-id': { type: 'string' },
        prefix: { type: 'string', default: 'devices' },
        'uplink-queue': { type: 'string' },
        secret: { type: 'string' },
        'secret-file': { type: 'string' },
        'previous-secret': { type: 'string' },
        'previous-secret-file': { type: 'string' },
        cert: { type: 'string' },
        key: { type: 'string' },
        'admin-port': { type: 'string', default: '9100' },
        'admin-host': { type: 'string', default: '127.0.0.1' },
        'admin-token': { type: 'string' },
        'admin-token-file': { type: 'string' },
        workers: { type: 'string' },
        'max-connections': { type: 'string' },
        'max-connecting': { type: 'string' },
        'connect-rate-per-source': { type: 'string' },
        'drain-delay': { type: 'string', default: '0' },
        'proxy-header': { type: 'string' },
        'log-level': { type: 'string', default: 'info' },
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
const env = process.env;
const port = integer('port', args.port, 0, 65535);
const adminPort = integer('admin-port', args['admin-port'], 0, 65535);
const drainDelay = integer('drain-delay', args['drain-delay'], 0, 3_600_000);
const workers = args.workers === undefined ? undefined : integer('workers', args.workers, 1, 256);
const maxConnections = args['max-connections'] === undefined ? undefined : integer('max-connections', args['max-connections'], 1, 2 ** 31 - 1);
const maxConnecting = args['max-connecting'] === undefined ? undefined : integer('max-connecting', args['max-connecting'], 1, 1_000_000);
const connectionRatePerSource = args['connect-rate-per-source'] === undefined ? undefined : rateLimit('connect-rate-per-source', args['connect-rate-per-source']);
const proxyHeaderFrom = args['proxy-header']?.split(',').map((s) => s.trim()).filter((s) => s !== '');
if (proxyHeaderFrom !== undefined && proxyHeaderFrom.length === 0) usageError('--proxy-header needs at least one CIDR or address');
const logLevel = args['log-level'];
if (!isLogLevel(logLevel)) usageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}, got "${logLevel}"`);
const prefix = args.prefix;
if (!/^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$/.test(prefix) || prefix.length > 100) {
  usageError(`--prefix must be words of A-Z a-z 0-9 _ - separated by dots, got "${prefix}"`);
}
const nodeId = args['node-id'] ?? (hostname().replace(/[^A-Za-z0-9_-]+/g, '-').slice(0, 64) || 'gateway');
if (!/^[A-Za-z0-9_-]{1,64}$/.test(nodeId)) usageError(`--node-id must be 1–64 characters of A-Z a-z 0-9 _ -, got "${nodeId}"`);

// ---- credentials: a flag, a file or the environment -------------------------------------------
// A flag's value is in the command line, which every user of the machine can read (`ps`,
// /proc/<pid>/cmdline), in the primary and in every worker (they re-run this script with its
// arguments). A file can be readable by the gateway's user alone; /proc/<pid>/environ is readable
// by the same user (and root) only.
type Credential = 'amqp-url' | 'secret' | 'previous-secret' | 'admin-token';
const CREDENTIAL_ENV: Record<Credential, string> = {
  'amqp-url': 'CORRAL_GATEWAY_AMQP_URL',
  secret: 'CORRAL_GATEWAY_SECRET',
  'previous-secret': 'CORRAL_GATEWAY_PREVIOUS_SECRET',
  'admin-token': 'CORRAL_GATEWAY_ADMIN_TOKEN',
};

/** Credentials given as flags, for the notice below. */
const onCommandLine: string[] = [];

/** A credential: `--<name>`, else the content of the file `--<name>-file` names (trimmed), else its environment variable. */
function credential(name: Credential): string | undefined {
  const value = args[name];
  const file = args[`${name}-file`];
  if (value !== undefined && file !== undefined) usageError(`give --${name} or --${name}-file, not both`);
  if (value !== undefined) {
    if (value === '') usageError(`--${name} must not be empty`);
    onCommandLine.push(`--${name}`);
    return value;
  }
  if (file !== undefined) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8').trim();
    } catch (err) {
      return usageError(`cannot read --${name}-file ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
    if (text === '') usageError(`--${name}-file ${file} is empty`);
    return text;
  }
  return env[CREDENTIAL_ENV[name]] || undefined;
}

const amqpUrl = credential('amqp-url');
if (amqpUrl !== undefined && !/^amqps?:\/\//.test(amqpUrl)) usageError('--amqp-url must be an amqp:// or amqps:// URL');
if (workers !== undefined && amqpUrl === undefined) {
  usageError('--workers needs --amqp-url: worker processes cannot share the in-process broker');
}
const uplinkQueue = args['uplink-queue'];
if (uplinkQueue !== undefined) {
  if (amqpUrl === undefined) usageError('--uplink-queue needs --amqp-url: the embedded broker keeps the uplinks itself');
  if (!/^[A-Za-z0-9_.:-]{1,200}$/.test(uplinkQueue) || uplinkQueue.startsWith('amq.')) {
    usageError(`--uplink-queue must be 1–200 characters of A-Z a-z 0-9 _ . : - and not start with "amq.", got "${uplinkQueue}"`);
  }
}
if ((args.cert === undefined) !== (args.key === undefined)) usageError('--cert and --key go together');
const adminToken = credential('admin-token');
const previousSecret = credential('previous-secret');

/**
 * Which downlink queue this process owns (see topology.ts): the worker index in a worker, `primary`
 * for the primary of a pool (it holds no devices), `0` for a single process. Stable across restarts,
 * so a restarted process takes over the commands stranded in its queue.
 */
function brokerSlot(): string {
  const worker = currentWorker();
  if (worker !== undefined) return String(worker.index);
  return workers === undefined ? '0' : 'primary';
}

// ---- what the primary makes and the workers reuse -------------------------------------------
// Workers re-run this script with the same arguments and environment: a generated secret or
// certificate must come from the primary, through this variable, or every worker would make its own.
const SHARED_ENV = 'CORRAL_GATEWAY_GENERATED';
const inherited = env[SHARED_ENV] ? (JSON.parse(env[SHARED_ENV]) as { secret?: string; cert?: string; key?: string }) : {};
const generated: { secret?: string; cert?: string; key?: string } = {};

let secret = credential('secret') ?? inherited.secret;
if (secret === undefined) {
  secret = randomBytes(24).toString('hex'); // hex: never starts with '-', so it pastes into any CLI
  generated.secret = secret;
}

let certificate: { cert: string; key: string };
if (args.cert !== undefined && args.key !== undefined) {
  const read = (flag: string, file: string): string => {
    try {
      return readFileSync(file, 'utf8');
    } catch (err) {
      return usageError(`cannot read --${flag} ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
  };
  certificate = { cert: read('cert', args.cert), key: read('key', args.key) };
} else if (inherited.cert !== undefined && inherited.key !== undefined) {
  certificate = { cert: inherited.cert, key: inherited.key };
} else {
  // ECDSA P-256 signed with SHA-256: cheap handshakes. (selfsigned defaults to RSA with SHA-1.)
  const pems = await generate([{ name: 'commonName', value: 'localhost' }], { keyType: 'ec', algorithm: 'sha256' });
  certificate = { cert: pems.cert, key: pems.private };
  generated.cert = pems.cert;
  generated.key = pems.private;
}
if (Object.keys(generated).length > 0) env[SHARED_ENV] = JSON.stringify({ ...inherited, ...generated });

// ---- the gateway ----------------------------------------------------------------------------
const logger = createLogger({ level: logLevel, node: nodeId });
const log = moduleLogger(logger, 'cli');
const metrics = createMetrics(); // this process's registry: the gateway fills it, the admin API serves it
const mode = amqpUrl === undefined ? 'embedded' : `amqp ${withoutPassword(amqpUrl)}`;
if (amqpUrl === undefined) {
  process.stderr.write('no --amqp-url: using the embedded in-process broker (single process only; uplinks are kept in memory)\n');
}
const shown = onCommandLine.filter((flag) => flag !== '--amqp-url' || hasPassword(amqpUrl!));
if (shown.length > 0 && currentWorker() === undefined) {
  process.stderr.write(
    `${shown.join(', ')} on the command line: every user of this machine can read ${shown.length === 1 ? 'it' : 'them'} in the process list; ` +
      `use ${shown.map((flag) => `${flag}-file or ${CREDENTIAL_ENV[flag.slice(2) as Credential]}`).join(', ')} instead\n`,
  );
}

let gateway: Gateway;
try {
  gateway = await startGateway({
    nodeId,
    host: args.host,
    port,
    tls: certificate,
    authenticate: hmacAuthenticate({ current: secret, previous: previousSecret }),
    broker: () =>
      amqpUrl === undefined
        ? new MemoryBroker({ nodeId, prefix })
        : new AmqpBroker({
            url: amqpUrl,
            nodeId,
            prefix,
            slot: brokerSlot(),
            logger: moduleLogger(logger, 'broker'),
            // A worker corral (re)starts while RabbitMQ is unreachable waits for it instead of
            // exiting (five quick exits and corral stops the node). The primary connects first
            // (before forking), so a node started with no broker still fails fast.
            keepTryingAtStart: currentWorker() !== undefined,
          }),
    logger,
    metrics,
    ...(workers === undefined ? {} : { workers }),
    ...(maxConnections === undefined ? {} : { maxConnections }),
    ...(maxConnecting === undefined ? {} : { maxConnecting }),
    ...(connectionRatePerSource === undefined ? {} : { connectionRatePerSource }),
    ...(proxyHeaderFrom === undefined ? {} : { proxyHeaderFrom }),
  });
} catch (err) {
  // A ListenError names the address that could not be bound; a broker error says what failed.
  log.fatal({ err }, 'gateway failed to start');
  process.stderr.write(`corral-gateway: ${(err as Error).message}\n`);
  process.exit(1);
}

// In a worker process the listener joined the primary's and serves until the primary stops it.
// The admin API, the output and the signals belong to the primary. (Not `await new Promise(() => {})`
// in workers: a worker that exits with a top-level await still pending gets a warning and exit
// code 13 from Node.)
if (gateway.listener.role !== 'worker') await primary();

async function primary(): Promise<void> {
  // ---- a queue for the uplinks, when asked (startGateway declared the exchange) ------------
  if (amqpUrl !== undefined && uplinkQueue !== undefined) {
    try {
      await declareUplinkQueue({ url: amqpUrl, prefix, queue: uplinkQueue });
    } catch (err) {
      log.fatal({ err }, 'uplink queue failed');
      process.stderr.write(`corral-gateway: --uplink-queue ${uplinkQueue}: ${(err as Error).message}\n`);
      process.exit(1);
    }
  }

  // ---- admin API ------------------------------------------------------------------------------
  let admin: AdminServer;
  try {
    admin = await startAdminServer({
      host: args['admin-host'],
      port: adminPort,
      gateway,
      metrics,
      token: adminToken,
      logger: moduleLogger(logger, 'admin'),
    });
  } catch (err) {
    log.fatal({ err }, 'admin API failed to start');
    process.stderr.write(`corral-gateway: admin API on ${args['admin-host']}:${adminPort}: ${(err as Error).message}\n`);
    process.exit(1);
  }
  if (adminToken === undefined) {
    process.stderr.write('no --admin-token: POST /devices/:id/commands is disabled (403); a command may unlock a door\n');
  }
  if (amqpUrl !== undefined && uplinkQueue === undefined) {
    // A fresh RabbitMQ has no queue bound to <p>.up, and every uplink comes back unroutable.
    process.stderr.write(
      `no --uplink-queue: until a back end binds a queue to ${prefix}.up, every uplink is nacked "unroutable"; ` +
        `for a first run, start with --uplink-queue ${prefix}.backend (a durable queue bound with '#')\n`,
    );
  }

  // ---- ready ----------------------------------------------------------------------------------
  const host = args.host.includes(':') ? `[${args.host}]` : args.host;
  const pool = workers === undefined ? '' : `, ${workers} workers, ${(await gateway.listener.info()).distribution}`;
  const devicePort = gateway.listener.port ?? port;
  const shownSecret = generated.secret ?? '<your secret>';
  const simulateHost = args.host === '127.0.0.1' || args.host === '0.0.0.0' ? '' : ` --host ${args.host}`;
  // Run from src/cli.ts in a checkout (npm run gateway), or compiled from an installed package.
  const simulator = import.meta.url.endsWith('.ts') ? 'npm run simulate --' : 'npx corral-simulate';
  console.log(
    [
      `corral gateway listening on ${host}:${devicePort} (tls, node ${nodeId}${pool})`,
      `broker: ${amqpUrl === undefined ? 'embedded (in-process, no --amqp-url)' : withoutPassword(amqpUrl)}, prefix ${prefix}` +
        (uplinkQueue === undefined ? '' : `, uplink queue ${uplinkQueue} bound to ${prefix}.up`),
      `admin API on ${admin.url} (GET /metrics /healthz /devices; POST /devices/:id/commands ${adminToken === undefined ? 'disabled' : 'with the bearer token'})`,
      ...(generated.secret === undefined ? [] : [`device secret (generated, not stored anywhere): ${generated.secret}`]),
      `simulate devices: CORRAL_GATEWAY_SECRET=${shownSecret} ${simulator} --port ${devicePort}${simulateHost} --devices 10 --rate 10 --msgs 5`,
    ].join('\n'),
  );
  log.info({ port: devicePort, adminPort: admin.port, mode, prefix, workers: workers ?? 0 }, 'gateway ready');

  gateway.listener.on('fatal', (err) => {
    // Worker processes died more often than corral's restart intensity allows: the listener stopped.
    log.fatal({ err }, 'device listener gave up');
    process.exit(1);
  });

  // ---- drain on SIGTERM / SIGINT --------------------------------------------------------------
  let draining = false;
  async function drain(signal: NodeJS.Signals): Promise<void> {
    if (draining) return; // under npm and tsx, one Ctrl-C can arrive twice
    draining = true;
    admin.startDraining();
    console.log(`draining on ${signal}: /healthz answers 503${drainDelay > 0 ? `; closing devices in ${drainDelay} ms` : ''}`);
    log.info({ signal, drainDelay }, 'draining');
    if (drainDelay > 0) await new Promise((resolve) => setTimeout(resolve, drainDelay));
    const began = Date.now();
    try {
      await gateway.drain();
    } catch (err) {
      log.error({ err }, 'drain failed');
      process.exit(1);
    }
    await admin.close();
    console.log(`drained in ${Date.now() - began} ms; exiting`);
    log.info({ ms: Date.now() - began }, 'drained');
    process.exit(0);
  }
  process.on('SIGINT', drain);
  process.on('SIGTERM', drain);
}

/** Whether the URL carries a password. */
function hasPassword(url: string): boolean {
  try {
    return new URL(url).password !== '';
  } catch {
    return /:[^:@/]*@/.test(url);
  }
}

/** The URL without its password, for output and logs. */
function withoutPassword(url: string): string {
  try {
    const u = new URL(url);
    u.password = '';
    return u.toString();
  } catch {
    return url.replace(/:[^:@/]*@/, '@');
  }
}
