// The audit chain at the journal level: the digests a commit keeps in its transaction, the records
// a seal appends for them, the verifier's independent TypeScript recomputation (votes awaiting
// their seal included), tampering of every kind, the append-only triggers, commits and seals racing
// (two nodes' sealers), a spilled batch drained part by part, and the backfill of votes stored
// before migration 005.
import { randomUUID } from 'node:crypto';
import { copyFile, mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { JournalRow } from '../actors/ports.ts';
import { acquireShardLeases } from '../cluster/leases.ts';
import {
  auditGenesisHash, auditPartsCte, auditRecordHash, auditRowsDigest, auditSealedDigest, formatAuditReport, verifyAudit, type AuditBreak, type ShardAudit,
} from './audit.ts';
import { createAuditSealer, sealAuditChains } from './auditSealer.ts';
import { createPgBatchIdSource, type PgBatchIdSource } from './batchIds.ts';
import { createPool } from './db.ts';
import { migrate, migrationsDir } from './migrate.ts';
import { createTestDatabase, type TestDatabase } from './testDatabase.ts';
import { createPgJournal, type PgJournal } from './voteJournal.ts';

const nodeId = 'audit-test-node';
const shardCount = 4;
let db: TestDatabase;
let batchIds: PgBatchIdSource;
let journal: PgJournal;
let electionId: string;
let epochs: number[];

beforeAll(async () => {
  db = await createTestDatabase();
  batchIds = await createPgBatchIdSource({ pool: db.pool });
  journal = createPgJournal({ pool: db.pool, nodeId });
});
afterAll(async () => {
  await db?.drop();
});
beforeEach(async () => {
  electionId = randomUUID();
  epochs = await acquireShardLeases(db.pool, { electionId, shardCount, nodeId, leaseTtlMs: 60_000 });
});

function row(voterNumber: number, candidateIndex = voterNumber % 3): JournalRow {
  const shard = voterNumber % shardCount;
  return { electionId, shard, epoch: epochs[shard]!, voterNumber, candidateIndex, voteId: randomUUID(), acceptedAtMs: 1_700_000_000_000 + voterNumber * 7 };
}

async function commit(rows: JournalRow[]): Promise<number> {
  const batchId = await batchIds.next();
  const result = await journal.commit({ batchId, rows });
  expect(result.kind === 'failed' ? result.message : result.kind).toBe('committed');
  return batchId;
}

interface RecordRow {
  shard: number; seq: number; batch_id: number; batch_ids: number[]; epoch: number; row_count: number;
  rows_digest: Buffer; prev_hash: Buffer; hash: Buffer; recorded_at_us: number;
}

async function records(election = electionId): Promise<RecordRow[]> {
  const rows = (await db.pool.query<RecordRow & { batch_ids: string[] }>(
    `SELECT shard, seq, batch_id, batch_ids, epoch, row_count, rows_digest, prev_hash, hash, (extract(epoch FROM recorded_at) * 1000000)::bigint AS recorded_at_us
       FROM audit_records WHERE election_id = $1 ORDER BY shard, seq`, [election])).rows;
  return rows.map((r) => ({ ...r, batch_ids: r.batch_ids.map(Number) }));
}

/** Seals everything pending (one transaction; the tests' batches are far below its bound). */
async function seal(): Promise<void> {
  const result = await sealAuditChains(db.pool);
  expect(result.skipped).toBe(false);
  expect(result.more).toBe(false);
}

async function pendingBatches(): Promise<number> {
  return Number((await db.pool.query('SELECT count(*) FROM vote_batches WHERE audit_shards IS NOT NULL')).rows[0].count);
}

function recordFields(record: RecordRow) {
  return {
    electionId, shard: record.shard, seq: record.seq, batchId: record.batch_id, batchIds: record.batch_ids, epoch: record.epoch,
    rowCount: record.row_count, rowsDigest: record.rows_digest, recordedAtUs: record.recorded_at_us,
  };
}

async function verifyOne(election = electionId) {
  const report = await verifyAudit(db.pool, { electionId: election, fetchRowsMax: 7 });
  expect(report.elections).toHaveLength(1);
  return report;
}

function shardOf(report: Awaited<ReturnType<typeof verifyOne>>, shard: number): ShardAudit {
  const found = report.elections[0]!.shards.find((s) => s.shard === shard);
  if (!found) throw new Error(`no shard ${shard} in the report`);
  return found;
}

/** As a superuser who turned the append-only triggers off: what an attacker with the keys can do. */
async function asTamperer(sql: string, values: unknown[] = []): Promise<void> {
  const client = await db.pool.connect();
  try {
    await client.query('BEGIN');
    await client.query('ALTER TABLE audit_records DISABLE TRIGGER USER');
    await client.query('ALTER TABLE audit_chain_heads DISABLE TRIGGER USER');
    await client.query(sql, values);
    await client.query('ALTER TABLE audit_records ENABLE TRIGGER USER');
    await client.query('ALTER TABLE audit_chain_heads ENABLE TRIGGER USER');
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK');
    throw error;
  } finally {
    client.release();
  }
}

describe('audit records: kept by the commit, appended by the seal', () => {
  it('a seal appends one record per shard for every batch pending, chained from the genesis hash, as the TypeScript formats say', async () => {
    const first = Array.from({ length: 40 }, (_, i) => row(i));
    const second = Array.from({ length: 10 }, (_, i) => row(100 + i * 4)); // shard 0 only
    const b1 = await commit(first);
    const b2 = await commit(second);
    // Committed, not sealed: no record yet, and verify checks the votes against what the commits kept.
    expect(await records()).toEqual([]);
    const before = await verifyOne();
    expect(before.intact).toBe(true);
    expect(before.elections[0]!.awaitingSealRows).toBe(50);
    expect(formatAuditReport(before)).toMatch(/50 stored votes \(50 of them in batches not sealed yet\)/);

    await seal();
    expect(await pendingBatches()).toBe(0);
    const stored = await records();
    expect(stored.map((r) => [r.shard, r.seq, r.batch_ids, r.batch_id])).toEqual([[0, 1, [b1, b2], b2], [1, 1, [b1], b1], [2, 1, [b1], b1], [3, 1, [b1], b1]]);
    const byShard = (rows: JournalRow[], shard: number) => rows.filter((r) => r.shard === shard);
    for (const record of stored) {
      const batches = record.batch_ids.map((b) => byShard(b === b1 ? first : second, record.shard));
      expect(record.row_count).toBe(batches.reduce((n, rows) => n + rows.length, 0));
      expect(record.rows_digest.equals(auditSealedDigest(batches.map((rows) => auditRowsDigest(rows))))).toBe(true);
      expect(record.prev_hash.equals(auditGenesisHash)).toBe(true);
      expect(record.epoch).toBe(epochs[record.shard]);
      expect(record.hash.equals(auditRecordHash(record.prev_hash, recordFields(record)))).toBe(true);
    }

    // The next seal links each chain to its head.
    const third = [row(300), row(301)];
    const b3 = await commit(third);
    await seal();
    const shard0 = (await records()).filter((r) => r.shard === 0);
    expect(shard0.map((r) => [r.seq, r.batch_ids])).toEqual([[1, [b1, b2]], [2, [b3]]]);
    expect(shard0[1]!.prev_hash.equals(shard0[0]!.hash)).toBe(true);
    expect(shard0[1]!.rows_digest.equals(auditSealedDigest([auditRowsDigest([third[0]!])]))).toBe(true);
    const heads = await db.pool.query<{ shard: number; seq: number; hash: Buffer }>('SELECT shard, seq, hash FROM audit_chain_heads WHERE election_id = $1 ORDER BY shard', [electionId]);
    expect(heads.rows.map((h) => h.seq)).toEqual([2, 2, 1, 1]);
    expect(heads.rows[0]!.hash.equals(shard0[1]!.hash)).toBe(true);
    const report = await verifyOne();
    expect(report.intact).toBe(true);
    expect(report.elections[0]!.votes).toBe(52);
    expect(report.elections[0]!.awaitingSealRows).toBe(0);
    expect(report.elections[0]!.records).toBe(6);
    expect(formatAuditReport(report)).toMatch(/audit verify: INTACT\n$/);
  });

  it('the plain commit keeps the parts the journal computed, equal to the SQL digests of the rows it stored', async () => {
    // Two elections, one spelled in upper case, voters out of order, every shard of both.
    const other = randomUUID();
    const otherEpochs = await acquireShardLeases(db.pool, { electionId: other, shardCount, nodeId, leaseTtlMs: 60_000 });
    const rows = [
      ...[9, 2, 13, 4, 0, 7, 30, 1].map((v) => row(v)),
      ...[5, 3, 8, 2].map((v) => ({ ...row(v), electionId: other.toUpperCase(), epoch: otherEpochs[v % shardCount]! })),
    ];
    const batchId = await commit(rows);
    const kept = (await db.pool.query(
      `SELECT p.election_id::text AS election_id, p.shard, p.epoch, p.row_count, p.digest
         FROM vote_batches b, unnest(b.audit_election_ids, b.audit_shards, b.audit_epochs, b.audit_row_counts, b.audit_digests)
              WITH ORDINALITY AS p(election_id, shard, epoch, row_count, digest, ord)
        WHERE b.batch_id = $1 ORDER BY p.ord`, [batchId])).rows;
    const inSql = (await db.pool.query(
      `WITH stored AS (SELECT * FROM votes WHERE batch_id = $1), ${auditPartsCte('stored')}
       SELECT election_id::text AS election_id, shard, epoch, row_count, rows_digest AS digest FROM audit_parts ORDER BY election_id, shard, epoch`, [batchId])).rows;
    expect(kept).toHaveLength(8);
    expect(kept).toEqual(inSql);
    await seal();
  });

  it('digests only the rows a batch really stored: conflicts are left out, an all-conflict batch leaves nothing to seal', async () => {
    const original = row(8, 1);
    const originalBatch = await commit([original]);
    const partial = [row(8, 2), row(12)];
    const partialBatch = await commit(partial);
    await commit([row(8, 0)]);
    expect(await pendingBatches()).toBe(2);
    await seal();
    const shard0 = (await records()).filter((r) => r.shard === 0);
    expect(shard0.map((r) => [r.seq, r.row_count, r.batch_ids])).toEqual([[1, 2, [originalBatch, partialBatch]]]);
    expect(shard0[0]!.rows_digest.equals(auditSealedDigest([auditRowsDigest([original]), auditRowsDigest([partial[1]!])]))).toBe(true);
    expect((await verifyOne()).intact).toBe(true);
  });

  it('a fenced or failed commit leaves nothing to seal', async () => {
    await commit([row(1)]);
    const stale = row(2);
    await acquireShardLeases(db.pool, { electionId, shardCount, nodeId, leaseTtlMs: 60_000 });
    const fenced = await journal.commit({ batchId: await batchIds.next(), rows: [stale] });
    expect(fenced.kind).toBe('fenced');
    const duplicate = await journal.commit({ batchId: await batchIds.next(), rows: [{ ...row(3), epoch: epochs[3]! + 1 }, { ...row(3), epoch: epochs[3]! + 1 }] });
    expect(duplicate.kind).toBe('failed');
    await seal();
    expect((await records()).map((r) => r.shard)).toEqual([1]);
  });

  it('a spilled batch drained part by part: each part is sealed when it is stored', async () => {
    const rows = Array.from({ length: 16 }, (_, i) => row(500 + i));
    const batchId = await batchIds.next();
    const spilled = { batchId, rows, spilledAtMs: Date.now() };
    const held = (shards: number[]) => shards.map((shard) => ({ electionId, shard, epoch: epochs[shard]! }));
    expect((await journal.storeSpilled(spilled, held([0, 1]))).kind).toBe('stored');
    expect((await verifyOne()).elections[0]!.awaitingSealRows).toBe(8);
    await seal();
    expect((await records()).map((r) => [r.shard, r.batch_ids])).toEqual([[0, [batchId]], [1, [batchId]]]);
    expect((await journal.storeSpilled(spilled, held([2, 3]))).kind).toBe('stored');
    await seal();
    expect((await records()).map((r) => [r.shard, r.seq, r.batch_ids])).toEqual([[0, 1, [batchId]], [1, 1, [batchId]], [2, 1, [batchId]], [3, 1, [batchId]]]);
    const report = await verifyOne();
    expect(report.intact).toBe(true);
    expect(report.elections[0]!.votes).toBe(16);
  });

  it('the sealer seals a backlog larger than one seal takes, and its stop seals what is left', async () => {
    const sealer = createAuditSealer({ pool: db.pool, batchesMax: 2, intervalMs: 60_000 });
    for (let i = 0; i < 5; i++) await commit([row(700 + i)]);
    await sealer.sealNow();
    expect(await pendingBatches()).toBe(0);
    expect(sealer.stats()).toMatchObject({ batches: 5, failures: 0 });
    sealer.start();
    await commit([row(710)]);
    await sealer.stop();
    expect(await pendingBatches()).toBe(0);
    expect((await verifyOne()).elections[0]).toMatchObject({ votes: 6, awaitingSealRows: 0, intact: true });
  });
});

describe('a seal that gets no answer', () => {
  it('gives up after its bound, counted as a failure, and the batches stay pending for the next seal', async () => {
    const batchId = await commit([row(800)]);
    // A transaction holding the pending batch's row: the seal's FOR UPDATE waits on it, as on a frozen server.
    const holder = await db.pool.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('SELECT 1 FROM vote_batches WHERE batch_id = $1 FOR UPDATE', [batchId]);
      const sealer = createAuditSealer({ pool: db.pool, timeoutMs: 300, intervalMs: 60_000 });
      await sealer.stop(); // its final seal gives up, instead of holding the stop
      expect(sealer.stats()).toMatchObject({ failures: 1, batches: 0 });
      await holder.query('ROLLBACK');
    } finally {
      holder.release();
    }
    expect(await pendingBatches()).toBe(1);
    // The given-up seal's backend ends once it has the row and finds its client gone; until then
    // it holds the seal's advisory lock, and seals skip.
    await expect.poll(async () => (await sealAuditChains(db.pool)).skipped, { timeout: 60_000 }).toBe(false);
    expect(await pendingBatches()).toBe(0);
    expect((await verifyOne()).elections[0]).toMatchObject({ votes: 1, awaitingSealRows: 0, intact: true });
  });
});

