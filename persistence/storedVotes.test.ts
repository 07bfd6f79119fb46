import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { acquireShardLeases } from '../cluster/leases.ts';
import { createVoters } from '../infra/testing/voters.ts';
import { createPgBatchIdSource } from './batchIds.ts';
import { createPool } from './db.ts';
import { insertElection, transitionElection } from './elections.ts';
import { eraseAccount } from './privacy.ts';
import {
  countVotesByCandidate, createPgStoredVoteReader, readUserVoteInElection, readUserVotes, readVoteStatus, type UserVote,
} from './storedVotes.ts';
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

describe("a user's votes (the status route's reads)", () => {
  it('pages through every election a user voted in, newest first, ties broken by election id, and stops after erasure', async () => {
    const nodeId = 'user-votes-test';
    const [alice, bob, carol] = await createVoters(db.pool, 3, 'unused-secret-unused-secret-unused-secret');
    // Seven elections; alice votes in all, two of them at the same millisecond (the tie-break).
    const elections = await Promise.all(Array.from({ length: 7 }, async (_, i) => {
      const election = await insertElection(db.pool, {
        electionId: randomUUID(), title: `Show ${i}`, shardCount: 1, captchaPolicy: 'off', createdBy: bob!.userId,
        candidates: [{ candidateId: randomUUID(), candidateIndex: 0, name: 'A' }, { candidateId: randomUUID(), candidateIndex: 1, name: 'B' }],
      });
      if (election === undefined) throw new Error('the creator exists: the election must be created');
      return election;
    }));
    // Closed by the end of the show (an open one would defer the erasure below).
    for (const election of elections) {
      await transitionElection(db.pool, election.electionId, 'draft', 'open');
      await transitionElection(db.pool, election.electionId, 'open', 'closed');
    }
    const journal = createPgJournal({ pool: db.pool, nodeId });
    const batchIds = await createPgBatchIdSource({ pool: db.pool });
    const acceptedAtMsOf = [1_000, 5_000, 3_000, 5_000, 2_000, 9_000, 4_000];
    const expected: UserVote[] = [];
    for (const [i, election] of elections.entries()) {
      const [epoch] = await acquireShardLeases(db.pool, { electionId: election.electionId, shardCount: 1, nodeId, leaseTtlMs: 60_000 });
      const candidateIndex = i % 2;
      const vote = { electionId: election.electionId, shard: 0, epoch: epoch!, voterNumber: alice!.voterNumber, candidateIndex, voteId: randomUUID(), acceptedAtMs: 1_700_000_000_000 + acceptedAtMsOf[i]! };
      const rows = [vote];
      // bob votes only in the first election: never in alice's list.
      if (i === 0) rows.push({ ...vote, voterNumber: bob!.voterNumber, voteId: randomUUID() });
      expect((await journal.commit({ batchId: await batchIds.next(), rows })).kind).toBe('committed');
      expected.push({ electionId: election.electionId, candidateId: election.candidates[candidateIndex]!.candidateId, voteId: vote.voteId, acceptedAtMs: vote.acceptedAtMs });
    }
    // The model: plain sort, newest first, then election id descending.
    expected.sort((a, b) => b.acceptedAtMs - a.acceptedAtMs || (a.electionId < b.electionId ? 1 : -1));

    const all = await readUserVotes(db.pool, alice!.userId, { limit: 100 });
    expect(all).toEqual({ kind: 'found', value: { votes: expected, next: null } });

    const seen: UserVote[] = [];
    let after: { acceptedAtMs: number; electionId: string } | undefined;
    for (let page = 0; page < 10; page++) {
      const lookup = await readUserVotes(db.pool, alice!.userId, { limit: 2, after });
      if (lookup.kind !== 'found') throw new Error(`unexpected ${lookup.kind}`);
      expect(lookup.value.votes.length).toBeLessThanOrEqual(2);
      seen.push(...lookup.value.votes);
      if (!lookup.value.next) break;
      after = lookup.value.next;
    }
    expect(seen).toEqual(expected);
    const exact = await readUserVotes(db.pool, alice!.userId, { limit: 7 });
    expect(exact.kind === 'found' && exact.value.next).toBeNull();

    expect(await readUserVoteInElection(db.pool, alice!.userId, elections[3]!.electionId)).toEqual({
      kind: 'found', value: expected.find((v) => v.electionId === elections[3]!.electionId),
    });
    expect(await readUserVoteInElection(db.pool, bob!.userId, elections[3]!.electionId)).toEqual({ kind: 'found', value: null });
    expect(await readUserVotes(db.pool, carol!.userId, { limit: 5 })).toEqual({ kind: 'found', value: { votes: [], next: null } });
    expect(await readUserVotes(db.pool, randomUUID(), { limit: 5 })).toEqual({ kind: 'unknown_user' });
    expect(await readUserVotes(db.pool, 'not-a-uuid', { limit: 5 })).toEqual({ kind: 'unknown_user' });
    expect(await readUserVoteInElection(db.pool, randomUUID(), elections[0]!.electionId)).toEqual({ kind: 'unknown_user' });
    await expect(readUserVotes(db.pool, alice!.userId, { limit: 0 })).rejects.toThrow(/limit/);
    await expect(readUserVotes(db.pool, alice!.userId, { limit: 101 })).rejects.toThrow(/limit/);
    await expect(readUserVotes(db.pool, alice!.userId, { limit: 5, after: { acceptedAtMs: -1, electionId: randomUUID() } })).rejects.toThrow(/position/);

    // Erased: the votes stay (counted), but nothing answers them for that user id any more.
    const storedBefore = await countVotesByCandidate(db.pool, elections[0]!.electionId, 2);
    const at = new Date();
    expect((await eraseAccount(db.pool, { userId: alice!.userId, requestedBy: 'admin', at, sessionExpiresAt: at })).kind).toBe('erased');
    expect(await readUserVotes(db.pool, alice!.userId, { limit: 100 })).toEqual({ kind: 'erased' });
    expect(await readUserVoteInElection(db.pool, alice!.userId, elections[0]!.electionId)).toEqual({ kind: 'erased' });
    expect(await countVotesByCandidate(db.pool, elections[0]!.electionId, 2)).toEqual(storedBefore);
  });
});
