/**
 * The gateway as a user installs it: corral and the gateway packed with `npm pack` (the gateway's
 * `prepack` builds its dist/), both tarballs installed into an empty folder with
 * `npm install <tarballs>` (from npm's cache, or the registry for what the cache lacks), and the
 * installed commands run with `npx`: `corral-gateway` with the embedded broker serves
 * `corral-simulate`; with RabbitMQ, `--workers 2` runs every process from the compiled JavaScript,
 * with the broker URL read from a file and `--uplink-queue` binding a queue on a fresh prefix.
 * No TypeScript toolchain is installed or loaded.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { topology } from '../src/topology.js';
import { AMQP_URL, deleteTopology, describeRabbit, uniquePrefix, withChannel } from './support/rabbit.js';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const GATEWAY = join(ROOT, 'examples', 'amqp-gateway');

let dir: string | undefined;
let app = '';

/** The environment of the installed commands: none of this repository's tools, settings or secrets. */
function userEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('CORRAL_') || k.startsWith('npm_') || k === 'NODE_OPTIONS') continue;
    env[k] = v;
  }
  // The Node that runs this test first (npx and the commands run on it too), and nothing of this
  // repository (its node_modules/.bin holds tsx, tsup and the workspace's own corral-gateway link).
  const path = (process.env.PATH ?? '').split(delimiter).filter((p) => p !== '' && !resolve(p).startsWith(ROOT));
  env.PATH = [dirname(process.execPath), ...path].join(delimiter);
  return { ...env, ...extra };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'corral-gateway-package-'));
  // corral's tarball packs its dist/ as it is (`npm test` builds it first); build it only if missing.
  if (!existsSync(join(ROOT, 'dist', 'index.js'))) await run('npm', ['run', 'build'], { cwd: ROOT, timeout: 60_000 });
  await run('npm', ['pack', '--silent', '--pack-destination', dir], { cwd: ROOT, timeout: 60_000 });
  await run('npm', ['pack', '--silent', '--pack-destination', dir], { cwd: GATEWAY, timeout: 60_000 });
  const tarballs = readdirSync(dir).filter((f) => f.endsWith('.tgz')).sort();
  expect(tarballs).toEqual(['corral-0.1.0.tgz', 'corral-amqp-gateway-0.1.0.tgz']);

  app = join(dir, 'app');
  await run('mkdir', [app]);
  writeFileSync(join(app, 'package.json'), `${JSON.stringify({ name: 'gateway-user', version: '1.0.0', private: true }, null, 2)}\n`);
  await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error', ...tarballs.map((t) => join(dir!, t))], {
    cwd: app,
    env: userEnv(),
    timeout: 90_000,
  });
}, 120_000);

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A process started with `npx`, leading its own process group, and what it printed so far. */
interface Proc {
  readonly child: ChildProcess;
  stdout: string;
  stderr: string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}
const running: Proc[] = [];

afterEach(async () => {
  // The whole group: npx, the shell it starts, node, the gateway's workers, the simulator's children.
  for (const p of running.splice(0)) {
    try {
      process.kill(-p.child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
    await p.exited;
  }
});

/** Run an installed command in the user's folder: `npx --no -- <command> <args>` (`--no`: never fetch one). */
function npx(command: string, args: string[], env: Record<string, string> = {}): Proc {
  const child = spawn('npx', ['--no', '--', command, ...args], { cwd: app, env: userEnv(env), stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const proc: Proc = {
    child,
    stdout: '',
    stderr: '',
    exited: new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal }))),
  };
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (proc.stdout += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (proc.stderr += s));
  running.push(proc);
  return proc;
}

