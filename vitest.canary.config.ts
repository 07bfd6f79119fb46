// `npm test -- --config vitest.canary.config.ts`: the suite's set-up (vitest.config.ts, its
// global setup included) running only the deliberately failing canary. .ci/run checks that it
// exits non-zero, with and without DATABASE_URL.
import { defineConfig } from 'vitest/config';
import suite from './vitest.config.ts';

export default defineConfig({ ...suite, test: { ...suite.test, include: ['.ci/canary.test.ts'] } });
