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
    // The timer is the deadline's: buffered rows are answered by then whatever happens.
    expect(append(state, rows, 0)).toEqual([{ kind: 'RequestBatchId' }, { kind: 'ArmTimer', atMs: 100 }]);
    const batch = startedBatch(stepCommitter(state, { kind: 'BatchIdAssigned', batchId: 1, nowMs: 0 }));
    expect(batch.rows).toEqual(rows.slice(0, 3));
    expect(state.buffer).toHaveLength(1);
  });

  it('flushes a partial batch at once while no journal call is in flight', () => {
    const state = createCommitterState(config);
    expect(append(state, [row()], 100)).toEqual([{ kind: 'RequestBatchId' }, { kind: 'ArmTimer', atMs: 200 }]);
  });

  it('while a commit is in flight, flushes a partial batch after flushIntervalMs', () => {
    const state = createCommitterState(config);
    append(state, [row()], 90);
    startedBatch(stepCommitter(state, { kind: 'BatchIdAssigned', batchId: 1, nowMs: 90 }));
    expect(state.timerAtMs).toBe(190); // the deadline of the batch in flight
    expect(append(state, [row()], 100)).toEqual([{ kind: 'ArmTimer', atMs: 105 }]);
    expect(append(state, [row()], 102)).toEqual([]);
    expect(stepCommitter(state, { kind: 'TimerFired', nowMs: 103 })).toEqual([{ kind: 'ArmTimer', atMs: 105 }]);
    expect(stepCommitter(state, { kind: 'TimerFired', nowMs: 105 })).toEqual([{ kind: 'RequestBatchId' }, { kind: 'ArmTimer', atMs: 190 }]);
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
    expect(stepCommitter(state, { kind: 'TimerFired', nowMs: 21 })).toEqual([{ kind: 'RequestBatchId' }, { kind: 'ArmTimer', atMs: 100 }]);
  });

  it('asserts on impossible messages', () => {
    const state = createCommitterState(config);
    expect(() => stepCommitter(state, { kind: 'BatchIdAssigned', batchId: 1, nowMs: 0 })).toThrow(/without a request/);
    expect(() => stepCommitter(state, { kind: 'CommitFinished', batchId: 9, result: { kind: 'committed', conflicts: [] }, nowMs: 0 })).toThrow();
  });
});

