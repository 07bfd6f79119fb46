// Whole-election results on every node. Each shard's owner publishes the shard's committed counts
// (absolute, not deltas: a lost or repeated message changes nothing) with its lease epoch and a
// version that grows within the epoch; every node keeps the highest (epoch, version) per shard
// and sums. A new owner (epoch + 1) recovered every stored vote, so its counts replace the old
// owner's; until it publishes, the old owner's last counts stand, and they were committed too.
//
// Owners publish changed shards every publishIntervalMs, and every shard they hold every
// republishIntervalMs (a node that joined, or missed a message, catches up within it).
import type { ElectionResults } from '../actors/election.ts';
import type { VoteNode } from '../actors/voteNode.ts';
import { talliesSupersede, type TalliesChanged } from './protocol.ts';

interface ShardEntry {
  epoch: number;
  version: number;
  counts: readonly number[];
  /** Votes in the owner's spill queue, not in counts yet. */
  queued: number;
}

interface ElectionEntry {
  readonly shards: Map<number, ShardEntry>;
  version: number;
  cached: ElectionResults | undefined;
  /** (time, total) samples for votes/s, oldest first. */
  readonly samples: { atMs: number; total: number }[];
}

export interface ClusterResultsOptions {
  readonly voteNode: Pick<VoteNode, 'shardTallies'>;
  /** Shard and candidate counts of an election this node knows. */
  readonly dimensions: (electionId: string) => { shardCount: number; candidateCount: number } | undefined;
  /** Elections to publish for (those this node may host shards of). */
  readonly electionIds: () => Iterable<string>;
  /** Sends one event to every other live node. */
  readonly broadcast: (event: TalliesChanged) => void;
  readonly publishIntervalMs?: number;
  readonly republishIntervalMs?: number;
  /** Window of the votes/s figure. */
  readonly rateWindowMs?: number;
}

export class ClusterResults {
  private readonly options: ClusterResultsOptions;
  private readonly elections = new Map<string, ElectionEntry>();
  /** Last published change mark per local shard. */
  private readonly published = new Map<string, { epoch: number; changeMark: number }>();
  private publishTimer: NodeJS.Timeout | undefined;
  private lastRepublishMs = 0;

  constructor(options: ClusterResultsOptions) {
    this.options = options;
  }

  start(): void {
    this.publishTimer = setInterval(() => this.publishLocal(), this.options.publishIntervalMs ?? 100);
    this.publishTimer.unref();
  }

  stop(): void {
    if (this.publishTimer !== undefined) clearInterval(this.publishTimer);
    this.publishLocal();
  }

  /** Counts from a peer (or from this node's own shards). */
  applyTallies(event: TalliesChanged): void {
    const dims = this.options.dimensions(event.electionId);
    if (dims === undefined || event.shard >= dims.shardCount || event.counts.length !== dims.candidateCount) return;
    const entry = this.entry(event.electionId);
    const current = entry.shards.get(event.shard);
    if (current !== undefined && !talliesSupersede(event, current)) return;
    entry.shards.set(event.shard, { epoch: event.epoch, version: event.version, counts: event.counts.slice(), queued: event.queued ?? 0 });
    entry.version++;
    entry.cached = undefined;
  }

