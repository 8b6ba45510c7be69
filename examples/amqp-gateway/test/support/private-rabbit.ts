/**
 * A RabbitMQ node of a test's own, on loopback, for what would disturb every other test file on
 * the shared broker: a memory alarm blocks every publishing connection of the node it is raised on,
 * and vitest runs test files in parallel. The node is started from this machine's RabbitMQ
 * installation with a configuration, data and logs of its own in a temporary folder (removed by
 * {@link PrivateRabbit.stop}), no plugins, and free ports.
 *
 * Needs `rabbitmq-server` and `rabbitmqctl` on the PATH, run as root (the scripts hand the node to
 * the `rabbitmq` user, which must own its folder) or as the `rabbitmq` user.
 */
import { execFile } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { connect } from 'amqplib';

const run = promisify(execFile);

/** A port nothing listens on now (the kernel's pick; closed again at once). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Whether this process can start a node: the scripts are there and the user may run them. */
export async function canStartPrivateRabbit(): Promise<boolean> {
  const uid = process.getuid?.();
  if (uid === undefined) return false;
  try {
    await run('which', ['rabbitmq-server', 'rabbitmqctl']);
    if (uid === 0) return true;
    const { stdout } = await run('id', ['-u', 'rabbitmq']);
    return Number(stdout.trim()) === uid;
  } catch {
    return false;
  }
}

/** Whether process `pid` exists (signal 0 checks without sending anything). */
function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function chownTree(dir: string, uid: number, gid: number): void {
  chownSync(dir, uid, gid);
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) chownTree(p, uid, gid);
    else chownSync(p, uid, gid);
  }
}

export class PrivateRabbit {
  private constructor(
    /** The Erlang node name, for `rabbitmqctl -n`. */
    readonly node: string,
    /** amqp://guest:guest@127.0.0.1:<port> (guest may log in from loopback). */
    readonly url: string,
    private readonly dir: string,
  ) {}

  /** Starts a node and resolves once it accepts an AMQP connection (within `timeoutMs`). */
  static async start(timeoutMs = 60_000): Promise<PrivateRabbit> {
    const [amqpPort, distPort] = [await freePort(), await freePort()];
    const dir = mkdtempSync(path.join(os.tmpdir(), 'corral-rabbit-'));
    const node = `corral-test-${process.pid}-${amqpPort}@localhost`;
    const url = `amqp://guest:guest@127.0.0.1:${amqpPort}`;
    const rabbit = new PrivateRabbit(node, url, dir);
    try {
      writeFileSync(path.join(dir, 'rabbitmq.conf'), `listeners.tcp.local = 127.0.0.1:${amqpPort}\n`);
      writeFileSync(path.join(dir, 'enabled_plugins'), '[].\n');
      if (process.getuid?.() === 0) {
        const [{ stdout: uid }, { stdout: gid }] = await Promise.all([run('id', ['-u', 'rabbitmq']), run('id', ['-g', 'rabbitmq'])]);
        chownTree(dir, Number(uid.trim()), Number(gid.trim()));
      }
      await run('rabbitmq-server', ['-detached'], {
        timeout: 30_000,
        env: {
          ...process.env,
          RABBITMQ_NODENAME: node,
          RABBITMQ_DIST_PORT: String(distPort),
          RABBITMQ_CONFIG_FILE: path.join(dir, 'rabbitmq.conf'),
          RABBITMQ_ENABLED_PLUGINS_FILE: path.join(dir, 'enabled_plugins'),
          RABBITMQ_MNESIA_BASE: path.join(dir, 'mnesia'),
          RABBITMQ_LOG_BASE: path.join(dir, 'log'),
          RABBITMQ_PID_FILE: path.join(dir, 'node.pid'),
        },
      });
      // -detached returns before the node is up: it is up once it takes an AMQP connection.
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        try {
          const model = await connect(url, { timeout: 2_000 });
          await model.close();
          return rabbit;
        } catch (err) {
          if (Date.now() > deadline) throw new Error(`RabbitMQ node ${node} did not take a connection within ${timeoutMs} ms`, { cause: err });
          await new Promise((resolve) => setTimeout(resolve, 250));
        }
      }
    } catch (err) {
      await rabbit.stop();
      throw err;
    }
  }

  /** `rabbitmqctl -n <node> …args`; resolves with its output. */
  async ctl(args: readonly string[], timeoutMs = 30_000): Promise<string> {
    const { stdout } = await run('rabbitmqctl', ['-n', this.node, ...args], { timeout: timeoutMs });
    return stdout;
  }

  /**
   * Stops the node (its Erlang VM exits) and removes its folder. Safe on a node still booting
   * (which `rabbitmqctl` cannot reach until it has registered): it retries, and ends the VM by the
   * pid it wrote once it has, for up to `timeoutMs`.
   */
  async stop(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const pidFile = path.join(this.dir, 'node.pid');
    for (;;) {
      if (await this.ctl(['stop'], 30_000).then(() => true, () => false)) break;
      const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) : 0;
      if (pid > 0 && !isRunning(pid)) break;
      if (pid > 0) process.kill(pid, 'SIGTERM');
      if (Date.now() > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
