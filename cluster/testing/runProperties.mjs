#!/usr/bin/env node
// `npm run test:properties -- [--runs N] [--seed S] [--path P --replay-path R] [--world 'one process'|'several processes']`
// Runs the property tests of cluster/testing with more cases, or replays one failure from the
// seed and path it printed. Options become environment variables read by properties.test.ts.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    runs: { type: 'string' },
    seed: { type: 'string' },
    path: { type: 'string' },
    'replay-path': { type: 'string' },
    world: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help) {
  console.log("usage: npm run test:properties -- [--runs N] [--seed S] [--path P --replay-path R] [--world 'one process'|'several processes']");
  process.exit(0);
}
const env = { ...process.env };
if (values.runs !== undefined) env.LIVEVOTE_PROPERTY_RUNS = values.runs;
if (values.seed !== undefined) env.LIVEVOTE_PROPERTY_SEED = values.seed;
if (values.path !== undefined) env.LIVEVOTE_PROPERTY_PATH = values.path;
if (values['replay-path'] !== undefined) env.LIVEVOTE_PROPERTY_REPLAY_PATH = values['replay-path'];
const args = [fileURLToPath(new URL('../../node_modules/vitest/vitest.mjs', import.meta.url)), 'run', 'cluster/testing/properties.test.ts'];
// A replay runs the one world it came from; a big run skips the planted-bug tests. A world is
// matched by its generated cases' test ("…: cluster holds every property"), not by every test
// whose name contains the word (the planted-bug tests of the cluster world do).
const escaped = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
if (values.world !== undefined) args.push('-t', `${escaped(values.world)}.? holds every property`);
else if (values.runs !== undefined || values.seed !== undefined) args.push('-t', 'exactly-once');
const child = spawn(process.execPath, args, { stdio: 'inherit', env });
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => child.kill(signal));
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
