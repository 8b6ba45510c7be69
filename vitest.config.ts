import { availableParallelism } from 'node:os';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  // Tests that import 'corral' by name (the gateway's) get the source, never a stale dist/.
  resolve: { conditions: ['corral-source'] },
  ssr: { resolve: { conditions: ['corral-source'] } },
  test: {
    include: ['test/**/*.test.ts', 'examples/amqp-gateway/test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: 'forks',
    // Two test files at a time even on two cores (vitest's default there is one): most of the
    // suite's time is spent waiting (outages, worker restarts, timeouts), not computing. Measured
    // 2026-12-07 on the 2-core build machine: 500 → 265 s on Node 20, 378 → 245 s on Node 24.
    maxWorkers: Math.max(2, availableParallelism() - 1),
  },
});
