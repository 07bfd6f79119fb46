import { afterEach, describe, expect, it } from 'vitest';
import { createMemoryAdapters, MemoryJournal, type MemoryAdapters } from './memoryAdapters.ts';
import type { JournalBatch, JournalCommitResult, SnapshotStore } from './ports.ts';
import type { VoteOutcome } from './shard.ts';
import { PagedBitmap } from './bitmap.ts';
import { createUuidV7Generator, createVoteNode, ReplyCallbacks, type CommittedShardBatch, type VoteNode, type VoteNodeConfig } from './voteNode.ts';

/** A journal whose commits wait until the test releases them. */
class GatedJournal extends MemoryJournal {
  private gateOpen = false;
  private readonly waiting: (() => void)[] = [];

  override async commit(batch: JournalBatch): Promise<JournalCommitResult> {
    if (!this.gateOpen) await new Promise<void>((resolve) => this.waiting.push(resolve));
    return super.commit(batch);
  }

  open(): void {
    this.gateOpen = true;
    for (const release of this.waiting.splice(0)) release();
  }

  /** Commits held at the gate. */
  get heldCount(): number {
    return this.waiting.length;
  }
}

const electionId = '0190a6d2-0000-7000-8000-000000000001';
const nodes: VoteNode[] = [];

afterEach(async () => {
  await Promise.all(nodes.splice(0).map((node) => node.close()));
});

async function openNode(
  adapters: MemoryAdapters,
  options: {
    journal?: MemoryJournal;
    snapshots?: SnapshotStore;
    config?: Partial<VoteNodeConfig>;
    epoch?: number;
    shardCount?: number;
  } = {},
): Promise<VoteNode> {
  const shardCount = options.shardCount ?? 4;
  const epoch = options.epoch ?? 1;
  for (let shard = 0; shard < shardCount; shard++) adapters.store.setLeaseEpoch({ electionId, shard }, epoch);
  const node = createVoteNode({
    journal: options.journal ?? adapters.journal,
    snapshots: options.snapshots ?? adapters.snapshots,
    storedVotes: adapters.storedVotes,
    batchIds: adapters.batchIds,
    config: { flushIntervalMs: 1, resultsPublishIntervalMs: 5, ...options.config },
  });
  nodes.push(node);
  await node.openElection({ electionId, shardCount, candidateCount: 3, epochs: new Array<number>(shardCount).fill(epoch) });
  return node;
}

function castAndWait(node: VoteNode, voterNumber: number, candidateIndex: number): Promise<VoteOutcome> {
  return new Promise((resolve) => node.cast({ electionId, voterNumber, candidateIndex }, resolve));
}

function expectAccepted(outcome: VoteOutcome): Extract<VoteOutcome, { kind: 'accepted' }> {
  expect(outcome.kind).toBe('accepted');
  return outcome as Extract<VoteOutcome, { kind: 'accepted' }>;
}

/**
 * Waiting for something the node does on its own timers and mailboxes: a condition with a
 * deadline that only catches a hang, never a fixed sleep that a busy machine can outlast.
 */
const eventually = { timeout: 60_000, interval: 2 };

