import { describe, expect, it } from 'vitest';
import {
  canAdmit,
  createCommitterState,
  isCommitterIdle,
  stepCommitter,
  type CommitterConfig,
  type CommitterEffect,
  type CommitterState,
} from './groupCommit.ts';
import type { JournalBatch, JournalRow } from './ports.ts';

const config: CommitterConfig = {
  batchRowsMax: 3,
  flushIntervalMs: 5,
  commitsInFlightMax: 2,
  bufferRowsMax: 10,
  commitDeadlineMs: 100,
  checkRetryIntervalMs: 20,
  inDoubtBatchesMax: 2,
};

let voterCounter = 0;
function row(electionId = 'e', shard = 0): JournalRow {
  voterCounter++;
  return { electionId, shard, epoch: 1, voterNumber: voterCounter * 2 + shard, candidateIndex: 0, voteId: `v${voterCounter}`, acceptedAtMs: 0 };
}

function append(state: CommitterState, rows: JournalRow[], nowMs: number, batchIdFloor = 0): CommitterEffect[] {
  return stepCommitter(state, { kind: 'RowsAppended', rows: rows.map((r) => ({ row: r, batchIdFloor })), nowMs });
}

function startedBatch(effects: CommitterEffect[]): JournalBatch {
  const start = effects.find((e) => e.kind === 'StartCommit');
  if (start?.kind !== 'StartCommit') throw new Error(`no StartCommit in ${JSON.stringify(effects)}`);
  return start.batch;
}

function kinds(effects: CommitterEffect[]): string[] {
  return effects.map((e) => (e.kind === 'DeliverToShard' ? `Deliver:${e.msg.kind}` : e.kind));
}