describe('audit verify finds tampering', () => {
  let batchId: number;
  beforeEach(async () => {
    // A seal after each commit: a record per batch, so seq 2 is the middle batch.
    await commit(Array.from({ length: 24 }, (_, i) => row(i)));
    await seal();
    batchId = await commit(Array.from({ length: 24 }, (_, i) => row(100 + i)));
    await seal();
    await commit(Array.from({ length: 24 }, (_, i) => row(200 + i)));
    await seal();
    expect((await verifyOne()).intact).toBe(true);
  });

  const firstBreak = async (shard: number): Promise<AuditBreak | undefined> => shardOf(await verifyOne(), shard).firstBreak;

  it('a changed vote: digest mismatch at that batch, other shards intact', async () => {
    await db.pool.query('UPDATE votes SET candidate_index = (candidate_index + 1) % 3 WHERE election_id = $1 AND voter_number = 105', [electionId]);
    const report = await verifyOne();
    expect(report.intact).toBe(false);
    expect(shardOf(report, 1).firstBreak).toEqual({ kind: 'votes_changed', seq: 2, batchId, epoch: epochs[1], recordedRows: 6, storedRows: 6 });
    expect(shardOf(report, 1).breaks).toBe(1);
    for (const shard of [0, 2, 3]) expect(shardOf(report, shard).intact).toBe(true);
    expect(formatAuditReport(report)).toMatch(/shard 1: BROKEN[^\n]*\n\s+first broken link: seq 2 \(batch \d+, epoch \d+\): the stored votes do not match the digest of the 6 recorded: a vote was changed/);
    expect(formatAuditReport(report)).toMatch(/audit verify: BROKEN\n$/);
  });

  it('a vote changed before its batch was sealed: found while pending, and still found once sealed', async () => {
    const pendingBatch = await commit([row(300), row(304)]);
    await db.pool.query('UPDATE votes SET candidate_index = (candidate_index + 1) % 3 WHERE election_id = $1 AND voter_number = 304', [electionId]);
    expect(await firstBreak(0)).toEqual({ kind: 'pending_batch_mismatch', seq: 0, batchId: pendingBatch, epoch: epochs[0], recordedRows: 2, storedRows: 2 });
    expect(formatAuditReport(await verifyOne())).toMatch(/not sealed yet: .*votes were changed before the seal/);
    // The seal appends the digest the commit kept, not one of the votes as they are now.
    await seal();
    expect(await firstBreak(0)).toMatchObject({ kind: 'votes_changed', seq: 4, batchId: pendingBatch });
  });

  it('a changed time or vote id is a change too', async () => {
    await db.pool.query("UPDATE votes SET accepted_at = accepted_at + interval '1 millisecond' WHERE election_id = $1 AND voter_number = 4", [electionId]);
    expect((await firstBreak(0))?.kind).toBe('votes_changed');
    await db.pool.query('UPDATE votes SET vote_id = $2 WHERE election_id = $1 AND voter_number = 201', [electionId, randomUUID()]);
    expect((await firstBreak(1))?.kind).toBe('votes_changed');
  });

  it('a deleted vote: votes_removed', async () => {
    await db.pool.query('DELETE FROM votes WHERE election_id = $1 AND voter_number = 102', [electionId]);
    expect(await firstBreak(2)).toEqual({ kind: 'votes_removed', seq: 2, batchId, epoch: epochs[2], recordedRows: 6, storedRows: 5 });
  });

  it('a vote inserted behind the service: not covered by any record (new batch id) or votes_added (a recorded batch id)', async () => {
    const insert = (voter: number, batch: number) => db.pool.query(
      `INSERT INTO votes (election_id, voter_number, candidate_index, shard, epoch, batch_id, vote_id, accepted_at)
       VALUES ($1, $2, 0, $3, $4, $5, $6, now())`, [electionId, voter, voter % shardCount, epochs[voter % shardCount], batch, randomUUID()]);
    await insert(999, 424242);
    const report = await verifyOne();
    const shard3 = shardOf(report, 3);
    expect(shard3.firstBreak).toBeUndefined();
    expect(shard3.uncoveredRows).toBe(1);
    expect(shard3.uncovered).toEqual([{ batchId: 424242, epoch: epochs[3], rows: 1 }]);
    expect(shard3.intact).toBe(false);
    expect(formatAuditReport(report)).toMatch(/1 stored vote\(s\) not covered by any audit record/);
    await insert(998, batchId);
    expect(await firstBreak(2)).toEqual({ kind: 'votes_added', seq: 2, batchId, epoch: epochs[2], recordedRows: 6, storedRows: 7 });
  });

  it('an edited record, a record replaced with a consistent hash, a deleted record, a cut-off tail', async () => {
    await asTamperer('UPDATE audit_records SET row_count = row_count + 1 WHERE election_id = $1 AND shard = 0 AND seq = 2', [electionId]);
    expect((await firstBreak(0))?.kind).toBe('record_altered');
    // Rehashing the edited record moves the break to the next link.
    const edited = (await records()).find((r) => r.shard === 0 && r.seq === 2)!;
    await asTamperer('UPDATE audit_records SET hash = $2 WHERE election_id = $1 AND shard = 0 AND seq = 2',
      [electionId, auditRecordHash(edited.prev_hash, recordFields(edited))]);
    const rehashed = shardOf(await verifyOne(), 0);
    // The record now claims 7 rows where 6 are stored; the next record no longer links to it.
    expect(rehashed.firstBreak?.kind).toBe('votes_removed');
    expect(rehashed.breaks).toBe(2);
    expect(formatAuditReport(await verifyOne())).toMatch(/and 1 more broken link/);
    await asTamperer('DELETE FROM audit_records WHERE election_id = $1 AND shard = 1 AND seq = 2', [electionId]);
    expect(await firstBreak(1)).toMatchObject({ kind: 'missing_records', seq: 3, expectedSeq: 2 });
    await asTamperer('DELETE FROM audit_records WHERE election_id = $1 AND shard = 2 AND seq = 3', [electionId]);
    const cut = shardOf(await verifyOne(), 2);
    expect(cut.headMismatch).toBe(true);
    expect(cut.uncoveredRows).toBe(6);
  });
});

