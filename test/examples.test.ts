import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { connectTcp, connectTls, LineClient } from './support/clients.js';
import { within } from './support/within.js';

// Runs examples/echo.ts as `npm run example:echo -- ...` does, minus its build step: `npm test`
// builds dist/ once before the tests (pretest), so no test deletes dist/ while another imports it.
// The example imports corral through the package's own exports map, so this tests the built package.

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** A running echo example, with everything it printed so far. */
interface Example {
  readonly child: ChildProcess;
  stdout: string;
  stderr: string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function startExample(args: string[]): Example {
  // detached: the child leads its own process group, so afterEach can kill npm, tsx and node at once.
  const child = spawn(process.execPath, ['--import', 'tsx', 'examples/echo.ts', ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const example: Example = {
    child,
    stdout: '',
    stderr: '',
    exited: new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal }))),
  };
  child.stdout!.setEncoding('utf8').on('data', (s: string) => (example.stdout += s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (example.stderr += s));
  return example;
}

/** Poll `example.stdout` until `pattern` matches; fail with the output after `ms`. */
async function waitForOutput(example: Example, pattern: RegExp, ms: number): Promise<RegExpMatchArray> {
  const deadline = Date.now() + ms;
  for (;;) {
    const m = example.stdout.match(pattern);
    if (m) return m;
    if (example.child.exitCode !== null || Date.now() > deadline) {
      throw new Error(`no ${pattern} in the output of the example (exit code ${example.child.exitCode})\n` +
        `--- stdout\n${example.stdout}\n--- stderr\n${example.stderr}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe.each([
  { name: 'tls', args: ['--tls'], connect: (port: number) => connectTls(port) },
  { name: 'tcp', args: [], connect: (port: number) => connectTcp(port) },
  { name: 'tls', args: ['--tls', '--workers', '2'], connect: (port: number) => connectTls(port) },
  // A client that is its own "load balancer": it sends a PROXY v1 header first (127.0.0.1 is trusted).
  {
    name: 'tcp',
    args: ['--proxy-header', '127.0.0.1'],
    connect: async (port: number) => {
      const s = await connectTcp(port);
      s.write('PROXY TCP4 198.51.100.7 127.0.0.1 40000 443\r\n');
      return s;
    },
  },
])('examples/echo.ts over $name $args', ({ name, args, connect }) => {
  let example: Example | undefined;
  let client: LineClient | undefined;

  afterEach(async () => {
    client?.destroy();
    client = undefined;
    const e = example;
    example = undefined;
    if (e === undefined) return;
    // Kill the whole group even if npm itself has exited: tsx or node may have outlived it.
    try {
      process.kill(-e.child.pid!, 'SIGKILL');
    } catch {
      // the group is gone already
    }
    await within(e.exited, 5000, 'example exit after SIGKILL');
  });

  it('prints the port, echoes lines, and stops with exit code 0 on SIGTERM', { timeout: 90_000 }, async () => {
    example = startExample(['--port', '0', ...args]);
    const [line, port] = await waitForOutput(example, /^echo listening on 127\.0\.0\.1:(\d+) \((\w+)(?:, [^)]*)?\)$/m, 60_000);
    expect(line).toContain(`(${name}`);
    expect(Number(port)).toBeGreaterThan(0);

    client = new LineClient(await within(connect(Number(port)), 5000, 'connect'));
    expect(await within(client.request('hello corral'), 5000, 'first echo')).toBe('hello corral');
    expect(await within(client.request('  spaces and ünïcödé  '), 5000, 'second echo')).toBe('  spaces and ünïcödé  ');
    // whoami: the client address corral sees (behind --proxy-header, the one the header names).
    const who = await within(client.request('whoami'), 5000, 'whoami');
    if (args.includes('--proxy-header')) expect(who).toMatch(/^198\.51\.100\.7 40000 \(via 127\.0\.0\.1 \d+\)$/);
    else expect(who).toMatch(/^127\.0\.0\.1 \d+$/);

    // SIGTERM to npm, as a process manager would send it: the example drains and exits 0.
    example.child.kill('SIGTERM');
    const { code, signal } = await within(example.exited, 15_000, 'example exit after SIGTERM');
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    const [, json] = await waitForOutput(example, /^echo stopped on SIGTERM: (\{.*\})$/m, 1000);
    expect(JSON.parse(json!)).toMatchObject({ connections: 1, closedGracefully: 1, forced: 0 });
    await within(client.closed, 5000, 'client sees the connection close');
  });
});
