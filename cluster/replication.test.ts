import { describe, expect, it } from 'vitest';
import type { CommittedShardBatch } from '../actors/voteNode.ts';
import type { ClusterView, ShardOwnerRecord } from './ports.ts';
import type { ReplicateBatches } from './protocol.ts';
import { ReplicaSet, ReplicationStreamer } from './replication.ts';

const electionId = '00000000-0000-4000-8000-000000000001';

function view(rows: Pick<ShardOwnerRecord, 'shard' | 'ownerNodeId' | 'replicaNodeIds'>[]): ClusterView {
  return {
    version: 1, electionsVersion: 1, coordinatorNodeId: 'n1', readAtMs: 0, operations: [], nodes: [], elections: [{ electionId, shardCount: 4 }],
    shards: rows.map((r) => ({ electionId, mapVersion: 1, epoch: 1, leaseNodeId: r.ownerNodeId, leaseExpiresAtMs: 1, pinned: false, ...r })),
  };
}

const committed = (shard: number, epoch: number, rows: number): CommittedShardBatch => ({
  key: { electionId, shard }, epoch, batchId: 100, watermarkBatchId: 99,
  voterNumbers: Array.from({ length: rows }, (_, i) => i * 4 + shard), candidateIndexes: Array.from({ length: rows }, () => 0),
});

const nextTurn = () => new Promise((resolve) => setImmediate(resolve));

describe('ReplicationStreamer', () => {
  it('numbers each shard\'s batches per epoch and sends one event per replica with every shard of the turn', async () => {
    const sent: [string, ReplicateBatches][] = [];
    const streamer = new ReplicationStreamer({ nodeId: 'n1', send: (to, event) => sent.push([to, event]), queuedRowsMaxPerReplica: 100 });
    streamer.applyView(view([
      { shard: 0, ownerNodeId: 'n1', replicaNodeIds: ['n2'] },
      { shard: 1, ownerNodeId: 'n1', replicaNodeIds: ['n2', 'n3'] },
      { shard: 2, ownerNodeId: 'n2', replicaNodeIds: ['n1'] },
    ]));
    streamer.onBatchCommitted(committed(0, 5, 2));
    streamer.onBatchCommitted(committed(1, 5, 1));
    streamer.onBatchCommitted(committed(0, 5, 1));
    expect(sent).toEqual([]); // one event-loop turn collects them
    await nextTurn();
    expect(sent.map(([to, e]) => [to, e.batches.map((b) => [b.shard, b.seq])])).toEqual([
      ['n2', [[0, 1], [1, 1], [0, 2]]],
      ['n3', [[1, 1]]],
    ]);
    // A new epoch starts the numbering again.
    streamer.onBatchCommitted(committed(0, 6, 1));
    await nextTurn();
    expect(sent[2]![1].batches[0]).toMatchObject({ shard: 0, epoch: 6, seq: 1, watermarkBatchId: 99 });
  });

  it('past the bound of a replica\'s queue a batch is dropped and its seq used: the replica sees the gap', async () => {
    const sent: [string, ReplicateBatches][] = [];
    const streamer = new ReplicationStreamer({ nodeId: 'n1', send: (to, event) => sent.push([to, event]), queuedRowsMaxPerReplica: 3 });
    streamer.applyView(view([{ shard: 0, ownerNodeId: 'n1', replicaNodeIds: ['n2'] }]));
    streamer.onBatchCommitted(committed(0, 1, 2));
    streamer.onBatchCommitted(committed(0, 1, 2)); // would make 4 rows: dropped
    await nextTurn();
    streamer.onBatchCommitted(committed(0, 1, 1));
    await nextTurn();
    expect(sent.map(([, e]) => e.batches.map((b) => b.seq))).toEqual([[1], [3]]);
    expect(streamer.batchesDropped).toBe(1);
    expect(streamer.batchesSent).toBe(2);
  });

  it('a shard without replicas, or not owned here, sends nothing', async () => {
    const sent: unknown[] = [];
    const streamer = new ReplicationStreamer({ nodeId: 'n1', send: (...args) => sent.push(args), queuedRowsMaxPerReplica: 10 });
    streamer.applyView(view([{ shard: 0, ownerNodeId: 'n1', replicaNodeIds: [] }, { shard: 1, ownerNodeId: 'n2', replicaNodeIds: ['n1'] }]));
    streamer.onBatchCommitted(committed(0, 1, 1));
    streamer.onBatchCommitted(committed(1, 1, 1));
    await nextTurn();
    expect(sent).toEqual([]);
  });
});