describe('append-only', () => {
  it('refuses UPDATE, DELETE and TRUNCATE of audit records, even to a superuser', async () => {
    await commit([row(1), row(2)]);
    await seal();
    const refusals = [
      () => db.pool.query('UPDATE audit_records SET row_count = 99 WHERE election_id = $1', [electionId]),
      () => db.pool.query('DELETE FROM audit_records WHERE election_id = $1', [electionId]),
      () => db.pool.query('DELETE FROM audit_records WHERE false'),
      () => db.pool.query('TRUNCATE audit_records'),
      () => db.pool.query('DELETE FROM audit_chain_heads WHERE election_id = $1', [electionId]),
      () => db.pool.query('TRUNCATE audit_chain_heads'),
      () => db.pool.query('UPDATE audit_chain_heads SET seq = seq + 1 WHERE election_id = $1', [electionId]),
      () => db.pool.query("UPDATE audit_chain_heads SET hash = '\\x00'::bytea || substring(hash from 2) WHERE election_id = $1", [electionId]),
    ];
    for (const refused of refusals) await expect(refused()).rejects.toThrow(/append-only|may only advance/);
    const isSuperuser = (await db.pool.query<{ rolsuper: boolean }>('SELECT rolsuper FROM pg_roles WHERE rolname = current_user')).rows[0]!.rolsuper;
    expect(isSuperuser).toBe(true);
    expect(await records()).toHaveLength(2);
    expect((await verifyOne()).intact).toBe(true);
  });

  it('grants nothing on the audit tables to PUBLIC', async () => {
    const grants = await db.pool.query(
      `SELECT table_name, privilege_type FROM information_schema.role_table_grants
        WHERE grantee = 'PUBLIC' AND table_name IN ('audit_records', 'audit_chain_heads')`);
    expect(grants.rows).toEqual([]);
  });
});

