import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { PagedBitmap } from '../actors/bitmap.ts';
import {
  applyStoredRows,
  baseFromSnapshot,
  createReplicaShardState,
  replicaSnapshot,
  replicaVotes,
  stepReplica,
  type ReplicaBatch,
  type ReplicaEffect,
  type ReplicaShardState,
} from './replicas.ts';

const key = { electionId: 'e1', shard: 1 };
const shardCount = 4;
const candidateCount = 3;

/** A batch of voters (of shard 1: 4k + 1) voting candidate v % 3. */
function batch(epoch: number, seq: number, voters: number[], watermarkBatchId = seq * 10): ReplicaBatch {
  const voterNumbers = voters.map((v) => v * shardCount + 1);
  return { epoch, seq, batchId: seq * 10, watermarkBatchId, voterNumbers, candidateIndexes: voters.map((v) => v % candidateCount) };
}

/** The "database": every stored vote of the shard, with its batch id. */
class Store {
  readonly rows: { batchId: number; voterNumber: number; candidateIndex: number }[] = [];
  add(b: ReplicaBatch) {
    b.voterNumbers.forEach((voterNumber, i) => this.rows.push({ batchId: b.batchId, voterNumber, candidateIndex: b.candidateIndexes[i]! }));
  }
  after(batchId: number) {
    return this.rows.filter((r) => r.batchId > batchId);
  }
}

/** Runs a StartCatchUp effect against the store the way the shell does. */
function catchUp(state: ReplicaShardState, effects: ReplicaEffect[], store: Store): ReplicaEffect[] {
  let out: ReplicaEffect[] = [];
  for (const effect of effects) {
    if (effect.full) {
      const base = baseFromSnapshot(null, candidateCount);
      applyStoredRows(base, shardCount, store.after(0));
      out = stepReplica(state, { kind: 'CatchUpLoaded', catchUpId: effect.catchUpId, base, nowMs: 1 });
    } else {
      applyStoredRows(state.base!, shardCount, store.after(effect.afterBatchId));
      out = stepReplica(state, { kind: 'CatchUpLoaded', catchUpId: effect.catchUpId, base: null, nowMs: 1 });
    }
  }
  return out;
}

const fresh = (bufferRowsMax = 1000) => createReplicaShardState({ key, shardCount, candidateCount, bufferRowsMax });
const tallies = (state: ReplicaShardState) => state.base!.tallies.slice();

