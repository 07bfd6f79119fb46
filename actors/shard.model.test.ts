// Model-based test of the shard behaviour (fast-check commands, one class per action).
//
// The model is deliberately simple: voter → { candidate, voteId, stored, inDoubt, waiters }.
// It knows nothing of bitmaps, slots, tallies arrays, snapshots or watermarks; after every
// command the real shard must agree with it on who holds a bit, what is counted, what is
// tentative, and exactly which replies went out.

import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { JournalRow, ShardSnapshot } from './ports.ts';
import {
  checkShardInvariants,
  createShardState,
  stepShard,
  type AbandonReason,
  type ShardMsg,
  type ShardState,
  type VoteOutcome,
} from './shard.ts';

const shardCount = 4;
const shard = 1;
const candidateCount = 3;
const votersMax = 12;
const pendingVotesMax = 6;
const retryAfterMs = 500;

// ---------------------------------------------------------------------------------------------
// Model

interface ModelWaiter {
  readonly requestId: number;
  readonly candidate: number;
  readonly original: boolean;
}

interface ModelVote {
  readonly candidate: number;
  readonly voteId: string;
  stored: boolean;
  inDoubt: boolean;
  waiters: ModelWaiter[];
}

interface Model {
  readonly votes: Map<number, ModelVote>;
  closed: boolean;
}

function unresolved(model: Readonly<Model>): [number, ModelVote][] {
  return [...model.votes].filter(([, vote]) => !vote.stored);
}

function backlog(model: Readonly<Model>): number {
  let count = 0;
  for (const vote of model.votes.values()) {
    if (!vote.stored) count += 1 + vote.waiters.filter((w) => !w.original).length;
  }
  return count;
}

// ---------------------------------------------------------------------------------------------
// Real system: the shard plus a toy journal that stores rows only when told to

interface StoredEntry {
  readonly row: JournalRow;
  readonly batchId: number;
}

class ShardHarness {
  state: ShardState = ShardHarness.freshState(1);
  /** Rows handed to the journal and not resolved yet, by voter. */
  readonly inJournalQueue = new Map<number, JournalRow>();
  readonly batchIdFloors = new Map<number, number>();
  readonly usedBatchIds = new Set<number>();
  readonly store = new Map<number, StoredEntry>();
  /** Every resolution ever delivered, to deliver again. */
  readonly pastResolutions: ShardMsg[] = [];
  lastBatchId = 0;
  latestSnapshot: ShardSnapshot | null = null;
  nextRequestId = 1;
  nextVoteNumber = 1;
  nowMs = 1_000;

  static freshState(epoch: number): ShardState {
    return createShardState({
      key: { electionId: 'election-1', shard },
      shardCount,
      candidateCount,
      epoch,
      config: { pendingVotesMax, retryAfterMs, bitmapPageBytes: 1 },
    });
  }

  /** Steps the shard, answers lookups from the store at once, returns the replies. */
  step(msg: ShardMsg): Map<number, VoteOutcome> {
    const replies = new Map<number, VoteOutcome>();
    const queue: ShardMsg[] = [msg];
    while (queue.length > 0) {
      for (const effect of stepShard(this.state, queue.shift()!)) {
        switch (effect.kind) {
          case 'Reply':
            expect(replies.has(effect.requestId), `two replies to request ${effect.requestId}`).toBe(false);
            replies.set(effect.requestId, effect.outcome);
            break;
          case 'AppendToJournal':
            expect(this.inJournalQueue.has(effect.row.voterNumber)).toBe(false);
            this.inJournalQueue.set(effect.row.voterNumber, effect.row);
            this.batchIdFloors.set(effect.row.voterNumber, effect.batchIdFloor);
            break;
          case 'LookupStoredVote': {
            const entry = this.store.get(effect.voterNumber);
            queue.push({
              kind: 'StoredVoteFound',
              voterNumber: effect.voterNumber,
              stored: entry === undefined ? null : { ...entry.row },
            });
            break;
          }
          case 'WriteSnapshot':
            this.latestSnapshot = effect.snapshot;
            break;
          case 'TalliesCommitted':
          case 'LeaseLost':
            break;
        }
      }
    }
    checkShardInvariants(this.state);
    return replies;
  }