describe('ReplicaSet', () => {
  /** Stored votes of the election: shard, batch id, voter, candidate. */
  const stored: { shard: number; batchId: number; voterNumber: number; candidateIndex: number }[] = [];
  const snapshots = {
    readLatestSnapshot: async () => null,
    readVotesAfter: async (key: { shard: number }, after: number, onRows: (rows: { voterNumber: number; candidateIndex: number }[]) => void) => {
      onRows(stored.filter((r) => r.shard === key.shard && r.batchId > after));
    },
  };
  const silent = { info() {}, warn() {} };
  const replicaSet = () => new ReplicaSet({
    nodeId: 'n2', snapshots, dimensions: () => ({ shardCount: 4, candidateCount: 2 }), log: silent, bufferRowsMax: 100, catchUpsInFlightMax: 1, catchUpRetryMs: 10,
  });
  const settle = () => new Promise((resolve) => setTimeout(resolve, 20));

  it('follows the shards the map names it replica of, catches up at once, applies the stream, and hands its state to a promotion of epoch + 1 only', async () => {
    stored.length = 0;
    stored.push({ shard: 1, batchId: 10, voterNumber: 1, candidateIndex: 0 }, { shard: 1, batchId: 11, voterNumber: 5, candidateIndex: 1 });
    const set = replicaSet();
    set.applyView(view([{ shard: 1, ownerNodeId: 'n1', replicaNodeIds: ['n2'] }, { shard: 2, ownerNodeId: 'n1', replicaNodeIds: ['n3'] }]));
    await settle();
    expect(set.report()).toEqual([expect.objectContaining({ shard: 1, epoch: 1, phase: 'live', votes: 2, counts: [1, 1] })]);
    set.receive({ t: 'replicate', batches: [{ electionId, shard: 1, epoch: 1, seq: 1, batchId: 12, watermarkBatchId: 12, voterNumbers: [9], candidateIndexes: [1] }] });
    expect(set.report()[0]).toMatchObject({ votes: 3, counts: [1, 2], batchesBehind: 0 });
    expect(set.takeForPromotion(electionId, 2, 2)).toEqual({ kind: 'cold', reason: 'not_a_replica', replicaEpoch: null });
    expect(set.takeForPromotion(electionId, 1, 3)).toMatchObject({ kind: 'cold', reason: 'other_epoch_between', replicaEpoch: 1 });
    // Taken (cold) means gone: a second look finds nothing.
    expect(set.takeForPromotion(electionId, 1, 2)).toMatchObject({ kind: 'cold', reason: 'not_a_replica' });
  });

  it('a promotion to epoch + 1 restores the replica\'s votes and watermark', async () => {
    stored.length = 0;
    stored.push({ shard: 1, batchId: 10, voterNumber: 1, candidateIndex: 0 });
    const set = replicaSet();
    set.applyView(view([{ shard: 1, ownerNodeId: 'n1', replicaNodeIds: ['n2'] }]));
    await settle();
    set.receive({ t: 'replicate', batches: [{ electionId, shard: 1, epoch: 1, seq: 1, batchId: 12, watermarkBatchId: 15, voterNumbers: [9], candidateIndexes: [1] }] });
    // The map makes n2 the owner: the state is kept until the shard host takes it.
    set.applyView(view([{ shard: 1, ownerNodeId: 'n2', replicaNodeIds: ['n3'] }]));
    const promotion = set.takeForPromotion(electionId, 1, 2);
    expect(promotion).toMatchObject({ kind: 'warm', caughtUp: true, replicaEpoch: 1, base: { electionId, shard: 1, epoch: 1, watermarkBatchId: 15, tallies: [1, 1] } });
  });

  it('forgets a shard the map no longer names it replica (or owner) of; ignores batches of shards it does not follow', async () => {
    stored.length = 0;
    const set = replicaSet();
    set.applyView(view([{ shard: 1, ownerNodeId: 'n1', replicaNodeIds: ['n2'] }]));
    await settle();
    set.applyView(view([{ shard: 1, ownerNodeId: 'n1', replicaNodeIds: ['n3'] }]));
    expect(set.report()).toEqual([]);
    set.receive({ t: 'replicate', batches: [{ electionId, shard: 1, epoch: 1, seq: 1, batchId: 12, watermarkBatchId: 15, voterNumbers: [9], candidateIndexes: [1] }] });
    expect(set.report()).toEqual([]);
  });
});

describe('ReplicaSet priming', () => {
  it('an owner\'s tallies under a newer epoch make an idle shard\'s replica catch up', async () => {
    const reads: number[] = [];
    const set = new ReplicaSet({
      nodeId: 'n2',
      snapshots: { readLatestSnapshot: async () => null, readVotesAfter: async (_key, after) => { reads.push(after); } },
      dimensions: () => ({ shardCount: 4, candidateCount: 2 }), log: { info() {}, warn() {} }, bufferRowsMax: 10, catchUpsInFlightMax: 1, catchUpRetryMs: 10,
    });
    // The map names n2 replica, but the owner does not hold the lease yet: nothing to follow.
    set.applyView({ ...view([{ shard: 1, ownerNodeId: 'n1', replicaNodeIds: ['n2'] }]), readAtMs: 10 });
    expect(set.report()).toEqual([expect.objectContaining({ shard: 1, epoch: 0, phase: 'catching_up' })]);
    set.ownerEpochSeen(electionId, 1, 3);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(set.report()).toEqual([expect.objectContaining({ shard: 1, epoch: 3, phase: 'live' })]);
    expect(reads).toEqual([0]);
    set.ownerEpochSeen(electionId, 1, 2); // an older owner's late publication: nothing
    expect(reads).toEqual([0]);
  });
});
