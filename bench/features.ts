// `npm run bench:features`: what each feature of a vote costs, server and Postgres, measured by
// switching it off (issue 14: "measured by switching it off in a knob run, never guessed").
// For each feature (and audit_chain + fence together, and all of them at once): pairs of write
// runs of `npm run bench`'s shape (bench/lib/writeRuns.ts: wrk, every request a new voter, a
// freshly started livevote on its embedded Postgres each run), everything on against
// LIVEVOTE_MEASURE_WITHOUT=<feature>, side by side; on first in odd pairs, off first in even ones,
// so a steady drift of the host's speed reaches both sides alike. Writes the "Cost per feature, by
// knob runs" section of bench/RESULTS.md and the `features` key of bench/results.json (`npm run
// bench` keeps both). Not part of `npm run bench`: at the defaults it takes ~12 minutes, twice that
// suite's limit.
//
//   npm run bench:features
//   npm run bench:features -- --rerender   (the section again from the runs kept in results.json, after a change of its rendering; no runs)
//   options (env): BENCH_PAIRS (3)  BENCH_WRITE_S (5: measured seconds per run)  BENCH_CONNECTIONS (100)
//                  BENCH_FEATURES (a |-separated subset of the rows below, by their LIVEVOTE_MEASURE_WITHOUT value)
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { measuredFeatures } from '../infra/config.ts';
import { intFromEnv } from './lib/common.ts';
import { featureCost, preservedFeaturesJson, renderFeaturesSection, writeFeaturesResults, type FeaturePair, type FeaturesResults, type FeatureUnderTest } from './lib/featuresReport.ts';
import { createQuietWaiter, repoRoot } from './lib/proc.ts';
import { measureWriteRuns, type WriteRun } from './lib/writeRuns.ts';

if (process.argv.includes('--rerender')) {
  // The runs as they were measured; only what is derived from them (costs, the section) is redone.
  const kept = (await preservedFeaturesJson(path.join(repoRoot, 'bench')) as { details?: FeaturesResults } | undefined)?.details;
  if (kept === undefined) throw new Error('bench/results.json has no features key to render again');
  const costs = kept.pairs.map((f, i) => featureCost({ without: f.without, what: kept.costs[i]!.what }, f.pairs));
  await writeFeaturesResults({ ...kept, costs }, path.join(repoRoot, 'bench'));
  process.stdout.write(`${renderFeaturesSection({ ...kept, costs })}\n`);
  process.exit(0);
}

const pairsPerFeature = intFromEnv('BENCH_PAIRS', 3, 20);
const activeS = intFromEnv('BENCH_WRITE_S', 5, 120);
const connections = intFromEnv('BENCH_CONNECTIONS', 100, 10_000);

const what: Record<(typeof measuredFeatures)[number], string> = {
  audit_chain: 'the audit chain (the commit without its per-shard digests, and no sealer)',
  fence: 'the lease fence (the commit statement without locking and comparing the lease rows)',
  metadata: 'request metadata (the per-vote recorder and its COPY)',
  metrics: 'per-request metrics (HTTP counter and histogram, livevote_votes_total)',
  token_check: "the access token's signature and claims checks (its payload still decoded)",
  body_checks: "the vote body's schema and fast check (JSON.parse only)",
};
const allFeatures: FeatureUnderTest[] = [
  ...measuredFeatures.map((name) => ({ without: name, what: what[name] })),
  { without: 'audit_chain,fence', what: 'the audit chain and the fence together' },
  { without: measuredFeatures.join(','), what: 'all of the above' },
];
const chosen = process.env.BENCH_FEATURES?.split('|').map((f) => f.trim()).filter((f) => f !== '');
const unknown = chosen?.filter((name) => !allFeatures.some((f) => f.without === name)) ?? [];
if (unknown.length > 0) throw new Error(`BENCH_FEATURES: unknown ${unknown.join(', ')}; rows: ${allFeatures.map((f) => f.without).join(' | ')}`);
const features = chosen === undefined ? allFeatures : allFeatures.filter((f) => chosen.includes(f.without));

const startedMs = Date.now();
const log = (line: string) => process.stdout.write(`[${((Date.now() - startedMs) / 1000).toFixed(0).padStart(4)} s] ${line}\n`);
const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repoRoot, encoding: 'utf8' }).trim();