describe('group committer: deadline and spill', () => {
  const spill: CommitterConfig = { ...config, commitsInFlightMax: 1, spillAfterMs: 50 };

  function spilled(effects: CommitterEffect[]): JournalBatch {
    const effect = effects.find((e) => e.kind === 'SpillBatch');
    if (effect?.kind !== 'SpillBatch') throw new Error(`no SpillBatch in ${JSON.stringify(effects)}`);
    return effect.batch;
  }

  it('spills a commit still running at spillAfterMs; the queue confirming answers its votes', () => {
    const state = createCommitterState(spill);
    const rows = [row(), row()];
    append(state, rows, 0);
    const batch = startedBatch(stepCommitter(state, { kind: 'BatchIdAssigned', batchId: 1, nowMs: 0 }));
    expect(kinds(stepCommitter(state, { kind: 'TimerFired', nowMs: 49 }))).not.toContain('SpillBatch');
    expect(spilled(stepCommitter(state, { kind: 'TimerFired', nowMs: 50 }))).toBe(batch);
    expect(kinds(stepCommitter(state, { kind: 'SpillFinished', batchId: 1, confirmed: true, nowMs: 60 }))).toEqual(['Deliver:BatchQueued']);
    // The commit lands after all: counted now (the drain of the queued copy is a no-op).
    expect(kinds(stepCommitter(state, { kind: 'CommitFinished', batchId: 1, result: { kind: 'committed', conflicts: [] }, nowMs: 70 }))).toEqual([
      'Deliver:BatchCommitted',
    ]);
    expect(isCommitterIdle(state)).toBe(true);
  });

  it('a queued batch whose commit fails is left to the drain, never checked', () => {
    const state = createCommitterState(spill);
    append(state, [row()], 0);
    stepCommitter(state, { kind: 'BatchIdAssigned', batchId: 1, nowMs: 0 });
    stepCommitter(state, { kind: 'TimerFired', nowMs: 50 });
    // Failed while the spill is in flight: held, not checked (a check would mark it abandoned).
    expect(kinds(stepCommitter(state, { kind: 'CommitFinished', batchId: 1, result: { kind: 'failed', message: 'timeout' }, nowMs: 55 }))).not.toContain(
      'CheckCommit',
    );
    const effects = stepCommitter(state, { kind: 'SpillFinished', batchId: 1, confirmed: true, nowMs: 60 });
    expect(kinds(effects)).toEqual(['Deliver:BatchQueued']);
    expect(state.counters.batchesLeftToDrain).toBe(1);
    expect(isCommitterIdle(state)).toBe(true);
  });

  it('a commit that fails before spillAfterMs (a crashed database) is spilled at once, not checked; unconfirmed, it is checked', () => {
    const state = createCommitterState(spill);
    const rows = [row(), row()];
    append(state, rows, 0);
    const batch = startedBatch(stepCommitter(state, { kind: 'BatchIdAssigned', batchId: 1, nowMs: 0 }));
    const failed = stepCommitter(state, { kind: 'CommitFinished', batchId: 1, result: { kind: 'failed', message: 'ECONNREFUSED' }, nowMs: 3 });
    expect(kinds(failed)).not.toContain('CheckCommit');
    expect(spilled(failed)).toBe(batch);
    expect(kinds(stepCommitter(state, { kind: 'SpillFinished', batchId: 1, confirmed: true, nowMs: 5 }))).toEqual(['Deliver:BatchQueued']);
    expect(state.counters.batchesLeftToDrain).toBe(1);
    expect(isCommitterIdle(state)).toBe(true);

    // The queue down as well: the batch is settled by wasCommitted, as before.
    append(state, [row()], 10);
    stepCommitter(state, { kind: 'BatchIdAssigned', batchId: 2, nowMs: 10 });
    stepCommitter(state, { kind: 'CommitFinished', batchId: 2, result: { kind: 'failed', message: 'ECONNREFUSED' }, nowMs: 12 });
    expect(kinds(stepCommitter(state, { kind: 'SpillFinished', batchId: 2, confirmed: false, nowMs: 14 }))).toEqual(['CheckCommit']);
  });

  it('a spill not confirmed leaves the batch to wasCommitted, and its votes are answered in doubt at the deadline', () => {
    const state = createCommitterState(spill);
    const rows = [row()];
    append(state, rows, 0);
    stepCommitter(state, { kind: 'BatchIdAssigned', batchId: 1, nowMs: 0 });
    stepCommitter(state, { kind: 'TimerFired', nowMs: 50 });
    expect(stepCommitter(state, { kind: 'SpillFinished', batchId: 1, confirmed: false, nowMs: 60 })).toEqual([]);
    expect(state.timerAtMs).toBe(100);
    expect(stepCommitter(state, { kind: 'TimerFired', nowMs: 100 })).toEqual([
      { kind: 'DeliverToShard', key: { electionId: 'e', shard: 0 }, msg: { kind: 'BatchInDoubt', rows } },
    ]);
    expect(kinds(stepCommitter(state, { kind: 'CommitFinished', batchId: 1, result: { kind: 'failed', message: 'x' }, nowMs: 120 }))).toEqual(['CheckCommit']);
    // Not committed (and now marked abandoned): past the deadline, so abandoned, not retried.
    expect(kinds(stepCommitter(state, { kind: 'CommitCheckFinished', batchId: 1, outcome: 'not_committed', nowMs: 130 }))).toEqual([
      'Deliver:BatchAbandoned',
    ]);
    expect(isCommitterIdle(state)).toBe(true);
  });

  it('with the journal stalled, rows waiting spillAfterMs leave in a batch for the queue alone', () => {
    const state = createCommitterState(spill);
    append(state, [row()], 0);
    stepCommitter(state, { kind: 'BatchIdAssigned', batchId: 1, nowMs: 0 });
    const waiting = [row(), row()];
    append(state, waiting, 10);
    expect(kinds(stepCommitter(state, { kind: 'TimerFired', nowMs: 50 }))).toContain('SpillBatch');
    expect(kinds(stepCommitter(state, { kind: 'TimerFired', nowMs: 60 }))).toContain('RequestBatchId');
    const effects = stepCommitter(state, { kind: 'BatchIdAssigned', batchId: 2, nowMs: 61 });
    expect(kinds(effects)).not.toContain('StartCommit');
    expect(spilled(effects).rows).toEqual(waiting);
    expect(stepCommitter(state, { kind: 'SpillFinished', batchId: 2, confirmed: true, nowMs: 62 })).toEqual([
      { kind: 'DeliverToShard', key: { electionId: 'e', shard: 0 }, msg: { kind: 'BatchQueued', rows: waiting } },
    ]);
  });

  it('rows that never got a batch id are abandoned at the deadline', () => {
    const state = createCommitterState(spill);
    const rows = [row()];
    append(state, rows, 0);
    stepCommitter(state, { kind: 'TimerFired', nowMs: 50 });
    stepCommitter(state, { kind: 'BatchIdFailed', message: 'db frozen', nowMs: 90 });
    expect(state.timerAtMs).toBe(100);
    const effects = stepCommitter(state, { kind: 'TimerFired', nowMs: 100 });
    expect(effects).toEqual([{ kind: 'DeliverToShard', key: { electionId: 'e', shard: 0 }, msg: { kind: 'BatchAbandoned', rows, reason: 'commit_failed' } }]);
    expect(isCommitterIdle(state)).toBe(true);
  });
});
