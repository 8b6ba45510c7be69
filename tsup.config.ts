import { defineConfig } from 'tsup';

// One ES-module build. `require('corral')` loads it through Node's require(esm)
// (Node >= 20.19), so there is exactly one copy of the module and one listener registry.
export default defineConfig({
  entry: ['src/index.ts'],
  format: ['esm'],
  target: 'node20',
  platform: 'node',
  dts: true,
  sourcemap: true,
  clean: true,
  splitting: false,
});
