import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { JournalRow } from '../actors/ports.ts';
import { acquireShardLeases } from '../cluster/leases.ts';
import { createPgBatchIdSource, type PgBatchIdSource } from './batchIds.ts';
import { createPool } from './db.ts';
import { countVotesByCandidate, readVoteStatus } from './storedVotes.ts';
import { createTestDatabase, type TestDatabase } from './testDatabase.ts';
import { createPgJournal, type PgJournal } from './voteJournal.ts';

const nodeId = 'journal-test-node';
const shardCount = 4;
let db: TestDatabase;
let batchIds: PgBatchIdSource;
let journal: PgJournal;
let electionId: string;
let epochs: number[];

/**
 * Lock and statement timeouts far above what any commit here needs even on a busy machine: the
 * tests of the timeouts themselves set short ones on a journal of their own.
 */
const patient = { lockTimeoutMs: 120_000, statementTimeoutMs: 120_000 };

beforeAll(async () => {
  db = await createTestDatabase();
  batchIds = await createPgBatchIdSource({ pool: db.pool });
  journal = createPgJournal({ pool: db.pool, nodeId, ...patient });
});

afterAll(async () => {
  await db?.drop();
});

beforeEach(async () => {
  electionId = randomUUID();
  epochs = await acquireShardLeases(db.pool, { electionId, shardCount, nodeId, leaseTtlMs: 60_000 });
});

function row(voterNumber: number, candidateIndex = voterNumber % 3, epoch?: number): JournalRow {
  const shard = voterNumber % shardCount;
  return { electionId, shard, epoch: epoch ?? epochs[shard]!, voterNumber, candidateIndex, voteId: randomUUID(), acceptedAtMs: 1_700_000_000_000 + voterNumber };
}

async function storedCount(election = electionId): Promise<number> {
  return (await db.pool.query<{ n: number }>('SELECT count(*) AS n FROM votes WHERE election_id = $1', [election])).rows[0]!.n;
}

async function batchRecord(batchId: number): Promise<{ row_count: number; conflict_count: number; node_id: string } | undefined> {
  return (await db.pool.query('SELECT row_count, conflict_count, node_id FROM vote_batches WHERE batch_id = $1', [batchId])).rows[0];
}

