// Warm replicas, the I/O half (the apply logic is pure: cluster/replicas.ts).
//
// Owner side, ReplicationStreamer: the vote node reports each shard's counted batch
// (VoteNodeDeps.onBatchCommitted); the streamer numbers it per (shard, epoch) and queues it for
// each replica the map names; everything queued in one event-loop turn leaves as one `replicate`
// event per replica (several shards per event). The queue per replica is bounded in rows: past
// it a batch is dropped (its seq still used), the replica sees the gap and catches up from
// Postgres. The link drops events too when its own buffer is full; same remedy.
//
// Replica side, ReplicaSet: one ReplicaShardState per shard the map makes this node a replica
// of; catch-ups read Postgres (latest snapshot + votes after its watermark, or only the votes
// after the replica's watermark), at most catchUpsInFlightMax at once. A promotion (shardHost.ts)
// takes the state out with takeForPromotion: only for epoch + 1 of the owner it followed, so no
// other owner came between.
import { Counter, Gauge, type Registry } from 'prom-client';
import type { ShardKey, ShardSnapshot, SnapshotStore } from '../actors/ports.ts';
import type { CommittedShardBatch, ShardRecovery } from '../actors/voteNode.ts';
import { shardKeyOf } from './allocation.ts';
import type { ClusterView } from './ports.ts';
import {
  replicaReportsPerEventMax,
  replicatedShardsPerEventMax,
  type ReplicaReport,
  type ReplicaShardReport,
  type ReplicateBatches,
  type ReplicatedShardBatch,
} from './protocol.ts';
import {
  applyStoredRows,
  baseFromSnapshot,
  createReplicaShardState,
  replicaSnapshot,
  replicaVotes,
  stepReplica,
  type ReplicaEffect,
  type ReplicaShardState,
} from './replicas.ts';

interface ReplicationLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

// ---------------------------------------------------------------------------------------------
// Owner side

export interface ReplicationStreamerOptions {
  readonly nodeId: string;
  /** Sends one event to a peer (links.send: dropped and counted when the link is down or full). */
  readonly send: (nodeId: string, event: ReplicateBatches) => void;
  /** Rows queued per replica within one event-loop turn; past it batches are dropped. */
  readonly queuedRowsMaxPerReplica: number;
}

export class ReplicationStreamer {
  private readonly options: ReplicationStreamerOptions;
  private replicasByShard = new Map<string, readonly string[]>();
  private readonly seqByShard = new Map<string, { epoch: number; seq: number }>();
  private readonly queued = new Map<string, { batches: ReplicatedShardBatch[]; rows: number }>();
  private flushScheduled = false;
  /** Batches dropped because a replica's queue was full. */
  batchesDropped = 0;
  batchesSent = 0;

  constructor(options: ReplicationStreamerOptions) {
    this.options = options;
  }

  applyView(view: ClusterView): void {
    const next = new Map<string, readonly string[]>();
    for (const row of view.shards) {
      if (row.ownerNodeId === this.options.nodeId && row.replicaNodeIds.length > 0) next.set(shardKeyOf(row.electionId, row.shard), row.replicaNodeIds);
    }
    this.replicasByShard = next;
  }