// One list of runs, in the order they run: per pair, per feature, its on run and its off run.
const schedule: { feature: FeatureUnderTest; pair: number; side: 'on' | 'off' }[] = [];
for (let pair = 0; pair < pairsPerFeature; pair++) {
  for (const feature of features) {
    const sides: ('on' | 'off')[] = pair % 2 === 0 ? ['on', 'off'] : ['off', 'on'];
    for (const side of sides) schedule.push({ feature, pair, side });
  }
}
log(`${features.length} rows × ${pairsPerFeature} pairs = ${schedule.length} runs of ${activeS} s at ${connections} connections, on ${commit}`);

// At most 30 s of waiting for other work in all: the whole run must stay near 12 minutes.
const quiet = createQuietWaiter(30_000, log);
let done = 0;
const runs: WriteRun[] = await measureWriteRuns({
  configs: schedule.map((s): Record<string, string> => (s.side === 'on' ? {} : { LIVEVOTE_MEASURE_WITHOUT: s.feature.without })),
  connections,
  activeS,
  // Shorter than knobs.ts' 4 + 3 s, for the ~12 minutes: 1.5 s of warm-up votes (plus the measured
  // run's first second, before its CPU window opens), and 1 s for the answers still in flight at
  // the end (votes.lua answers within ~50 ms at 100 connections).
  warmUpS: 3,
  drainS: 1,
  voterCount: 150_000,
  log,
  beforeRun: async () => {
    const s = schedule[done]!;
    await quiet.wait(`run ${done + 1}/${schedule.length} (${s.feature.without} ${s.side}, pair ${s.pair + 1})`);
  },
  afterRun: (run) => {
    const s = schedule[done]!;
    const perVote = (group: string) => Math.round((((run.cpuPercent[group] ?? Number.NaN) / 100) * 1e6) / run.votesPerS);
    log(`run ${done + 1}/${schedule.length} ${s.feature.without} ${s.side} (pair ${s.pair + 1}): ${run.votesPerS} votes/s, ` +
      `CPU µs per vote server ${perVote('livevote')}, Postgres ${perVote('postgres')}, wrk ${perVote('wrk')}; non-2xx ${run.non2xx}; load ${run.loadAverageAtStart}`);
    done++;
  },
});

const pairsOf = (feature: FeatureUnderTest): FeaturePair[] =>
  Array.from({ length: pairsPerFeature }, (_, pair) => {
    const side = (which: 'on' | 'off') => runs[schedule.findIndex((s) => s.feature === feature && s.pair === pair && s.side === which)]!;
    return { on: side('on'), off: side('off') };
  });
const loads = runs.map((r) => r.loadAverageAtStart);
const results = {
  generatedAt: new Date().toISOString(),
  command: `${['BENCH_PAIRS', 'BENCH_WRITE_S', 'BENCH_CONNECTIONS', 'BENCH_FEATURES'].filter((k) => process.env[k]).map((k) => `${k}=${JSON.stringify(process.env[k])} `).join('')}npm run bench:features`,
  commit,
  cores: os.availableParallelism(),
  connections,
  activeS,
  pairsPerFeature,
  elapsedS: (Date.now() - startedMs) / 1000,
  loadAverage: { min: Math.min(...loads), max: Math.max(...loads) },
  costs: features.map((f) => featureCost(f, pairsOf(f))),
  pairs: features.map((f) => ({ without: f.without, pairs: pairsOf(f) })),
};
// Every vote of a run must be answered 200 (new voters, nothing refused); a run with other answers
// measured something else (a refusal costs less than a vote), so nothing is written.
const refused = runs.flatMap((r, i) => (r.non2xx > 0 ? [`run ${i + 1} (${schedule[i]!.feature.without} ${schedule[i]!.side}): ${r.non2xx} non-2xx`] : []));
if (refused.length > 0) throw new Error(`${refused.length} runs had answers other than 200, nothing written:\n${refused.join('\n')}`);
await writeFeaturesResults(results, path.join(repoRoot, 'bench'));
process.stdout.write(`${renderFeaturesSection(results)}\n`);
log('wrote the "Cost per feature, by knob runs" section of bench/RESULTS.md and the features key of bench/results.json');
