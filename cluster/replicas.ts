// A warm replica of one shard, as a pure step function: the committed votes its owner streams
// (cluster/replication.ts sends them, protocol.ts `replicate`), applied to a bitmap and tallies of
// its own, with a watermark. No I/O, no clock: catch-ups from Postgres come back as messages.
//
//   ┌──────────────┐ first batch, or a batch of a newer epoch: StartCatchUp(full)  ┌──────────┐
//   │ (no state)   │ ──────────────────────────────────────────────────────────► │ CATCHING │
//   └──────────────┘                                                             │    UP    │
//        ┌──────────── CatchUpLoaded: base swapped in (full) or rows applied, ─── │ buffers  │
//        ▼             then the buffer, contiguous from coveredSeq + 1            │ the      │
//   ┌──────────┐                                                                  │ stream   │
//   │   LIVE   │ ── a batch with seq > nextSeq (a gap), or a newer epoch ───────► │ (bounded)│
//   │ applies  │    StartCatchUp(incremental from the watermark / full)           └──────────┘
//   │ in order │ ── seq < nextSeq, or an older epoch: ignored (duplicate, a fenced owner)
//   └──────────┘
//
// Why the state is always as good as a snapshot: it holds stored votes only (the owner streams a
// batch after its commit), and each batch carries the owner's safe watermark (actors/shard.ts
// safeWatermarkBatchId): every batch at or below it that touched the shard was resolved on the
// owner before this batch was sent, so it is in this batch, an earlier one, or was in Postgres
// before the owner took the shard. A missed batch therefore always lies above the watermark of
// the last one applied, and a promotion that restores this state and reads the votes after its
// watermark misses nothing. Catch-ups only keep that tail short.
//
// Catch-up: every batch with seq <= coveredSeq was sent, hence committed, before the read
// started, so the read returns its rows; batches after it are buffered and applied after the
// read, contiguous from coveredSeq + 1 (a gap among them starts another catch-up). Replaying a
// vote twice changes nothing: the bitmap knows the voter.
//
// Across epochs the watermark means nothing (a new owner's batch ids may run below the old
// owner's watermark), so a newer epoch always starts a full catch-up (latest snapshot + the votes
// after its watermark), and a promotion uses this state only for epoch + 1 (shardHost.ts): no
// other owner came between.
import { PagedBitmap } from '../actors/bitmap.ts';
import type { ShardKey, ShardSnapshot } from '../actors/ports.ts';
import type { ReplicatedShardBatch } from './protocol.ts';

/** One shard's batch in a `replicate` event, as the replica's state sees it (its key is the state's). */
export type ReplicaBatch = Omit<ReplicatedShardBatch, 'electionId' | 'shard'>;

/** What a catch-up read brings back. `full`: a new base; `incremental`: applied already (applyStoredRows). */
export interface ReplicaBase {
  readonly bitmap: PagedBitmap;
  readonly tallies: number[];
  readonly watermarkBatchId: number;
}

export type ReplicaPhase = 'catching_up' | 'live';

export interface ReplicaShardState {
  readonly key: ShardKey;
  readonly shardCount: number;
  readonly candidateCount: number;
  /** Epoch of the owner being followed. */
  epoch: number;
  phase: ReplicaPhase;
  /** Null until a full catch-up of the current epoch loads: nothing a promotion may restore from yet. */
  base: ReplicaBase | null;
  /** Next seq to apply (live). */
  nextSeq: number;
  /** Highest seq received in this epoch. */
  highestSeq: number;
  /** The catch-up under way (its id), what it covers, whether it is full. */
  catchUpId: number;
  coveredSeq: number;
  catchUpFull: boolean;
  /** Batches received while catching up, in arrival order (bounded by bufferRowsMax). */
  buffer: ReplicaBatch[];
  bufferedRows: number;
  /** The buffer overflowed and was dropped: one more catch-up after this one. */
  overflowed: boolean;
  readonly bufferRowsMax: number;
  lastAppliedAtMs: number;
  readonly counters: ReplicaCounters;
}

export interface ReplicaCounters {
  batchesApplied: number;
  rowsApplied: number;
  /** Rows whose voter was already in the bitmap (a replayed or caught-up vote). */
  rowsAlreadyApplied: number;
  duplicatesIgnored: number;
  staleEpochIgnored: number;
  gaps: number;
  catchUps: number;
  bufferOverflows: number;
}

export type ReplicaMsg =
  | { readonly kind: 'BatchReceived'; readonly batch: ReplicaBatch; readonly nowMs: number }
  /**
   * The map says the owner serves the shard under this lease epoch: a replica that has seen
   * nothing of it catches up now rather than at the owner's next batch (an idle shard sends none).
   */
  | { readonly kind: 'OwnerEpochSeen'; readonly epoch: number }
  /** The catch-up read finished: `base` for a full one (incremental ones applied their rows already). */
  | { readonly kind: 'CatchUpLoaded'; readonly catchUpId: number; readonly base: ReplicaBase | null; readonly nowMs: number }
  | { readonly kind: 'CatchUpFailed'; readonly catchUpId: number };

