import { describe, expect, it } from 'vitest';
import { ElectionAggregate } from './election.ts';

describe('election aggregate', () => {
  it('sums committed deltas into totals and per-shard counts, bumping the version', () => {
    const aggregate = new ElectionAggregate({ electionId: 'e', candidateCount: 3, shardCount: 2 });
    expect(aggregate.results()).toEqual({ electionId: 'e', tallies: [0, 0, 0], total: 0, perShard: [0, 0], version: 0, queuedVotes: 0 });
    aggregate.applyTallies(0, [1, 0, 2], 'live', 1000);
    aggregate.applyTallies(1, [0, 1, 0], 'live', 1000);
    expect(aggregate.results()).toEqual({ electionId: 'e', tallies: [1, 1, 2], total: 4, perShard: [3, 1], version: 2, queuedVotes: 0 });
    // A no-op delta is not a change.
    aggregate.applyTallies(1, [0, 0, 0], 'live', 1000);
    expect(aggregate.version).toBe(2);
  });

  it('says how many votes wait in the spill queue, apart from the committed counts', () => {
    const aggregate = new ElectionAggregate({ electionId: 'e', candidateCount: 2, shardCount: 2 });
    aggregate.setQueuedVotes(0, 30);
    aggregate.setQueuedVotes(1, 12);
    expect(aggregate.results()).toMatchObject({ total: 0, queuedVotes: 42, version: 2 });
    // Drained: counted, no longer queued.
    aggregate.applyTallies(0, [20, 10], 'live', 0);
    aggregate.setQueuedVotes(0, 0);
    expect(aggregate.results()).toMatchObject({ total: 30, queuedVotes: 12, version: 4 });
    aggregate.setQueuedVotes(1, 12);
    expect(aggregate.version).toBe(4);
  });

  it('hands out changed results once per change (dirty flag)', () => {
    const aggregate = new ElectionAggregate({ electionId: 'e', candidateCount: 2, shardCount: 1 });
    expect(aggregate.takeChanged()).toBeNull();
    aggregate.applyTallies(0, [1, 0], 'live', 0);
    aggregate.applyTallies(0, [0, 1], 'live', 0);
    expect(aggregate.takeChanged()?.total).toBe(2);
    expect(aggregate.takeChanged()).toBeNull();
    expect(aggregate.dirty).toBe(false);
  });

  it('measures votes/s over a sliding window, leaving recovery out', () => {
    const aggregate = new ElectionAggregate({ electionId: 'e', candidateCount: 1, shardCount: 1, rateWindowMs: 10_000, rateBucketMs: 1_000 });
    aggregate.applyTallies(0, [500], 'recovery', 0);
    aggregate.applyTallies(0, [10], 'live', 0);
    aggregate.applyTallies(0, [20], 'live', 4_500);
    expect(aggregate.votesPerSecond(5_000)).toBe(3);
    // The first bucket leaves the window after 10 s.
    expect(aggregate.votesPerSecond(10_500)).toBe(2);
    expect(aggregate.votesPerSecond(60_000)).toBe(0);
  });

  it('counts replies by outcome and reason', () => {
    const aggregate = new ElectionAggregate({ electionId: 'e', candidateCount: 1, shardCount: 1 });
    aggregate.recordOutcome({ kind: 'overloaded', retryAfterMs: 1 });
    aggregate.recordOutcome({ kind: 'overloaded', retryAfterMs: 1 });
    aggregate.recordOutcome({ kind: 'unavailable', reason: 'in_doubt', retryAfterMs: 1 });
    expect(aggregate.outcomes()).toEqual({ overloaded: 2, 'unavailable:in_doubt': 1 });
  });

  it('refuses deltas that would shrink a committed tally', () => {
    const aggregate = new ElectionAggregate({ electionId: 'e', candidateCount: 1, shardCount: 1 });
    expect(() => aggregate.applyTallies(0, [-1], 'live', 0)).toThrow();
    expect(() => aggregate.applyTallies(1, [1], 'live', 0)).toThrow();
  });
});
