#!/usr/bin/env node
// The `corral-gateway` command: the gateway compiled to JavaScript (dist/cli.js), so no TypeScript
// toolchain runs here. `npm pack` builds dist/ first (prepack); in a checkout, `npm run build -w
// corral-amqp-gateway` does, and `npm run gateway` at the repository root runs src/cli.ts instead.
// With --workers, corral re-runs this file in each worker process: the workers run dist/ too.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const entry = new URL('../dist/cli.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write(`corral-gateway: ${fileURLToPath(entry)} is missing: build it with \`npm run build -w corral-amqp-gateway\`\n`);
  process.exit(1);
}
await import(entry.href);
