// What an operator watches on the vote path (infra/deploy/prometheus/livevote.rules.yml alerts on
// these): commit latency, size and outcome, the committer's backlog and in-doubt batches, leases
// lost, WebSocket subscribers. Gauges are read from the vote node when Prometheus scrapes, so the
// hot path pays nothing for them; the journal is timed by a decorator around the port.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Journal, JournalBatch, JournalCommitResult, SpillQueue } from '../../actors/ports.ts';
import type { VoteNode } from '../../actors/voteNode.ts';

export interface VotePathMetrics {
  /** The journal, timed: every commit's duration, rows and outcome. */
  timed(journal: Journal): Journal;
  readonly leasesLostTotal: Counter;
  /** Scrape-time gauges read from these sources. */
  watch(sources: { voteNode: VoteNode; electionIds: () => Iterable<string>; subscribers: () => number }): void;
  /** The spill queue whose depth the spill gauges report (none: they report 0). */
  watchSpillQueue(queue: SpillQueue | null): void;
}

export function createVotePathMetrics(registry: Registry): VotePathMetrics {
  const commitDurationSeconds = new Histogram({
    name: 'livevote_commit_duration_seconds',
    help: 'Group-commit transaction time (fence, COPY, insert, audit, COMMIT), by outcome',
    labelNames: ['outcome'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
    registers: [registry],
  });
  const commitBatchRows = new Histogram({
    name: 'livevote_commit_batch_rows',
    help: 'Votes per group-commit batch',
    buckets: [1, 10, 50, 100, 250, 500, 1000, 2000, 4000, 10000],
    registers: [registry],
  });
  // Where a stored vote's time on the server goes, as sums over votes (rate(sum) / rate(rows) is
  // the mean per vote): waiting in the committer's buffer for its batch to start, then its batch's
  // commit. What the request's duration holds beyond the two is the way in and the way back
  // (routing, the cast's shard turn, the reply). Once per batch, a loop over its rows.
  const voteBufferedSeconds = new Counter({
    name: 'livevote_vote_buffered_seconds_total',
    help: 'Summed over votes in committed batches: time from the vote node\'s receipt of the vote to the start of the commit that stored it',
    registers: [registry],
  });
  const voteCommittingSeconds = new Counter({
    name: 'livevote_vote_committing_seconds_total',
    help: 'Summed over votes in committed batches: the commit time of each vote\'s batch',
    registers: [registry],
  });
  const leasesLostTotal = new Counter({
    name: 'livevote_leases_lost_total',
    help: 'Shard leases this node found taken over by another (its writes to them are fenced)',
    registers: [registry],
  });
  let sources: Parameters<VotePathMetrics['watch']>[0] | undefined;
  let spillQueue: SpillQueue | null = null;
  // The committer and the actors' counts are node-wide; any election's stats carry them.
  const nodeWideStats = () => {
    if (sources) for (const electionId of sources.electionIds()) {
      const stats = sources.voteNode.stats(electionId);
      if (stats) return stats;
    }
    return undefined;
  };
  const committerStats = () => nodeWideStats()?.committer;
  new Gauge({
    name: 'livevote_committer_buffered_rows',
    help: 'Votes waiting in the group-commit buffer',
    registers: [registry],
    collect() { this.set(committerStats()?.bufferedRows ?? 0); },
  });
  new Gauge({
    name: 'livevote_committer_batches_in_doubt',
    help: 'Batches whose commit outcome is unknown (database unreachable); their voters cannot vote again until resolved',
    registers: [registry],
    collect() { this.set(committerStats()?.batchesInDoubt ?? 0); },
  });
  new Gauge({
    name: 'livevote_shard_backlog_votes',
    help: 'Votes admitted to shards and not yet answered, summed over this node',
    registers: [registry],
    collect() {
      let backlog = 0;
      if (sources) for (const electionId of sources.electionIds()) for (const shard of sources.voteNode.stats(electionId)?.shards ?? []) backlog += shard.backlog;
      this.set(backlog);
    },
  });
  new Gauge({
    name: 'livevote_results_subscribers',
    help: 'WebSocket subscribers to results streams on this node',
    registers: [registry],
    collect() { this.set(sources?.subscribers() ?? 0); },
  });

  // The spill path (README, "the deadline"): counters mirrored from the committer and drainer at
  // scrape time, the queue's depth asked of the queue (one call per scrape).
  const mirrored = (name: string, help: string, read: () => number | undefined) => {
    let seen = 0;
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        const value = read();
        if (value !== undefined && value > seen) {
          this.inc(value - seen);
          seen = value;
        }
      },
    });
  };
  mirrored('livevote_spilled_votes_total', 'Votes sent to the spill queue because Postgres did not store them in time', () => committerStats()?.counters.rowsSpilled);
  mirrored('livevote_queued_votes_total', 'Votes answered accepted because the spill queue confirmed it holds them', () => committerStats()?.counters.rowsQueued);
  mirrored('livevote_spill_unconfirmed_total', 'Spills the queue did not confirm (their votes were answered 503 or committed after all)', () => committerStats()?.counters.spillsUnconfirmed);
  mirrored('livevote_drained_votes_total', 'Votes the drainer stored from the spill queue into Postgres', () => sources?.voteNode.spillStats()?.rowsDrained);
  mirrored('livevote_drain_failures_total', 'Attempts to store a spilled batch that failed (the batch stays queued)', () => sources?.voteNode.spillStats()?.drainFailures);
  mirrored('livevote_spill_dead_letters_total', 'Spilled batches this node moved to the dead letters (poison: they can never be stored)', () => sources?.voteNode.spillStats()?.deadLetters);
  mirrored('livevote_shard_actor_runs_total', 'Messages the shard actors handled (each a run of what was sent to one shard until its actor started on it)', () => nodeWideStats()?.actors.runs);
  mirrored('livevote_shard_actor_messages_total', 'Shard messages in those runs (casts, batch outcomes, snapshots)', () => nodeWideStats()?.actors.messages);
  const queueDepth = async () => {
    const queue = spillQueue;
    if (!queue) return null;
    try {
      return { depth: await queue.depth(), deadLetters: await queue.deadLetterCount() };
    } catch {
      return null;
    }
  };
  // The three gauges of one scrape share one look at the queue.
  let depthAsked: { atMs: number; answer: ReturnType<typeof queueDepth> } | null = null;
  const depthOnce = () => {
    if (depthAsked === null || Date.now() - depthAsked.atMs > 1_000) depthAsked = { atMs: Date.now(), answer: queueDepth() };
    return depthAsked.answer;
  };
  new Gauge({
    name: 'livevote_spill_queue_batches',
    help: 'Batches waiting in the spill queue for the drainer (approximate for SQS)',
    registers: [registry],
    async collect() { this.set((await depthOnce())?.depth.batches ?? 0); },
  });
  new Gauge({
    name: 'livevote_spill_queue_oldest_age_seconds',
    help: 'Age of the oldest batch in the spill queue (0 when empty)',
    registers: [registry],
    async collect() {
      const oldest = (await depthOnce())?.depth.oldestSpilledAtMs;
      this.set(oldest == null ? 0 : Math.max(0, (Date.now() - oldest) / 1000));
    },
  });
  new Gauge({
    name: 'livevote_spill_dead_letter_batches',
    help: 'Batches in the spill dead-letter queue (approximate for SQS)',
    registers: [registry],
    async collect() { this.set((await depthOnce())?.deadLetters ?? 0); },
  });

  return {
    leasesLostTotal,
    timed(journal) {
      return {
        async commit(batch: JournalBatch): Promise<JournalCommitResult> {
          const startedMs = Date.now();
          const started = performance.now();
          const result = await journal.commit(batch);
          const seconds = (performance.now() - started) / 1000;
          commitDurationSeconds.observe({ outcome: result.kind }, seconds);
          commitBatchRows.observe(batch.rows.length);
          if (result.kind === 'committed') {
            // Receipt times are whole milliseconds of the same clock as startedMs.
            let bufferedMs = 0;
            for (const row of batch.rows) bufferedMs += startedMs - row.acceptedAtMs;
            voteBufferedSeconds.inc(Math.max(0, bufferedMs) / 1000);
            voteCommittingSeconds.inc(seconds * batch.rows.length);
          }
          return result;
        },
        wasCommitted: (batchId) => journal.wasCommitted(batchId),
      };
    },
    watch(watched) {
      sources = watched;
    },
    watchSpillQueue(queue) {
      spillQueue = queue;
    },
  };
}
