import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['{actors,cluster,gateway,persistence,infra,bench}/**/*.test.ts'],
    globalSetup: ['infra/testGlobalSetup.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // 2 cores: a few files at a time, each with its own database.
    maxWorkers: 3,
  },
});
