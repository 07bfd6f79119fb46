// vitest setup file: when a test fails, print the warnings the harness's apps logged while it
// ran (infra/testing/failureLogs.ts). Passing tests print nothing.
import { beforeEach } from 'vitest';
import { linesSince, logPositions } from './failureLogs.ts';

beforeEach(({ onTestFailed }) => {
  const positions = logPositions();
  onTestFailed(() => {
    for (const { label, lines } of linesSince(positions)) {
      process.stderr.write(`--- warnings logged by ${label} during the failed test (${lines.length} lines) ---\n${lines.join('')}`);
    }
  });
});
