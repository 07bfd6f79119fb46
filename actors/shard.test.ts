// Example-based tests of shard paths the model test does not reach: conflicts, lookups,
// snapshot contents, input assertions.
import { describe, expect, it } from 'vitest';
import { checkShardInvariants, createShardState, stepShard, type ShardEffect, type ShardMsg, type ShardState } from './shard.ts';

function newShard(overrides: { pendingVotesMax?: number } = {}): ShardState {
  return createShardState({
    key: { electionId: 'e1', shard: 2 },
    shardCount: 4,
    candidateCount: 3,
    epoch: 7,
    config: { pendingVotesMax: overrides.pendingVotesMax ?? 100, retryAfterMs: 250 },
  });
}

let requestIds = 0;
function cast(voterNumber: number, candidateIndex: number, batchIdFloor = 0): ShardMsg {
  requestIds++;
  return { kind: 'CastVote', requestId: requestIds, voterNumber, candidateIndex, voteId: `v${requestIds}`, receivedAtMs: 1000 + requestIds, batchIdFloor };
}

function step(state: ShardState, msg: ShardMsg): ShardEffect[] {
  const effects = stepShard(state, msg);
  checkShardInvariants(state);
  return effects;
}

function appendedRow(effects: ShardEffect[]) {
  const effect = effects.find((e) => e.kind === 'AppendToJournal');
  if (effect?.kind !== 'AppendToJournal') throw new Error('no AppendToJournal');
  return effect.row;
}

