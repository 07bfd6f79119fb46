// The cluster section of RESULTS.md survives `npm run bench`, and the cost of a forwarded vote is
// derived from the runs as bench/README.md says.
import { describe, expect, it } from 'vitest';
import { forwardCost, preservedClusterSection, statOf, withClusterSection, type ThroughputRun } from './clusterReport.ts';

const section = '<!-- cluster-bench:begin (written by npm run bench:cluster; npm run bench keeps it) -->\n## Cluster\n$& 12 µs\n<!-- cluster-bench:end -->';

describe('the cluster section of RESULTS.md', () => {
  it('is appended to a file without one, found again, and replaced in place', () => {
    const appended = withClusterSection('# results\n\nbody\n', section);
    expect(appended).toBe(`# results\n\nbody\n\n${section}\n`);
    expect(preservedClusterSection(appended)).toBe(section);
    const newer = section.replace('12 µs', '15 µs');
    expect(withClusterSection(appended, newer)).toBe(`# results\n\nbody\n\n${newer}\n`);
  });

  it('is absent from a file the cluster benchmark never wrote to', () => {
    expect(preservedClusterSection('# results\n')).toBeUndefined();
  });
});

function run(fields: Partial<ThroughputRun> & Pick<ThroughputRun, 'nodes' | 'targets'>): ThroughputRun {
  return {
    label: 'run', activeS: 10, commands: [], votesPerS: 1000, ok: 10_000, non2xx: 0, stored: 10_000, countOk: true, countProblems: [],
    latencyMsP50Max: 1, latencyMsP99Max: 2, forwardedShare: 0, cpuPercent: {}, cpuUsPerVote: { nodes: 100, nodesNet: 100, postgres: 40, wrk: 10 }, idleCpuPercent: {}, serverOutcomes: {}, perNode: [],
    ...fields,
  };
}

describe('the cost of a forwarded vote', () => {
  it('by sides: the sender less its local votes at the one-node cost, the owner all its CPU', () => {
    const cost = forwardCost([
      run({ nodes: 1, targets: ['node-1'] }),
      run({
        nodes: 2, targets: ['node-1'], activeS: 10,
        perNode: [
          // 5,000 local at 100 µs = 0.5 s, plus 5,000 forwarded at 40 µs = 0.2 s: 7% of a core over 10 s, on 1% idle.
          { nodeId: 'node-1', answered200: 10_000, local: 5000, forwarded: 5000, received: 0, idleCpuPercent: 1, routedOutcomes: {}, cpuPercent: 8, cpuUsPerHandledVote: 70 },
          // 5,000 received at 80 µs = 0.4 s: 4% of a core.
          { nodeId: 'node-2', answered200: 0, local: 0, forwarded: 0, received: 5000, idleCpuPercent: 0, routedOutcomes: {}, cpuPercent: 4, cpuUsPerHandledVote: 80 },
        ],
      }),
    ]);
    expect(cost?.localUs).toBe(100);
    expect(cost?.split).toEqual({ senderUs: 40, ownerUs: 80, forwardedUs: 120, ratio: 1.2 });
    expect(cost?.spread).toEqual([]);
  });

  it('from a spread run: the extra CPU per vote over the forwarded share', () => {
    const cost = forwardCost([
      run({ nodes: 1, targets: ['node-1'] }),
      run({ nodes: 3, targets: ['node-1', 'node-2', 'node-3'], forwardedShare: 0.5, cpuUsPerVote: { nodes: 110, nodesNet: 110, postgres: 50, wrk: 10 } }),
    ]);
    expect(cost?.spread).toEqual([{ nodes: 3, forwardedShare: 0.5, forwardedUs: 120, ratio: 1.2, ratioWithPostgres: 1.286 }]);
  });

  it('needs a one-node run', () => {
    expect(forwardCost([run({ nodes: 2, targets: ['node-1', 'node-2'] })])).toBeUndefined();
  });
});

describe('the moves section of RESULTS.md', () => {
  it('is appended once, replaced in place, and kept by a writer that has none', async () => {
    const { preservedMovesSection, renderMovesSection, withMovesSection } = await import('./movesReport.ts');
    const section = renderMovesSection('pause p99 1 ms');
    const appended = withMovesSection('# results\n\nbody\n', section);
    expect(preservedMovesSection(appended)).toBe(section);
    const newer = renderMovesSection('pause p99 2 ms');
    expect(withMovesSection(appended, newer)).toBe(`# results\n\nbody\n\n${newer}\n`);
    expect(withMovesSection('# rewritten\n', preservedMovesSection(appended))).toBe(`# rewritten\n\n${section}\n`);
    expect(withMovesSection('# rewritten\n', undefined)).toBe('# rewritten\n');
  });
});

describe('statOf', () => {
  it('gives nearest-rank p50 and p99 and the max, in any order, and NaN for none', () => {
    expect(statOf([30, 10, 20])).toEqual({ p50: 20, p99: 30, max: 30 });
    expect(statOf(Array.from({ length: 200 }, (_, i) => 200 - i))).toEqual({ p50: 100, p99: 198, max: 200 });
    expect(statOf([])).toEqual({ p50: Number.NaN, p99: Number.NaN, max: Number.NaN });
  });
});
