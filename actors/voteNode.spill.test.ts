// The vote node with a spill queue: when the journal stalls, votes are answered `accepted` from
// the queue within the deadline, and the drainer stores each of them exactly once afterwards.
import { afterEach, describe, expect, it } from 'vitest';
import { createMemoryAdapters, MemoryJournal, MemorySpillQueue, type MemoryAdapters } from './memoryAdapters.ts';
import type { JournalBatch, JournalCommitResult } from './ports.ts';
import type { VoteOutcome } from './shard.ts';
import { PagedBitmap } from './bitmap.ts';
import { createVoteNode, type CommittedShardBatch, type VoteNode, type VoteNodeConfig } from './voteNode.ts';

/** Commits wait at a gate; once opened they commit, or fail without storing (`failAfterGate`). */
class StallingJournal extends MemoryJournal {
  private gateOpen = false;
  private readonly waiting: (() => void)[] = [];
  failAfterGate = false;

  override async commit(batch: JournalBatch): Promise<JournalCommitResult> {
    if (!this.gateOpen) await new Promise<void>((resolve) => this.waiting.push(resolve));
    if (this.failAfterGate) return { kind: 'failed', message: 'connection lost' };
    return super.commit(batch);
  }

  override async storeSpilled(...args: Parameters<MemoryJournal['storeSpilled']>): ReturnType<MemoryJournal['storeSpilled']> {
    if (!this.gateOpen) throw new Error('journal stalled');
    return super.storeSpilled(...args);
  }

  open(): void {
    this.gateOpen = true;
    for (const release of this.waiting.splice(0)) release();
  }
}

const electionId = '0190a6d2-0000-7000-8000-0000000000a1';
const shardCount = 4;
const nodes: VoteNode[] = [];
const eventually = { timeout: 60_000, interval: 5 };
const spillConfig: Partial<VoteNodeConfig> = {
  flushIntervalMs: 1,
  resultsPublishIntervalMs: 5,
  spillAfterMs: 50,
  commitDeadlineMs: 5_000,
  drainIntervalMs: 20,
  closeTimeoutMs: 200,
};

afterEach(async () => {
  await Promise.all(nodes.splice(0).map((node) => node.close()));
});

async function openNode(adapters: MemoryAdapters, journal: MemoryJournal, queue: MemorySpillQueue, epoch = 1): Promise<VoteNode> {
  for (let shard = 0; shard < shardCount; shard++) adapters.store.setLeaseEpoch({ electionId, shard }, epoch);
  const node = createVoteNode({
    journal,
    snapshots: adapters.snapshots,
    storedVotes: adapters.storedVotes,
    batchIds: adapters.batchIds,
    spill: { queue, store: journal },
    config: spillConfig,
  });
  nodes.push(node);
  await node.openElection({ electionId, shardCount, candidateCount: 3, epochs: new Array<number>(shardCount).fill(epoch) });
  return node;
}

function cast(node: VoteNode, voterNumber: number, candidateIndex: number): Promise<VoteOutcome> {
  return new Promise((resolve) => node.cast({ electionId, voterNumber, candidateIndex }, resolve));
}

function storedVoters(adapters: MemoryAdapters): number[] {
  return adapters.store.rowsLog.filter((row) => row.electionId === electionId).map((row) => row.voterNumber).sort((a, b) => a - b);
}

const voters = Array.from({ length: 300 }, (_, i) => i * 3 + 1);