/** Resolve with the first match of `pattern` in what `proc` prints on stdout; reject if it exits first. */
function printed(proc: Proc, pattern: RegExp): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    const check = (): boolean => {
      const m = proc.stdout.match(pattern);
      if (m) resolve(m);
      return m !== null;
    };
    if (check()) return;
    const onData = (): void => {
      if (check()) proc.child.stdout!.off('data', onData);
    };
    proc.child.stdout!.on('data', onData);
    void proc.exited.then(({ code }) => {
      if (!check()) reject(new Error(`exited (${code}) before printing ${pattern}\n--- stdout\n${proc.stdout}\n--- stderr\n${proc.stderr}`));
    });
  });
}

/** Start the installed gateway and wait for its ready lines. */
async function startGateway(args: string[], env: Record<string, string> = {}): Promise<{ proc: Proc; port: number; admin: string; secret?: string }> {
  const proc = npx('corral-gateway', ['--port', '0', '--admin-port', '0', '--log-level', 'warn', ...args], env);
  const [, port] = await printed(proc, /^corral gateway listening on 127\.0\.0\.1:(\d+) /m);
  const [, admin] = await printed(proc, /^admin API on (http:\/\/127\.0\.0\.1:\d+) /m);
  await printed(proc, /^simulate devices: /m);
  const secret = /^device secret \(generated, not stored anywhere\): (\S+)$/m.exec(proc.stdout)?.[1];
  return { proc, port: Number(port), admin: admin!, ...(secret === undefined ? {} : { secret }) };
}

/** Run the installed simulator to the end; its JSON summary. */
async function simulate(port: number, secret: string, args: string[]): Promise<Record<string, unknown>> {
  const proc = npx('corral-simulate', ['--port', String(port), '--json', '--timeout', '30', '--rate', '50', '--interval', '10', ...args], {
    CORRAL_GATEWAY_SECRET: secret,
  });
  const { code } = await proc.exited;
  const last = proc.stdout.trim().split('\n').at(-1) ?? '';
  try {
    return JSON.parse(last) as Record<string, unknown>;
  } catch {
    throw new Error(`no JSON summary from the simulator (exit ${code})\n--- stdout\n${proc.stdout}\n--- stderr\n${proc.stderr}`);
  }
}

/** Every process below `pid` (Linux /proc) with its command line. */
function descendants(pid: number): { pid: number; cmdline: string }[] {
  const parents = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      parents.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // it exited meanwhile
    }
  }
  const out: { pid: number; cmdline: string }[] = [];
  const walk = (p: number): void => {
    for (const [child, ppid] of parents) {
      if (ppid !== p) continue;
      try {
        out.push({ pid: child, cmdline: readFileSync(`/proc/${child}/cmdline`, 'utf8').split('\0').join(' ').trim() });
      } catch {
        // it exited meanwhile
      }
      walk(child);
    }
  };
  walk(pid);
  return out;
}

/** The command lines of the gateway's processes (primary and workers): those running the installed bin. */
function gatewayProcesses(proc: Proc): string[] {
  const bin = join(app, 'node_modules', '.bin', 'corral-gateway');
  return descendants(proc.child.pid!)
    .map((p) => p.cmdline)
    .filter((c) => c.includes(bin));
}