describe('commits and seals racing', () => {
  it('keep every chain linear: contiguous seqs, each linked to the previous, every batch sealed once', async () => {
    const pools = Array.from({ length: 4 }, (_, i) => createPool(db.url, 3, `audit-test-concurrent-${i}`));
    try {
      const journals = pools.map((pool) => createPgJournal({ pool, nodeId }));
      // Two nodes' sealers, each on its own pool, sealing as fast as they can while the commits run.
      const sealers = pools.slice(0, 2).map((pool) => createAuditSealer({ pool, batchesMax: 3 }));
      const batches = 60;
      const committed: { batchId: number; rows: JournalRow[] }[] = [];
      let nextVoter = 0;
      let committing = true;
      // Every batch touches every shard, so every seal appends to all four chains.
      const run = async (j: PgJournal) => {
        for (let n = 0; n < batches / journals.length; n++) {
          const rows = Array.from({ length: 20 }, () => row(nextVoter++));
          const batchId = await batchIds.next();
          const result = await j.commit({ batchId, rows });
          expect(result.kind === 'failed' ? result.message : result.kind).toBe('committed');
          committed.push({ batchId, rows });
        }
      };
      const sealing = sealers.map(async (sealer) => {
        while (committing) await sealer.sealNow();
      });
      await Promise.all(journals.flatMap((j) => [run(j), run(j)]));
      committing = false;
      await Promise.all(sealing);
      await sealers[0]!.sealNow();
      expect(sealers.reduce((n, s) => n + s.stats().failures, 0)).toBe(0);
      expect(await pendingBatches()).toBe(0);
      const stored = await records();
      for (let shard = 0; shard < shardCount; shard++) {
        const chain = stored.filter((r) => r.shard === shard);
        expect(chain.map((r) => r.seq)).toEqual(Array.from({ length: chain.length }, (_, i) => i + 1));
        for (let i = 1; i < chain.length; i++) expect(chain[i]!.prev_hash.equals(chain[i - 1]!.hash)).toBe(true);
        const sealed = chain.flatMap((r) => r.batch_ids);
        expect(sealed.length).toBe(committed.length);
        expect(new Set(sealed)).toEqual(new Set(committed.map((c) => c.batchId)));
      }
      const report = await verifyOne();
      expect(report.intact).toBe(true);
      expect(report.elections[0]!.votes).toBe(committed.length * 20);
    } finally {
      await Promise.all(pools.map((p) => p.end()));
    }
  });
});

