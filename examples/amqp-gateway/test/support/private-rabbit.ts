/**
 * A RabbitMQ node of a test's own, on loopback, for what would disturb every other test file on
 * the shared broker: a memory alarm blocks every publishing connection of the node it is raised on,
 * and vitest runs test files in parallel. The node is started from this machine's RabbitMQ
 * installation with a configuration, data, logs and crash dump of its own in a temporary folder
 * (removed by {@link PrivateRabbit.stop}), no plugins, and free ports.
 *
 * Needs `rabbitmq-server` and `rabbitmqctl` on the PATH, run as root (the scripts hand the node to
 * the `rabbitmq` user, which must own its folder) or as the `rabbitmq` user.
 *
 * The node is a detached Erlang VM: a test process ended by a signal (an interrupted run) never
 * reaches its `stop()`. So each node has a watchdog, a detached shell that checks every second
 * whether the test process is still alive and, once it is not, stops the node and removes its
 * folder; {@link PrivateRabbit.stop} ends the watchdog first.
 */
import { execFile, spawn } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { connect } from 'amqplib';
import { freePort } from '../../../../test/support/haproxy.js';

const run = promisify(execFile);

/** The most {@link PrivateRabbit.start} takes, failure and clean-up included (for hook timeouts). */
export const PRIVATE_RABBIT_START_MS = 30_000 + 45_000 + 30_000;

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

function chownTree(dir: string, uid: number, gid: number): void {
  chownSync(dir, uid, gid);
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) chownTree(p, uid, gid);
    else chownSync(p, uid, gid);
  }
}