  /** From the vote node, in each shard's order. */
  onBatchCommitted(batch: CommittedShardBatch): void {
    const key = shardKeyOf(batch.key.electionId, batch.key.shard);
    let numbering = this.seqByShard.get(key);
    if (numbering === undefined || numbering.epoch !== batch.epoch) {
      numbering = { epoch: batch.epoch, seq: 0 };
      this.seqByShard.set(key, numbering);
    }
    numbering.seq++;
    const replicas = this.replicasByShard.get(key);
    if (replicas === undefined) return;
    const message: ReplicatedShardBatch = {
      electionId: batch.key.electionId, shard: batch.key.shard, epoch: batch.epoch, seq: numbering.seq, batchId: batch.batchId,
      watermarkBatchId: batch.watermarkBatchId, voterNumbers: batch.voterNumbers, candidateIndexes: batch.candidateIndexes,
    };
    for (const nodeId of replicas) {
      if (nodeId === this.options.nodeId) continue;
      let queue = this.queued.get(nodeId);
      if (queue === undefined) this.queued.set(nodeId, (queue = { batches: [], rows: 0 }));
      if (queue.rows + message.voterNumbers.length > this.options.queuedRowsMaxPerReplica) {
        this.batchesDropped++;
        continue;
      }
      queue.batches.push(message);
      queue.rows += message.voterNumbers.length;
    }
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.flushScheduled = false;
    const queued = [...this.queued];
    this.queued.clear();
    for (const [nodeId, queue] of queued) {
      for (let i = 0; i < queue.batches.length; i += replicatedShardsPerEventMax) {
        const batches = queue.batches.slice(i, i + replicatedShardsPerEventMax);
        this.options.send(nodeId, { t: 'replicate', batches });
        this.batchesSent += batches.length;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Replica side

export interface ReplicaSetOptions {
  readonly nodeId: string;
  readonly snapshots: Pick<SnapshotStore, 'readLatestSnapshot' | 'readVotesAfter'>;
  /** Shard and candidate counts of an election this node knows; undefined while it does not. */
  readonly dimensions: (electionId: string) => { shardCount: number; candidateCount: number } | undefined;
  readonly log: ReplicationLog;
  /** Rows buffered per shard while it catches up; past it the buffer is dropped and read again. */
  readonly bufferRowsMax: number;
  readonly catchUpsInFlightMax: number;
  /** Wait before retrying a failed catch-up. */
  readonly catchUpRetryMs: number;
  readonly now?: () => number;
}

/** What a promotion found: the state to restore, or why there is none. */
export type PromotionBase =
  | { readonly kind: 'warm'; readonly base: ShardSnapshot; readonly caughtUp: boolean; readonly replicaEpoch: number }
  | { readonly kind: 'cold'; readonly reason: 'not_a_replica' | 'no_state_yet' | 'other_epoch_between'; readonly replicaEpoch: number | null };

export class ReplicaSet {
  private readonly options: ReplicaSetOptions;
  private readonly now: () => number;
  private readonly shards = new Map<string, ReplicaShardState>();
  /** Catch-ups waiting for a slot, the latest per shard (an older one is superseded anyway). */
  private readonly waiting = new Map<ReplicaShardState, ReplicaEffect>();
  private inFlight = 0;
  private stopped = false;

  constructor(options: ReplicaSetOptions) {
    this.options = options;
    this.now = options.now ?? Date.now;
  }

  /** Follow the shards the map makes this node a replica of; keep the ones it now owns until promoted. */
  applyView(view: ClusterView): void {
    const self = this.options.nodeId;
    const keep = new Set<string>();
    for (const row of view.shards) {
      const key = shardKeyOf(row.electionId, row.shard);
      if (row.ownerNodeId === self) {
        if (this.shards.has(key)) keep.add(key);
        continue;
      }
      if (!row.replicaNodeIds.includes(self)) continue;
      const state = this.stateFor({ electionId: row.electionId, shard: row.shard });
      if (state === undefined) continue;
      keep.add(key);
      // The owner holds the lease under this epoch: an idle shard catches up now, not at its next batch.
      const ownerServes = row.leaseNodeId === row.ownerNodeId && row.leaseExpiresAtMs > view.readAtMs && row.epoch > 0;
      if (ownerServes) this.step(state, { kind: 'OwnerEpochSeen', epoch: row.epoch });
    }
    for (const key of [...this.shards.keys()]) if (!keep.has(key)) this.shards.delete(key);
  }

  receive(event: ReplicateBatches): void {
    const nowMs = this.now();
    for (const batch of event.batches) {
      const state = this.shards.get(shardKeyOf(batch.electionId, batch.shard));
      if (state === undefined) continue; // not (yet) a replica here: the view will say, and a gap catches up
      if (batch.candidateIndexes.some((c) => c >= state.candidateCount)) continue;
      if (batch.voterNumbers.some((v) => v % state.shardCount !== state.key.shard)) continue;
      this.step(state, { kind: 'BatchReceived', batch, nowMs });
    }
  }

  /**
   * The owner published the shard's counts under this epoch (a `tallies` event, at least every
   * second): an idle shard's replica catches up now rather than at the owner's first batch.
   */
  ownerEpochSeen(electionId: string, shard: number, epoch: number): void {
    const state = this.shards.get(shardKeyOf(electionId, shard));
    if (state !== undefined && epoch > state.epoch) this.step(state, { kind: 'OwnerEpochSeen', epoch });
  }

  /**
   * For the shard host, after it took the lease under `epoch`: this node's replica state as a
   * snapshot, when it followed the owner of epoch - 1 (no other owner came between). The state
   * leaves the set either way: the shard is served here now.
   */
  takeForPromotion(electionId: string, shard: number, epoch: number): PromotionBase {
    const key = shardKeyOf(electionId, shard);
    const state = this.shards.get(key);
    if (state === undefined) return { kind: 'cold', reason: 'not_a_replica', replicaEpoch: null };
    this.shards.delete(key);
    if (state.base === null) return { kind: 'cold', reason: 'no_state_yet', replicaEpoch: state.epoch };
    if (state.epoch + 1 !== epoch) return { kind: 'cold', reason: 'other_epoch_between', replicaEpoch: state.epoch };
    return { kind: 'warm', base: replicaSnapshot(state, this.now())!, caughtUp: state.phase === 'live', replicaEpoch: state.epoch };
  }

  report(): ReplicaShardReport[] {
    const nowMs = this.now();
    return [...this.shards.values()].map((s) => ({
      electionId: s.key.electionId,
      shard: s.key.shard,
      epoch: s.epoch,
      phase: s.phase,
      batchesBehind: s.phase === 'live' ? 0 : Math.max(0, s.highestSeq - s.coveredSeq),
      votes: replicaVotes(s),
      sinceAppliedMs: s.lastAppliedAtMs === 0 ? 0 : Math.max(0, nowMs - s.lastAppliedAtMs),
      counts: s.base?.tallies.slice() ?? [],
    }));
  }

  /** Counters summed over the shards held now. */
  counters(): { shards: number; live: number; catchUps: number; gaps: number; batchesApplied: number; bufferOverflows: number } {
    let live = 0;
    let catchUps = 0;
    let gaps = 0;
    let batchesApplied = 0;
    let bufferOverflows = 0;
    for (const s of this.shards.values()) {
      if (s.phase === 'live') live++;
      catchUps += s.counters.catchUps;
      gaps += s.counters.gaps;
      batchesApplied += s.counters.batchesApplied;
      bufferOverflows += s.counters.bufferOverflows;
    }
    return { shards: this.shards.size, live, catchUps, gaps, batchesApplied, bufferOverflows };
  }

  stop(): void {
    this.stopped = true;
    this.shards.clear();
    this.waiting.clear();
  }

  private stateFor(key: ShardKey): ReplicaShardState | undefined {
    const id = shardKeyOf(key.electionId, key.shard);
    const existing = this.shards.get(id);
    if (existing !== undefined) return existing;
    const dims = this.options.dimensions(key.electionId);
    if (dims === undefined || key.shard >= dims.shardCount) return undefined;
    const state = createReplicaShardState({ key, shardCount: dims.shardCount, candidateCount: dims.candidateCount, bufferRowsMax: this.options.bufferRowsMax });
    this.shards.set(id, state);
    return state;
  }

  private step(state: ReplicaShardState, msg: Parameters<typeof stepReplica>[1]): void {
    let effects: ReplicaEffect[];
    try {
      effects = stepReplica(state, msg);
    } catch (error) {
      // A broken invariant (a malformed batch): this replica state can no longer be trusted.
      this.options.log.warn({ err: error, shard: state.key }, 'replica state dropped after an invariant broke; it catches up again on the next batch');
      this.shards.delete(shardKeyOf(state.key.electionId, state.key.shard));
      return;
    }
    for (const effect of effects) this.waiting.set(state, effect);
    this.pump();
  }

  private pump(): void {
    while (!this.stopped && this.inFlight < this.options.catchUpsInFlightMax && this.waiting.size > 0) {
      const [state, effect] = this.waiting.entries().next().value!;
      this.waiting.delete(state);
      // Superseded while it waited (a newer catch-up, or the shard left this node): skip.
      if (effect.catchUpId !== state.catchUpId || this.shards.get(shardKeyOf(state.key.electionId, state.key.shard)) !== state) continue;
      this.inFlight++;
      void this.catchUp(state, effect).finally(() => {
        this.inFlight--;
        this.pump();
      });
    }
  }

  private async catchUp(state: ReplicaShardState, effect: ReplicaEffect): Promise<void> {
    const current = () => state.catchUpId === effect.catchUpId && this.shards.get(shardKeyOf(state.key.electionId, state.key.shard)) === state;
    try {
      if (effect.full) {
        const snapshot = await this.options.snapshots.readLatestSnapshot(state.key);
        if (!current()) return;
        const base = baseFromSnapshot(snapshot, state.candidateCount);
        await this.options.snapshots.readVotesAfter(state.key, base.watermarkBatchId, (rows) => {
          applyStoredRows(base, state.shardCount, rows);
        });
        if (!current()) return;
        this.step(state, { kind: 'CatchUpLoaded', catchUpId: effect.catchUpId, base, nowMs: this.now() });
      } else {
        await this.options.snapshots.readVotesAfter(state.key, effect.afterBatchId, (rows) => {
          if (current()) applyStoredRows(state.base!, state.shardCount, rows);
        });
        if (!current()) return;
        this.step(state, { kind: 'CatchUpLoaded', catchUpId: effect.catchUpId, base: null, nowMs: this.now() });
      }
    } catch (error) {
      if (!current()) return;
      this.options.log.warn({ err: error, shard: state.key, full: effect.full }, 'replica catch-up from Postgres failed; retrying');
      const timer = setTimeout(() => {
        if (current()) this.step(state, { kind: 'CatchUpFailed', catchUpId: effect.catchUpId });
      }, this.options.catchUpRetryMs);
      timer.unref();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Composition: both halves, the replica reports between nodes, metrics.

/** One replica of one shard as the admin view lists it. */
export interface ReplicaLag {
  readonly nodeId: string;
  /** Unknown until the replica's node reported it (every replicaReportIntervalMs). */
  readonly phase: 'catching_up' | 'live' | 'unknown';
  /** The owner epoch it follows. */
  readonly epoch: number | null;
  /**
   * The owner's committed votes of the shard, as last published to the answering node (every
   * 100 ms when they change), minus the votes the replica held at its last report; null when
   * either is unknown or they are of different epochs.
   */
  readonly votesBehind: number | null;
  /** Batches received but not applied yet (buffered while it catches up from Postgres). */
  readonly batchesBehind: number | null;
  /** Since the replica last applied a batch or a catch-up, by its clock, as of its report. */
  readonly sinceAppliedMs: number | null;
  /** Age of the report, by the answering node's clock. */
  readonly reportAgeMs: number | null;
}

export interface ReplicationOptions {
  readonly nodeId: string;
  readonly snapshots: Pick<SnapshotStore, 'readLatestSnapshot' | 'readVotesAfter'>;
  readonly dimensions: (electionId: string) => { shardCount: number; candidateCount: number } | undefined;
  readonly log: ReplicationLog;
  readonly metricsRegistry?: Registry;
  /** One event to one peer (links.send). */
  readonly send: (nodeId: string, event: ReplicateBatches | ReplicaReport) => void;
  /** The other live members, for the reports. */
  readonly peers: () => readonly string[];
  /** Committed votes of a shard as this node knows them (results.ts), for votesBehind. */
  readonly ownerVotes: (electionId: string, shard: number) => { epoch: number; votes: number } | undefined;
  /** A live replica's counts, offered to the results (kept only where nothing newer is known). */
  readonly onReplicaCounts?: (report: ReplicaShardReport) => void;
  readonly replicaReportIntervalMs?: number;
  readonly queuedRowsMaxPerReplica?: number;
  readonly bufferRowsMax?: number;
  readonly catchUpsInFlightMax?: number;
}

export const replicationDefaults = {
  replicaReportIntervalMs: 500,
  /** Rows waiting for one event-loop turn per replica: a few commits' worth. */
  queuedRowsMaxPerReplica: 50_000,
  /** Rows a catching-up shard buffers: a few seconds of a busy shard. */
  bufferRowsMax: 100_000,
  catchUpsInFlightMax: 2,
  catchUpRetryMs: 500,
} as const;

export class Replication {
  readonly streamer: ReplicationStreamer;
  readonly replicas: ReplicaSet;
  private readonly options: ReplicationOptions;
  private readonly reports = new Map<string, { receivedAtMs: number; shards: Map<string, ReplicaShardReport> }>();
  private timer: NodeJS.Timeout | undefined;
  private readonly recoveries: Counter<'path'> | undefined;
  private readonly tailRows: Counter<'path'> | undefined;

  constructor(options: ReplicationOptions) {
    this.options = options;
    this.streamer = new ReplicationStreamer({
      nodeId: options.nodeId,
      send: options.send,
      queuedRowsMaxPerReplica: options.queuedRowsMaxPerReplica ?? replicationDefaults.queuedRowsMaxPerReplica,
    });
    this.replicas = new ReplicaSet({
      nodeId: options.nodeId,
      snapshots: options.snapshots,
      dimensions: options.dimensions,
      log: options.log,
      bufferRowsMax: options.bufferRowsMax ?? replicationDefaults.bufferRowsMax,
      catchUpsInFlightMax: options.catchUpsInFlightMax ?? replicationDefaults.catchUpsInFlightMax,
      catchUpRetryMs: replicationDefaults.catchUpRetryMs,
    });
    const registers = options.metricsRegistry ? [options.metricsRegistry] : [];
    if (options.metricsRegistry) {
      this.recoveries = new Counter({
        name: 'livevote_shard_recoveries_total',
        help: 'Shards this node took over, by path: warm (restored from its own replica, then the votes after its watermark) or cold (latest snapshot, then the votes after it)',
        labelNames: ['path'] as const,
        registers,
      });
      this.tailRows = new Counter({
        name: 'livevote_shard_recovery_tail_rows_total',
        help: 'Stored votes read from Postgres after the watermark while taking shards over, by path (warm, cold)',
        labelNames: ['path'] as const,
        registers,
      });
      const replicas = this.replicas;
      const streamer = this.streamer;
      new Gauge({
        name: 'livevote_replica_shards', help: 'Shards this node holds a replica of, by phase (live, catching_up)', labelNames: ['phase'] as const, registers,
        collect() {
          const c = replicas.counters();
          this.set({ phase: 'live' }, c.live);
          this.set({ phase: 'catching_up' }, c.shards - c.live);
        },
      });
      new Counter({
        name: 'livevote_replication_batches_total',
        help: 'Shard batches streamed to replicas (sent), or dropped before sending because a replica\'s queue was full (dropped: the replica catches up)',
        labelNames: ['outcome'] as const, registers,
        collect() {
          this.reset();
          this.inc({ outcome: 'sent' }, streamer.batchesSent);
          this.inc({ outcome: 'dropped' }, streamer.batchesDropped);
        },
      });
    }
  }

  start(): void {
    const every = this.options.replicaReportIntervalMs ?? replicationDefaults.replicaReportIntervalMs;
    this.timer = setInterval(() => this.report(), every);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.replicas.stop();
  }

  applyView(view: ClusterView): void {
    this.streamer.applyView(view);
    this.replicas.applyView(view);
    const alive = new Set(view.nodes.filter((n) => n.status === 'alive').map((n) => n.nodeId));
    for (const nodeId of [...this.reports.keys()]) if (!alive.has(nodeId)) this.reports.delete(nodeId);
  }

  /** A replication event from a peer: batches to apply, or its replicas' report. */
  onEvent(fromNodeId: string, event: ReplicateBatches | ReplicaReport): void {
    if (event.t === 'replicate') {
      this.replicas.receive(event);
      return;
    }
    this.reports.set(fromNodeId, { receivedAtMs: Date.now(), shards: new Map(event.shards.map((r) => [shardKeyOf(r.electionId, r.shard), r])) });
    for (const r of event.shards) if (r.phase === 'live') this.options.onReplicaCounts?.(r);
  }

  /** For the shard host. */
  promotionBase(electionId: string, shard: number, epoch: number): PromotionBase {
    return this.replicas.takeForPromotion(electionId, shard, epoch);
  }

  /** For the shard host: count the paths and the tail rows read. */
  recovered(recoveries: readonly ShardRecovery[]): void {
    for (const r of recoveries) {
      const path = r.source === 'replica' ? 'warm' : 'cold';
      this.recoveries?.inc({ path });
      this.tailRows?.inc({ path }, r.tailRows);
    }
  }

  /** Each replica of the shard with its lag, as the answering node knows it. */
  lagOf(electionId: string, shard: number, replicaNodeIds: readonly string[]): ReplicaLag[] {
    const key = shardKeyOf(electionId, shard);
    const nowMs = Date.now();
    const owner = this.options.ownerVotes(electionId, shard);
    return replicaNodeIds.map((nodeId): ReplicaLag => {
      const own = nodeId === this.options.nodeId;
      const report = own ? this.replicas.report().find((r) => r.electionId === electionId && r.shard === shard) : this.reports.get(nodeId)?.shards.get(key);
      if (report === undefined) return { nodeId, phase: 'unknown', epoch: null, votesBehind: null, batchesBehind: null, sinceAppliedMs: null, reportAgeMs: null };
      const sameEpoch = owner !== undefined && owner.epoch === report.epoch;
      return {
        nodeId,
        phase: report.phase,
        epoch: report.epoch,
        votesBehind: sameEpoch ? Math.max(0, owner.votes - report.votes) : null,
        batchesBehind: report.batchesBehind,
        sinceAppliedMs: report.sinceAppliedMs,
        reportAgeMs: own ? 0 : nowMs - this.reports.get(nodeId)!.receivedAtMs,
      };
    });
  }

  private report(): void {
    const shards = this.replicas.report();
    for (const r of shards) if (r.phase === 'live') this.options.onReplicaCounts?.(r);
    const peers = this.options.peers();
    if (peers.length === 0) return;
    for (let i = 0; i < Math.max(1, shards.length); i += replicaReportsPerEventMax) {
      const event: ReplicaReport = { t: 'replicas', shards: shards.slice(i, i + replicaReportsPerEventMax) };
      for (const peer of peers) this.options.send(peer, event);
    }
  }
}
