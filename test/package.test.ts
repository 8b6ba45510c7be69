import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const entry = join(root, 'dist', 'index.js');

interface Ran {
  stdout: string;
  stderr: string;
}

/** Run a script with `node` from the repository root, so `corral` resolves to this package itself. */
async function node(args: string[]): Promise<Ran> {
  const { stdout, stderr } = await run(process.execPath, args, {
    cwd: root,
    timeout: 15_000,
    // The child must exit by itself: a listener that left a handle open would keep it alive.
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  return { stdout, stderr };
}

// Node 20.19+ prints this only with --trace-require-module (Node 20.x before that printed it always).
const requireEsmWarning = /ExperimentalWarning:[^\n]*ES Module[^\n]*require\(\)[^\n]*(\nSupport for loading ES Module in require\(\)[^\n]*)?/;

/** Stderr notes the lead asked for: whether require(esm) warned on this Node. */
const notes: string[] = [];

function note(label: string, stderr: string): void {
  const warned = requireEsmWarning.test(stderr);
  notes.push(`${label} on Node ${process.version}: ${warned ? 'ExperimentalWarning for require(esm)' : 'no require(esm) warning'}`);
  if (warned) console.info(`[package.test] ${label}: ${stderr.trim().split('\n')[0]}`);
}

describe('the built package', () => {
  afterAll(() => {
    // Informational, never a failure: what require(esm) printed on stderr.
    console.info(`[package.test] ${notes.join('; ')}`);
  });

  beforeAll(async () => {
    if (!existsSync(entry)) {
      await run('npm', ['run', 'build'], { cwd: root, timeout: 60_000 });
    }
    expect(existsSync(entry)).toBe(true);
  }, 60_000);

  it('import("corral") finds startListener and starts and stops a TCP listener on port 0', async () => {
    const script = `
      import('corral').then(async (m) => {
        if (typeof m.startListener !== 'function') throw new Error('no startListener');
        const l = await m.startListener({ name: 'pkg-esm', protocol: {}, transportOptions: { host: '127.0.0.1', port: 0 } });
        console.log('port ' + l.port);
        const r = await l.stop();
        console.log('status ' + l.status + ' ' + r.connections);
      });`;
    const { stdout, stderr } = await node(['--input-type=module', '-e', script]);
    const port = Number(/^port (\d+)$/m.exec(stdout)?.[1]);
    expect(port).toBeGreaterThan(0);
    expect(stdout).toContain('status stopped 0');
    expect(stderr).not.toMatch(/Error/);
  });

  it('require("corral") finds startListener and starts and stops a TCP listener on port 0', async () => {
    const script = `
      const c = require('corral');
      if (typeof c.startListener !== 'function') throw new Error('no startListener');
      c.startListener({ name: 'pkg-cjs', protocol: {}, transportOptions: { host: '127.0.0.1', port: 0 } }).then(async (l) => {
        console.log('port ' + l.port);
        const r = await c.stopListener('pkg-cjs');
        console.log('status ' + l.status + ' ' + r.connections);
      });`;
    const { stdout, stderr } = await node(['-e', script]);
    note('require("corral")', stderr);
    const port = Number(/^port (\d+)$/m.exec(stdout)?.[1]);
    expect(port).toBeGreaterThan(0);
    expect(stdout).toContain('status stopped 0');
    expect(stderr.replace(requireEsmWarning, '')).not.toMatch(/\bError\b/);
  });

  it('require then import in one process share one module and one registry', async () => {
    const script = `
      const c = require('corral');
      c.startListener({ name: 'pkg-both', protocol: {}, transportOptions: { host: '127.0.0.1', port: 0 } }).then(async (l) => {
        const m = await import('corral');
        console.log('same-listener ' + (m.getListener('pkg-both') === l));
        console.log('same-module ' + (m.startListener === c.startListener));
        console.log('count ' + m.listeners().length);
        await m.stopListener('pkg-both');
        console.log('gone ' + (c.getListener('pkg-both') === undefined));
      });`;
    const { stdout, stderr } = await node(['-e', script]);
    note('require then import', stderr);
    expect(stdout).toContain('same-listener true');
    expect(stdout).toContain('count 1');
    expect(stdout).toContain('gone true');
    // One copy of the module, not just one registry: require(esm) returns the ESM namespace itself.
    expect(stdout).toContain('same-module true');
  });
});