  /** Loses everything in memory, then recovers from the latest snapshot and the stored rows. */
  crashAndRecover(closed: boolean): void {
    this.inJournalQueue.clear();
    // Recovery takes the lease anew, with a higher epoch.
    this.state = ShardHarness.freshState(this.state.epoch + 1);
    let watermark = 0;
    if (this.latestSnapshot !== null) {
      this.step({ kind: 'RestoreFromSnapshot', snapshot: this.latestSnapshot });
      watermark = this.latestSnapshot.watermarkBatchId;
    }
    const rows = [...this.store.values()].filter((e) => e.batchId > watermark).map((e) => e.row);
    this.step({ kind: 'ReplayStoredVotes', rows });
    if (closed) this.step({ kind: 'CloseElection' });
  }
}

function voterNumberOf(voterIndex: number): number {
  return voterIndex * shardCount + shard;
}

// ---------------------------------------------------------------------------------------------
// Commands

/** Every command checks, after acting, that model and shard still agree. */
abstract class ShardCommand implements fc.Command<Model, ShardHarness> {
  abstract check(model: Readonly<Model>): boolean;
  abstract act(model: Model, real: ShardHarness): void;
  abstract toString(): string;

  run(model: Model, real: ShardHarness): void {
    this.act(model, real);
    expectAgreement(model, real);
  }
}

function expectReplies(actual: Map<number, VoteOutcome>, expected: Map<number, VoteOutcome>): void {
  expect(Object.fromEntries(actual)).toEqual(Object.fromEntries(expected));
}

function answerFromStored(waiter: ModelWaiter, vote: ModelVote, acceptedAtMs: number): VoteOutcome {
  return waiter.candidate === vote.candidate
    ? { kind: 'accepted', voteId: vote.voteId, acceptedAtMs, replayed: !waiter.original }
    : { kind: 'already_voted', voteId: vote.voteId, acceptedAtMs };
}

class CastCommand extends ShardCommand {
  constructor(
    readonly voterIndex: number,
    readonly candidate: number,
  ) {
    super();
  }

  check(): boolean {
    return true;
  }

  act(model: Model, real: ShardHarness): void {
    const voterNumber = voterNumberOf(this.voterIndex);
    const requestId = real.nextRequestId++;
    const voteId = `vote-${real.nextVoteNumber++}`;
    const receivedAtMs = real.nowMs++;
    const appendedBefore = real.inJournalQueue.size;
    const replies = real.step({
      kind: 'CastVote',
      requestId,
      voterNumber,
      candidateIndex: this.candidate,
      voteId,
      receivedAtMs,
      batchIdFloor: real.lastBatchId,
    });
    const expected = new Map<number, VoteOutcome>();
    const vote = model.votes.get(this.voterIndex);
    const full = backlog(model) >= pendingVotesMax;
    if (vote === undefined) {
      if (model.closed) expected.set(requestId, { kind: 'election_closed' });
      else if (full) expected.set(requestId, { kind: 'overloaded', retryAfterMs });
      else {
        model.votes.set(this.voterIndex, {
          candidate: this.candidate,
          voteId,
          stored: false,
          inDoubt: false,
          waiters: [{ requestId, candidate: this.candidate, original: true }],
        });
      }
    } else if (!vote.stored && vote.inDoubt) {
      expected.set(requestId, { kind: 'unavailable', reason: 'in_doubt', retryAfterMs });
    } else if (full) {
      expected.set(requestId, { kind: 'overloaded', retryAfterMs });
    } else if (vote.stored) {
      const stored = real.store.get(voterNumber)!;
      expected.set(requestId, answerFromStored({ requestId, candidate: this.candidate, original: false }, vote, stored.row.acceptedAtMs));
    } else {
      vote.waiters.push({ requestId, candidate: this.candidate, original: false });
    }
    expectReplies(replies, expected);
    const appended = model.votes.get(this.voterIndex)?.voteId === voteId;
    expect(real.inJournalQueue.size).toBe(appendedBefore + (appended ? 1 : 0));
  }