describe('replica apply', () => {
  it('the first batch starts a full catch-up; batches that follow in order are applied', () => {
    const store = new Store();
    const state = fresh();
    const b1 = batch(1, 1, [0, 1]);
    store.add(b1);
    const effects = stepReplica(state, { kind: 'BatchReceived', batch: b1, nowMs: 0 });
    expect(effects).toEqual([{ kind: 'StartCatchUp', catchUpId: 1, full: true, afterBatchId: 0 }]);
    expect(catchUp(state, effects, store)).toEqual([]);
    expect(state.phase).toBe('live');
    const b2 = batch(1, 2, [2]);
    expect(stepReplica(state, { kind: 'BatchReceived', batch: b2, nowMs: 5 })).toEqual([]);
    expect(tallies(state)).toEqual([1, 1, 1]);
    expect(state.base!.watermarkBatchId).toBe(20);
    expect(state.lastAppliedAtMs).toBe(5);
  });

  it('a duplicate is ignored; a gap catches up from the watermark while buffering, then applies the buffer', () => {
    const store = new Store();
    const state = fresh();
    const [b1, b2, b3, b4] = [batch(1, 1, [0]), batch(1, 2, [1]), batch(1, 3, [2]), batch(1, 4, [3])];
    store.add(b1!);
    catchUp(state, stepReplica(state, { kind: 'BatchReceived', batch: b1!, nowMs: 0 }), store);
    expect(stepReplica(state, { kind: 'BatchReceived', batch: b1!, nowMs: 0 })).toEqual([]);
    expect(state.counters.duplicatesIgnored).toBe(1);
    store.add(b2!); // lost on the link
    store.add(b3!);
    const effects = stepReplica(state, { kind: 'BatchReceived', batch: b3!, nowMs: 0 });
    expect(effects).toEqual([{ kind: 'StartCatchUp', catchUpId: 2, full: false, afterBatchId: 10 }]);
    store.add(b4!);
    expect(stepReplica(state, { kind: 'BatchReceived', batch: b4!, nowMs: 0 })).toEqual([]); // buffered
    expect(state.buffer.map((b) => b.seq)).toEqual([3, 4]);
    catchUp(state, effects, store);
    expect(state.phase).toBe('live');
    expect(state.nextSeq).toBe(5);
    expect(tallies(state)).toEqual([2, 1, 1]);
    expect(state.counters.rowsAlreadyApplied).toBeGreaterThan(0); // b3, b4 read and then replayed from the buffer
  });

  it('reordered batches while catching up are applied in seq order; an older epoch is ignored', () => {
    const store = new Store();
    const state = fresh();
    const b1 = batch(2, 1, [0]);
    store.add(b1);
    const effects = stepReplica(state, { kind: 'BatchReceived', batch: b1, nowMs: 0 });
    const [b3, b2] = [batch(2, 3, [5]), batch(2, 2, [4])];
    stepReplica(state, { kind: 'BatchReceived', batch: b3, nowMs: 0 });
    stepReplica(state, { kind: 'BatchReceived', batch: b2, nowMs: 0 });
    store.add(b2);
    store.add(b3);
    expect(catchUp(state, effects, store)).toEqual([]);
    expect(state.nextSeq).toBe(4);
    expect(stepReplica(state, { kind: 'BatchReceived', batch: batch(1, 9, [7]), nowMs: 0 })).toEqual([]);
    expect(state.counters.staleEpochIgnored).toBe(1);
    expect(replicaVotes(state)).toBe(3);
  });

  it('a newer epoch starts a full catch-up: the old watermark is not trusted', () => {
    const store = new Store();
    const state = fresh();
    const b1 = batch(1, 1, [0], 5000);
    store.add(b1);
    catchUp(state, stepReplica(state, { kind: 'BatchReceived', batch: b1, nowMs: 0 }), store);
    // The new owner stores batch 20 (below the old owner's watermark 5000), then batch 30 (seen).
    store.rows.push({ batchId: 20, voterNumber: 9 * shardCount + 1, candidateIndex: 0 });
    const b = { ...batch(2, 2, [8]), batchId: 30, watermarkBatchId: 30 };
    store.add(b);
    const effects = stepReplica(state, { kind: 'BatchReceived', batch: b, nowMs: 0 });
    expect(effects).toEqual([{ kind: 'StartCatchUp', catchUpId: 2, full: true, afterBatchId: 0 }]);
    // Until that catch-up loads there is nothing a promotion may restore: the old base's watermark would skip batch 20.
    expect(replicaSnapshot(state, 0)).toBeNull();
    catchUp(state, effects, store);
    expect(state.epoch).toBe(2);
    expect(replicaVotes(state)).toBe(3);
    expect(state.base!.watermarkBatchId).toBe(30);
  });

  it('a buffer overflow drops the buffer and reads again from after everything received', () => {
    const store = new Store();
    const state = fresh(2);
    const b1 = batch(1, 1, [0]);
    store.add(b1);
    const first = stepReplica(state, { kind: 'BatchReceived', batch: b1, nowMs: 0 });
    const b2 = batch(1, 2, [1, 2]);
    store.add(b2);
    stepReplica(state, { kind: 'BatchReceived', batch: b2, nowMs: 0 });
    expect(state.counters.bufferOverflows).toBe(1);
    const again = catchUp(state, first, store);
    expect(again).toHaveLength(1);
    expect(state.coveredSeq).toBe(2);
    catchUp(state, again, store);
    expect(state.phase).toBe('live');
    expect(state.nextSeq).toBe(3);
    expect(replicaVotes(state)).toBe(3);
  });

  it('OwnerEpochSeen primes an idle shard; a late catch-up answer is ignored', () => {
    const store = new Store();
    store.rows.push({ batchId: 3, voterNumber: 1, candidateIndex: 2 });
    const state = fresh();
    const effects = stepReplica(state, { kind: 'OwnerEpochSeen', epoch: 4 });
    expect(effects).toEqual([{ kind: 'StartCatchUp', catchUpId: 1, full: true, afterBatchId: 0 }]);
    expect(stepReplica(state, { kind: 'OwnerEpochSeen', epoch: 4 })).toEqual([]);
    expect(stepReplica(state, { kind: 'CatchUpLoaded', catchUpId: 0, base: baseFromSnapshot(null, candidateCount), nowMs: 0 })).toEqual([]);
    catchUp(state, effects, store);
    expect(tallies(state)).toEqual([0, 0, 1]);
    const snapshot = replicaSnapshot(state, 7)!;
    expect(snapshot).toMatchObject({ electionId: 'e1', shard: 1, epoch: 4, tallies: [0, 0, 1], takenAtMs: 7 });
    expect(PagedBitmap.importBytes(snapshot.bitmap, snapshot.voterSlots).count()).toBe(1);
  });

  it('property: whatever the link loses, repeats or reorders, the state after the catch-ups plus the votes after its watermark equals the store', () => {
    fc.assert(
      fc.property(
        fc.array(fc.array(fc.nat({ max: 60 }), { minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 25 }),
        fc.array(fc.constantFrom('deliver', 'drop', 'twice', 'swap'), { minLength: 25, maxLength: 25 }),
        fc.integer({ min: 1, max: 12 }),
        (votesPerBatch, fates, bufferRowsMax) => {
          const store = new Store();
          const state = fresh(bufferRowsMax);
          const voted = new Set<number>();
          let pendingCatchUp: ReplicaEffect[] = [];
          const deliver = (b: ReplicaBatch) => {
            pendingCatchUp.push(...stepReplica(state, { kind: 'BatchReceived', batch: b, nowMs: 0 }));
          };
          let held: ReplicaBatch | null = null;
          let seq = 0;
          votesPerBatch.forEach((voters, i) => {
            const newVoters = [...new Set(voters)].filter((v) => !voted.has(v));
            newVoters.forEach((v) => voted.add(v));
            if (newVoters.length === 0) return;
            const real = batch(1, ++seq, newVoters);
            store.add(real);
            const fate = fates[i]!;
            if (fate === 'deliver') deliver(real);
            else if (fate === 'twice') { deliver(real); deliver(real); }
            else if (fate === 'swap') { if (held) { deliver(real); deliver(held); held = null; } else held = real; }
            // Catch-ups finish at arbitrary points: here, after every other batch.
            if (i % 2 === 1 && pendingCatchUp.length > 0) {
              const run = pendingCatchUp.slice(-1);
              pendingCatchUp = catchUp(state, run, store);
            }
          });
          if (held) deliver(held);
          while (pendingCatchUp.length > 0) pendingCatchUp = catchUp(state, pendingCatchUp.slice(-1), store);
          if (state.base === null) return;
          // A promotion: this state plus the stored votes after its watermark.
          const promoted = { ...state.base, tallies: state.base.tallies.slice() };
          applyStoredRows(promoted, shardCount, store.after(state.base.watermarkBatchId));
          const expected = new Array<number>(candidateCount).fill(0);
          for (const row of store.rows) expected[row.candidateIndex]!++;
          expect(promoted.tallies).toEqual(expected);
          expect(promoted.bitmap.count()).toBe(store.rows.length);
          // Never more votes than stored, at any point.
          expect(replicaVotes(state)).toBeLessThanOrEqual(store.rows.length);
        },
      ),
      { numRuns: 300 },
    );
  });
});
