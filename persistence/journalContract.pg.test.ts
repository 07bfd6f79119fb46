// The journal contract (actors/journalContract.ts), run against the Postgres adapters.
import { afterAll, beforeAll } from 'vitest';
import type { ShardKey, ShardSnapshot } from '../actors/ports.ts';
import { journalContract } from '../actors/journalContract.ts';
import { createPgBatchIdSource } from './batchIds.ts';
import type { Pool } from './db.ts';
import { createPgSnapshotStore } from './snapshots.ts';
import { createPgStoredVoteReader } from './storedVotes.ts';
import { createTestDatabase, type TestDatabase } from './testDatabase.ts';
import { createPgJournal } from './voteJournal.ts';

const nodeId = 'contract-node';
let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
});

afterAll(async () => {
  await db?.drop();
});

/** What cluster/ does when this node acquires a lease, with the epoch chosen by the test. */
async function setEpoch(pool: Pool, key: ShardKey, epoch: number): Promise<void> {
  await pool.query(
    `INSERT INTO shard_leases (election_id, shard, epoch, owner_node, expires_at)
     VALUES ($1, $2, $3, $4, now() + interval '1 minute')
     ON CONFLICT (election_id, shard) DO UPDATE SET epoch = excluded.epoch, owner_node = excluded.owner_node`,
    [key.electionId, key.shard, epoch, nodeId],
  );
}

journalContract('postgres', async () => {
  const snapshots = createPgSnapshotStore({ pool: db.pool, nodeId });
  return {
    journal: createPgJournal({ pool: db.pool, nodeId }),
    leases: { setEpoch: (key, epoch) => setEpoch(db.pool, key, epoch) },
    storedVotes: createPgStoredVoteReader(db.pool),
    snapshots: {
      // Postgres fences snapshot writes on the shard's lease like vote rows (a stale owner's
      // snapshot could hide the new owner's votes from recovery). The contract's snapshot case
      // sets no lease, so the writer takes one only where none exists: it never overrides an
      // epoch a test set. Fencing itself is tested in snapshots.test.ts.
      async writeSnapshot(snapshot: ShardSnapshot) {
        await db.pool.query(
          `INSERT INTO shard_leases (election_id, shard, epoch, owner_node, expires_at)
           VALUES ($1, $2, $3, $4, now() + interval '1 minute') ON CONFLICT DO NOTHING`,
          [snapshot.electionId, snapshot.shard, snapshot.epoch, nodeId],
        );
        await snapshots.writeSnapshot(snapshot);
      },
      readLatestSnapshot: (key) => snapshots.readLatestSnapshot(key),
      readVotesAfter: (key, afterBatchId, onRows) => snapshots.readVotesAfter(key, afterBatchId, onRows),
    },
    batchIds: await createPgBatchIdSource({ pool: db.pool }),
    cleanup: () => {},
  };
});