  toString(): string {
    return `Cast(voter ${this.voterIndex}, candidate ${this.candidate})`;
  }
}

/**
 * Stores `count` unresolved rows (after skipping `skip` older ones) in one batch. Its id is
 * above every row's floor, `idGap` further up: ids skipped are "handed out to batches still in
 * flight", which later commits may use, as when concurrent batches finish out of order. That
 * is what makes the snapshot watermark matter.
 */
class CommitCommand extends ShardCommand {
  constructor(
    readonly skip: number,
    readonly count: number,
    readonly idGap: number,
  ) {
    super();
  }

  check(model: Readonly<Model>): boolean {
    return unresolved(model).length > this.skip;
  }

  act(model: Model, real: ShardHarness): void {
    const chosen = unresolved(model).slice(this.skip, this.skip + this.count);
    const rows = chosen.map(([voterIndex]) => real.inJournalQueue.get(voterNumberOf(voterIndex))!);
    let batchId = Math.max(...rows.map((row) => real.batchIdFloors.get(row.voterNumber)!)) + 1 + this.idGap;
    while (real.usedBatchIds.has(batchId)) batchId++;
    real.usedBatchIds.add(batchId);
    real.lastBatchId = Math.max(real.lastBatchId, batchId);
    for (const row of rows) {
      expect(real.store.has(row.voterNumber)).toBe(false);
      real.store.set(row.voterNumber, { row, batchId });
      real.inJournalQueue.delete(row.voterNumber);
    }
    const msg: ShardMsg = { kind: 'BatchCommitted', batchId, rows, conflictVoterNumbers: [] };
    real.pastResolutions.push(msg);
    const replies = real.step(msg);
    const expected = new Map<number, VoteOutcome>();
    for (const [voterIndex, vote] of chosen) {
      const acceptedAtMs = real.store.get(voterNumberOf(voterIndex))!.row.acceptedAtMs;
      for (const waiter of vote.waiters) expected.set(waiter.requestId, answerFromStored(waiter, vote, acceptedAtMs));
      vote.stored = true;
      vote.inDoubt = false;
      vote.waiters = [];
    }
    expectReplies(replies, expected);
  }

  toString(): string {
    return `Commit(skip ${this.skip}, ${this.count}, gap ${this.idGap})`;
  }
}

/** The first `count` unresolved rows are definitely not stored. */
class AbandonCommand extends ShardCommand {
  constructor(
    readonly count: number,
    readonly reason: AbandonReason,
  ) {
    super();
  }

  check(model: Readonly<Model>): boolean {
    return unresolved(model).length > 0;
  }

  act(model: Model, real: ShardHarness): void {
    const chosen = unresolved(model).slice(0, this.count);
    const rows = chosen.map(([voterIndex]) => real.inJournalQueue.get(voterNumberOf(voterIndex))!);
    for (const row of rows) real.inJournalQueue.delete(row.voterNumber);
    // Fencing is about the lease, not the votes; here it only has to free the voters.
    const epochBefore = real.state.epoch;
    const msg: ShardMsg = { kind: 'BatchAbandoned', rows, reason: this.reason };
    real.pastResolutions.push(msg);
    const replies = real.step(msg);
    // Fencing of the current epoch stops new votes until the lease is back (SetEpoch here).
    const fencesCurrentEpoch = this.reason === 'fenced' && rows.some((row) => row.epoch === epochBefore);
    expect(real.state.leaseLost).toBe(fencesCurrentEpoch);
    if (fencesCurrentEpoch) real.step({ kind: 'SetEpoch', epoch: epochBefore + 1 });
    const expected = new Map<number, VoteOutcome>();
    for (const [voterIndex, vote] of chosen) {
      for (const waiter of vote.waiters) expected.set(waiter.requestId, { kind: 'unavailable', reason: this.reason, retryAfterMs });
      model.votes.delete(voterIndex);
    }
    expectReplies(replies, expected);
  }

