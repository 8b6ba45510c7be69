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
  },
});
