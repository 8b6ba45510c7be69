#!/usr/bin/env node
// The `corral-gateway` command: run src/cli.ts through tsx (Node 20 cannot strip types itself).
// With --workers, corral re-runs this file in each worker process, which registers tsx again.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli.ts');
