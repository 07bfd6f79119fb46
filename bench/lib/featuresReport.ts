// The "Cost per feature, by knob runs" section of bench/RESULTS.md and the `features` key of
// bench/results.json: written by `npm run bench:features` (bench/features.ts), kept as they were by
// `npm run bench` (bench/lib/report.ts), as the cluster section and key are.
//
// Each feature is measured in pairs of write runs, everything on against the feature switched off
// (LIVEVOTE_MEASURE_WITHOUT), on freshly started processes. The host's speed moves up to ~2x
// between runs minutes apart (bench/README.md, eighth look), so a pair's runs are next to each
// other and the figure is the median over pairs of the difference within each. wrk does the same
// work per request in every run, so its CPU per request is the speed reference: the difference
// is also given with the off run's CPU scaled by wrk's on/off ratio.
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { preservedResultsKey, readFileOr } from './clusterReport.ts';
import { markedSection } from './markedSection.ts';
import type { WriteRun } from './writeRuns.ts';

export interface FeatureUnderTest {
  /** The LIVEVOTE_MEASURE_WITHOUT value of its off runs. */
  readonly without: string;
  /** What the switch removes, for the table. */
  readonly what: string;
}

export interface FeaturePair {
  readonly on: WriteRun;
  readonly off: WriteRun;
}

/** CPU µs per vote of one process group in one run (NaN when it was not sampled). */
export function cpuUsPerVote(run: WriteRun, group: 'livevote' | 'postgres' | 'wrk'): number {
  const percent = run.cpuPercent[group];
  return percent === undefined || run.votesPerS <= 0 ? Number.NaN : ((percent / 100) * 1e6) / run.votesPerS;
}

