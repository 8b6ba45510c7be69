/**
 * The README's quick start, as a new user runs it: the package packed (`npm pack`), installed into
 * a fresh `npm init -y` project with `npm install --offline`, the README's code block saved as
 * `echo.mts`, and run with `npx tsx` on Node 20 or plain `node` on Node 22.18+ (which strips
 * TypeScript by itself). It must answer a pipelined, half-closing client and stop on SIGTERM.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
const nodeRunsTypeScript = major > 22 || (major === 22 && minor >= 18);

let dir: string | undefined;
let child: ChildProcess | undefined;
afterAll(() => {
  if (child?.pid !== undefined) {
    for (const pid of descendants(child.pid)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    if (child.exitCode === null) child.kill('SIGKILL');
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** The first ```ts block after "## Quick start" in the README. */
function quickStart(): string {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Quick start'));
  const match = /```ts\n([\s\S]*?)```/.exec(section);
  if (!match) throw new Error('no ts code block in the README quick start');
  return match[1]!;
}

/** Every process below `pid` (Linux /proc), parents before children. */
function descendants(pid: number): number[] {
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
  const out: number[] = [];
  const walk = (p: number): void => {
    for (const [child, ppid] of parents) {
      if (ppid !== p) continue;
      out.push(child);
      walk(child);
    }
  };
  walk(pid);
  return out;
}

/** The process that runs the script: the deepest one below `pid` whose command line names it. */
function scriptProcess(pid: number, script: string): number {
  const running = descendants(pid).filter((p) => {
    try {
      return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(script);
    } catch {
      return false;
    }
  });
  return running.at(-1) ?? pid;
}

/** Resolve with the first stdout line matching `re`. */
function line(p: ChildProcess, re: RegExp): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    p.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    p.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = re.exec(out);
      if (m) resolve(m);
    });
    p.once('exit', (code) => reject(new Error(`exited (${code}) before ${re}: ${out}${err}`)));
  });
}

describe('the README quick start in a new project', () => {
  it(`runs as written with ${nodeRunsTypeScript ? 'plain node' : 'npx tsx'} on Node ${process.versions.node}`, { timeout: 120_000 }, async () => {
    dir = mkdtempSync(join(tmpdir(), 'corral-quick-start-'));
    await run('npm', ['pack', '--silent', '--pack-destination', dir], { cwd: root, timeout: 60_000 });
    const tarball = readdirSync(dir).find((f) => f.endsWith('.tgz'))!;
    const app = join(dir, 'app');
    await run('mkdir', [app]);
    await run('npm', ['init', '-y'], { cwd: app, timeout: 30_000 });
    expect(JSON.parse(readFileSync(join(app, 'package.json'), 'utf8')).type ?? 'commonjs').toBe('commonjs');
    await run('npm', ['install', '--offline', '--no-audit', '--no-fund', '--loglevel=error', join(dir, tarball)], { cwd: app, timeout: 60_000 });
    writeFileSync(join(app, 'echo.mts'), quickStart());

    // npx finds tsx's version on the PATH (this repository's) and installs it from npm's cache.
    const env = { ...process.env, NODE_OPTIONS: '', PATH: `${join(root, 'node_modules', '.bin')}${delimiter}${process.env.PATH ?? ''}` };
    child = nodeRunsTypeScript
      ? spawn(process.execPath, ['echo.mts'], { cwd: app, env })
      : spawn('npx', ['--prefer-offline', '--yes', 'tsx', 'echo.mts'], { cwd: app, env });
    const [, port] = await line(child, /echo listening on port (\d+)/);

    const replies = await new Promise<string>((resolve, reject) => {
      const s = net.connect(Number(port), '127.0.0.1', () => s.end('hello\nworld\n'));
      let got = '';
      s.setEncoding('utf8');
      s.on('data', (d: string) => (got += d));
      s.on('close', () => resolve(got));
      s.on('error', reject);
    });
    expect(replies).toBe('hello\nworld\n');

    const stopped = line(child, /stopped: (\d+) closed, (\d+) forced/);
    const exited = new Promise<number | null>((resolve) => child!.once('exit', (code) => resolve(code)));
    // npx and tsx run the script as a process of its own, below them: signal that one, as a
    // service manager signalling the server would.
    process.kill(scriptProcess(child.pid!, 'echo.mts'), 'SIGTERM');
    const [, , forced] = await stopped;
    expect(forced).toBe('0');
    expect(await exited).toBe(0);
  });
});
