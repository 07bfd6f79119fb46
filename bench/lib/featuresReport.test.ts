// The per-feature costs are derived from the knob runs as bench/README.md says (on − off per pair,
// the median over pairs, wrk's ratio as the speed reference), and `npm run bench` keeps the section.
import { describe, expect, it } from 'vitest';
import { featureCost, featuresSection, renderFeaturesSection, type FeaturesResults } from './featuresReport.ts';
import type { WriteRun } from './writeRuns.ts';

/** A run whose CPU per vote is `us` µs for each group (at 10,000 votes/s, 1% of a core is 1 µs). */
function run(us: { livevote: number; postgres: number; wrk: number }): WriteRun {
  return {
    env: {}, votesPerS: 10_000, latencyMs: { p50: 1, p90: 2, p99: 3, mean: 1 }, non2xx: 0, loadAverageAtStart: 1,
    cpuPercent: { livevote: us.livevote, postgres: us.postgres, wrk: us.wrk },
    eventLoopDelayMs: { p50: 1, p99: 2, max: 3 }, commits: { count: 1, meanMs: 1, meanRows: 1 }, voteStagesMs: { buffered: 1, committing: 1, rest: 1 },
    actors: { runsPerVote: 1, messagesPerRun: 1 },
  };
}

describe('the cost of a feature from its knob runs', () => {
  const pairs = [
    { on: run({ livevote: 80, postgres: 50, wrk: 20 }), off: run({ livevote: 70, postgres: 40, wrk: 20 }) },
    // The host twice as slow for the off run: wrk's CPU per request doubled with it.
    { on: run({ livevote: 80, postgres: 50, wrk: 20 }), off: run({ livevote: 140, postgres: 80, wrk: 40 }) },
    { on: run({ livevote: 90, postgres: 60, wrk: 22 }), off: run({ livevote: 86, postgres: 58, wrk: 22 }) },
  ];
  const cost = featureCost({ without: 'metrics', what: 'metrics' }, pairs);

  it('is the median over pairs of on − off, with the smallest and largest', () => {
    expect(cost.serverDeltaUs).toEqual({ median: 4, min: -60, max: 10 });
    expect(cost.postgresDeltaUs).toEqual({ median: 2, min: -30, max: 10 });
    expect(cost.serverUs).toEqual({ on: 80, off: 86 });
  });

  it("scales the off run by wrk's on/off ratio, which takes the host's speed out", () => {
    expect(cost.serverDeltaWrkScaledUs).toEqual({ median: 10, min: 4, max: 10 });
    expect(cost.postgresDeltaWrkScaledUs).toEqual({ median: 10, min: 2, max: 10 });
  });

  it('is rendered between markers that npm run bench keeps', () => {
    const results: FeaturesResults = {
      generatedAt: 'now', command: 'npm run bench:features', commit: 'abc1234', cores: 2, connections: 100, activeS: 5, pairsPerFeature: 3,
      elapsedS: 700, loadAverage: { min: 0.5, max: 1.5 }, costs: [cost], pairs: [{ without: 'metrics', pairs }],
    };
    const section = renderFeaturesSection(results);
    expect(section).toContain('| `metrics`: metrics | **4.0** (-60.0 … 10.0) | **10.0** (4.0 … 10.0) | **2.0** (-30.0 … 10.0) | **10.0** (2.0 … 10.0) |');
    const appended = featuresSection.replaced('# results\n\nbody\n', section);
    expect(featuresSection.preserved(appended)).toBe(section);
    // What report.ts does with a freshly rendered file: the section carried over as it was.
    expect(featuresSection.replaced('# rewritten\n', featuresSection.preserved(appended))).toBe(`# rewritten\n\n${section}\n`);
  });
});
