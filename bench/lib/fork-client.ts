/**
 * A load-client child process (bench/lib/*-client.ts): `node --import tsx <script>`, optionally
 * pinned with `taskset`, given its config as JSON in one environment variable, talking to this
 * process over IPC (advanced serialization) in messages tagged by `t`; stdout and stderr inherited.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { nodeCommand } from './node-command.js';
import { treeStats } from './proc-stats.js';

/** A message between a client process and its parent, tagged by its type `t`. */
export interface Tagged {
  readonly t: string;
}

/** A client process started by {@link forkClient}, sending messages of type `M` and taking commands of type `C`. */
export interface ForkedClient<M extends Tagged, C extends Tagged = Tagged> {
  readonly child: ChildProcess;
  /** Resolves once the process has exited, however it ended. */
  readonly exited: Promise<void>;
  /**
   * The first message of type `t` the process sent, before or after this call; rejects if it
   * exits without sending one.
   */
  message<T extends M['t']>(t: T): Promise<Extract<M, { t: T }>>;
  /** Call `handler` with every message of type `t` from now on. */
  on<T extends M['t']>(t: T, handler: (m: Extract<M, { t: T }>) => void): void;
  /** Send a command while the IPC channel is open (a process that has gone is not sent to). */
  send(command: C): void;
  /** CPU seconds the process and its descendants have used so far. */
  cpuSeconds(): number;
  /** SIGKILL the process unless it has exited. */
  kill(): void;
  /** Send `{ t: 'close' }` and wait for the process to exit; SIGKILL it after `killAfterMs` when given. */
  close(killAfterMs?: number): Promise<void>;
}

/** Options of {@link forkClient}. */
export interface ForkClientOptions {
  /** The process's name in errors, e.g. `load client 2`. Default: the script's file name. */
  name?: string;
  /** Pin the process to these CPUs (`taskset -c`). */
  cpus?: string;
}

interface Slot<M> {
  readonly promise: Promise<M>;
  resolve(m: M): void;
  reject(err: Error): void;
}

/** Start `script` with `envVar` = JSON of `config` and an IPC channel. */
export function forkClient<M extends Tagged, C extends Tagged = Tagged>(script: string, envVar: string, config: unknown, o: ForkClientOptions = {}): ForkedClient<M, C> {
  const name = o.name ?? script.slice(script.lastIndexOf('/') + 1);
  const { command, args } = nodeCommand(script, o.cpus);
  const child = spawn(command, args, {
    env: { ...process.env, [envVar]: JSON.stringify(config) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    serialization: 'advanced',
  });
  const gone = (): boolean => child.exitCode !== null || child.signalCode !== null;
  const exitError = (t: string): Error => new Error(`${name} exited (code ${child.exitCode}, signal ${child.signalCode}) before sending '${t}'`);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  // Its IPC channel closed too: a message sent just before it exited can still arrive after
  // 'exit', so a missing message is decided only at 'close' (as bench/lib/native-client.ts does).
  let closed = false;

  const slots = new Map<string, Slot<M>>();
  const slot = (t: string): Slot<M> => {
    let s = slots.get(t);
    if (!s) {
      let resolve!: (m: M) => void;
      let reject!: (err: Error) => void;
      const promise = new Promise<M>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      promise.catch(() => {}); // a message nobody waits for is no unhandled rejection
      s = { promise, resolve, reject };
      slots.set(t, s);
      if (closed) reject(exitError(t));
    }
    return s;
  };
  const handlers = new Map<string, ((m: M) => void)[]>();
  child.on('message', (m: M) => {
    slot(m.t).resolve(m);
    for (const h of handlers.get(m.t) ?? []) h(m);
  });
  child.once('close', () => {
    closed = true;
    for (const [t, s] of slots) s.reject(exitError(t));
  });

  const kill = (): void => {
    if (!gone()) child.kill('SIGKILL');
  };
  return {
    child,
    exited,
    message: <T extends M['t']>(t: T) => slot(t).promise as Promise<Extract<M, { t: T }>>,
    on: <T extends M['t']>(t: T, handler: (m: Extract<M, { t: T }>) => void) => {
      const list = handlers.get(t) ?? [];
      list.push((m) => handler(m as Extract<M, { t: T }>));
      handlers.set(t, list);
    },
    send: (command) => {
      if (child.connected) child.send(command);
    },
    cpuSeconds: () => (child.pid ? treeStats(child.pid).cpuSeconds : 0),
    kill,
    close: async (killAfterMs) => {
      if (gone()) return;
      if (child.connected) child.send({ t: 'close' });
      const timer = killAfterMs === undefined ? undefined : setTimeout(kill, killAfterMs).unref();
      await exited;
      clearTimeout(timer);
    },
  };
}