describe('the packed gateway, installed with npm install <tarballs>', () => {
  it('installs corral from its tarball and no TypeScript toolchain', () => {
    const modules = join(app, 'node_modules');
    expect(JSON.parse(readFileSync(join(modules, 'corral', 'package.json'), 'utf8'))).toMatchObject({ name: 'corral', version: '0.1.0' });
    expect(lstatSync(join(modules, 'corral')).isSymbolicLink()).toBe(false);
    expect(existsSync(join(modules, 'corral-amqp-gateway', 'node_modules', 'corral'))).toBe(false); // one corral
    expect(existsSync(join(modules, 'corral-amqp-gateway', 'dist', 'cli.js'))).toBe(true);
    expect(existsSync(join(modules, 'corral-amqp-gateway', 'src'))).toBe(false);
    for (const tool of ['tsx', 'typescript', 'tsup', 'esbuild']) expect(existsSync(join(modules, tool)), tool).toBe(false);
  });

  it('npx corral-gateway (embedded broker) serves npx corral-simulate: every device connected, every message acked', { timeout: 60_000 }, async () => {
    const gw = await startGateway([]);
    expect(gw.proc.stdout).toMatch(/^broker: embedded/m);
    expect(gw.secret).toMatch(/^[0-9a-f]{48}$/);
    // Installed, it points at the installed simulator, with the secret in the environment.
    expect(gw.proc.stdout).toContain(`simulate devices: CORRAL_GATEWAY_SECRET=${gw.secret} npx corral-simulate --port ${gw.port} --devices 10`);
    const [gateway, ...others] = gatewayProcesses(gw.proc);
    expect(others).toEqual([]);
    expect(gateway).toContain(join(app, 'node_modules', '.bin', 'corral-gateway'));
    expect(gateway).not.toMatch(/tsx/);
    // On the Node that runs this test (Node 24 in CI's second run), through npx and the bin's shebang.
    const metrics = await (await fetch(`${gw.admin}/metrics`)).text();
    expect(metrics).toContain(`nodejs_version_info{version="${process.version}"`);

    const summary = await simulate(gw.port, gw.secret!, ['--devices', '4', '--msgs', '3']);
    expect(summary).toMatchObject({ devices: 4, connected: 4, acks: 12, nacks: 0, expected: 12, complete: true, stoppedBy: 'done' });
  });
});

describeRabbit('the packed gateway on RabbitMQ', () => {
  let prefix: string | undefined;

  afterEach(async () => {
    if (prefix === undefined) return;
    const p = prefix;
    prefix = undefined;
    for (const proc of running.splice(0)) {
      // Stop the gateway before deleting its queues: a live one would declare them again.
      try {
        process.kill(-proc.child.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
      await proc.exited;
    }
    const t = topology(p);
    await withChannel(async (first, model) => {
      let channel = first;
      for (const queue of [`${p}.backend`, ...['primary', '0', '1'].map((slot) => t.nodeQueue('gw-pkg', slot))]) {
        await channel.deleteQueue(queue).catch(async () => {
          channel = await model.createChannel();
          channel.on('error', () => undefined);
        });
      }
    });
    await deleteTopology(p, []);
  });

  it('--workers 2 from the compiled JavaScript, the URL from a file, --uplink-queue: every message acked into the queue', { timeout: 60_000 }, async () => {
    prefix = uniquePrefix('pkg');
    const urlFile = join(dir!, 'amqp-url');
    writeFileSync(urlFile, `${AMQP_URL}\n`, { mode: 0o600 });
    const queue = `${prefix}.backend`;
    const gw = await startGateway(['--amqp-url-file', urlFile, '--prefix', prefix, '--node-id', 'gw-pkg', '--workers', '2', '--uplink-queue', queue], {
      CORRAL_GATEWAY_SECRET: 'pkg-secret',
    });
    expect(gw.proc.stdout).toMatch(/^corral gateway listening on .*, 2 workers, \w+\)$/m);
    expect(gw.proc.stdout).toContain(`prefix ${prefix}, uplink queue ${queue} bound to ${prefix}.up`);
    expect(gw.proc.stderr).not.toContain('no --uplink-queue');

    // The primary and both workers run the installed bin, without tsx, and no command line holds the URL.
    const processes = gatewayProcesses(gw.proc);
    expect(processes).toHaveLength(3);
    for (const cmdline of processes) {
      expect(cmdline).toContain(join(app, 'node_modules', '.bin', 'corral-gateway'));
      expect(cmdline).not.toMatch(/tsx/);
      expect(cmdline).not.toContain(AMQP_URL);
    }

    const summary = await simulate(gw.port, 'pkg-secret', ['--devices', '4', '--msgs', '2']);
    expect(summary).toMatchObject({ connected: 4, acks: 8, nacks: 0, complete: true });
    const held = await withChannel(async (channel) => (await channel.checkQueue(queue)).messageCount);
    expect(held).toBe(8);
  });
});