describe('group committer', () => {
  it('flushes at once when a full batch is buffered', () => {
    const state = createCommitterState(config);
    const rows = [row(), row(), row(), row()];
    expect(kinds(append(state, rows, 0))).toEqual(['RequestBatchId']);
    const batch = startedBatch(stepCommitter(state, { kind: 'BatchIdAssigned', batchId: 1, nowMs: 0 }));
    expect(batch.rows).toEqual(rows.slice(0, 3));
    expect(state.buffer).toHaveLength(1);
  });

  it('flushes a partial batch at once while no journal call is in flight', () => {
    const state = createCommitterState(config);
    expect(append(state, [row()], 100)).toEqual([{ kind: 'RequestBatchId' }]);
  });

  it('while a commit is in flight, flushes a partial batch after flushIntervalMs', () => {
    const state = createCommitterState(config);
    append(state, [row()], 90);
    startedBatch(stepCommitter(state, { kind: 'BatchIdAssigned', batchId: 1, nowMs: 90 }));
    expect(append(state, [row()], 100)).toEqual([{ kind: 'ArmTimer', atMs: 105 }]);
    expect(append(state, [row()], 102)).toEqual([]);
    expect(stepCommitter(state, { kind: 'TimerFired', nowMs: 103 })).toEqual([{ kind: 'ArmTimer', atMs: 105 }]);
    expect(stepCommitter(state, { kind: 'TimerFired', nowMs: 105 })).toEqual([{ kind: 'RequestBatchId' }]);
  });

  it('starts the batch that waited as soon as the commit ahead of it finishes', () => {
    const state = createCommitterState({ ...config, commitsInFlightMax: 1 });
    append(state, [row()], 0);
    const first = startedBatch(stepCommitter(state, { kind: 'BatchIdAssigned', batchId: 1, nowMs: 0 }));
    expect(append(state, [row()], 1)).toEqual([]);
    const effects = stepCommitter(state, { kind: 'CommitFinished', batchId: first.batchId, result: { kind: 'committed', conflicts: [] }, nowMs: 2 });
    expect(kinds(effects)).toEqual(['Deliver:BatchCommitted', 'RequestBatchId']);
  });

  it('leaves a row whose floor is not below the batch id for the next batch', () => {
    const state = createCommitterState(config);
    const early = row();
    const late = row();
    append(state, [early], 0, 4);
    append(state, [late], 0, 9);
    stepCommitter(state, { kind: 'FlushRequested', nowMs: 0 });
    const batch = startedBatch(stepCommitter(state, { kind: 'BatchIdAssigned', batchId: 9, nowMs: 0 }));
    expect(batch.rows).toEqual([early]);
    expect(state.buffer.map((b) => b.row)).toEqual([late]);
  });

  it('keeps at most commitsInFlightMax journal calls in flight', () => {
    const state = createCommitterState(config);
    append(state, [row(), row(), row(), row(), row(), row(), row(), row(), row()], 0);
    startedBatch(stepCommitter(state, { kind: 'BatchIdAssigned', batchId: 1, nowMs: 0 }));
    const second = stepCommitter(state, { kind: 'BatchIdAssigned', batchId: 2, nowMs: 0 });
    startedBatch(second);
    expect(kinds(second)).not.toContain('RequestBatchId');
    const after = stepCommitter(state, { kind: 'CommitFinished', batchId: 1, result: { kind: 'committed', conflicts: [] }, nowMs: 1 });
    expect(kinds(after)).toEqual(['Deliver:BatchCommitted', 'RequestBatchId']);
  });

  it('delivers one BatchCommitted per shard, with that shard\'s conflicts', () => {
    const state = createCommitterState(config);
    const a = row('e', 0);
    const b = row('e', 1);
    const c = row('f', 0);
    append(state, [a, b, c], 0);
    stepCommitter(state, { kind: 'BatchIdAssigned', batchId: 1, nowMs: 0 });
    const effects = stepCommitter(state, {
      kind: 'CommitFinished',
      batchId: 1,
      result: { kind: 'committed', conflicts: [{ electionId: 'e', voterNumber: b.voterNumber }] },
      nowMs: 1,
    });
    expect(effects).toEqual([
      { kind: 'DeliverToShard', key: { electionId: 'e', shard: 0 }, msg: { kind: 'BatchCommitted', batchId: 1, rows: [a], conflictVoterNumbers: [] } },
      { kind: 'DeliverToShard', key: { electionId: 'e', shard: 1 }, msg: { kind: 'BatchCommitted', batchId: 1, rows: [b], conflictVoterNumbers: [b.voterNumber] } },
      { kind: 'DeliverToShard', key: { electionId: 'f', shard: 0 }, msg: { kind: 'BatchCommitted', batchId: 1, rows: [c], conflictVoterNumbers: [] } },
    ]);
    expect(isCommitterIdle(state)).toBe(true);
  });

  it('a failed commit is checked; committed after all → delivered', () => {
    const state = createCommitterState(config);
    const rows = [row(), row(), row()];
    append(state, rows, 0);
    stepCommitter(state, { kind: 'BatchIdAssigned', batchId: 1, nowMs: 0 });
    expect(stepCommitter(state, { kind: 'CommitFinished', batchId: 1, result: { kind: 'failed', message: 'connection reset' }, nowMs: 1 })).toEqual([
      { kind: 'CheckCommit', batchId: 1 },
    ]);
    const effects = stepCommitter(state, { kind: 'CommitCheckFinished', batchId: 1, outcome: 'committed', nowMs: 2 });
    expect(kinds(effects)).toEqual(['Deliver:BatchCommitted']);
  });

  it('a failed commit found not committed is retried in a new batch, and abandoned past the deadline', () => {
    const state = createCommitterState(config);
    const rows = [row(), row(), row()];
    append(state, rows, 0);
    stepCommitter(state, { kind: 'BatchIdAssigned', batchId: 1, nowMs: 0 });
    stepCommitter(state, { kind: 'CommitFinished', batchId: 1, result: { kind: 'failed', message: 'x' }, nowMs: 10 });
    expect(kinds(stepCommitter(state, { kind: 'CommitCheckFinished', batchId: 1, outcome: 'not_committed', nowMs: 11 }))).toEqual(['RequestBatchId']);
    expect(startedBatch(stepCommitter(state, { kind: 'BatchIdAssigned', batchId: 2, nowMs: 11 })).rows).toEqual(rows);
    stepCommitter(state, { kind: 'CommitFinished', batchId: 2, result: { kind: 'failed', message: 'x' }, nowMs: 100 });
    const effects = stepCommitter(state, { kind: 'CommitCheckFinished', batchId: 2, outcome: 'not_committed', nowMs: 101 });
    expect(effects).toEqual([
      { kind: 'DeliverToShard', key: { electionId: 'e', shard: 0 }, msg: { kind: 'BatchAbandoned', rows, reason: 'commit_failed' } },
    ]);
    expect(isCommitterIdle(state)).toBe(true);
  });

  it('a check that fails puts the batch in doubt and re-checks it on a later tick', () => {
    const state = createCommitterState(config);
    const rows = [row(), row(), row()];
    append(state, rows, 0);
    stepCommitter(state, { kind: 'BatchIdAssigned', batchId: 1, nowMs: 0 });
    stepCommitter(state, { kind: 'CommitFinished', batchId: 1, result: { kind: 'failed', message: 'x' }, nowMs: 1 });
    const doubt = stepCommitter(state, { kind: 'CommitCheckFinished', batchId: 1, outcome: 'error', nowMs: 2 });
    expect(doubt).toEqual([
      { kind: 'DeliverToShard', key: { electionId: 'e', shard: 0 }, msg: { kind: 'BatchInDoubt', rows } },
      { kind: 'ArmTimer', atMs: 22 },
    ]);
    expect(stepCommitter(state, { kind: 'TimerFired', nowMs: 22 })).toEqual([{ kind: 'CheckCommit', batchId: 1 }]);
    expect(stepCommitter(state, { kind: 'CommitCheckFinished', batchId: 1, outcome: 'error', nowMs: 23 })).toEqual([{ kind: 'ArmTimer', atMs: 43 }]);
    stepCommitter(state, { kind: 'TimerFired', nowMs: 43 });
    expect(kinds(stepCommitter(state, { kind: 'CommitCheckFinished', batchId: 1, outcome: 'committed', nowMs: 44 }))).toEqual(['Deliver:BatchCommitted']);
    expect(isCommitterIdle(state)).toBe(true);
  });

  it('stops admitting when the in-doubt set is full', () => {
    const state = createCommitterState({ ...config, inDoubtBatchesMax: 1 });
    append(state, [row(), row(), row()], 0);
    stepCommitter(state, { kind: 'BatchIdAssigned', batchId: 1, nowMs: 0 });
    expect(canAdmit(state, 0)).toBe(true);
    stepCommitter(state, { kind: 'CommitFinished', batchId: 1, result: { kind: 'failed', message: 'x' }, nowMs: 1 });
    stepCommitter(state, { kind: 'CommitCheckFinished', batchId: 1, outcome: 'error', nowMs: 2 });
    expect(canAdmit(state, 0)).toBe(false);
    // And no new batch starts while it is full.
    expect(kinds(append(state, [row(), row(), row()], 3))).not.toContain('RequestBatchId');
  });

  it('fenced: stale shards\' rows are abandoned, the others retried', () => {
    const state = createCommitterState(config);
    const stale = row('e', 0);
    const fine = row('e', 1);
    append(state, [stale, fine], 0);
    stepCommitter(state, { kind: 'FlushRequested', nowMs: 0 });
    stepCommitter(state, { kind: 'BatchIdAssigned', batchId: 1, nowMs: 0 });
    const effects = stepCommitter(state, {
      kind: 'CommitFinished',
      batchId: 1,
      result: { kind: 'fenced', staleShards: [{ electionId: 'e', shard: 0 }] },
      nowMs: 1,
    });
    expect(effects).toEqual([
      { kind: 'DeliverToShard', key: { electionId: 'e', shard: 0 }, msg: { kind: 'BatchAbandoned', rows: [stale], reason: 'fenced' } },
      { kind: 'RequestBatchId' },
    ]);
    expect(startedBatch(stepCommitter(state, { kind: 'BatchIdAssigned', batchId: 2, nowMs: 1 })).rows).toEqual([fine]);
  });

  it('bounds admission by buffered rows plus rows in transit', () => {
    const state = createCommitterState(config);
    append(state, [row(), row(), row(), row(), row()], 0);
    expect(canAdmit(state, 4)).toBe(true);
    expect(canAdmit(state, 5)).toBe(false);
  });

  it('retries a failed batch id request after checkRetryIntervalMs', () => {
    const state = createCommitterState(config);
    append(state, [row(), row(), row()], 0);
    expect(stepCommitter(state, { kind: 'BatchIdFailed', message: 'db down', nowMs: 1 })).toEqual([{ kind: 'ArmTimer', atMs: 21 }]);
    expect(stepCommitter(state, { kind: 'TimerFired', nowMs: 21 })).toEqual([{ kind: 'RequestBatchId' }]);
  });

  it('asserts on impossible messages', () => {
    const state = createCommitterState(config);
    expect(() => stepCommitter(state, { kind: 'BatchIdAssigned', batchId: 1, nowMs: 0 })).toThrow(/without a request/);
    expect(() => stepCommitter(state, { kind: 'CommitFinished', batchId: 9, result: { kind: 'committed', conflicts: [] }, nowMs: 0 })).toThrow();
  });
});
