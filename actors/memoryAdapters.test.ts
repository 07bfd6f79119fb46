import { describe, expect, it } from 'vitest';
import { journalContract } from './journalContract.ts';
import { MemoryBatchIdSource, MemorySpillQueue, MemoryVoteStore, createMemoryAdapters } from './memoryAdapters.ts';
import { spillQueueContract } from './spillQueueContract.ts';

journalContract('memory', async () => {
  const adapters = createMemoryAdapters({ batchIdBlockSize: 7 });
  return {
    journal: adapters.journal,
    leases: { setEpoch: (key, epoch) => adapters.store.setLeaseEpoch(key, epoch) },
    storedVotes: adapters.storedVotes,
    snapshots: {
      // As the Postgres subject: the writer takes a lease only where none exists (snapshot
      // writes are fenced; the contract's snapshot case sets no lease).
      writeSnapshot: (snapshot) => {
        if (adapters.store.leaseEpoch(snapshot) === undefined) adapters.store.setLeaseEpoch(snapshot, snapshot.epoch);
        return adapters.snapshots.writeSnapshot(snapshot);
      },
      readLatestSnapshot: (key) => adapters.snapshots.readLatestSnapshot(key),
      readVotesAfter: (key, afterBatchId, onRows) => adapters.snapshots.readVotesAfter(key, afterBatchId, onRows),
    },
    batchIds: adapters.batchIds,
    cleanup: () => {},
  };
});

spillQueueContract('memory', async () => ({ queue: new MemorySpillQueue(), cleanup: async () => {} }));

describe('memory adapters, beyond the contract', () => {
  it('a batch id source created later starts above every id reserved before', () => {
    const store = new MemoryVoteStore();
    const first = new MemoryBatchIdSource(store, 10);
    const a = first.nextSync();
    const second = new MemoryBatchIdSource(store, 10);
    const b = second.nextSync();
    expect(b).toBeGreaterThan(a);
    // The first source still uses its block: its ids stay below the second block.
    expect(first.nextSync()).toBeLessThan(b);
    expect(second.lastAssigned()).toBe(b);
  });

  it('the reserved ceiling is at least every id of every source, and below every id of a block reserved after it', async () => {
    const store = new MemoryVoteStore();
    const first = new MemoryBatchIdSource(store, 10);
    expect(await first.reservedCeiling()).toBe(0);
    const a = first.nextSync();
    const second = new MemoryBatchIdSource(store, 10);
    const b = second.nextSync();
    const ceiling = await second.reservedCeiling();
    expect(ceiling).toBeGreaterThanOrEqual(Math.max(a, b));
    // The rest of both blocks stays at or below it; a block reserved later is above it.
    for (let i = 0; i < 9; i++) expect(first.nextSync()).toBeLessThanOrEqual(ceiling);
    expect(first.nextSync()).toBeGreaterThan(ceiling);
  });

  it('keeps the snapshot with the highest watermark even if an older write lands last', () => {
    const store = new MemoryVoteStore();
    const base = { electionId: 'e', shard: 0, epoch: 1, tallies: [0], voterSlots: 0, bitmap: new Uint8Array(0), takenAtMs: 0 };
    store.setLeaseEpoch(base, 1);
    store.writeSnapshot({ ...base, watermarkBatchId: 20 });
    store.writeSnapshot({ ...base, watermarkBatchId: 10 });
    expect(store.readLatestSnapshot({ electionId: 'e', shard: 0 })?.watermarkBatchId).toBe(20);
  });

  it('refuses to commit the same batch id twice (ids are unique by construction)', () => {
    const store = new MemoryVoteStore();
    store.commitBatch({ batchId: 1, rows: [] });
    expect(() => store.commitBatch({ batchId: 1, rows: [] })).toThrow();
  });
});
