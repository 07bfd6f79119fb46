import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['{actors,cluster,gateway,persistence,infra,bench}/**/*.test.ts'],
    globalSetup: ['infra/testGlobalSetup.ts'],
    // A failed test prints the warnings its in-process apps logged meanwhile.
    setupFiles: ['infra/testing/failureLogsSetup.ts'],
    // Only to catch a hang: no test may depend on how fast a busy machine is (a second test
    // run beside this one is expected). Tests wait for conditions, with deadlines of their own.
    testTimeout: 180_000,
    hookTimeout: 180_000,
    // 2 cores: a few files at a time, each with its own database.
    maxWorkers: 3,
  },
});