describe('vote node with a spill queue', () => {
  it('a stalled journal: votes answered accepted from the queue, counted once when the commits land after all', async () => {
    const adapters = createMemoryAdapters();
    const journal = new StallingJournal(adapters.store);
    const queue = new MemorySpillQueue();
    const node = await openNode(adapters, journal, queue);
    const outcomes = await Promise.all(voters.map((voter) => cast(node, voter, voter % 3)));
    expect(outcomes.every((outcome) => outcome.kind === 'accepted')).toBe(true);
    expect(queue.sent).toBeGreaterThan(0);
    // Durable in the queue, not counted yet, and the stats say how many wait.
    expect(node.results(electionId)!.total).toBe(0);
    expect(node.stats(electionId)!.shards.reduce((n, shard) => n + shard.votesInSpillQueue, 0)).toBe(voters.length);
    // The results say so: every accepted vote is queued, none counted yet.
    await expect.poll(() => node.results(electionId)!.queuedVotes, eventually).toBe(voters.length);
    const shardQueued = node.shardTallies(electionId).map((t) => t.queuedVotes);
    expect(shardQueued.reduce((a, b) => a + b, 0)).toBe(voters.length);
    // A retry is answered from the queued row; another candidate is a second vote, refused.
    const first = outcomes[0] as Extract<VoteOutcome, { kind: 'accepted' }>;
    expect(await cast(node, voters[0]!, voters[0]! % 3)).toMatchObject({ kind: 'accepted', voteId: first.voteId });
    expect(await cast(node, voters[0]!, (voters[0]! + 1) % 3)).toMatchObject({ kind: 'already_voted', voteId: first.voteId });

    journal.open();
    await expect.poll(() => node.results(electionId)!.total, eventually).toBe(voters.length);
    await expect.poll(async () => (await queue.depth()).batches, eventually).toBe(0);
    expect(storedVoters(adapters)).toEqual(voters);
    expect(node.spillStats()!.batchesAlreadyStored).toBeGreaterThan(0);
    expect(node.stats(electionId)!.shards.reduce((n, shard) => n + shard.votesInSpillQueue, 0)).toBe(0);
    expect(node.results(electionId)!.queuedVotes).toBe(0);
  });

  it('votes the drainer stored reach the replicas like committed ones: a replica promoted after later commits counts them', async () => {
    // The chaos.spill e2e case: an owner's early batch was queued and drained by the owner, later
    // batches committed; their reports carry a watermark above the drained batch, so a replica that
    // never got its rows was promoted without them (results 3 short of count(*) for good).
    const adapters = createMemoryAdapters();
    const journal = new StallingJournal(adapters.store);
    journal.failAfterGate = true;
    const queue = new MemorySpillQueue();
    for (let shard = 0; shard < shardCount; shard++) adapters.store.setLeaseEpoch({ electionId, shard }, 1);
    const reported: CommittedShardBatch[] = [];
    const owner = createVoteNode({
      journal, snapshots: adapters.snapshots, storedVotes: adapters.storedVotes, batchIds: adapters.batchIds,
      spill: { queue, store: journal }, config: spillConfig, onBatchCommitted: (batch) => reported.push(batch),
    });
    nodes.push(owner);
    await owner.openElection({ electionId, shardCount, candidateCount: 3, epochs: new Array<number>(shardCount).fill(1) });
    const drained = [0, 4, 8, 12, 16];
    expect((await Promise.all(drained.map((voter) => cast(owner, voter, voter % 3)))).every((o) => o.kind === 'accepted')).toBe(true);
    journal.open();
    await expect.poll(() => owner.spillStats()!.rowsDrained, eventually).toBe(drained.length);
    journal.failAfterGate = false;
    const committed = [20, 24, 28];
    for (const voter of committed) expect((await cast(owner, voter, voter % 3)).kind).toBe('accepted');
    await expect.poll(() => owner.results(electionId)!.total, eventually).toBe(drained.length + committed.length);

    const shard0 = reported.filter((b) => b.key.shard === 0);
    expect(shard0.flatMap((b) => b.voterNumbers).sort((a, b) => a - b)).toEqual([...drained, ...committed]);
    // The replica's state, built from the reports alone (as cluster/replicas.ts does), promoted.
    const bitmap = new PagedBitmap();
    const tallies = [0, 0, 0];
    for (const b of shard0) b.voterNumbers.forEach((v, i) => { if (bitmap.set(Math.floor(v / shardCount))) tallies[b.candidateIndexes[i]!]!++; });
    const base = {
      electionId, shard: 0, epoch: 1, watermarkBatchId: shard0[shard0.length - 1]!.watermarkBatchId, tallies,
      voterSlots: bitmap.voterSlots(), bitmap: bitmap.exportBytes(), takenAtMs: 0,
    };
    await owner.close();
    adapters.store.setLeaseEpoch({ electionId, shard: 0 }, 2);
    const promoted = createVoteNode({ journal: adapters.journal, snapshots: adapters.snapshots, storedVotes: adapters.storedVotes, batchIds: adapters.batchIds });
    nodes.push(promoted);
    await promoted.hostShards({ electionId, shardCount, candidateCount: 3, shards: [{ shard: 0, epoch: 2, base }] });
    const counted = promoted.shardTallies(electionId).find((t) => t.shard === 0)!.counts.reduce((a, b) => a + b, 0);
    expect(counted).toBe(storedVoters(adapters).filter((voter) => voter % shardCount === 0).length);
    expect(counted).toBe(drained.length + committed.length);
  });

  it('a journal that stalls and then fails: the drainer stores every queued vote exactly once', async () => {
    const adapters = createMemoryAdapters();
    const journal = new StallingJournal(adapters.store);
    journal.failAfterGate = true;
    const queue = new MemorySpillQueue();
    const node = await openNode(adapters, journal, queue);
    const outcomes = await Promise.all(voters.map((voter) => cast(node, voter, voter % 3)));
    expect(outcomes.every((outcome) => outcome.kind === 'accepted')).toBe(true);
    journal.open();
    await expect.poll(() => node.results(electionId)!.total, eventually).toBe(voters.length);
    await expect.poll(async () => (await queue.depth()).batches, eventually).toBe(0);
    expect(storedVoters(adapters)).toEqual(voters);
    expect(node.spillStats()!.rowsDrained).toBe(voters.length);
    const tallies = node.results(electionId)!.tallies;
    expect(tallies).toEqual([0, 1, 2].map((c) => voters.filter((v) => v % 3 === c).length));
  });

  it('the queue down too: votes are answered 503 by the deadline, and nothing is counted that is not stored', async () => {
    const adapters = createMemoryAdapters();
    const journal = new StallingJournal(adapters.store);
    journal.failAfterGate = true;
    const queue = new MemorySpillQueue();
    queue.failSends = true;
    const node = await openNode(adapters, journal, queue);
    const outcomes = await Promise.all(voters.slice(0, 20).map((voter) => cast(node, voter, 0)));
    expect(outcomes.every((outcome) => outcome.kind === 'unavailable')).toBe(true);
    journal.open();
    // The batches are settled through wasCommitted (marked abandoned): nothing stored, nothing counted.
    await expect.poll(() => node.stats(electionId)!.committer.batchesInDoubt, eventually).toBe(0);
    await expect.poll(() => node.stats(electionId)!.shards.reduce((n, s) => n + s.backlog, 0), eventually).toBe(0);
    expect(storedVoters(adapters)).toEqual([]);
    expect(node.results(electionId)!.total).toBe(0);
  });

  it('a node that takes the election over drains the queue before serving: no second vote slips in', async () => {
    const adapters = createMemoryAdapters();
    const stalled = new StallingJournal(adapters.store);
    const queue = new MemorySpillQueue();
    const first = await openNode(adapters, stalled, queue);
    const outcomes = await Promise.all(voters.map((voter) => cast(first, voter, voter % 3)));
    expect(outcomes.every((outcome) => outcome.kind === 'accepted')).toBe(true);
    // The first node is gone with its batches only in the queue (its commits never land).
    await first.close();
    nodes.splice(nodes.indexOf(first), 1);

    const second = await openNode(adapters, adapters.journal, queue, 2);
    expect((await queue.depth()).batches).toBe(0);
    expect(second.results(electionId)!.total).toBe(voters.length);
    const accepted = outcomes[5] as Extract<VoteOutcome, { kind: 'accepted' }>;
    expect(await cast(second, voters[5]!, (voters[5]! + 1) % 3)).toMatchObject({ kind: 'already_voted', voteId: accepted.voteId });
    expect(storedVoters(adapters)).toEqual(voters);
  });
});