describe('migration 005 on a database that already holds votes', () => {
  it('chains the votes stored before it, so verify covers them', async () => {
    const upTo004 = await mkdtemp(path.join(os.tmpdir(), 'lv-mig-'));
    const old = await createTestDatabase({ migrate: false });
    try {
      for (const file of (await readdir(migrationsDir)).filter((f) => f < '005')) await copyFile(path.join(migrationsDir, file), path.join(upTo004, file));
      await migrate(old.pool, upTo004);
      const election = randomUUID();
      await old.pool.query(
        `INSERT INTO votes (election_id, voter_number, candidate_index, shard, epoch, batch_id, vote_id, accepted_at)
         SELECT $1, v, v % 3, v % 4, 1, 1 + v / 10, gen_random_uuid(), to_timestamp((1700000000000 + v)::float8 / 1000) FROM generate_series(0, 49) v`,
        [election]);
      await migrate(old.pool);
      const report = await verifyAudit(old.pool, {});
      expect(report.elections.map((e) => [e.electionId, e.votes, e.intact])).toEqual([[election, 50, true]]);
      // 5 batches (ids 1..5) × 4 shards.
      expect(report.elections[0]!.records).toBe(20);
    } finally {
      await old.drop();
      await rm(upTo004, { recursive: true, force: true });
    }
  });
});