  /**
   * Committed votes of the whole election as this node knows them; undefined if unknown. The
   * shards served here count as of now (a voter reading after an accepted vote sees it, when
   * asked on the owner); the others as of their owner's last publication.
   */
  results(electionId: string): ElectionResults | undefined {
    const dims = this.options.dimensions(electionId);
    if (dims === undefined) return undefined;
    const entry = this.entry(electionId);
    for (const tallies of this.options.voteNode.shardTallies(electionId)) {
      const current = entry.shards.get(tallies.shard);
      if (current === undefined || talliesSupersede({ epoch: tallies.epoch, version: tallies.changeMark }, current)) {
        this.applyTallies({
          t: 'tallies', electionId, shard: tallies.shard, epoch: tallies.epoch, version: tallies.changeMark, counts: tallies.counts, queued: tallies.queuedVotes,
        });
      }
    }
    if (entry.cached !== undefined && entry.cached.tallies.length === dims.candidateCount) return entry.cached;
    const tallies = new Array<number>(dims.candidateCount).fill(0);
    const perShard = new Array<number>(dims.shardCount).fill(0);
    let total = 0;
    let queuedVotes = 0;
    for (const [shard, shardEntry] of entry.shards) {
      queuedVotes += shardEntry.queued;
      let sum = 0;
      for (let c = 0; c < tallies.length; c++) {
        const count = shardEntry.counts[c] ?? 0;
        tallies[c]! += count;
        sum += count;
      }
      if (shard < perShard.length) perShard[shard] = sum;
      total += sum;
    }
    entry.cached = { electionId, tallies, total, perShard, version: entry.version, queuedVotes };
    return entry.cached;
  }

  /** One shard's committed votes as this node last heard them (from its owner, or a replica), with their epoch. */
  shardVotes(electionId: string, shard: number): { epoch: number; votes: number } | undefined {
    const entry = this.elections.get(electionId)?.shards.get(shard);
    if (entry === undefined) return undefined;
    let votes = 0;
    for (const count of entry.counts) votes += count;
    return { epoch: entry.epoch, votes };
  }

  /** Committed votes per second over the window, cluster-wide (from the summed counts). */
  votesPerSecond(electionId: string, nowMs: number = Date.now()): number {
    const entry = this.elections.get(electionId);
    if (entry === undefined || entry.samples.length < 2) return 0;
    const first = entry.samples[0]!;
    const last = entry.samples[entry.samples.length - 1]!;
    const spanMs = Math.max(1, Math.max(last.atMs, nowMs) - first.atMs);
    return Math.round(((last.total - first.total) * 1000) / spanMs);
  }

  /** Publishes this node's changed shards (all of them, every republishIntervalMs). */
  publishLocal(nowMs: number = Date.now()): void {
    const republish = nowMs - this.lastRepublishMs >= (this.options.republishIntervalMs ?? 1_000);
    if (republish) this.lastRepublishMs = nowMs;
    for (const electionId of this.options.electionIds()) {
      for (const tallies of this.options.voteNode.shardTallies(electionId)) {
        const key = `${electionId}/${tallies.shard}`;
        const last = this.published.get(key);
        const changed = last === undefined || last.epoch !== tallies.epoch || last.changeMark !== tallies.changeMark;
        if (!changed && !republish) continue;
        this.published.set(key, { epoch: tallies.epoch, changeMark: tallies.changeMark });
        const event: TalliesChanged = {
          t: 'tallies', electionId, shard: tallies.shard, epoch: tallies.epoch, version: tallies.changeMark, counts: tallies.counts.slice(),
          queued: tallies.queuedVotes,
        };
        this.applyTallies(event);
        this.options.broadcast(event);
      }
      this.sample(electionId, nowMs);
    }
  }

  private sample(electionId: string, nowMs: number): void {
    const entry = this.entry(electionId);
    const total = this.results(electionId)?.total ?? 0;
    const samples = entry.samples;
    const last = samples[samples.length - 1];
    if (last !== undefined && nowMs - last.atMs < 250) return;
    samples.push({ atMs: nowMs, total });
    const windowMs = this.options.rateWindowMs ?? 10_000;
    while (samples.length > 2 && samples[0]!.atMs < nowMs - windowMs) samples.shift();
  }

  private entry(electionId: string): ElectionEntry {
    let entry = this.elections.get(electionId);
    if (entry === undefined) {
      entry = { shards: new Map(), version: 0, cached: undefined, samples: [] };
      this.elections.set(electionId, entry);
    }
    return entry;
  }
}