describe('vote node', () => {
  it('a released shard leaves a short tail to the next owner (no final snapshot in the hand-off), and the next owner snapshots once it serves', async () => {
    const adapters = createMemoryAdapters();
    const written: { shard: number; epoch: number; node: string }[] = [];
    const counting = (node: string): SnapshotStore => ({
      writeSnapshot: async (snapshot) => {
        written.push({ shard: snapshot.shard, epoch: snapshot.epoch, node });
        await adapters.snapshots.writeSnapshot(snapshot);
      },
      readLatestSnapshot: (key) => adapters.snapshots.readLatestSnapshot(key),
      readVotesAfter: (key, after, onRows) => adapters.snapshots.readVotesAfter(key, after, onRows),
    });
    const old = await openNode(adapters, { shardCount: 1, snapshots: counting('old'), config: { releaseSnapshotTailRowsMin: 5 } });
    const accepted: string[] = [];
    for (let voter = 0; voter < 3; voter++) accepted.push(expectAccepted(await castAndWait(old, voter, voter % 3)).voteId);
    const shortTail = await old.releaseShard(electionId, 0);
    expect(shortTail).toMatchObject({ backlogResolved: true, snapshotWritten: false });
    expect(written).toEqual([]);
    expect(old.isServing(electionId, 0)).toBe(false);

    // The next owner (epoch 2) replays the tail from the journal, serves, then writes a snapshot.
    adapters.store.setLeaseEpoch({ electionId, shard: 0 }, 2);
    const next = createVoteNode({ journal: adapters.journal, snapshots: counting('next'), storedVotes: adapters.storedVotes, batchIds: adapters.batchIds, config: { flushIntervalMs: 1, releaseSnapshotTailRowsMin: 5 } });
    nodes.push(next);
    await next.hostShards({ electionId, shardCount: 1, candidateCount: 3, shards: [{ shard: 0, epoch: 2 }] });
    expect(next.results(electionId)?.total).toBe(3);
    expect(expectAccepted(await castAndWait(next, 1, 1)).voteId).toBe(accepted[1]);
    await expect.poll(() => written, eventually).toEqual([{ shard: 0, epoch: 2, node: 'next' }]);

    // A tail longer than releaseSnapshotTailRowsMin is snapshotted by the old owner before it lets go.
    for (let voter = 10; voter < 17; voter++) expectAccepted(await castAndWait(next, voter, voter % 3));
    const longTail = await next.releaseShard(electionId, 0);
    expect(longTail).toMatchObject({ backlogResolved: true, snapshotWritten: true });
    expect(written.at(-1)).toEqual({ shard: 0, epoch: 2, node: 'next' });
    expect(written).toHaveLength(2);
  });

  it('answers accepted only after the commit, and counts only then', async () => {
    const adapters = createMemoryAdapters();
    const journal = new GatedJournal(adapters.store);
    const node = await openNode(adapters, { journal });
    let outcome: VoteOutcome | undefined;
    node.cast({ electionId, voterNumber: 5, candidateIndex: 2 }, (o) => (outcome = o));
    await expect.poll(() => journal.heldCount, eventually).toBe(1);
    expect(outcome).toBeUndefined();
    expect(node.results(electionId)?.total).toBe(0);
    expect(adapters.store.readStoredVote(electionId, 5)).toBeNull();
    journal.open();
    await expect.poll(() => outcome, eventually).toBeDefined();
    const accepted = expectAccepted(outcome!);
    expect(accepted.replayed).toBe(false);
    // Durable before the answer: the row is there with that voteId.
    expect(adapters.store.readStoredVote(electionId, 5)?.voteId).toBe(accepted.voteId);
    // Counted in the shard's turn after the answer.
    await expect.poll(() => node.results(electionId)?.total, eventually).toBe(1);
    expect(node.results(electionId)).toMatchObject({ tallies: [0, 0, 1], total: 1, perShard: [0, 1, 0, 0] });
  });

  it('messages sent to a shard before its actor starts are handled as one actor message, in order: casts, and a batch outcome that arrives meanwhile', async () => {
    const adapters = createMemoryAdapters();
    const journal = new GatedJournal(adapters.store);
    // No snapshot timer: a TakeSnapshot would be one more message.
    const node = await openNode(adapters, { journal, config: { snapshotIntervalMs: 3_600_000 } });
    const before = node.stats(electionId)!.actors;
    const handled = () => {
      const now = node.stats(electionId)!.actors;
      return { runs: now.runs - before.runs, messages: now.messages - before.messages };
    };
    const outcomes: VoteOutcome[] = [];
    // Five voters of shard 0 (4 shards) in one turn: one run.
    for (const voterNumber of [0, 4, 8, 12, 16]) node.cast({ electionId, voterNumber, candidateIndex: 1 }, (o) => outcomes.push(o));
    await expect.poll(() => journal.heldCount, eventually).toBe(1);
    expect(handled()).toEqual({ runs: 1, messages: 5 });
    // A sixth cast, then the first batch's outcome, both before the actor's next turn: the outcome
    // joins the cast's run (it was its own actor message, handled a turn later, before runs).
    node.cast({ electionId, voterNumber: 20, candidateIndex: 1 }, (o) => outcomes.push(o));
    journal.open();
    await expect.poll(() => outcomes.length, eventually).toBe(6);
    for (const outcome of outcomes) expectAccepted(outcome);
    // The first run, the cast with the first outcome, the outcome of the sixth vote's own batch.
    // A vote is answered as soon as its batch's commit is read, before its shard's turn with the
    // outcome, so the last run may still be to come.
    await expect.poll(() => handled(), eventually).toEqual({ runs: 3, messages: 8 });
  });

  it('an identical retry gets the original voteId; another candidate gets already_voted', async () => {
    const adapters = createMemoryAdapters();
    const node = await openNode(adapters);
    const first = expectAccepted(await castAndWait(node, 9, 1));
    const retry = expectAccepted(await castAndWait(node, 9, 1));
    expect(retry.voteId).toBe(first.voteId);
    expect(retry.acceptedAtMs).toBe(first.acceptedAtMs);
    expect(retry.replayed).toBe(true);
    expect(await castAndWait(node, 9, 0)).toEqual({ kind: 'already_voted', voteId: first.voteId, acceptedAtMs: first.acceptedAtMs });
    expect(node.results(electionId)?.total).toBe(1);
  });

  it('retries that arrive while the vote is pending are answered with it', async () => {
    const adapters = createMemoryAdapters();
    const journal = new GatedJournal(adapters.store);
    const node = await openNode(adapters, { journal });
    const outcomes = Promise.all([castAndWait(node, 7, 0), castAndWait(node, 7, 0), castAndWait(node, 7, 2)]);
    await expect.poll(() => journal.heldCount, eventually).toBe(1);
    journal.open();
    const [original, retry, other] = await outcomes;
    expect(expectAccepted(original!).replayed).toBe(false);
    expect(expectAccepted(retry!).voteId).toBe((original as { voteId: string }).voteId);
    expect(other).toMatchObject({ kind: 'already_voted', voteId: (original as { voteId: string }).voteId });
    expect(adapters.store.rowsLog).toHaveLength(1);
  });

  it('answers overloaded once a shard has too many casts queued or pending', async () => {
    const adapters = createMemoryAdapters();
    const journal = new GatedJournal(adapters.store);
    const node = await openNode(adapters, { journal, shardCount: 1, config: { shardPendingVotesMax: 3, shardMailboxCastsMax: 1000 } });
    const outcomes: VoteOutcome[] = [];
    for (let voter = 0; voter < 5; voter++) node.cast({ electionId, voterNumber: voter, candidateIndex: 0 }, (o) => outcomes.push(o));
    await expect.poll(() => outcomes.length, eventually).toBe(2);
    expect(outcomes).toEqual([
      { kind: 'overloaded', retryAfterMs: 1000 },
      { kind: 'overloaded', retryAfterMs: 1000 },
    ]);
    journal.open();
    await expect.poll(() => outcomes.length, eventually).toBe(5);
    expect(outcomes.filter((o) => o.kind === 'accepted')).toHaveLength(3);
    // Counted in the shard's turn, which may come just after the answers.
    await expect.poll(() => node.stats(electionId)?.outcomes, eventually).toMatchObject({ overloaded: 2, accepted: 3 });
  });

  it('answers overloaded before dispatch when the committer buffer is full', async () => {
    const adapters = createMemoryAdapters();
    const journal = new GatedJournal(adapters.store);
    const node = await openNode(adapters, { journal, config: { batchRowsMax: 2, bufferRowsMax: 2, commitsInFlightMax: 1 } });
    const outcomes: VoteOutcome[] = [];
    for (let voter = 0; voter < 8; voter++) node.cast({ electionId, voterNumber: voter, candidateIndex: 0 }, (o) => outcomes.push(o));
    // Refused synchronously: nothing queued in any mailbox for them.
    expect(outcomes.length).toBeGreaterThan(0);
    expect(outcomes.every((o) => o.kind === 'overloaded')).toBe(true);
    journal.open();
    await expect.poll(() => outcomes.length, eventually).toBe(8);
    expect(outcomes.filter((o) => o.kind === 'accepted').length + outcomes.filter((o) => o.kind === 'overloaded').length).toBe(8);
  });

  it('close() flushes pending votes before it resolves', async () => {
    const adapters = createMemoryAdapters();
    // Only the first commit is held: the second vote then waits in the buffer for the (long)
    // flush interval, because a commit is in flight. close() must send it without waiting.
    class FirstCommitGated extends GatedJournal {
      private calls = 0;
      override async commit(batch: JournalBatch): Promise<JournalCommitResult> {
        return ++this.calls === 1 ? super.commit(batch) : MemoryJournal.prototype.commit.call(this, batch);
      }
    }
    const journal = new FirstCommitGated(adapters.store);
    const node = await openNode(adapters, { journal, config: { flushIntervalMs: 60_000 } });
    const held = castAndWait(node, 2, 0);
    await expect.poll(() => journal.heldCount, eventually).toBe(1);
    const outcome = castAndWait(node, 3, 1);
    await expect.poll(() => node.stats(electionId)?.committer.bufferedRows, eventually).toBe(1);
    expect(adapters.store.rowsLog).toHaveLength(0);
    const closing = node.close();
    expect(expectAccepted(await outcome).voteId).toBe(adapters.store.readStoredVote(electionId, 3)?.voteId);
    journal.open();
    await closing;
    expectAccepted(await held);
    expect(await castAndWait(node, 4, 1)).toMatchObject({ kind: 'unavailable', reason: 'node_stopping' });
  });

  it('a restarted node recovers committed votes and answers retries with the original voteId', async () => {
    const adapters = createMemoryAdapters();
    const first = await openNode(adapters);
    const accepted: string[] = [];
    for (let voter = 0; voter < 20; voter++) accepted.push(expectAccepted(await castAndWait(first, voter, voter % 3)).voteId);
    await first.close(); // writes final snapshots
    // The second life writes no snapshot: its votes must come back by replay after the watermark.
    const failingSnapshots: SnapshotStore = {
      writeSnapshot: async () => {
        throw new Error('snapshot store down');
      },
      readLatestSnapshot: (key) => adapters.snapshots.readLatestSnapshot(key),
      readVotesAfter: (key, after, onRows) => adapters.snapshots.readVotesAfter(key, after, onRows),
    };
    const second = await openNode(createMemoryAdapters({ store: adapters.store }), { epoch: 2, snapshots: failingSnapshots });
    for (let voter = 20; voter < 40; voter++) accepted.push(expectAccepted(await castAndWait(second, voter, voter % 3)).voteId);
    // A vote is answered as soon as its commit is read, and counted in its shard's next turn.
    await expect.poll(() => second.results(electionId)?.total, eventually).toBe(40);
    const resultsBefore = second.results(electionId);
    await second.close();
    const restarted = await openNode(createMemoryAdapters({ store: adapters.store }), { epoch: 3 });
    expect(restarted.results(electionId)).toMatchObject({ tallies: resultsBefore?.tallies, total: 40 });
    for (const voter of [17, 33]) expect(expectAccepted(await castAndWait(restarted, voter, voter % 3)).voteId).toBe(accepted[voter]);
    expect(await castAndWait(restarted, 18, (18 + 1) % 3)).toMatchObject({ kind: 'already_voted', voteId: accepted[18] });
    expect(expectAccepted(await castAndWait(restarted, 41, 0)).replayed).toBe(false);
  });

  it('refuses unknown elections and bad input without touching state', async () => {
    const adapters = createMemoryAdapters();
    const node = await openNode(adapters);
    expect(await castAndWait(node, 1, 3)).toEqual({ kind: 'invalid_vote', reason: 'candidate_index_invalid' });
    expect(await castAndWait(node, -1, 0)).toEqual({ kind: 'invalid_vote', reason: 'voter_number_invalid' });
    expect(await castAndWait(node, 1.5, 0)).toEqual({ kind: 'invalid_vote', reason: 'voter_number_invalid' });
    expect(await new Promise((resolve) => node.cast({ electionId: 'nope', voterNumber: 1, candidateIndex: 0 }, resolve))).toEqual({
      kind: 'unknown_election',
    });
    expect(adapters.store.rowsLog).toHaveLength(0);
    await expect(node.openElection({ electionId, shardCount: 4, candidateCount: 3, epochs: [1, 1, 1, 1] })).rejects.toThrow(/already open/);
  });

  it('a closed election refuses new voters but still answers retries', async () => {
    const adapters = createMemoryAdapters();
    const node = await openNode(adapters);
    const first = expectAccepted(await castAndWait(node, 2, 0));
    expect(node.closeElection(electionId)).toBe(true);
    expect(await castAndWait(node, 6, 0)).toEqual({ kind: 'election_closed' });
    expect(expectAccepted(await castAndWait(node, 2, 0)).voteId).toBe(first.voteId);
  });

  it('publishes changed results to listeners', async () => {
    const adapters = createMemoryAdapters();
    const node = await openNode(adapters);
    const published: number[] = [];
    const unsubscribe = node.onResultsChanged((results) => published.push(results.total));
    await castAndWait(node, 1, 0);
    await castAndWait(node, 2, 0);
    await expect.poll(() => published.at(-1), eventually).toBe(2);
    unsubscribe();
  });

  it('a fenced shard refuses new votes with unavailable', async () => {
    const adapters = createMemoryAdapters();
    const node = await openNode(adapters, { shardCount: 1 });
    adapters.store.setLeaseEpoch({ electionId, shard: 0 }, 5); // another node took the shard
    expect(await castAndWait(node, 1, 0)).toMatchObject({ kind: 'unavailable', reason: 'fenced' });
    expect(await castAndWait(node, 2, 0)).toMatchObject({ kind: 'unavailable', reason: 'fenced' });
    expect(adapters.store.rowsLog).toHaveLength(0);
    expect(node.stats(electionId)?.shards[0]?.leaseLost).toBe(true);
  });
});