  toString(): string {
    return `Abandon(${this.count}, ${this.reason})`;
  }
}

/** The outcome of the first `count` unresolved rows is unknown for now. */
class InDoubtCommand extends ShardCommand {
  constructor(readonly count: number) {
    super();
  }

  check(model: Readonly<Model>): boolean {
    return unresolved(model).length > 0;
  }

  act(model: Model, real: ShardHarness): void {
    const chosen = unresolved(model).slice(0, this.count);
    const rows = chosen.map(([voterIndex]) => real.inJournalQueue.get(voterNumberOf(voterIndex))!);
    const msg: ShardMsg = { kind: 'BatchInDoubt', rows };
    real.pastResolutions.push(msg);
    const replies = real.step(msg);
    const expected = new Map<number, VoteOutcome>();
    for (const [, vote] of chosen) {
      for (const waiter of vote.waiters) expected.set(waiter.requestId, { kind: 'unavailable', reason: 'in_doubt', retryAfterMs });
      vote.inDoubt = true;
      vote.waiters = [];
    }
    expectReplies(replies, expected);
  }

  toString(): string {
    return `InDoubt(${this.count})`;
  }
}

class SnapshotCommand extends ShardCommand {
  check(): boolean {
    return true;
  }

  act(_model: Model, real: ShardHarness): void {
    const replies = real.step({ kind: 'TakeSnapshot', nowMs: real.nowMs++, lastAssignedBatchId: real.lastBatchId });
    expect(replies.size).toBe(0);
  }

  toString(): string {
    return 'Snapshot';
  }
}

/** Everything in memory is lost; unresolved rows were never stored (their transaction aborted). */
class CrashAndRecoverCommand extends ShardCommand {
  check(): boolean {
    return true;
  }

  act(model: Model, real: ShardHarness): void {
    real.crashAndRecover(model.closed);
    for (const [voterIndex, vote] of [...model.votes]) if (!vote.stored) model.votes.delete(voterIndex);
  }

  toString(): string {
    return 'CrashAndRecover';
  }
}

/**
 * Delivers again what was already applied: the stored votes (as recovery does), and a past
 * resolution (committed, abandoned or in doubt), which must not touch a newer vote of a voter.
 */
class RedeliverCommand extends ShardCommand {
  constructor(readonly batchPick: number) {
    super();
  }

  check(): boolean {
    return true;
  }

  act(_model: Model, real: ShardHarness): void {
    const storedRows = [...real.store.values()].map((e) => e.row);
    expect(real.step({ kind: 'ReplayStoredVotes', rows: storedRows }).size).toBe(0);
    if (real.pastResolutions.length > 0) {
      const past = real.pastResolutions[this.batchPick % real.pastResolutions.length]!;
      expect(real.step(past).size).toBe(0);
    }
  }

  toString(): string {
    return `Redeliver(${this.batchPick})`;
  }
}

class CloseCommand extends ShardCommand {
  check(model: Readonly<Model>): boolean {
    return !model.closed;
  }

  act(model: Model, real: ShardHarness): void {
    expect(real.step({ kind: 'CloseElection' }).size).toBe(0);
    model.closed = true;
  }

  toString(): string {
    return 'Close';
  }
}

// ---------------------------------------------------------------------------------------------
// What must agree after every command