describe('the drainer respects lease epochs', () => {
  function voteNodeOn(adapters: MemoryAdapters, journal: MemoryJournal, queue: MemorySpillQueue): VoteNode {
    const node = createVoteNode({
      journal, snapshots: adapters.snapshots, storedVotes: adapters.storedVotes, batchIds: adapters.batchIds, spill: { queue, store: journal }, config: spillConfig,
    });
    nodes.push(node);
    return node;
  }
  const shardOf = (voter: number) => voter % shardCount;
  const storedRowsOf = (adapters: MemoryAdapters, shards: readonly number[]) =>
    adapters.store.rowsLog.filter((row) => row.electionId === electionId && shards.includes(row.shard));

  it('a node that lost shards stores only the parts it still holds; the new owner stores the rest before serving; each vote stored and counted once', async () => {
    const adapters = createMemoryAdapters();
    const stalled = new StallingJournal(adapters.store);
    const queue = new MemorySpillQueue();
    const old = await openNode(adapters, stalled, queue);
    const outcomes = await Promise.all(voters.map((voter) => cast(old, voter, voter % 3)));
    expect(outcomes.every((outcome) => outcome.kind === 'accepted')).toBe(true);
    expect(old.results(electionId)!.queuedVotes).toBe(voters.length);

    // Shards 0 and 1 are taken over (epoch 2) while their votes sit in the queue; the old node
    // still thinks it holds them at epoch 1. Then its database answers again.
    adapters.store.setLeaseEpoch({ electionId, shard: 0 }, 2);
    adapters.store.setLeaseEpoch({ electionId, shard: 1 }, 2);
    stalled.open();
    // The old node drains its own shards' parts only: the lease refuses the others.
    await expect.poll(() => storedRowsOf(adapters, [2, 3]).length, eventually).toBe(voters.filter((v) => shardOf(v) >= 2).length);
    await expect.poll(() => old.spillStats()!.partsFenced, eventually).toBeGreaterThan(0);
    expect(storedRowsOf(adapters, [0, 1])).toEqual([]);
    // Its shards are told after the store: counted a moment later.
    await expect.poll(() => old.results(electionId)!.total, eventually).toBe(voters.filter((v) => shardOf(v) >= 2).length);
    // The batches stay queued for the new owner.
    expect((await queue.depth()).batches).toBeGreaterThan(0);

    // The new owner: its pre-serve drain stores the parts of shards 0 and 1, its recovery counts them.
    const owner = voteNodeOn(adapters, adapters.journal, queue);
    await owner.hostShards({ electionId, shardCount, candidateCount: 3, shards: [{ shard: 0, epoch: 2 }, { shard: 1, epoch: 2 }] });
    const newOwnersVoters = voters.filter((v) => shardOf(v) < 2);
    expect(owner.results(electionId)!.total).toBe(newOwnersVoters.length);
    expect(storedRowsOf(adapters, [0, 1]).length).toBe(newOwnersVoters.length);
    await expect.poll(async () => (await queue.depth()).batches, eventually).toBe(0);
    // A queued voter of a taken-over shard cannot vote again on the new owner.
    const index = voters.indexOf(newOwnersVoters[0]!);
    const accepted = outcomes[index] as Extract<VoteOutcome, { kind: 'accepted' }>;
    expect(await cast(owner, voters[index]!, (voters[index]! + 1) % 3)).toMatchObject({ kind: 'already_voted', voteId: accepted.voteId });
    // Every vote stored once with its voteId; counted once across the two nodes (each counts its shards).
    expect(storedVoters(adapters)).toEqual(voters);
    for (const [i, voter] of voters.entries()) {
      expect(adapters.store.readStoredVote(electionId, voter)?.voteId).toBe((outcomes[i] as Extract<VoteOutcome, { kind: 'accepted' }>).voteId);
    }
    const counted = [...old.shardTallies(electionId).filter((t) => t.shard >= 2), ...owner.shardTallies(electionId)]
      .reduce((sum, t) => sum + t.counts.reduce((a, b) => a + b, 0), 0);
    expect(counted).toBe(voters.length);
    expect(old.spillStats()!.drainConflicts + owner.spillStats()!.drainConflicts).toBe(0);
  });

  it('a part the new owner could not see before serving (another drainer held it) is stored later under its lease, counted once, and loses to a newer vote of its voter', async () => {
    const adapters = createMemoryAdapters();
    const stalled = new StallingJournal(adapters.store);
    const queue = new MemorySpillQueue();
    const old = await openNode(adapters, stalled, queue);
    const shardVoters = voters.filter((v) => shardOf(v) === 0).slice(0, 30);
    const outcomes = await Promise.all(shardVoters.map((voter) => cast(old, voter, 0)));
    expect(outcomes.every((outcome) => outcome.kind === 'accepted')).toBe(true);
    await old.close();
    nodes.splice(nodes.indexOf(old), 1);

    // Another drainer has the batches received (hidden) while the new owner opens the shard.
    const hiddenMs = 1_500;
    const hidden = await queue.receive(100, hiddenMs);
    expect(hidden.length).toBeGreaterThan(0);
    adapters.store.setLeaseEpoch({ electionId, shard: 0 }, 2);
    const owner = voteNodeOn(adapters, adapters.journal, queue);
    await owner.hostShards({ electionId, shardCount, candidateCount: 3, shards: [{ shard: 0, epoch: 2 }] });
    expect(owner.results(electionId)!.total).toBe(0);
    // In that window one queued voter votes again, for another candidate: the owner cannot know.
    const again = await cast(owner, shardVoters[0]!, 1);
    expect(again.kind).toBe('accepted');

    // The hidden batches come back; the owner stores them under its lease and counts them,
    // except the voter whose newer vote is stored: the key keeps one, reported as a conflict.
    await expect.poll(async () => (await queue.depth()).batches, eventually).toBe(0);
    await expect.poll(() => owner.results(electionId)!.total, eventually).toBe(shardVoters.length);
    expect(owner.spillStats()!.drainConflicts).toBe(1);
    const stored = storedRowsOf(adapters, [0]);
    expect(stored.length).toBe(shardVoters.length);
    expect(new Set(stored.map((row) => row.voterNumber)).size).toBe(stored.length);
    // The tally is what the store holds, per candidate: nothing counted twice.
    const byCandidate = [0, 1, 2].map((c) => stored.filter((row) => row.candidateIndex === c).length);
    expect(owner.results(electionId)!.tallies).toEqual(byCandidate);
  });
});