describe('vote ids', () => {
  it('are UUIDv7: version 7, RFC variant, time-ordered prefix', () => {
    let ms = 1_700_000_000_000;
    const next = createUuidV7Generator(() => ms);
    const a = next();
    ms += 1;
    const b = next();
    expect(a).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(a.slice(0, 13).replace('-', '')).toBe((1_700_000_000_000).toString(16).padStart(12, '0'));
    expect(b > a).toBe(true);
    const many = new Set(Array.from({ length: 5000 }, next));
    expect(many.size).toBe(5000);
  });
});

describe('reply callbacks', () => {
  it('finds each callback once by its id, also when its slot is held by an older one, and never another id\'s', () => {
    const callbacks = new ReplyCallbacks(4);
    const got: string[] = [];
    const callback = (name: string) => () => got.push(name);
    for (const id of [1, 2, 3, 5, 9]) callbacks.set(id, callback(`#${id}`)); // 5 and 9 share slot 1 with 1
    expect(callbacks.size).toBe(5);
    expect(callbacks.requestIds().sort((a, b) => a - b)).toEqual([1, 2, 3, 5, 9]);
    callbacks.take(9)?.(unknownOutcome);
    callbacks.take(1)?.(unknownOutcome);
    expect(callbacks.take(1)).toBeUndefined(); // answered already
    callbacks.set(13, callback('#13')); // slot 1 free again
    expect(callbacks.take(9)).toBeUndefined();
    callbacks.take(5)?.(unknownOutcome);
    callbacks.take(13)?.(unknownOutcome);
    expect(callbacks.take(17)).toBeUndefined(); // never set; its slot last held 13
    expect(got).toEqual(['#9', '#1', '#5', '#13']);
    expect(callbacks.size).toBe(2);
    expect(callbacks.requestIds().sort((a, b) => a - b)).toEqual([2, 3]);
  });
});