export type ReplicaEffect =
  /** Read from Postgres: full = latest snapshot + votes after its watermark; else votes after `afterBatchId`. */
  { readonly kind: 'StartCatchUp'; readonly catchUpId: number; readonly full: boolean; readonly afterBatchId: number };

export function createReplicaShardState(init: { key: ShardKey; shardCount: number; candidateCount: number; bufferRowsMax: number }): ReplicaShardState {
  return {
    key: init.key,
    shardCount: init.shardCount,
    candidateCount: init.candidateCount,
    epoch: 0,
    phase: 'catching_up',
    base: null,
    nextSeq: 1,
    highestSeq: 0,
    catchUpId: 0,
    coveredSeq: 0,
    catchUpFull: true,
    buffer: [],
    bufferedRows: 0,
    overflowed: false,
    bufferRowsMax: init.bufferRowsMax,
    lastAppliedAtMs: 0,
    counters: { batchesApplied: 0, rowsApplied: 0, rowsAlreadyApplied: 0, duplicatesIgnored: 0, staleEpochIgnored: 0, gaps: 0, catchUps: 0, bufferOverflows: 0 },
  };
}

/** An empty base, or one from a stored snapshot (full catch-up). */
export function baseFromSnapshot(snapshot: ShardSnapshot | null, candidateCount: number): ReplicaBase {
  if (snapshot === null) return { bitmap: new PagedBitmap(), tallies: new Array<number>(candidateCount).fill(0), watermarkBatchId: 0 };
  assert(snapshot.tallies.length === candidateCount, 'snapshot candidate count differs');
  return {
    bitmap: PagedBitmap.importBytes(snapshot.bitmap, snapshot.voterSlots),
    tallies: snapshot.tallies.slice(),
    watermarkBatchId: snapshot.watermarkBatchId,
  };
}

/** Stored votes into a base: a voter already in the bitmap is skipped (idempotent). Returns rows newly counted. */
export function applyStoredRows(
  base: ReplicaBase, shardCount: number, rows: readonly { voterNumber: number; candidateIndex: number }[],
): number {
  let added = 0;
  for (const row of rows) {
    assert(row.candidateIndex >= 0 && row.candidateIndex < base.tallies.length, 'candidate index out of range');
    if (!base.bitmap.set(Math.floor(row.voterNumber / shardCount))) continue;
    base.tallies[row.candidateIndex]!++;
    added++;
  }
  return added;
}

export function stepReplica(state: ReplicaShardState, msg: ReplicaMsg): ReplicaEffect[] {
  switch (msg.kind) {
    case 'BatchReceived':
      return batchReceived(state, msg.batch, msg.nowMs);
    case 'OwnerEpochSeen':
      if (msg.epoch <= state.epoch) return [];
      // Nothing of this epoch seen: whatever the owner sent before the read is in it; a later
      // batch that is not seq 1 shows as a gap and is caught up then.
      state.epoch = msg.epoch;
      state.base = null; // its watermark belongs to the old epoch: not a base a promotion may use
      state.highestSeq = 0;
      state.buffer = [];
      state.bufferedRows = 0;
      state.overflowed = false;
      return [startCatchUp(state, true, 0)];
    case 'CatchUpLoaded':
      return catchUpLoaded(state, msg.catchUpId, msg.base, msg.nowMs);
    case 'CatchUpFailed':
      // Try again from the same place; the shell paces it (the next batch, or its retry timer).
      if (msg.catchUpId !== state.catchUpId || state.phase !== 'catching_up') return [];
      return [startCatchUp(state, state.catchUpFull || state.base === null, state.coveredSeq)];
  }
}

/** The state a promotion may restore from, as a snapshot; null while there is none (first catch-up). */
export function replicaSnapshot(state: ReplicaShardState, nowMs: number): ShardSnapshot | null {
  if (state.base === null) return null;
  return {
    electionId: state.key.electionId,
    shard: state.key.shard,
    epoch: state.epoch,
    watermarkBatchId: state.base.watermarkBatchId,
    tallies: state.base.tallies.slice(),
    voterSlots: state.base.bitmap.voterSlots(),
    bitmap: state.base.bitmap.exportBytes(),
    takenAtMs: nowMs,
  };
}

/** Votes this replica has counted (0 without a base). */
export function replicaVotes(state: ReplicaShardState): number {
  let total = 0;
  for (const count of state.base?.tallies ?? []) total += count;
  return total;
}

