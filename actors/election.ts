// The election aggregate: committed totals of all shards of one election, for results.
//
// Fed only by TalliesCommitted effects, so it never shows a tentative vote (a vote that could
// still be rolled back). Publication is pull-based: a version that increases on every change and
// a dirty flag, so the gateway can push at its own pace (at most every 250 ms) without this
// code knowing about sockets or clocks. Time comes in as arguments.

import { assert } from './shard.ts';
import type { TallySource, VoteOutcome } from './shard.ts';

export interface ElectionResults {
  readonly electionId: string;
  /** Committed votes per candidate index. */
  readonly tallies: readonly number[];
  readonly total: number;
  /** Committed votes per shard. */
  readonly perShard: readonly number[];
  /** Increases on every change; equal versions mean equal results. */
  readonly version: number;
  /**
   * Votes answered `accepted` that wait in the spill queue (Postgres did not store them in time):
   * durable, but in no tally until the drainer stores them. 0: every accepted vote the shards
   * know of is counted.
   */
  readonly queuedVotes: number;
}

export interface ElectionAggregateInit {
  readonly electionId: string;
  readonly candidateCount: number;
  readonly shardCount: number;
  /** Sliding window for votes/s. */
  readonly rateWindowMs?: number;
  /** Resolution of the window. */
  readonly rateBucketMs?: number;
}

export class ElectionAggregate {
  readonly electionId: string;
  readonly candidateCount: number;
  readonly shardCount: number;
  private readonly tallies: number[];
  private readonly perShard: number[];
  /** Votes in the spill queue per shard (set by the shell from each shard's state). */
  private readonly queuedPerShard: number[];
  private queuedTotal = 0;
  private total = 0;
  private versionNumber = 0;
  private dirtyFlag = false;
  private readonly rateBucketMs: number;
  private readonly rateBuckets: number[];
  /** Which bucket period (floor(nowMs / rateBucketMs)) each bucket slot holds. */
  private readonly rateBucketPeriods: number[];
  private readonly outcomeCounts = new Map<string, number>();

  constructor(init: ElectionAggregateInit) {
    const rateWindowMs = init.rateWindowMs ?? 10_000;
    this.rateBucketMs = init.rateBucketMs ?? 1_000;
    assert(Number.isInteger(init.candidateCount) && init.candidateCount >= 1, 'candidateCount must be >= 1');
    assert(Number.isInteger(init.shardCount) && init.shardCount >= 1, 'shardCount must be >= 1');
    assert(this.rateBucketMs > 0 && rateWindowMs >= this.rateBucketMs, 'rate window must hold at least one bucket');
    this.electionId = init.electionId;
    this.candidateCount = init.candidateCount;
    this.shardCount = init.shardCount;
    this.tallies = new Array<number>(init.candidateCount).fill(0);
    this.perShard = new Array<number>(init.shardCount).fill(0);
    this.queuedPerShard = new Array<number>(init.shardCount).fill(0);
    const bucketCount = Math.ceil(rateWindowMs / this.rateBucketMs);
    this.rateBuckets = new Array<number>(bucketCount).fill(0);
    this.rateBucketPeriods = new Array<number>(bucketCount).fill(-1);
  }

  /** Applies a TalliesCommitted effect. Recovery deltas count in totals but not in votes/s. */
  applyTallies(shard: number, deltas: readonly number[], source: TallySource, nowMs: number): void {
    assert(Number.isInteger(shard) && shard >= 0 && shard < this.shardCount, 'shard out of range');
    assert(deltas.length === this.candidateCount, 'deltas length differs from candidateCount');
    let sum = 0;
    for (let c = 0; c < deltas.length; c++) {
      const delta = deltas[c]!;
      assert(Number.isInteger(delta) && delta >= 0, 'committed tallies only grow');
      this.tallies[c]! += delta;
      sum += delta;
    }
    if (sum === 0) return;
    this.perShard[shard]! += sum;
    this.total += sum;
    this.versionNumber++;
    this.dirtyFlag = true;
    if (source === 'live') this.addToRate(sum, nowMs);
  }

  /** The shard's votes in the spill queue now (answered, not yet counted); a change is a new version. */
  setQueuedVotes(shard: number, queuedVotes: number): void {
    assert(Number.isInteger(shard) && shard >= 0 && shard < this.shardCount, 'shard out of range');
    assert(Number.isInteger(queuedVotes) && queuedVotes >= 0, 'queued votes must be a non-negative integer');
    const previous = this.queuedPerShard[shard]!;
    if (previous === queuedVotes) return;
    this.queuedPerShard[shard] = queuedVotes;
    this.queuedTotal += queuedVotes - previous;
    this.versionNumber++;
    this.dirtyFlag = true;
  }

  /** Counts a reply by outcome (and reason), for the rejection counters. */
  recordOutcome(outcome: VoteOutcome): void {
    const key = outcome.kind === 'unavailable' || outcome.kind === 'invalid_vote' ? `${outcome.kind}:${outcome.reason}` : outcome.kind;
    this.outcomeCounts.set(key, (this.outcomeCounts.get(key) ?? 0) + 1);
  }

  /** Replies by outcome kind (`unavailable:<reason>`, `invalid_vote:<reason>` split by reason). */
  outcomes(): Record<string, number> {
    return Object.fromEntries(this.outcomeCounts);
  }

  results(): ElectionResults {
    return {
      electionId: this.electionId,
      tallies: this.tallies.slice(),
      total: this.total,
      perShard: this.perShard.slice(),
      version: this.versionNumber,
      queuedVotes: this.queuedTotal,
    };
  }

  get version(): number {
    return this.versionNumber;
  }

  get dirty(): boolean {
    return this.dirtyFlag;
  }

  /** Results if they changed since the last call, else null. */
  takeChanged(): ElectionResults | null {
    if (!this.dirtyFlag) return null;
    this.dirtyFlag = false;
    return this.results();
  }

  /** Committed live votes per second over the sliding window ending at nowMs. */
  votesPerSecond(nowMs: number): number {
    const currentPeriod = Math.floor(nowMs / this.rateBucketMs);
    const oldestPeriod = currentPeriod - this.rateBuckets.length + 1;
    let sum = 0;
    for (let i = 0; i < this.rateBuckets.length; i++) {
      const period = this.rateBucketPeriods[i]!;
      if (period >= oldestPeriod && period <= currentPeriod) sum += this.rateBuckets[i]!;
    }
    return (sum * 1000) / (this.rateBuckets.length * this.rateBucketMs);
  }

  private addToRate(votes: number, nowMs: number): void {
    const period = Math.floor(nowMs / this.rateBucketMs);
    const index = period % this.rateBuckets.length;
    if (this.rateBucketPeriods[index] !== period) {
      this.rateBucketPeriods[index] = period;
      this.rateBuckets[index] = 0;
    }
    this.rateBuckets[index]! += votes;
  }
}