const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export class PrivateRabbit {
  private constructor(
    /** The Erlang node name, for `rabbitmqctl -n`. */
    readonly node: string,
    /** amqp://guest:guest@127.0.0.1:<port> (guest may log in from loopback). */
    readonly url: string,
    private readonly dir: string,
  ) {}

  /** The watchdog's shell, while there is one. */
  private watchdog: number | undefined;

  /**
   * Starts the watchdog: a detached `sh` (its own process group, so a signal to the test run's
   * group does not end it) that outlives this process by at most a second plus the node's stop.
   */
  private watch(): void {
    const script =
      'while kill -0 "$1" 2>/dev/null; do sleep 1; done; ' +
      'rabbitmqctl -n "$2" stop "$3" >/dev/null 2>&1 || { p=$(cat "$3" 2>/dev/null) && kill -9 "$p"; }; rm -rf "$4"';
    const child = spawn('sh', ['-c', script, 'corral-rabbit-watchdog', String(process.pid), this.node, this.pidFile, this.dir], {
      detached: true,
      stdio: 'ignore',
    });
    child.unref();
    this.watchdog = child.pid;
  }

  private get pidFile(): string {
    return path.join(this.dir, 'node.pid');
  }

  /**
   * Starts a node and resolves once it accepts an AMQP connection; on failure the node (if it came
   * up at all) is stopped and its folder removed. Takes at most {@link PRIVATE_RABBIT_START_MS}.
   */
  static async start(): Promise<PrivateRabbit> {
    const [amqpPort, distPort] = [await freePort(), await freePort()];
    const dir = mkdtempSync(path.join(os.tmpdir(), 'corral-rabbit-'));
    const node = `corral-test-${process.pid}-${amqpPort}@localhost`;
    const url = `amqp://guest:guest@127.0.0.1:${amqpPort}`;
    const rabbit = new PrivateRabbit(node, url, dir);
    rabbit.watch();
    try {
      writeFileSync(path.join(dir, 'rabbitmq.conf'), `listeners.tcp.local = 127.0.0.1:${amqpPort}\n`);
      writeFileSync(path.join(dir, 'enabled_plugins'), '[].\n');
      const root = process.getuid?.() === 0;
      if (root) {
        const [{ stdout: uid }, { stdout: gid }] = await Promise.all([run('id', ['-u', 'rabbitmq']), run('id', ['-g', 'rabbitmq'])]);
        chownTree(dir, Number(uid.trim()), Number(gid.trim()));
      }
      // As the rabbitmq user, Debian's wrapper would write the shared node's startup_log: call the
      // script it wraps instead, when it is there.
      const direct = '/usr/lib/rabbitmq/bin/rabbitmq-server';
      await run(!root && existsSync(direct) ? direct : 'rabbitmq-server', ['-detached'], {
        timeout: 30_000,
        env: {
          ...process.env,
          RABBITMQ_NODENAME: node,
          RABBITMQ_DIST_PORT: String(distPort),
          RABBITMQ_CONFIG_FILE: path.join(dir, 'rabbitmq.conf'),
          RABBITMQ_ENABLED_PLUGINS_FILE: path.join(dir, 'enabled_plugins'),
          RABBITMQ_MNESIA_BASE: path.join(dir, 'mnesia'),
          RABBITMQ_LOG_BASE: path.join(dir, 'log'),
          RABBITMQ_PID_FILE: rabbit.pidFile,
          ERL_CRASH_DUMP: path.join(dir, 'erl_crash.dump'),
        },
      });
      // -detached returns before the node is up: it is up once its own status answers and it takes
      // an AMQP connection on its port.
      const deadline = Date.now() + 45_000;
      for (;;) {
        try {
          await rabbit.ctl(['status'], 5_000);
          const model = await connect(url, { timeout: 2_000 });
          await model.close();
          return rabbit;
        } catch (err) {
          if (Date.now() > deadline) throw new Error(`RabbitMQ node ${node} did not come up within 45 s`, { cause: err });
          await pause(250);
        }
      }
    } catch (err) {
      const log = rabbit.logTail();
      await rabbit.stop();
      throw log ? new Error(`${(err as Error).message}\nthe node's log ended:\n${log}`, { cause: err }) : err;
    }
  }

  /** The last lines of the node's log files (for a start that failed), or '' if there are none. */
  private logTail(lines = 30): string {
    try {
      const dir = path.join(this.dir, 'log');
      return readdirSync(dir)
        .filter((f) => f.endsWith('.log'))
        .map((f) => readFileSync(path.join(dir, f), 'utf8').split('\n').slice(-lines).join('\n'))
        .join('\n')
        .trim();
    } catch {
      return '';
    }
  }

  /** `rabbitmqctl -n <node> …args`; resolves with its output. */
  async ctl(args: readonly string[], timeoutMs = 20_000): Promise<string> {
    const { stdout } = await run('rabbitmqctl', ['-n', this.node, ...args], { timeout: timeoutMs });
    return stdout;
  }

  /** The node's OS process, once it has written its pid file (and only while that process is this node). */
  private pid(): number | undefined {
    if (!existsSync(this.pidFile)) return undefined;
    const pid = Number(readFileSync(this.pidFile, 'utf8').trim());
    if (!(pid > 0)) return undefined;
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(this.node) ? pid : undefined;
    } catch {
      return undefined; // gone
    }
  }

  /**
   * Stops the node and removes its folder, within about 30 s. `rabbitmqctl stop <pid file>` returns
   * once the VM has exited. A node still booting cannot be reached by `rabbitmqctl` until it has
   * registered: then the VM is ended by its pid, SIGTERM first and SIGKILL at the end.
   */
  async stop(): Promise<void> {
    if (this.watchdog !== undefined) {
      try {
        process.kill(-this.watchdog, 'SIGKILL'); // its group: the shell and its `sleep`
      } catch {
        // already gone
      }
      this.watchdog = undefined;
    }
    const deadline = Date.now() + 25_000;
    while (Date.now() < deadline) {
      const pid = this.pid();
      // With a pid file, `stop` waits for the file to appear: pass it only for a live node.
      const stopped = await this.ctl(pid === undefined ? ['stop'] : ['stop', this.pidFile], 10_000).then(
        () => true,
        () => false,
      );
      if (stopped || (pid === undefined && existsSync(this.pidFile))) break;
      if (pid !== undefined) {
        try {
          process.kill(pid, 'SIGTERM');
        } catch {
          // already gone
        }
      }
      await pause(500);
    }
    const left = this.pid();
    if (left !== undefined) {
      try {
        process.kill(left, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }

  /**
   * Stops RabbitMQ on the node, the Erlang VM staying up (`rabbitmqctl stop_app`): every client
   * connection is closed by the broker (320 CONNECTION_FORCED) and the port refuses new ones.
   */
  async stopApp(): Promise<void> {
    await this.ctl(['stop_app'], 60_000);
  }

  /** Starts RabbitMQ on the node again (`rabbitmqctl start_app`); durable queues come back with their persistent messages. */
  async startApp(): Promise<void> {
    await this.ctl(['start_app'], 60_000);
  }

  /** The node's active alarms, as `rabbit_alarm:get_alarms()` prints them (`[]`: none). */
  alarms(): Promise<string> {
    return this.ctl(['eval', 'rabbit_alarm:get_alarms().']);
  }
}
