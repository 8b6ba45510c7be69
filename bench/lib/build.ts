/**
 * Build what the benchmark processes run, once per bench process (every server started through
 * `startServer` or `startGateway`; `npm run bench:hold` and `bench:admission` build first too), so
 * they run the current sources compiled — as users run them — and never corral's sources through tsx:
 * tsx compiles with esbuild's `keepNames`, which wraps every function created at run time in a
 * `__name()` call (an `Object.defineProperty`); corral creates a few dozen closures per
 * connection. In a V8 profile of the TLS echo server under a closed-loop load, `__name` took ~1%
 * of the server's CPU directly (more through the object-shape changes it causes); in 4 alternating
 * 8 s rounds (server pinned to one core, 64 clients) corral from `dist/` needed a median 658 µs per
 * handshake, from its sources through tsx 673 µs (bare Node 557 µs) — a cost the built package,
 * which users run, does not have. bench/servers/corral-echo.ts
 * imports `corral`, which Node resolves to `dist/index.js` (TypeScript checks it against `src/`
 * through the `corral-source` condition). tsup empties `dist/` before it writes it: do not run
 * `npm test` (which builds) or a second bench beside a bench run — a server started meanwhile
 * (a restart, a worker) could find no `dist/`.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const done = new Set<string>();

function npm(args: readonly string[]): void {
  const key = args.join(' ');
  if (done.has(key)) return;
  const r = spawnSync('npm', args, { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status !== 0) throw new Error(`npm ${key} failed (status ${r.status})`);
  done.add(key);
}

/** Build corral's `dist/` (tsup, a few seconds), once per process. */
export function buildCorral(): void {
  npm(['run', 'build']);
}

/** Build corral and the gateway (`examples/amqp-gateway/dist/`), once per process. */
export function buildGateway(): void {
  buildCorral();
  npm(['run', 'build', '-w', 'corral-amqp-gateway']);
}