export function median(values: readonly number[]): number {
  const sorted = values.filter((v) => !Number.isNaN(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Medians over pairs; every difference is on − off (what the feature costs), in µs per vote. */
export interface CostSummary {
  readonly median: number;
  readonly min: number;
  readonly max: number;
}

export interface FeatureCost {
  readonly without: string;
  readonly what: string;
  readonly pairs: number;
  readonly serverUs: { readonly on: number; readonly off: number };
  readonly postgresUs: { readonly on: number; readonly off: number };
  readonly wrkUs: { readonly on: number; readonly off: number };
  readonly votesPerS: { readonly on: number; readonly off: number };
  /** on − off per pair. */
  readonly serverDeltaUs: CostSummary;
  readonly postgresDeltaUs: CostSummary;
  /** on − off × (wrk on / wrk off) per pair: the off run brought to the on run's host speed. */
  readonly serverDeltaWrkScaledUs: CostSummary;
  readonly postgresDeltaWrkScaledUs: CostSummary;
}

function summary(values: readonly number[]): CostSummary {
  const known = values.filter((v) => !Number.isNaN(v));
  return { median: median(known), min: Math.min(...known), max: Math.max(...known) };
}

export function featureCost(feature: FeatureUnderTest, pairs: readonly FeaturePair[]): FeatureCost {
  const per = (group: 'livevote' | 'postgres' | 'wrk') => pairs.map((p) => ({ on: cpuUsPerVote(p.on, group), off: cpuUsPerVote(p.off, group) }));
  const server = per('livevote');
  const postgres = per('postgres');
  const wrk = per('wrk');
  const speedRatio = wrk.map((w) => w.on / w.off);
  const medians = (xs: { on: number; off: number }[]) => ({ on: median(xs.map((x) => x.on)), off: median(xs.map((x) => x.off)) });
  return {
    without: feature.without,
    what: feature.what,
    pairs: pairs.length,
    serverUs: medians(server),
    postgresUs: medians(postgres),
    wrkUs: medians(wrk),
    votesPerS: medians(pairs.map((p) => ({ on: p.on.votesPerS, off: p.off.votesPerS }))),
    serverDeltaUs: summary(server.map((x) => x.on - x.off)),
    postgresDeltaUs: summary(postgres.map((x) => x.on - x.off)),
    serverDeltaWrkScaledUs: summary(server.map((x, i) => x.on - x.off * speedRatio[i]!)),
    postgresDeltaWrkScaledUs: summary(postgres.map((x, i) => x.on - x.off * speedRatio[i]!)),
  };
}

export interface FeaturesResults {
  readonly generatedAt: string;
  readonly command: string;
  readonly commit: string;
  readonly cores: number;
  readonly connections: number;
  readonly activeS: number;
  readonly pairsPerFeature: number;
  readonly elapsedS: number;
  readonly loadAverage: { readonly min: number; readonly max: number };
  readonly costs: readonly FeatureCost[];
  readonly pairs: readonly { readonly without: string; readonly pairs: readonly FeaturePair[] }[];
}

/** The section in RESULTS.md: found, replaced and rendered between its markers. */
export const featuresSection = markedSection(
  '<!-- features-bench:begin (written by bench/features.ts; npm run bench keeps it) -->',
  '<!-- features-bench:end -->',
  '## Cost per feature, by knob runs (npm run bench:features)',
);

const us = (value: number) => (Number.isNaN(value) ? '–' : value.toFixed(1));
const cost = (c: CostSummary) => `**${us(c.median)}** (${us(c.min)} … ${us(c.max)})`;

export function renderFeaturesSection(r: FeaturesResults): string {
  const ons = r.pairs.flatMap((f) => f.pairs.map((p) => p.on));
  const spread = (group: 'livevote' | 'postgres' | 'wrk') => {
    const values = ons.map((run) => cpuUsPerVote(run, group)).filter((v) => !Number.isNaN(v));
    return `${us(Math.min(...values))}–${us(Math.max(...values))}`;
  };
  const singles = r.costs.filter((c) => !c.without.includes(','));
  const all = r.costs.find((c) => c.without.split(',').length === singles.length);
  const sum = (pick: (c: FeatureCost) => number) => singles.reduce((total, c) => total + pick(c), 0);
  const rows = r.costs.map((c) =>
    `| \`${c.without}\`: ${c.what} | ${cost(c.serverDeltaUs)} | ${cost(c.serverDeltaWrkScaledUs)} | ${cost(c.postgresDeltaUs)} | ${cost(c.postgresDeltaWrkScaledUs)} | ` +
    `${us(c.serverUs.on)} → ${us(c.serverUs.off)} | ${us(c.postgresUs.on)} → ${us(c.postgresUs.off)} | ${us(c.wrkUs.on)} → ${us(c.wrkUs.off)} | ${Math.round(c.votesPerS.on).toLocaleString('en-US')} → ${Math.round(c.votesPerS.off).toLocaleString('en-US')} |`);
  return featuresSection.render(`Generated by \`${r.command}\` at ${r.generatedAt} on ${r.commit}, ${r.cores} cores, load average ${r.loadAverage.min}–${r.loadAverage.max}
at the runs' starts, ${Math.round(r.elapsedS)} s in all; do not edit by hand. Each feature is switched off with
\`LIVEVOTE_MEASURE_WITHOUT\` (measurement only: README.md, Configuration) in write runs of \`npm run bench\`'s shape
(wrk \`-t1 -c${r.connections}\`, every request a new voter, ${r.activeS} s measured after a warm-up, a freshly started
livevote on its embedded Postgres each run), ${r.pairsPerFeature} pairs per feature: everything on against the feature off, side
by side (on first in odd pairs, off first in even ones). CPU per vote is each process's own from \`/proc\`: server = the
livevote process (all its threads), Postgres = the postmaster's tree, wrk = the load generator.

A cost is on − off: the median over pairs of the difference within each pair (the pairs' smallest … largest beside
it). The host's speed moves up to ~2× between runs minutes apart, and wrk's CPU per request, the same work in every
run, moves with it; so "wrk-scaled" is on − off × (wrk on / wrk off), the off run brought to its pair's speed. The
noise to read these against: the ${ons.length} everything-on runs here spanned ${spread('livevote')} µs of server CPU per vote,
${spread('postgres')} of Postgres and ${spread('wrk')} of wrk. A difference whose pairs straddle 0 is not resolved.

| switched off | server µs per vote it costs | wrk-scaled | Postgres µs per vote it costs | wrk-scaled | server µs on → off | Postgres µs on → off | wrk µs on → off | votes/s on → off |
|---|---|---|---|---|---|---|---|---|
${rows.join('\n')}

${all === undefined ? '' : `The single features' costs add up to ${us(sum((c) => c.serverDeltaUs.median))} µs of server and ${us(sum((c) => c.postgresDeltaUs.median))} µs of Postgres CPU per vote
(wrk-scaled ${us(sum((c) => c.serverDeltaWrkScaledUs.median))} and ${us(sum((c) => c.postgresDeltaWrkScaledUs.median))}), against ${us(all.serverDeltaUs.median)} and ${us(all.postgresDeltaUs.median)} (wrk-scaled ${us(all.serverDeltaWrkScaledUs.median)} and ${us(all.postgresDeltaWrkScaledUs.median)}) with all of them off at once.`}
Postgres' side of the commit statement's parts is also measured alone, without the server, by
\`bench/journalFeatures.ts\` (the "Cost per feature" section's Postgres table).`);
}

/** The `features` key of an existing results.json, or undefined. */
export async function preservedFeaturesJson(dir: string): Promise<unknown> {
  return preservedResultsKey(dir, 'features');
}

export async function writeFeaturesResults(r: FeaturesResults, dir: string): Promise<void> {
  const mdFile = path.join(dir, 'RESULTS.md');
  const jsonFile = path.join(dir, 'results.json');
  await writeFile(mdFile, featuresSection.replaced(await readFileOr(mdFile, '# livevote benchmark results\n'), renderFeaturesSection(r)));
  const json = JSON.parse(await readFileOr(jsonFile, '{}')) as Record<string, unknown>;
  const round = (c: CostSummary) => ({ median: Math.round(c.median * 10) / 10, min: Math.round(c.min * 10) / 10, max: Math.round(c.max * 10) / 10 });
  json.features = {
    generated_at: r.generatedAt,
    command: r.command,
    commit: r.commit,
    connections: r.connections,
    active_s: r.activeS,
    pairs_per_feature: r.pairsPerFeature,
    load_average: r.loadAverage,
    cost_us_per_vote: Object.fromEntries(r.costs.map((c) => [c.without, {
      server: round(c.serverDeltaUs),
      server_wrk_scaled: round(c.serverDeltaWrkScaledUs),
      postgres: round(c.postgresDeltaUs),
      postgres_wrk_scaled: round(c.postgresDeltaWrkScaledUs),
    }])),
    details: r,
  };
  await writeFile(jsonFile, `${JSON.stringify(json, null, 2)}\n`);
}
