import { defineConfig } from 'tsup';

// The gateway's two commands as plain ES modules for Node >= 20.19: dist/cli.js and
// dist/simulate.js, each with this package's own sources bundled in (so a process loads one file of
// ours, and no TypeScript loader), and every package in `dependencies` — corral, amqplib, pino,
// prom-client, selfsigned, denque — left as an import that resolves to the installed package.
// No type declarations: the package is two commands, not a library. esbuild strips types without
// checking them; `npm run typecheck` at the repository root checks them (its tsconfig includes
// examples/).
export default defineConfig({
  entry: ['src/cli.ts', 'src/simulate.ts'],
  format: ['esm'],
  target: 'node20',
  platform: 'node',
  dts: false,
  sourcemap: true,
  clean: true,
  splitting: false,
});
