#!/usr/bin/env node
// The `corral-simulate` command: run src/simulate.ts through tsx (Node 20 cannot strip types itself).
// Its child processes re-run this file, which registers tsx again.
import { register } from 'tsx/esm/api';

register();
await import('../src/simulate.ts');
