/**
 * A real HAProxy (the Debian package's /usr/sbin/haproxy, or $HAPROXY) for tests: started in the
 * foreground with a config written to a temporary folder, ready once every given frontend accepts,
 * and stopped (SIGTERM, then SIGKILL) with its folder removed.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { type AddressInfo, connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const HAPROXY = process.env.HAPROXY ?? '/usr/sbin/haproxy';
export const haveHaproxy = existsSync(HAPROXY);
/**
 * CI sets REQUIRE_HAPROXY=1 (it installs haproxy first): there a missing binary fails the tests
 * that need it instead of skipping them.
 */
export const skipWithoutHaproxy = !haveHaproxy && process.env.REQUIRE_HAPROXY !== '1';

/** A port free right now on `host` (haproxy binds it a moment later). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, host, () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** Whether something accepts a TCP connect on host:port now. */
function accepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port }, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

export class Haproxy {
  private log = '';

  private constructor(
    private readonly child: ChildProcess,
    /** The temporary folder holding the config (and any file the caller wrote there). */
    readonly dir: string,
  ) {
    child.stdout!.on('data', (d: Buffer) => (this.log += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (this.log += d.toString()));
  }

  /** What haproxy printed so far. */
  get output(): string {
    return this.log;
  }

  /**
   * Start haproxy with `config(dir)` (the config text; `dir` is its temporary folder, for
   * certificates) and wait until each of `frontends` accepts. `files` are written to `dir` first.
   */
  static async start(config: (dir: string) => string, frontends: readonly (readonly [string, number])[], files: Record<string, string> = {}): Promise<Haproxy> {
    const dir = mkdtempSync(join(tmpdir(), 'corral-haproxy-'));
    for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
    writeFileSync(join(dir, 'haproxy.cfg'), config(dir));
    const child = spawn(HAPROXY, ['-db', '-f', join(dir, 'haproxy.cfg')], { stdio: ['ignore', 'pipe', 'pipe'] });
    const h = new Haproxy(child, dir);
    const exited = new Promise<never>((_, reject) => child.once('exit', (code) => reject(new Error(`haproxy exited ${code}: ${h.log}`))));
    exited.catch(() => {});
    try {
      for (const [host, port] of frontends) {
        // Polled: haproxy says nothing when it is ready, and a refused connect is an event too.
        while (!(await Promise.race([accepts(host, port), exited]))) {
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    } catch (err) {
      await h.stop();
      throw err;
    }
    return h;
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