describe('shard', () => {
  it('a tentative vote carries the shard epoch and is answered only when committed', () => {
    const state = newShard();
    const effects = step(state, cast(6, 1, 41));
    expect(effects).toHaveLength(1);
    const row = appendedRow(effects);
    expect(row).toMatchObject({ electionId: 'e1', shard: 2, epoch: 7, voterNumber: 6, candidateIndex: 1 });
    expect(state.pendingTallies).toEqual([0, 1, 0]);
    expect(state.committedTallies).toEqual([0, 0, 0]);
    const committed = step(state, { kind: 'BatchCommitted', batchId: 42, rows: [row], conflictVoterNumbers: [] });
    expect(committed).toContainEqual({ kind: 'TalliesCommitted', key: { electionId: 'e1', shard: 2 }, deltas: [0, 1, 0], source: 'live' });
    expect(committed.filter((e) => e.kind === 'Reply')).toHaveLength(1);
    expect(state.committedTallies).toEqual([0, 1, 0]);
  });

  it('a queued vote is answered accepted, keeps its bit, counts nothing until drained, and is never abandoned', () => {
    const state = newShard();
    const original = cast(6, 1, 41);
    const row = appendedRow(step(state, original));
    const retry = cast(6, 1);
    expect(step(state, retry)).toEqual([]);
    const queued = step(state, { kind: 'BatchQueued', rows: [row] });
    expect(queued).toEqual([
      { kind: 'Reply', requestId: (original as { requestId: number }).requestId, outcome: { kind: 'accepted', voteId: row.voteId, acceptedAtMs: row.acceptedAtMs, replayed: false } },
      { kind: 'Reply', requestId: (retry as { requestId: number }).requestId, outcome: { kind: 'accepted', voteId: row.voteId, acceptedAtMs: row.acceptedAtMs, replayed: true } },
    ]);
    expect(state.committedTallies).toEqual([0, 0, 0]);
    // Later tries are answered from the queued row: the same vote, or a second one refused.
    const other = cast(6, 2);
    expect(step(state, other)).toEqual([
      { kind: 'Reply', requestId: (other as { requestId: number }).requestId, outcome: { kind: 'already_voted', voteId: row.voteId, acceptedAtMs: row.acceptedAtMs } },
    ]);
    // In doubt at the deadline after being queued: already answered, nothing changes.
    expect(step(state, { kind: 'BatchInDoubt', rows: [row] })).toEqual([]);
    expect(() => stepShard(state, { kind: 'BatchAbandoned', rows: [row], reason: 'commit_failed' })).toThrow(/queued vote cannot be abandoned/);
    // The drain stores it: counted now, with no reply (answered already).
    const drained = step(state, { kind: 'BatchCommitted', batchId: 50, rows: [row], conflictVoterNumbers: [] });
    expect(drained).toEqual([{ kind: 'TalliesCommitted', key: { electionId: 'e1', shard: 2 }, deltas: [0, 1, 0], source: 'live' }]);
    expect(state.queuedCount).toBe(0);
  });

  it('a conflict counts nothing and answers every waiter from the stored vote', () => {
    const state = newShard();
    const original = cast(10, 0);
    const row = appendedRow(step(state, original));
    const retry = cast(10, 0);
    expect(step(state, retry)).toEqual([]);
    const effects = step(state, { kind: 'BatchCommitted', batchId: 5, rows: [row], conflictVoterNumbers: [10] });
    expect(effects).toEqual([{ kind: 'LookupStoredVote', key: state.key, voterNumber: 10 }]);
    expect(state.counters.conflicts).toBe(1);
    expect(state.committedTallies).toEqual([0, 0, 0]);
    const stored = { electionId: 'e1', voterNumber: 10, candidateIndex: 2, voteId: 'someone-else', acceptedAtMs: 5 };
    const replies = step(state, { kind: 'StoredVoteFound', voterNumber: 10, stored });
    expect(replies).toEqual([
      { kind: 'Reply', requestId: (original as { requestId: number }).requestId, outcome: { kind: 'already_voted', voteId: 'someone-else', acceptedAtMs: 5 } },
      { kind: 'Reply', requestId: (retry as { requestId: number }).requestId, outcome: { kind: 'already_voted', voteId: 'someone-else', acceptedAtMs: 5 } },
    ]);
    // The bit stays set: a vote is stored for that voter.
    expect(state.bitmap.has(2)).toBe(true);
  });

  it('one lookup per voter however many retries wait, and failures answer unavailable', () => {
    const state = newShard();
    const row = appendedRow(step(state, cast(14, 0)));
    step(state, { kind: 'BatchCommitted', batchId: 1, rows: [row], conflictVoterNumbers: [] });
    const first = step(state, cast(14, 0));
    const second = step(state, cast(14, 1));
    expect(first).toEqual([{ kind: 'LookupStoredVote', key: state.key, voterNumber: 14 }]);
    expect(second).toEqual([]);
    const replies = step(state, { kind: 'StoredVoteLookupFailed', voterNumber: 14 });
    expect(replies.map((r) => (r.kind === 'Reply' ? r.outcome : null))).toEqual([
      { kind: 'unavailable', reason: 'lookup_failed', retryAfterMs: 250 },
      { kind: 'unavailable', reason: 'lookup_failed', retryAfterMs: 250 },
    ]);
    // A late answer for a lookup nobody waits for is ignored.
    expect(step(state, { kind: 'StoredVoteFound', voterNumber: 14, stored: null })).toEqual([]);
  });

  it('answers overloaded at the admission bound, counting waiters too', () => {
    const state = newShard({ pendingVotesMax: 2 });
    step(state, cast(2, 0));
    step(state, cast(2, 0)); // a retry waiting on the pending vote
    const refused = step(state, cast(6, 0));
    expect(refused).toEqual([{ kind: 'Reply', requestId: requestIds, outcome: { kind: 'overloaded', retryAfterMs: 250 } }]);
    expect(state.bitmap.has(1)).toBe(false);
  });

  it('snapshots hold committed state only, with a watermark below every unresolved floor', () => {
    const state = newShard();
    const committedRow = appendedRow(step(state, cast(2, 0, 3)));
    step(state, { kind: 'BatchCommitted', batchId: 4, rows: [committedRow], conflictVoterNumbers: [] });
    step(state, cast(6, 1, 9)); // slot 1, tentative
    step(state, cast(42, 2, 11)); // slot 10, tentative
    const effects = step(state, { kind: 'TakeSnapshot', nowMs: 77, lastAssignedBatchId: 12 });
    const snapshot = effects[0]!.kind === 'WriteSnapshot' ? effects[0]!.snapshot : null;
    expect(snapshot).not.toBeNull();
    expect(snapshot!.watermarkBatchId).toBe(9);
    expect(snapshot!.tallies).toEqual([1, 0, 0]);
    expect(snapshot!.voterSlots).toBe(11);
    expect(Array.from(snapshot!.bitmap)).toEqual([0b1, 0]);
    expect(snapshot!.epoch).toBe(7);
    // The copy is not the live state.
    expect(state.bitmap.has(1)).toBe(true);
    const restored = newShard();
    step(restored, { kind: 'RestoreFromSnapshot', snapshot: snapshot! });
    expect(restored.committedTallies).toEqual([1, 0, 0]);
    expect(restored.bitmap.count()).toBe(1);
  });

  it('with nothing pending the watermark is the last assigned batch id', () => {
    const state = newShard();
    const effects = step(state, { kind: 'TakeSnapshot', nowMs: 1, lastAssignedBatchId: 30 });
    expect(effects[0]!.kind === 'WriteSnapshot' && effects[0]!.snapshot.watermarkBatchId).toBe(30);
  });

  it('after a restore, new rows wait for batch ids above the snapshot watermark (an earlier owner\'s ids may run ahead)', () => {
    const state = newShard();
    const bitmap = new Uint8Array([0b0000_0001]);
    step(state, { kind: 'RestoreFromSnapshot', snapshot: { electionId: 'e1', shard: 2, epoch: 6, watermarkBatchId: 500, tallies: [1, 0, 0], voterSlots: 1, bitmap, takenAtMs: 0 } });
    const effects = step(state, cast(6, 1, 3));
    const append = effects.find((e) => e.kind === 'AppendToJournal');
    expect(append).toMatchObject({ kind: 'AppendToJournal', batchIdFloor: 500 });
    // A later snapshot of this owner still has a watermark below the pending vote's batch.
    const snapshot = step(state, { kind: 'TakeSnapshot', nowMs: 1, lastAssignedBatchId: 10 }).find((e) => e.kind === 'WriteSnapshot');
    expect(snapshot).toMatchObject({ snapshot: { watermarkBatchId: 10 } });
    // Floors above the watermark are kept.
    expect(step(state, cast(10, 0, 900)).find((e) => e.kind === 'AppendToJournal')).toMatchObject({ batchIdFloor: 900 });
  });

  it('after a takeover, new rows wait for batch ids above every id reserved by then, whatever snapshot it restored (RaiseBatchIdFloor)', () => {
    // A replica's state (or an older snapshot) carries a low watermark; the owner before may have
    // written a snapshot at 400 with ids from a later block than this node's.
    const state = newShard();
    step(state, { kind: 'RestoreFromSnapshot', snapshot: { electionId: 'e1', shard: 2, epoch: 6, watermarkBatchId: 3, tallies: [0, 0, 0], voterSlots: 0, bitmap: new Uint8Array(0), takenAtMs: 0 } });
    expect(step(state, { kind: 'RaiseBatchIdFloor', batchId: 1999 })).toEqual([]);
    expect(step(state, cast(6, 1, 3)).find((e) => e.kind === 'AppendToJournal')).toMatchObject({ batchIdFloor: 1999 });
    // It only raises: a lower ceiling read later changes nothing.
    step(state, { kind: 'RaiseBatchIdFloor', batchId: 10 });
    expect(step(state, cast(10, 0, 5)).find((e) => e.kind === 'AppendToJournal')).toMatchObject({ batchIdFloor: 1999 });
    expect(step(state, cast(14, 0, 2500)).find((e) => e.kind === 'AppendToJournal')).toMatchObject({ batchIdFloor: 2500 });
  });

  it('a fenced write of the current epoch stops new votes until the epoch is raised', () => {
    const state = newShard();
    const row = appendedRow(step(state, cast(2, 0)));
    const effects = step(state, { kind: 'BatchAbandoned', rows: [row], reason: 'fenced' });
    expect(effects).toContainEqual({ kind: 'LeaseLost', key: state.key, epoch: 7 });
    expect(step(state, cast(6, 0))[0]).toMatchObject({ kind: 'Reply', outcome: { kind: 'unavailable', reason: 'fenced' } });
    step(state, { kind: 'SetEpoch', epoch: 8 });
    expect(appendedRow(step(state, cast(6, 0))).epoch).toBe(8);
    expect(() => step(state, { kind: 'SetEpoch', epoch: 8 })).toThrow(/raise the epoch/);
  });

  it('asserts on input the shell must have validated', () => {
    const state = newShard();
    expect(() => stepShard(state, cast(3, 0))).toThrow(/wrong shard/);
    expect(() => stepShard(state, cast(2, 3))).toThrow(/candidateIndex/);
    expect(() => stepShard(state, cast(-2, 0))).toThrow(/voterNumber/);
    expect(state.bitmap.count()).toBe(0);
  });

  it('refuses a snapshot whose tallies exceed its bitmap', () => {
    const state = newShard();
    const snapshot = { electionId: 'e1', shard: 2, epoch: 1, watermarkBatchId: 0, tallies: [2, 0, 0], voterSlots: 8, bitmap: new Uint8Array([1]), takenAtMs: 0 };
    expect(() => stepShard(state, { kind: 'RestoreFromSnapshot', snapshot })).toThrow(/exceed/);
  });
});
