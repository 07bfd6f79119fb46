// The journal contract's subject on a real Postgres (actors/journalContract.ts), for the tests that
// run the contract against a Postgres journal: on the main thread (journalContract.pg.test.ts)
// and on its worker thread (journalWorker.pg.test.ts).
import type { BatchIdSource, Journal, ShardKey, ShardSnapshot, SpilledBatchStore } from '../actors/ports.ts';
import type { JournalContractSubject } from '../actors/journalContract.ts';
import type { Pool } from './db.ts';
import { createPgSnapshotStore } from './snapshots.ts';
import { createPgStoredVoteReader } from './storedVotes.ts';

/** What cluster/ does when this node acquires a lease, with the epoch chosen by the test. */
export async function setLeaseEpoch(pool: Pool, nodeId: string, key: ShardKey, epoch: number): Promise<void> {
  await pool.query(
    `INSERT INTO shard_leases (election_id, shard, epoch, owner_node, expires_at)
     VALUES ($1, $2, $3, $4, now() + interval '1 minute')
     ON CONFLICT (election_id, shard) DO UPDATE SET epoch = excluded.epoch, owner_node = excluded.owner_node`,
    [key.electionId, key.shard, epoch, nodeId],
  );
}

export function pgJournalContractSubject(
  pool: Pool, nodeId: string, journal: Journal & SpilledBatchStore, batchIds: BatchIdSource,
): JournalContractSubject {
  const snapshots = createPgSnapshotStore({ pool, nodeId });
  return {
    journal,
    leases: { setEpoch: (key, epoch) => setLeaseEpoch(pool, nodeId, key, epoch) },
    storedVotes: createPgStoredVoteReader(pool),
    snapshots: {
      // Postgres fences snapshot writes on the shard's lease like vote rows (a stale owner's
      // snapshot could hide the new owner's votes from recovery). The contract's snapshot case
      // sets no lease, so the writer takes one only where none exists: it never overrides an
      // epoch a test set. Fencing itself is tested in snapshots.test.ts.
      async writeSnapshot(snapshot: ShardSnapshot) {
        await pool.query(
          `INSERT INTO shard_leases (election_id, shard, epoch, owner_node, expires_at)
           VALUES ($1, $2, $3, $4, now() + interval '1 minute') ON CONFLICT DO NOTHING`,
          [snapshot.electionId, snapshot.shard, snapshot.epoch, nodeId],
        );
        await snapshots.writeSnapshot(snapshot);
      },
      readLatestSnapshot: (key) => snapshots.readLatestSnapshot(key),
      readVotesAfter: (key, afterBatchId, onRows) => snapshots.readVotesAfter(key, afterBatchId, onRows),
    },
    batchIds,
    cleanup: () => {},
  };
}