function expectAgreement(model: Model, real: ShardHarness): void {
  const committed = new Array<number>(candidateCount).fill(0);
  const pending = new Array<number>(candidateCount).fill(0);
  for (const vote of model.votes.values()) (vote.stored ? committed : pending)[vote.candidate]!++;
  expect(real.state.committedTallies).toEqual(committed);
  expect(real.state.pendingTallies).toEqual(pending);
  for (let voterIndex = 0; voterIndex < votersMax; voterIndex++) {
    expect(real.state.bitmap.has(voterIndex), `bit of voter ${voterIndex}`).toBe(model.votes.has(voterIndex));
  }
  expect(real.state.counters.conflicts).toBe(0);
}

// Weighted so that the interesting interleavings (several pending votes, commits out of order,
// a snapshot, then a crash) come up often; closing the election is rare, it stops most action.
const commandArbitraries = [
  fc.oneof(
    { weight: 15, arbitrary: fc.tuple(fc.nat(votersMax - 1), fc.nat(candidateCount - 1)).map(([voter, candidate]) => new CastCommand(voter, candidate)) },
    // Retries of the same few voters, to reach waiters and lookups often.
    { weight: 6, arbitrary: fc.tuple(fc.nat(2), fc.nat(1)).map(([voter, candidate]) => new CastCommand(voter, candidate)) },
    { weight: 12, arbitrary: fc.tuple(fc.nat(2), fc.integer({ min: 1, max: 4 }), fc.nat(2)).map(([skip, count, idGap]) => new CommitCommand(skip, count, idGap)) },
    {
      weight: 3,
      arbitrary: fc
        .tuple(fc.integer({ min: 1, max: 3 }), fc.constantFrom<AbandonReason>('commit_failed', 'fenced'))
        .map(([count, reason]) => new AbandonCommand(count, reason)),
    },
    { weight: 3, arbitrary: fc.integer({ min: 1, max: 3 }).map((count) => new InDoubtCommand(count)) },
    { weight: 6, arbitrary: fc.constant(new SnapshotCommand()) },
    { weight: 6, arbitrary: fc.constant(new CrashAndRecoverCommand()) },
    { weight: 3, arbitrary: fc.nat(30).map((pick) => new RedeliverCommand(pick)) },
    { weight: 1, arbitrary: fc.constant(new CloseCommand()) },
  ),
];

describe('shard behaviour against a simple model', () => {
  it('agrees with the model under any sequence of casts, commits, failures, crashes and redeliveries', () => {
    fc.assert(
      fc.property(fc.commands(commandArbitraries, { maxCommands: 80, size: 'max' }), (commands) => {
        fc.modelRun(
          () => {
            const model: Model = { votes: new Map(), closed: false };
            const real = new ShardHarness();
            return { model, real };
          },
          commands,
        );
      }),
      { numRuns: 300 },
    );
  });
});

describe('shard behaviour, sequences found or feared', () => {
  function runSequence(commands: ShardCommand[]): void {
    const model: Model = { votes: new Map(), closed: false };
    const real = new ShardHarness();
    for (const command of commands) {
      if (command.check(model)) command.run(model, real);
    }
  }

  it('a vote committed in a batch older than a snapshot survives a crash (watermark)', () => {
    runSequence([
      new CastCommand(0, 0),
      new CastCommand(1, 0),
      new CommitCommand(1, 1, 2),
      new SnapshotCommand(),
      new CommitCommand(0, 1, 0),
      new CrashAndRecoverCommand(),
    ]);
  });

  it('a late resolution of an abandoned vote leaves the voter\'s new vote alone (voteId match)', () => {
    runSequence([new CastCommand(1, 0), new AbandonCommand(1, 'commit_failed'), new CastCommand(1, 0), new RedeliverCommand(0)]);
    runSequence([new CastCommand(0, 0), new InDoubtCommand(1), new CrashAndRecoverCommand(), new CastCommand(0, 0), new RedeliverCommand(0)]);
  });
});
