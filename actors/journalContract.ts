// The contract every implementation of the persistence ports must pass: the in-memory adapters
// (actors/memoryAdapters.test.ts) and the Postgres ones (persistence/), with the SAME tests.
//
// Usage, in a *.test.ts file:
//   journalContract('postgres', async () => ({ journal, leases, storedVotes, snapshots, batchIds, cleanup }));
//
// Tests use fresh UUIDs for election ids and vote ids and take batch ids from `batchIds`, so
// they can share one database with each other and with other tests.

import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { BatchIdSource, Journal, JournalRow, ShardKey, ShardSnapshot, SnapshotStore, SpilledBatchStore, StoredVoteReader } from './ports.ts';

export interface JournalContractSubject {
  readonly journal: Journal & SpilledBatchStore;
  /** Sets the lease epoch of a shard (what cluster/ does when a node acquires a lease). */
  readonly leases: { setEpoch(key: ShardKey, epoch: number): Promise<void> | void };
  readonly storedVotes: StoredVoteReader;
  readonly snapshots: SnapshotStore;
  readonly batchIds: BatchIdSource;
  cleanup(): Promise<void> | void;
}

export function journalContract(name: string, makeJournal: () => Promise<JournalContractSubject>): void {
  describe(`journal contract: ${name}`, () => {
    let subject: JournalContractSubject;
    let electionId: string;
    let acceptedAtMs: number;

    beforeEach(async () => {
      subject = await makeJournal();
      electionId = randomUUID();
      acceptedAtMs = 1_700_000_000_000;
    });

    afterEach(async () => {
      await subject.cleanup();
    });

    function row(shard: number, voterNumber: number, candidateIndex: number, epoch = 1, election = electionId): JournalRow {
      return { electionId: election, shard, epoch, voterNumber, candidateIndex, voteId: randomUUID(), acceptedAtMs: acceptedAtMs++ };
    }

    async function readAll(key: ShardKey, afterBatchId: number): Promise<{ voterNumber: number; candidateIndex: number }[]> {
      const rows: { voterNumber: number; candidateIndex: number }[] = [];
      await subject.snapshots.readVotesAfter(key, afterBatchId, (chunk) => rows.push(...chunk));
      return rows.sort((a, b) => a.voterNumber - b.voterNumber);
    }

    it('commits a batch: rows readable, batch id recorded', async () => {
      await subject.leases.setEpoch({ electionId, shard: 0 }, 1);
      await subject.leases.setEpoch({ electionId, shard: 1 }, 1);
      const rows = [row(0, 10, 2), row(1, 11, 0)];
      const batchId = await subject.batchIds.next();
      const result = await subject.journal.commit({ batchId, rows });
      expect(result).toEqual({ kind: 'committed', conflicts: [] });
      expect(await subject.journal.wasCommitted(batchId)).toBe(true);
      for (const r of rows) {
        expect(await subject.storedVotes.readStoredVote(electionId, r.voterNumber)).toEqual({
          electionId,
          voterNumber: r.voterNumber,
          candidateIndex: r.candidateIndex,
          voteId: r.voteId,
          acceptedAtMs: r.acceptedAtMs,
        });
      }
    });

    it('reads null for a voter with no vote and false for a batch never committed', async () => {
      expect(await subject.storedVotes.readStoredVote(electionId, 12345)).toBeNull();
      const batchId = await subject.batchIds.next();
      expect(await subject.journal.wasCommitted(batchId)).toBe(false);
    });

    it('keeps the first vote of a voter: a second row is a conflict and changes nothing', async () => {
      await subject.leases.setEpoch({ electionId, shard: 0 }, 1);
      const first = row(0, 20, 1);
      expect(await subject.journal.commit({ batchId: await subject.batchIds.next(), rows: [first] })).toEqual({ kind: 'committed', conflicts: [] });
      const again = row(0, 20, 3);
      const other = row(0, 22, 0);
      const batchId = await subject.batchIds.next();
      const result = await subject.journal.commit({ batchId, rows: [again, other] });
      expect(result).toEqual({ kind: 'committed', conflicts: [{ electionId, voterNumber: 20 }] });
      expect(await subject.journal.wasCommitted(batchId)).toBe(true);
      expect((await subject.storedVotes.readStoredVote(electionId, 20))?.voteId).toBe(first.voteId);
      expect((await subject.storedVotes.readStoredVote(electionId, 20))?.candidateIndex).toBe(1);
      expect((await subject.storedVotes.readStoredVote(electionId, 22))?.voteId).toBe(other.voteId);
    });

    it('the same voter in another election is another vote', async () => {
      const otherElection = randomUUID();
      await subject.leases.setEpoch({ electionId, shard: 0 }, 1);
      await subject.leases.setEpoch({ electionId: otherElection, shard: 0 }, 1);
      const result = await subject.journal.commit({
        batchId: await subject.batchIds.next(),
        rows: [row(0, 30, 0), row(0, 30, 1, 1, otherElection)],
      });
      expect(result).toEqual({ kind: 'committed', conflicts: [] });
      expect((await subject.storedVotes.readStoredVote(otherElection, 30))?.candidateIndex).toBe(1);
    });

    it('fences a stale epoch: the whole transaction stores nothing', async () => {
      await subject.leases.setEpoch({ electionId, shard: 0 }, 2);
      await subject.leases.setEpoch({ electionId, shard: 1 }, 5);
      const batchId = await subject.batchIds.next();
      const result = await subject.journal.commit({ batchId, rows: [row(0, 40, 0, 2), row(1, 41, 0, 4)] });
      expect(result.kind).toBe('fenced');
      if (result.kind !== 'fenced') return;
      expect(result.staleShards).toEqual([{ electionId, shard: 1 }]);
      expect(await subject.journal.wasCommitted(batchId)).toBe(false);
      expect(await subject.storedVotes.readStoredVote(electionId, 40)).toBeNull();
      expect(await subject.storedVotes.readStoredVote(electionId, 41)).toBeNull();
    });

    it('fences a shard that has no lease at all', async () => {
      const result = await subject.journal.commit({ batchId: await subject.batchIds.next(), rows: [row(3, 43, 0, 1)] });
      expect(result).toEqual({ kind: 'fenced', staleShards: [{ electionId, shard: 3 }] });
    });

    it('after a lease moves to a higher epoch, old-epoch rows are fenced and new-epoch rows commit', async () => {
      await subject.leases.setEpoch({ electionId, shard: 0 }, 1);
      await subject.leases.setEpoch({ electionId, shard: 0 }, 2);
      const fenced = await subject.journal.commit({ batchId: await subject.batchIds.next(), rows: [row(0, 50, 0, 1)] });
      expect(fenced.kind).toBe('fenced');
      const committed = await subject.journal.commit({ batchId: await subject.batchIds.next(), rows: [row(0, 50, 1, 2)] });
      expect(committed).toEqual({ kind: 'committed', conflicts: [] });
      expect((await subject.storedVotes.readStoredVote(electionId, 50))?.candidateIndex).toBe(1);
    });

    it('of two concurrent batches for the same voter, exactly one stores a row', async () => {
      await subject.leases.setEpoch({ electionId, shard: 0 }, 1);
      const a = row(0, 60, 0);
      const b = row(0, 60, 1);
      const [batchA, batchB] = [await subject.batchIds.next(), await subject.batchIds.next()];
      const [resultA, resultB] = await Promise.all([
        subject.journal.commit({ batchId: batchA, rows: [a] }),
        subject.journal.commit({ batchId: batchB, rows: [b] }),
      ]);
      const conflicts = [resultA, resultB].map((r) => (r.kind === 'committed' ? r.conflicts.length : -1)).sort();
      expect(conflicts).toEqual([0, 1]);
      const stored = await subject.storedVotes.readStoredVote(electionId, 60);
      expect(stored?.voteId).toBe(resultA.kind === 'committed' && resultA.conflicts.length === 0 ? a.voteId : b.voteId);
    });

    it('reads back the stored votes of one shard after a batch id, and nothing else', async () => {
      const key0 = { electionId, shard: 0 };
      await subject.leases.setEpoch(key0, 1);
      await subject.leases.setEpoch({ electionId, shard: 1 }, 1);
      const batch1 = await subject.batchIds.next();
      await subject.journal.commit({ batchId: batch1, rows: [row(0, 70, 0), row(1, 71, 1)] });
      const batch2 = await subject.batchIds.next();
      await subject.journal.commit({ batchId: batch2, rows: [row(0, 72, 2), row(0, 74, 1)] });
      expect(await readAll(key0, 0)).toEqual([
        { voterNumber: 70, candidateIndex: 0 },
        { voterNumber: 72, candidateIndex: 2 },
        { voterNumber: 74, candidateIndex: 1 },
      ]);
      expect(await readAll(key0, batch1)).toEqual([
        { voterNumber: 72, candidateIndex: 2 },
        { voterNumber: 74, candidateIndex: 1 },
      ]);
      expect(await readAll(key0, batch2)).toEqual([]);
      expect(await readAll({ electionId, shard: 1 }, 0)).toEqual([{ voterNumber: 71, candidateIndex: 1 }]);
    });

    it('stores snapshots and reads back the latest one', async () => {
      const key = { electionId, shard: 2 };
      expect(await subject.snapshots.readLatestSnapshot(key)).toBeNull();
      const first: ShardSnapshot = {
        electionId,
        shard: 2,
        epoch: 1,
        watermarkBatchId: 10,
        tallies: [1, 0],
        voterSlots: 9,
        bitmap: new Uint8Array([0b0000_0100, 0]),
        takenAtMs: 1000,
      };
      await subject.snapshots.writeSnapshot(first);
      const second: ShardSnapshot = { ...first, watermarkBatchId: 20, tallies: [1, 1], bitmap: new Uint8Array([0b0000_0100, 1]), takenAtMs: 2000 };
      await subject.snapshots.writeSnapshot(second);
      const latest = await subject.snapshots.readLatestSnapshot(key);
      expect(latest).not.toBeNull();
      expect({ ...latest!, bitmap: Array.from(latest!.bitmap), tallies: Array.from(latest!.tallies) }).toEqual({
        ...second,
        bitmap: [0b0000_0100, 1],
        tallies: [1, 1],
      });
      expect(await subject.snapshots.readLatestSnapshot({ electionId, shard: 3 })).toBeNull();
    });

    it('fences snapshots: a stale epoch is refused, a newer epoch replaces a higher watermark', async () => {
      const key = { electionId, shard: 4 };
      const base: ShardSnapshot = { electionId, shard: 4, epoch: 1, watermarkBatchId: 30, tallies: [1], voterSlots: 1, bitmap: new Uint8Array([1]), takenAtMs: 1000 };
      await subject.leases.setEpoch(key, 2);
      await expect(subject.snapshots.writeSnapshot(base)).rejects.toThrow(/fenced/);
      expect(await subject.snapshots.readLatestSnapshot(key)).toBeNull();
      await subject.snapshots.writeSnapshot({ ...base, epoch: 2, watermarkBatchId: 30 });
      await subject.leases.setEpoch(key, 3);
      // The new owner's batch ids may be lower than the old owner's: its snapshot still wins.
      await subject.snapshots.writeSnapshot({ ...base, epoch: 3, watermarkBatchId: 12, tallies: [0], bitmap: new Uint8Array([0]) });
      expect(await subject.snapshots.readLatestSnapshot(key)).toMatchObject({ epoch: 3, watermarkBatchId: 12, tallies: [0] });
    });

    it('hands out increasing batch ids and reports the last one', async () => {
      let previous = subject.batchIds.lastAssigned();
      for (let i = 0; i < 50; i++) {
        const id = await subject.batchIds.next();
        expect(id).toBeGreaterThan(previous);
        expect(subject.batchIds.lastAssigned()).toBe(id);
        previous = id;
      }
    });

    it('a batch wasCommitted found missing is marked abandoned: a late commit of that id stores nothing', async () => {
      await subject.leases.setEpoch({ electionId, shard: 0 }, 1);
      const batchId = await subject.batchIds.next();
      expect(await subject.journal.wasCommitted(batchId)).toBe(false);
      expect((await subject.journal.commit({ batchId, rows: [row(0, 70, 0)] })).kind).toBe('failed');
      expect(await subject.storedVotes.readStoredVote(electionId, 70)).toBeNull();
      expect(await subject.journal.wasCommitted(batchId)).toBe(false);
    });

    it('stores a spilled batch shard by shard, each part once, only by the holder of its lease at the epoch it holds', async () => {
      // Accepted under epoch 7; since then this node took shard 0 over (epoch 8) and another node shard 1 (epoch 9).
      await subject.leases.setEpoch({ electionId, shard: 0 }, 8);
      await subject.leases.setEpoch({ electionId, shard: 1 }, 9);
      const rows = [row(0, 80, 1, 7), row(1, 81, 0, 7), row(1, 83, 2, 7)];
      const batchId = await subject.batchIds.next();
      const spilled = { batchId, rows, spilledAtMs: acceptedAtMs };
      // Holding neither: nothing stored, both parts left, and the batch can no longer be abandoned.
      expect(await subject.journal.storeSpilled(spilled, [])).toEqual({ kind: 'stored', storedRows: 0, conflicts: [], storedShards: [], fencedShards: [], shardsLeft: 2 });
      await expect(subject.journal.wasCommitted(batchId)).rejects.toThrow();
      // Shard 0 held at its lease epoch: stored; shard 1 held at a stale epoch: fenced, left.
      const held = [{ electionId, shard: 0, epoch: 8 }, { electionId, shard: 1, epoch: 8 }];
      expect(await subject.journal.storeSpilled(spilled, held)).toEqual({
        kind: 'stored', storedRows: 1, conflicts: [], storedShards: [{ electionId, shard: 0 }], fencedShards: [{ electionId, shard: 1 }], shardsLeft: 1,
      });
      expect(await subject.storedVotes.readStoredVote(electionId, 81)).toBeNull();
      // Drained again: the stored part is not stored twice.
      expect(await subject.journal.storeSpilled(spilled, held)).toMatchObject({ kind: 'stored', storedRows: 0, storedShards: [], shardsLeft: 1 });
      // This node takes shard 1 over (epoch 10) and stores its part; then the batch is done.
      await subject.leases.setEpoch({ electionId, shard: 1 }, 10);
      expect(await subject.journal.storeSpilled(spilled, [{ electionId, shard: 1, epoch: 10 }])).toEqual({
        kind: 'stored', storedRows: 2, conflicts: [], storedShards: [{ electionId, shard: 1 }], fencedShards: [], shardsLeft: 0,
      });
      expect(await subject.journal.storeSpilled(spilled, [{ electionId, shard: 1, epoch: 10 }])).toEqual({ kind: 'already_stored' });
      expect(await subject.journal.wasCommitted(batchId)).toBe(true);
      expect((await subject.storedVotes.readStoredVote(electionId, 80))?.voteId).toBe(rows[0]!.voteId);
      expect(await readAll({ electionId, shard: 1 }, 0)).toEqual([{ voterNumber: 81, candidateIndex: 0 }, { voterNumber: 83, candidateIndex: 2 }]);
    });

    it('a spilled batch that was committed after all is not stored again; one marked abandoned is skipped', async () => {
      await subject.leases.setEpoch({ electionId, shard: 0 }, 1);
      const rows = [row(0, 90, 2)];
      const committed = await subject.batchIds.next();
      expect((await subject.journal.commit({ batchId: committed, rows })).kind).toBe('committed');
      const held = [{ electionId, shard: 0, epoch: 1 }];
      expect(await subject.journal.storeSpilled({ batchId: committed, rows, spilledAtMs: acceptedAtMs }, held)).toEqual({ kind: 'already_stored' });
      const abandoned = await subject.batchIds.next();
      expect(await subject.journal.wasCommitted(abandoned)).toBe(false);
      expect(await subject.journal.storeSpilled({ batchId: abandoned, rows: [row(0, 92, 0)], spilledAtMs: acceptedAtMs }, held)).toEqual({ kind: 'abandoned' });
      expect(await subject.storedVotes.readStoredVote(electionId, 92)).toBeNull();
    });

    it('a spilled row whose voter is stored with another vote is a conflict, and the rest is stored', async () => {
      await subject.leases.setEpoch({ electionId, shard: 0 }, 1);
      const first = row(0, 100, 0);
      expect((await subject.journal.commit({ batchId: await subject.batchIds.next(), rows: [first] })).kind).toBe('committed');
      const result = await subject.journal.storeSpilled(
        { batchId: await subject.batchIds.next(), rows: [row(0, 100, 1), row(0, 102, 1)], spilledAtMs: acceptedAtMs }, [{ electionId, shard: 0, epoch: 1 }]);
      expect(result).toEqual({ kind: 'stored', storedRows: 1, conflicts: [{ electionId, voterNumber: 100 }], storedShards: [{ electionId, shard: 0 }], fencedShards: [], shardsLeft: 0 });
      expect((await subject.storedVotes.readStoredVote(electionId, 100))?.voteId).toBe(first.voteId);
    });
  });
}