describe('PgJournal', () => {
  it('commits a batch of rows of several shards, and records the batch', async () => {
    const rows = Array.from({ length: 500 }, (_, i) => row(i));
    const batchId = await batchIds.next();
    expect(await journal.commit({ batchId, rows })).toEqual({ kind: 'committed', conflicts: [] });
    expect(await storedCount()).toBe(500);
    expect(await batchRecord(batchId)).toEqual({ row_count: 500, conflict_count: 0, node_id: nodeId });
    expect(await journal.wasCommitted(batchId)).toBe(true);
    expect(await journal.wasCommitted(await batchIds.next())).toBe(false);
    const status = await readVoteStatus(db.pool, electionId, 7);
    expect(status).toEqual({ voted: true, batchId, vote: { electionId, voterNumber: 7, candidateIndex: 1, voteId: rows[7]!.voteId, acceptedAtMs: rows[7]!.acceptedAtMs } });
    expect(await countVotesByCandidate(db.pool, electionId, 4)).toEqual([167, 167, 166, 0]);
  });

  it('fences rows admitted before the epoch moved on: nothing stored; a batch under the new epoch commits', async () => {
    const admitted = [row(1), row(2), row(3)];
    // Another acquisition (a new owner, or a restarted process of this node) bumps every epoch.
    const newEpochs = await acquireShardLeases(db.pool, { electionId, shardCount, nodeId, leaseTtlMs: 60_000 });
    expect(newEpochs).toEqual(epochs.map((e) => e + 1));
    const batchId = await batchIds.next();
    const result = await journal.commit({ batchId, rows: admitted });
    expect(result).toEqual({
      kind: 'fenced',
      staleShards: [1, 2, 3].map((shard) => ({ electionId, shard })),
    });
    expect(await storedCount()).toBe(0);
    expect(await journal.wasCommitted(batchId)).toBe(false);
    epochs = newEpochs;
    expect(await journal.commit({ batchId: await batchIds.next(), rows: [row(1), row(2), row(3)] })).toEqual({ kind: 'committed', conflicts: [] });
    expect(await storedCount()).toBe(3);
  });

  it('fences when the lease has the right epoch but another owner', async () => {
    await db.pool.query("UPDATE shard_leases SET owner_node = 'someone-else' WHERE election_id = $1 AND shard = 2", [electionId]);
    const result = await journal.commit({ batchId: await batchIds.next(), rows: [row(1), row(2)] });
    expect(result).toEqual({ kind: 'fenced', staleShards: [{ electionId, shard: 2 }] });
    expect(await storedCount()).toBe(0);
  });

  it('fences a shard whose rows carry two different epochs', async () => {
    const result = await journal.commit({ batchId: await batchIds.next(), rows: [row(4), row(8, 0, epochs[0]! + 1)] });
    expect(result).toEqual({ kind: 'fenced', staleShards: [{ electionId, shard: 0 }] });
  });

  it('a commit waiting on a takeover in progress sees the new epoch once it lands, and is fenced', async () => {
    const takeover = new pg.Client({ connectionString: db.url });
    await takeover.connect();
    try {
      await takeover.query('BEGIN');
      await takeover.query('SELECT 1 FROM shard_leases WHERE election_id = $1 AND shard = 1 FOR UPDATE', [electionId]);
      const pending = journal.commit({ batchId: await batchIds.next(), rows: [row(1)] });
      await waitForLockWaiter(db.name);
      await takeover.query("UPDATE shard_leases SET epoch = epoch + 1, owner_node = 'new-owner' WHERE election_id = $1 AND shard = 1", [electionId]);
      await takeover.query('COMMIT');
      expect(await pending).toEqual({ kind: 'fenced', staleShards: [{ electionId, shard: 1 }] });
      expect(await storedCount()).toBe(0);
    } finally {
      await takeover.end();
    }
  });

  it('reports a voter already stored as a conflict and does not store it again', async () => {
    const first = row(10, 1);
    const firstBatch = await batchIds.next();
    expect(await journal.commit({ batchId: firstBatch, rows: [first] })).toEqual({ kind: 'committed', conflicts: [] });
    const batchId = await batchIds.next();
    const result = await journal.commit({ batchId, rows: [row(10, 2), row(11), row(12)] });
    expect(result).toEqual({ kind: 'committed', conflicts: [{ electionId, voterNumber: 10 }] });
    expect(await storedCount()).toBe(3);
    expect(await batchRecord(batchId)).toMatchObject({ row_count: 2, conflict_count: 1 });
    const status = await readVoteStatus(db.pool, electionId, 10);
    expect(status.voted && status.vote.voteId).toBe(first.voteId);
    expect(status.voted && status.batchId).toBe(firstBatch);
  });

  it('refuses a batch that names one voter twice, storing nothing', async () => {
    const batchId = await batchIds.next();
    const result = await journal.commit({ batchId, rows: [row(20), row(21), row(20, 2)] });
    expect(result.kind).toBe('failed');
    expect(await storedCount()).toBe(0);
    expect(await journal.wasCommitted(batchId)).toBe(false);
  });

  it('a batch id committed once cannot commit again (the retry of an unknown outcome)', async () => {
    const batchId = await batchIds.next();
    expect((await journal.commit({ batchId, rows: [row(30)] })).kind).toBe('committed');
    const again = await journal.commit({ batchId, rows: [row(31)] });
    expect(again.kind).toBe('failed');
    expect(await journal.wasCommitted(batchId)).toBe(true);
    expect(await storedCount()).toBe(1);
  });

  it('concurrent commits from two journals (two pools) store every voter exactly once', async () => {
    const otherPool = createPool(db.url, 4, 'journal-test-other');
    try {
      const other = createPgJournal({ pool: otherPool, nodeId, ...patient });
      const voters = 4000;
      // Both journals get every voter, in different batches and orders: each voter is stored by
      // exactly one of them and is a conflict for the other.
      const batchesA: JournalRow[][] = [];
      const batchesB: JournalRow[][] = [];
      for (let start = 0; start < voters; start += 250) {
        batchesA.push(Array.from({ length: 250 }, (_, i) => row(start + i, 0)));
        batchesB.push(Array.from({ length: 250 }, (_, i) => row(voters - 1 - (start + i), 1)));
      }
      const runAll = async (j: PgJournal, batches: JournalRow[][]) => {
        const results = [];
        for (const rows of batches) results.push(await j.commit({ batchId: await batchIds.next(), rows }));
        return results;
      };
      const [resultsA, resultsB] = await Promise.all([runAll(journal, batchesA), runAll(other, batchesB), runAll(journal, [])]);
      let conflicts = 0;
      for (const result of [...resultsA!, ...resultsB!]) {
        expect(result.kind).toBe('committed');
        if (result.kind === 'committed') conflicts += result.conflicts.length;
      }
      expect(conflicts).toBe(voters);
      expect(await storedCount()).toBe(voters);
      const tallies = await countVotesByCandidate(db.pool, electionId, 2);
      expect(tallies[0]! + tallies[1]!).toBe(voters);
    } finally {
      await otherPool.end();
    }
  });

  it('two commits naming the same voters in opposite orders both commit (no deadlock): one stores, one conflicts', async () => {
    const otherPool = createPool(db.url, 2, 'journal-test-opposite');
    try {
      const other = createPgJournal({ pool: otherPool, nodeId, ...patient });
      for (let round = 0; round < 5; round++) {
        const voters = Array.from({ length: 2000 }, (_, i) => round * 10_000 + i);
        const [a, b] = await Promise.all([
          journal.commit({ batchId: await batchIds.next(), rows: voters.map((v) => row(v, 0)) }),
          other.commit({ batchId: await batchIds.next(), rows: [...voters].reverse().map((v) => row(v, 1)) }),
        ]);
        // Messages, not kinds, so a failure says why.
        expect([a, b].map((r) => (r.kind === 'failed' ? r.message : r.kind))).toEqual(['committed', 'committed']);
        const conflicts = [a, b].map((r) => (r.kind === 'committed' ? r.conflicts.length : -1));
        expect(conflicts[0]! + conflicts[1]!).toBe(2000);
      }
      expect(await storedCount()).toBe(10_000);
    } finally {
      await otherPool.end();
    }
  });

  it('returns failed and stores nothing when its backend is killed mid-transaction; the next commit works', async () => {
    const blocker = new pg.Client({ connectionString: db.url });
    await blocker.connect();
    try {
      // Hold the lease row so the commit stops inside its transaction, at the fence.
      await blocker.query('BEGIN');
      await blocker.query('SELECT 1 FROM shard_leases WHERE election_id = $1 AND shard = 1 FOR UPDATE', [electionId]);
      const batchId = await batchIds.next();
      const pending = journal.commit({ batchId, rows: [row(41), row(42)] });
      const pid = await waitForLockWaiter(db.name);
      await blocker.query('SELECT pg_terminate_backend($1)', [pid]);
      await blocker.query('ROLLBACK');
      const result = await pending;
      expect(result.kind).toBe('failed');
      expect(await journal.wasCommitted(batchId)).toBe(false);
      expect(await storedCount()).toBe(0);
    } finally {
      await blocker.end();
    }
    expect((await journal.commit({ batchId: await batchIds.next(), rows: [row(41), row(42)] })).kind).toBe('committed');
    expect(await storedCount()).toBe(2);
  });

  it('returns failed when its prepared statement vanished, and prepares it again for the next commit', async () => {
    // One connection, so the DEALLOCATE hits the journal's own session (prepared statements are per session).
    const singlePool = createPool(db.url, 1, 'journal-test-single');
    try {
      const single = createPgJournal({ pool: singlePool, nodeId, ...patient });
      expect((await single.commit({ batchId: await batchIds.next(), rows: [row(50)] })).kind).toBe('committed');
      await singlePool.query('DEALLOCATE livevote_journal_commit');
      const batchId = await batchIds.next();
      const result = await single.commit({ batchId, rows: [row(51)] });
      expect(result.kind).toBe('failed');
      expect(result.kind === 'failed' && result.message).toMatch(/livevote_journal_commit/);
      expect(await journal.wasCommitted(batchId)).toBe(false);
      expect((await single.commit({ batchId: await batchIds.next(), rows: [row(52)] })).kind).toBe('committed');
      expect(await storedCount()).toBe(2);
    } finally {
      await singlePool.end();
    }
  });

  it('times out a commit stuck behind a lock, storing nothing', async () => {
    const blocker = new pg.Client({ connectionString: db.url });
    await blocker.connect();
    try {
      await blocker.query('BEGIN');
      await blocker.query('SELECT 1 FROM shard_leases WHERE election_id = $1 AND shard = 1 FOR UPDATE', [electionId]);
      const impatient = createPgJournal({ pool: db.pool, nodeId, lockTimeoutMs: 200 });
      const batchId = await batchIds.next();
      const result = await impatient.commit({ batchId, rows: [row(1), row(2)] });
      expect(result.kind === 'failed' && result.message).toMatch(/lock timeout/);
      expect(await journal.wasCommitted(batchId)).toBe(false);
      expect(await storedCount()).toBe(0);
    } finally {
      await blocker.query('ROLLBACK');
      await blocker.end();
    }
  });

  it('times out a commit that runs past its statement timeout, storing nothing', async () => {
    const blocker = new pg.Client({ connectionString: db.url });
    await blocker.connect();
    try {
      await blocker.query('BEGIN');
      await blocker.query('SELECT 1 FROM shard_leases WHERE election_id = $1 AND shard = 1 FOR UPDATE', [electionId]);
      // The lock wait would last a minute: the statement timeout is what ends it.
      const impatient = createPgJournal({ pool: db.pool, nodeId, statementTimeoutMs: 200, lockTimeoutMs: 60_000 });
      const batchId = await batchIds.next();
      const result = await impatient.commit({ batchId, rows: [row(1), row(2)] });
      expect(result.kind === 'failed' && result.message).toMatch(/statement timeout/);
      expect(await journal.wasCommitted(batchId)).toBe(false);
      expect(await storedCount()).toBe(0);
    } finally {
      await blocker.query('ROLLBACK');
      await blocker.end();
    }
  });

  it('leaves no timeout behind on the pooled connection', async () => {
    const singlePool = createPool(db.url, 1, 'journal-test-settings');
    try {
      const single = createPgJournal({ pool: singlePool, nodeId, statementTimeoutMs: 1234, lockTimeoutMs: 567 });
      expect((await single.commit({ batchId: await batchIds.next(), rows: [row(60)] })).kind).toBe('committed');
      const settings = await singlePool.query<{ st: string; lt: string }>('SELECT current_setting(\'statement_timeout\') AS st, current_setting(\'lock_timeout\') AS lt');
      expect(settings.rows[0]!.st).not.toBe('1234ms');
      expect(settings.rows[0]!.lt).not.toBe('567ms');
    } finally {
      await singlePool.end();
    }
  });

  it('refuses invalid rows before any I/O, as failed', async () => {
    const cases: JournalRow[] = [
      { ...row(60), voteId: 'not-a-uuid' },
      { ...row(60), voteId: `${randomUUID()}\n` },
      { ...row(60), electionId: 'x\ty' },
      { ...row(60), candidateIndex: 64 },
      { ...row(60), voterNumber: -1 },
      { ...row(60), voterNumber: 1.5 },
      { ...row(60), epoch: 0 },
      { ...row(60), shard: 1024 },
    ];
    for (const bad of cases) {
      const result = await journal.commit({ batchId: await batchIds.next(), rows: [row(61), bad] });
      expect(result.kind).toBe('failed');
    }
    expect(await storedCount()).toBe(0);
    const tooBig = createPgJournal({ pool: db.pool, nodeId, batchRowsMax: 2 });
    expect((await tooBig.commit({ batchId: await batchIds.next(), rows: [row(1), row(2), row(3)] })).kind).toBe('failed');
  });

  it('resolves failed, never rejects, when the database cannot be reached', async () => {
    const deadPool = createPool(db.url, 1, 'journal-test-dead');
    await deadPool.end();
    const dead = createPgJournal({ pool: deadPool, nodeId });
    const result = await dead.commit({ batchId: await batchIds.next(), rows: [row(70)] });
    expect(result.kind).toBe('failed');
    await expect(dead.wasCommitted(1)).rejects.toThrow();
  });

  it('stores acceptedAtMs to the exact millisecond', async () => {
    const values = [0, 1, 999, 1_700_000_000_001, 1_700_000_000_999, 4_102_444_800_000 - 1];
    for (let i = 0; i < 200; i++) values.push(Math.floor(Math.random() * 4_102_444_800_000));
    const rows = values.map((acceptedAtMs, i) => ({ ...row(100 + i), acceptedAtMs }));
    expect((await journal.commit({ batchId: await batchIds.next(), rows })).kind).toBe('committed');
    const stored = await db.pool.query<{ voter_number: number; ms: number }>(
      'SELECT voter_number, (extract(epoch FROM accepted_at) * 1000)::bigint AS ms FROM votes WHERE election_id = $1 ORDER BY voter_number',
      [electionId],
    );
    expect(stored.rows.map((r) => r.ms)).toEqual(values);
  });

  it('fences batches spanning several elections, each by its own leases', async () => {
    const first = electionId;
    const firstRow = row(1);
    electionId = randomUUID();
    epochs = await acquireShardLeases(db.pool, { electionId, shardCount, nodeId, leaseTtlMs: 60_000 });
    const second = electionId;
    const secondRows = [row(1), row(2)];
    expect(await journal.commit({ batchId: await batchIds.next(), rows: [firstRow, ...secondRows] })).toEqual({ kind: 'committed', conflicts: [] });
    await acquireShardLeases(db.pool, { electionId: first, shardCount, nodeId, leaseTtlMs: 60_000 });
    const result = await journal.commit({ batchId: await batchIds.next(), rows: [{ ...firstRow, voterNumber: 5 }, row(3)] });
    expect(result).toEqual({ kind: 'fenced', staleShards: [{ electionId: first, shard: 1 }] });
    expect(await storedCount(first)).toBe(1);
    expect(await storedCount(second)).toBe(2);
  });

  it('reports conflicts of a batch spanning two elections by row, in the caller\'s spelling of the election id', async () => {
    const first = electionId;
    electionId = randomUUID();
    epochs = await acquireShardLeases(db.pool, { electionId, shardCount, nodeId, leaseTtlMs: 60_000 });
    const second = electionId;
    const shout = second.toUpperCase();
    const firstEpochs = await acquireShardLeases(db.pool, { electionId: first, shardCount, nodeId, leaseTtlMs: 60_000 });
    const ofFirst = (voterNumber: number): JournalRow => ({ ...row(voterNumber), electionId: first, epoch: firstEpochs[voterNumber % shardCount]! });
    const ofSecond = (voterNumber: number): JournalRow => ({ ...row(voterNumber), electionId: shout });
    const storedFirst = ofFirst(10);
    const storedSecond = ofSecond(12);
    expect((await journal.commit({ batchId: await batchIds.next(), rows: [storedFirst, storedSecond] })).kind).toBe('committed');
    const batchId = await batchIds.next();
    // Rows 1 and 4 were stored by the batch before (another vote id now); rows 2 and 3 are new.
    const again = [{ ...storedFirst, voteId: randomUUID() }, ofSecond(10), ofFirst(11), { ...storedSecond, voteId: randomUUID() }];
    const result = await journal.commit({ batchId, rows: again });
    expect(result).toEqual({ kind: 'committed', conflicts: [{ electionId: first, voterNumber: 10 }, { electionId: shout, voterNumber: 12 }] });
    expect(await batchRecord(batchId)).toMatchObject({ row_count: 2, conflict_count: 2 });
    expect(await storedCount(first)).toBe(2);
    expect(await storedCount(second)).toBe(2);
  });

  it('commits an empty batch (a batch id with no rows is still recorded)', async () => {
    const batchId = await batchIds.next();
    expect(await journal.commit({ batchId, rows: [] })).toEqual({ kind: 'committed', conflicts: [] });
    expect(await journal.wasCommitted(batchId)).toBe(true);
  });
});

/** Waits until a backend of `database` waits on a lock (a generous minute at most); returns its pid. */
async function waitForLockWaiter(database: string): Promise<number> {
  const deadlineMs = Date.now() + 60_000;
  while (Date.now() < deadlineMs) {
    const found = await db.pool.query<{ pid: number }>(
      "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
      [database],
    );
    if (found.rows[0]) return found.rows[0].pid;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error('no backend waited on a lock within 60 s');
}