function batchReceived(state: ReplicaShardState, batch: ReplicaBatch, nowMs: number): ReplicaEffect[] {
  assert(batch.voterNumbers.length === batch.candidateIndexes.length, 'voterNumbers and candidateIndexes differ in length');
  if (batch.epoch < state.epoch) {
    state.counters.staleEpochIgnored++;
    return [];
  }
  if (batch.epoch > state.epoch) {
    // A new owner: nothing of the old epoch's watermark carries over, so neither does the base
    // (a promotion meanwhile recovers cold rather than trust it).
    state.epoch = batch.epoch;
    state.base = null;
    state.highestSeq = batch.seq;
    state.buffer = [batch];
    state.bufferedRows = batch.voterNumbers.length;
    state.overflowed = false;
    return [startCatchUp(state, true, batch.seq - 1)];
  }
  if (batch.seq > state.highestSeq) state.highestSeq = batch.seq;
  if (state.phase === 'catching_up') {
    if (batch.seq <= state.coveredSeq || state.buffer.some((b) => b.seq === batch.seq)) {
      state.counters.duplicatesIgnored++;
      return [];
    }
    if (state.bufferedRows + batch.voterNumbers.length > state.bufferRowsMax) {
      // Dropped: every batch received so far was committed before the next read starts.
      state.counters.bufferOverflows++;
      state.buffer = [];
      state.bufferedRows = 0;
      state.overflowed = true;
      return [];
    }
    state.buffer.push(batch);
    state.bufferedRows += batch.voterNumbers.length;
    return [];
  }
  if (batch.seq < state.nextSeq) {
    state.counters.duplicatesIgnored++;
    return [];
  }
  if (batch.seq > state.nextSeq) {
    state.counters.gaps++;
    state.buffer = [batch];
    state.bufferedRows = batch.voterNumbers.length;
    state.overflowed = false;
    return [startCatchUp(state, false, batch.seq - 1)];
  }
  apply(state, batch, nowMs);
  return [];
}

function catchUpLoaded(state: ReplicaShardState, catchUpId: number, base: ReplicaBase | null, nowMs: number): ReplicaEffect[] {
  if (catchUpId !== state.catchUpId || state.phase !== 'catching_up') return [];
  if (state.catchUpFull) {
    assert(base !== null, 'a full catch-up brings a base');
    state.base = base;
  }
  state.lastAppliedAtMs = nowMs;
  if (state.overflowed) {
    // Batches were dropped after this read started: read again from here.
    state.overflowed = false;
    return [startCatchUp(state, false, state.highestSeq)];
  }
  const buffered = state.buffer.sort((a, b) => a.seq - b.seq);
  state.buffer = [];
  state.bufferedRows = 0;
  state.nextSeq = state.coveredSeq + 1;
  state.phase = 'live';
  for (let i = 0; i < buffered.length; i++) {
    const batch = buffered[i]!;
    if (batch.seq < state.nextSeq) continue;
    if (batch.seq > state.nextSeq) {
      // A gap inside the buffer: what is left waits for another catch-up.
      state.counters.gaps++;
      state.buffer = buffered.slice(i);
      state.bufferedRows = state.buffer.reduce((sum, b) => sum + b.voterNumbers.length, 0);
      return [startCatchUp(state, false, batch.seq - 1)];
    }
    apply(state, batch, nowMs);
  }
  return [];
}

function startCatchUp(state: ReplicaShardState, full: boolean, coveredSeq: number): ReplicaEffect {
  state.phase = 'catching_up';
  state.catchUpId++;
  state.catchUpFull = full || state.base === null;
  state.coveredSeq = coveredSeq;
  state.counters.catchUps++;
  return { kind: 'StartCatchUp', catchUpId: state.catchUpId, full: state.catchUpFull, afterBatchId: state.catchUpFull ? 0 : state.base!.watermarkBatchId };
}

function apply(state: ReplicaShardState, batch: ReplicaBatch, nowMs: number): void {
  const base = state.base!;
  assert(base !== null, 'a live replica has a base');
  for (let i = 0; i < batch.voterNumbers.length; i++) {
    const voterNumber = batch.voterNumbers[i]!;
    const candidateIndex = batch.candidateIndexes[i]!;
    assert(voterNumber % state.shardCount === state.key.shard, 'a voter of another shard');
    assert(candidateIndex >= 0 && candidateIndex < state.candidateCount, 'candidate index out of range');
    if (!base.bitmap.set(Math.floor(voterNumber / state.shardCount))) {
      state.counters.rowsAlreadyApplied++;
      continue;
    }
    base.tallies[candidateIndex]!++;
    state.counters.rowsApplied++;
  }
  // Within one epoch both watermarks are true of this state (it holds every earlier batch): keep the higher.
  if (batch.watermarkBatchId > base.watermarkBatchId) (base as { watermarkBatchId: number }).watermarkBatchId = batch.watermarkBatchId;
  state.nextSeq = batch.seq + 1;
  state.counters.batchesApplied++;
  state.lastAppliedAtMs = nowMs;
}

function assert(condition: boolean, message: string): asserts condition {
  if (!condition) throw new Error(`replica invariant violated: ${message}`);
}
