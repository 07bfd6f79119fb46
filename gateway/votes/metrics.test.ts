// The timed journal's per-vote sums: a committed batch adds each row's wait since its receipt and
// its batch's commit time once per row; a batch not committed adds nothing.
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import type { Journal, JournalCommitResult, JournalRow } from '../../actors/ports.ts';
import { createVotePathMetrics } from './metrics.ts';

const electionId = '0191d7a0-0000-7000-8000-000000000001';

function rows(count: number, acceptedAtMs: number): JournalRow[] {
  return Array.from({ length: count }, (_, i) => ({
    electionId, shard: i % 4, epoch: 1, voterNumber: i, candidateIndex: 0, voteId: `0191d7a0-0000-7000-8000-${String(i).padStart(12, '0')}`, acceptedAtMs,
  }));
}

async function value(registry: Registry, name: string, outcome?: string): Promise<number> {
  // A histogram's _sum and _count are values of the histogram, named by metricName.
  const values = (await registry.getMetricsAsJSON()).flatMap((m) =>
    (m.values as { value: number; labels: Record<string, string | number>; metricName?: string }[]).map((v) => ({ ...v, metricName: v.metricName ?? m.name })));
  const found = values.filter((v) => v.metricName === name && (outcome === undefined || v.labels.outcome === outcome));
  if (found.length === 0) throw new Error(`no metric ${name}`);
  return found.reduce((sum, v) => sum + v.value, 0);
}

describe('a stored vote\'s time, summed over votes', () => {
  it('adds each committed row\'s buffered time and its batch\'s commit time; other outcomes add nothing', async () => {
    const registry = new Registry();
    const metrics = createVotePathMetrics(registry);
    let answer: JournalCommitResult = { kind: 'committed', conflicts: [] };
    const journal: Journal = { commit: async () => answer, wasCommitted: async () => false };
    const timed = metrics.timed(journal);

    // Received 60 s before the commit starts: each row waited at least that long.
    await timed.commit({ batchId: 1, rows: rows(5, Date.now() - 60_000) });
    const buffered = await value(registry, 'livevote_vote_buffered_seconds_total');
    expect(buffered).toBeGreaterThanOrEqual(5 * 60);
    const commitSeconds = await value(registry, 'livevote_commit_duration_seconds_sum', 'committed');
    expect(await value(registry, 'livevote_vote_committing_seconds_total')).toBeCloseTo(5 * commitSeconds, 9);

    answer = { kind: 'fenced', staleShards: [{ electionId, shard: 0 }] };
    await timed.commit({ batchId: 2, rows: rows(3, Date.now() - 60_000) });
    answer = { kind: 'failed', message: 'lost' };
    await timed.commit({ batchId: 3, rows: rows(3, Date.now() - 60_000) });
    expect(await value(registry, 'livevote_vote_buffered_seconds_total')).toBe(buffered);
    expect(await value(registry, 'livevote_vote_committing_seconds_total')).toBeCloseTo(5 * commitSeconds, 9);
    expect(await value(registry, 'livevote_commit_batch_rows_sum')).toBe(11);
  });
});
