import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { acquireShardLeases } from '../cluster/leases.ts';
import { createPgBatchIdSource } from './batchIds.ts';
import { createPool } from './db.ts';
import { countVotesByCandidate, createPgStoredVoteReader, readVoteStatus } from './storedVotes.ts';
import { createTestDatabase, type TestDatabase } from './testDatabase.ts';
import { createPgJournal } from './voteJournal.ts';

let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase();
});

afterAll(async () => {
  await db?.drop();
});

describe('stored votes', () => {
  it('reads a stored vote, its status and per-candidate counts', async () => {
    const nodeId = 'stored-votes-test';
    const electionId = randomUUID();
    const [epoch] = await acquireShardLeases(db.pool, { electionId, shardCount: 1, nodeId, leaseTtlMs: 60_000 });
    const journal = createPgJournal({ pool: db.pool, nodeId });
    const batchIds = await createPgBatchIdSource({ pool: db.pool });
    const voteId = randomUUID();
    const batchId = await batchIds.next();
    const rows = [
      { electionId, shard: 0, epoch: epoch!, voterNumber: 5, candidateIndex: 2, voteId, acceptedAtMs: 1_700_000_000_999 },
      { electionId, shard: 0, epoch: epoch!, voterNumber: 6, candidateIndex: 2, voteId: randomUUID(), acceptedAtMs: 1 },
      { electionId, shard: 0, epoch: epoch!, voterNumber: 9, candidateIndex: 0, voteId: randomUUID(), acceptedAtMs: 2 },
    ];
    expect((await journal.commit({ batchId, rows })).kind).toBe('committed');

    const reader = createPgStoredVoteReader(db.pool);
    expect(await reader.readStoredVote(electionId, 5)).toEqual({ electionId, voterNumber: 5, candidateIndex: 2, voteId, acceptedAtMs: 1_700_000_000_999 });
    expect(await reader.readStoredVote(electionId, 7)).toBeNull();
    expect(await reader.readStoredVote(randomUUID(), 5)).toBeNull();
    expect(await reader.readStoredVote('not-a-uuid', 5)).toBeNull();
    expect(await reader.readStoredVote(electionId, -1)).toBeNull();

    expect(await readVoteStatus(db.pool, electionId, 5)).toMatchObject({ voted: true, batchId, vote: { voteId } });
    expect(await readVoteStatus(db.pool, electionId, 8)).toEqual({ voted: false });

    expect(await countVotesByCandidate(db.pool, electionId, 4)).toEqual([1, 0, 2, 0]);
    expect(await countVotesByCandidate(db.pool, electionId)).toEqual([1, 0, 2]);
    expect(await countVotesByCandidate(db.pool, randomUUID(), 2)).toEqual([0, 0]);
    await expect(countVotesByCandidate(db.pool, electionId, 65)).rejects.toThrow(/candidateCount/);
  });

  it('rejects on I/O failure', async () => {
    const pool = createPool(db.url, 1, 'stored-votes-dead');
    await pool.end();
    await expect(createPgStoredVoteReader(pool).readStoredVote(randomUUID(), 1)).rejects.toThrow();
  });
});
