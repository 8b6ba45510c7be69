#!/usr/bin/env node
// The `corral-simulate` command: the simulator compiled to JavaScript (dist/simulate.js), so no
// TypeScript toolchain runs here (see corral-gateway.mjs for how dist/ is built). Its child
// processes re-run this file.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const entry = new URL('../dist/simulate.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write(`corral-simulate: ${fileURLToPath(entry)} is missing: build it with \`npm run build -w corral-amqp-gateway\`\n`);
  process.exit(1);
}
await import(entry.href);