const unknownOutcome = { kind: 'unknown_election' } as const;

describe('VoteNode replication hooks', () => {
  it('onBatchCommitted reports each shard\'s stored rows with a watermark; a node recovering from that as a base reads only the votes after it', async () => {
    const adapters = createMemoryAdapters();
    for (let shard = 0; shard < 2; shard++) adapters.store.setLeaseEpoch({ electionId, shard }, 1);
    const reported: CommittedShardBatch[] = [];
    const owner = createVoteNode({
      journal: adapters.journal, snapshots: adapters.snapshots, storedVotes: adapters.storedVotes, batchIds: adapters.batchIds,
      config: { flushIntervalMs: 1, resultsPublishIntervalMs: 5 }, onBatchCommitted: (batch) => reported.push(batch),
    });
    nodes.push(owner);
    await owner.hostShards({ electionId, shardCount: 2, candidateCount: 3, shards: [{ shard: 0, epoch: 1 }, { shard: 1, epoch: 1 }] });
    for (let voter = 0; voter < 6; voter++) expect((await castAndWait(owner, voter, voter % 3)).kind).toBe('accepted');
    const shard0 = reported.filter((b) => b.key.shard === 0);
    expect(shard0.flatMap((b) => b.voterNumbers).sort()).toEqual([0, 2, 4]);
    expect(shard0.every((b) => b.epoch === 1 && b.watermarkBatchId < b.batchId + 1000)).toBe(true);
    // A replica's state, built from the reports alone (as cluster/replicas.ts does), as a base.
    const last = shard0[shard0.length - 1]!;
    const bitmap = new PagedBitmap();
    const tallies = [0, 0, 0];
    for (const b of shard0) b.voterNumbers.forEach((v, i) => { if (bitmap.set(Math.floor(v / 2))) tallies[b.candidateIndexes[i]!]!++; });
    const base = { electionId, shard: 0, epoch: 1, watermarkBatchId: last.watermarkBatchId, tallies, voterSlots: bitmap.voterSlots(), bitmap: bitmap.exportBytes(), takenAtMs: 0 };
    // One more vote the replica never heard of.
    expect((await castAndWait(owner, 8, 2)).kind).toBe('accepted');
    await owner.close();
    adapters.store.setLeaseEpoch({ electionId, shard: 0 }, 2);
    const promoted = createVoteNode({ journal: adapters.journal, snapshots: adapters.snapshots, storedVotes: adapters.storedVotes, batchIds: adapters.batchIds });
    nodes.push(promoted);
    const recoveries = await promoted.hostShards({ electionId, shardCount: 2, candidateCount: 3, shards: [{ shard: 0, epoch: 2, base }] });
    expect(recoveries).toEqual([{ shard: 0, source: 'replica', watermarkBatchId: last.watermarkBatchId, tailRows: expect.any(Number) }]);
    expect(recoveries[0]!.tailRows).toBeGreaterThanOrEqual(1); // the vote of voter 8 at least
    expect(recoveries[0]!.tailRows).toBeLessThan(4);
    expect(promoted.shardTallies(electionId)[0]!.counts).toEqual([1, 1, 2]); // voters 0, 2→c2, 4→c1, 8→c2
  });
});
