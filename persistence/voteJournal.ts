// The durable journal of votes: one Postgres transaction per group-commit batch.
//
//   BEGIN (with local statement and lock timeouts)
//   fence:  lock the lease rows of the batch's (election, shard) pairs FOR SHARE, in key order,
//           and compare each row's epoch and owner with the rows' → any mismatch: ROLLBACK, fenced
//   COPY    the rows into a per-connection TEMP staging table (ON COMMIT DELETE ROWS)
//   INSERT  INTO votes SELECT … FROM staging ON CONFLICT DO NOTHING, and in the same statement
//           the vote_batches row (row_count = rows actually stored) and the audit records (one
//           per shard stored into, appended to that shard's hash chain: persistence/audit.ts)
//   only when some rows were not stored: read which voters were already stored (conflicts)
//   COMMIT
//
// Why FOR SHARE: a takeover bumps the epoch with an UPDATE, which waits for every commit holding
// the row FOR SHARE, and every commit that starts after it sees the new epoch. So no row can be
// stored under an epoch that is no longer the lease's (invariant 4), and commits of one node do
// not block each other (shared locks). Expiry is deliberately not checked here: an expired lease
// nobody took over is still exclusively ours, and refusing it would only turn a slow renewal
// into lost availability; taking over is what fences.
//
// Outcomes are data (ports.ts): commit() resolves, never rejects.
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { from as copyFrom } from 'pg-copy-streams';
import type {
  Journal,
  JournalBatch,
  JournalCommitResult,
  JournalConflict,
  JournalRow,
  ShardKey,
} from '../actors/ports.ts';
import type { QueryResult } from 'pg';
import { auditAppendCtes } from './audit.ts';
import { withClient, type Pool, type PoolClient } from './db.ts';

/** The config allows batches up to 100k rows (LIVEVOTE_BATCH_ROWS_MAX); nothing bigger is sane. */
export const journalBatchRowsMaxDefault = 100_000;
/** Every statement of a commit, the lock wait included, must finish within this. */
export const journalStatementTimeoutMsDefault = 10_000;
/** A takeover holds lease rows only for a moment; waiting longer means something is stuck. */
export const journalLockTimeoutMsDefault = 5_000;
/** Rows per COPY data chunk: ~50 KB, so a big batch is streamed, not built as one string. */
const copyChunkRows = 500;

export interface PgJournalOptions {
  readonly pool: Pool;
  /** The node writing; must be the owner_node of every lease the batch's rows are fenced by. */
  readonly nodeId: string;
  readonly batchRowsMax?: number;
  readonly statementTimeoutMs?: number;
  readonly lockTimeoutMs?: number;
}

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

// The statements that follow the fence are constant and named, so each connection parses and
// plans them once.
const stagingDdl = `CREATE TEMP TABLE IF NOT EXISTS vote_staging (
  election_id     uuid     NOT NULL,
  voter_number    bigint   NOT NULL,
  candidate_index smallint NOT NULL,
  shard           integer  NOT NULL,
  epoch           bigint   NOT NULL,
  vote_id         uuid     NOT NULL,
  accepted_at_ms  bigint   NOT NULL
) ON COMMIT DELETE ROWS`;

const copyText =
  'COPY vote_staging (election_id, voter_number, candidate_index, shard, epoch, vote_id, accepted_at_ms) FROM STDIN';

// The fence runs in the same simple query as BEGIN (one round trip, not two), so its keys are
// inlined as literals: uuids and integers validated before any I/O, which cannot carry SQL.
function fenceQueryText(beginText: string, fenceKeys: readonly FenceKey[]): string {
  // Per election `shard = ANY(array)`: an index scan of the lease primary key, cheaper to plan
  // and run than a join against a VALUES list when a batch spans hundreds of shards.
  const shardsByElection = new Map<string, number[]>();
  for (const k of fenceKeys) {
    const shards = shardsByElection.get(k.electionIdLower);
    if (shards === undefined) shardsByElection.set(k.electionIdLower, [k.key.shard]);
    else shards.push(k.key.shard);
  }
  const conditions = [...shardsByElection].map(
    ([electionId, shards]) => `(l.election_id = '${electionId}' AND l.shard = ANY('{${shards.join(',')}}'::integer[]))`,
  );
  return `${beginText};
    SELECT l.election_id::text AS election_id, l.shard, l.epoch, l.owner_node
      FROM shard_leases l
     WHERE ${conditions.join(' OR ')}
     ORDER BY l.election_id, l.shard
       FOR SHARE OF l`;
}

// One statement stores the rows and records the batch: row_count is what was really stored.
// to_timestamp(float8) rounds to the microsecond, so whole milliseconds come through exactly.
// ORDER BY the key: two commits naming the same voters (redeliveries) then take the key locks
// in one order, so one waits for the other instead of both dying in a deadlock; the primary-key
// index is also filled in order, which keeps its pages hot.
//
// The same statement appends the audit records (persistence/audit.ts): one per (election, shard)
// the batch stored rows for, digesting the rows as RETURNING reports them stored, linked to the
// shard's chain head, whose row lock orders concurrent commits of one shard. No extra round trip.
const insertStatement = {
  name: 'livevote_journal_insert',
  text: `WITH stored AS (
           INSERT INTO votes (election_id, voter_number, candidate_index, shard, epoch, batch_id, vote_id, accepted_at)
           SELECT election_id, voter_number, candidate_index, shard, epoch, $1, vote_id, to_timestamp(accepted_at_ms::float8 / 1000)
             FROM vote_staging
            ORDER BY election_id, voter_number
           ON CONFLICT (election_id, voter_number) DO NOTHING
           RETURNING election_id, shard, epoch, voter_number, candidate_index, vote_id, accepted_at),
         ${auditAppendCtes('stored', '$1::bigint')}
         INSERT INTO vote_batches (batch_id, row_count, conflict_count, node_id)
         SELECT $1, count(*), $2 - count(*), $3 FROM stored
         RETURNING row_count`,
};

// Only run when some rows were not stored: which voters already had a row from another batch.
const conflictStatement = {
  name: 'livevote_journal_conflicts',
  text: `SELECT s.election_id::text AS election_id, s.voter_number
           FROM vote_staging s JOIN votes v USING (election_id, voter_number)
          WHERE v.batch_id <> $1`,
};

interface LeaseRow {
  election_id: string;
  shard: number;
  epoch: number;
  owner_node: string;
}

interface FenceKey {
  readonly key: ShardKey;
  readonly electionIdLower: string;
  readonly epoch: number;
  /** Rows of this shard carry different epochs: at least one of them is stale. */
  mixedEpochs: boolean;
}

class InvalidBatchError extends Error {}

export class PgJournal implements Journal {
  private readonly pool: Pool;
  private readonly nodeId: string;
  private readonly batchRowsMax: number;
  private readonly beginText: string;
  /** Connections whose TEMP staging table exists (a temp table lives as long as its session). */
  private readonly preparedClients = new WeakSet<PoolClient>();

  constructor(options: PgJournalOptions) {
    const batchRowsMax = options.batchRowsMax ?? journalBatchRowsMaxDefault;
    const statementTimeoutMs = options.statementTimeoutMs ?? journalStatementTimeoutMsDefault;
    const lockTimeoutMs = options.lockTimeoutMs ?? journalLockTimeoutMsDefault;
    if (!(Number.isInteger(batchRowsMax) && batchRowsMax >= 1)) throw new Error(`batchRowsMax must be a positive integer, got ${batchRowsMax}`);
    if (!(Number.isInteger(statementTimeoutMs) && statementTimeoutMs >= 1)) throw new Error(`statementTimeoutMs must be a positive integer, got ${statementTimeoutMs}`);
    if (!(Number.isInteger(lockTimeoutMs) && lockTimeoutMs >= 1)) throw new Error(`lockTimeoutMs must be a positive integer, got ${lockTimeoutMs}`);
    if (options.nodeId.length === 0) throw new Error('nodeId must not be empty');
    this.pool = options.pool;
    this.nodeId = options.nodeId;
    this.batchRowsMax = batchRowsMax;
    // SET LOCAL: the timeouts end with the transaction, so the pooled connection goes back clean.
    // One simple query, so BEGIN and both settings cost one round trip.
    this.beginText = `BEGIN; SET LOCAL statement_timeout = ${statementTimeoutMs}; SET LOCAL lock_timeout = ${lockTimeoutMs}`;
  }

  async commit(batch: JournalBatch): Promise<JournalCommitResult> {
    let fenceKeys: FenceKey[];
    try {
      fenceKeys = this.validate(batch);
    } catch (error) {
      return { kind: 'failed', message: `invalid batch ${batch.batchId}: ${(error as Error).message}` };
    }
    try {
      return await withClient(this.pool, (client, discard) => this.commitOn(client, discard, batch, fenceKeys));
    } catch (error) {
      // commitOn never throws: only checking a connection out can fail here.
      return { kind: 'failed', message: `no database connection: ${(error as Error).message}` };
    }
  }

  private async commitOn(
    client: PoolClient,
    discard: (reason: Error) => void,
    batch: JournalBatch,
    fenceKeys: FenceKey[],
  ): Promise<JournalCommitResult> {
    let inTransaction = false;
    try {
      if (!this.preparedClients.has(client)) {
        await client.query(stagingDdl);
        this.preparedClients.add(client);
      }
      // Set first: if the BEGIN went through and the fence failed, ROLLBACK is due (and harmless
      // when the BEGIN did not go through either).
      inTransaction = true;
      const staleShards = await this.beginAndFence(client, fenceKeys);
      if (staleShards.length > 0) {
        inTransaction = false;
        await client.query('ROLLBACK');
        return { kind: 'fenced', staleShards };
      }

      await pipeline(Readable.from(copyChunks(batch.rows)), client.query(copyFrom(copyText)));

      const rowCount = batch.rows.length;
      const inserted = await client.query<{ row_count: number }>({
        ...insertStatement,
        values: [batch.batchId, rowCount, this.nodeId],
      });
      const storedCount = inserted.rows[0]?.row_count;
      if (storedCount === undefined) throw new Error('vote_batches insert returned no row');
      let conflicts: JournalConflict[] = [];
      if (storedCount < rowCount) {
        const found = await client.query<{ election_id: string; voter_number: number }>({
          ...conflictStatement,
          values: [batch.batchId],
        });
        conflicts = found.rows.map((r) => ({ electionId: r.election_id, voterNumber: r.voter_number }));
        // Rows not stored that no other batch stored: the batch named one voter twice. The shard's
        // bitmap makes that impossible; refuse it rather than report a count nobody can trust.
        if (storedCount + conflicts.length !== rowCount) {
          throw new InvalidBatchError(
            `batch ${batch.batchId} holds the same voter more than once (${rowCount} rows, ${storedCount} stored, ${conflicts.length} conflicts)`,
          );
        }
        conflicts = restoreCallerIds(conflicts, fenceKeys);
      }
      inTransaction = false;
      await client.query('COMMIT');
      return { kind: 'committed', conflicts };
    } catch (error) {
      // Anything may have gone wrong, the staging table included: re-check it next time.
      this.preparedClients.delete(client);
      if (inTransaction) {
        await client.query('ROLLBACK').catch(discard);
      } else {
        // COMMIT (or the DDL) failed: the session's state is unknown; do not hand it out again.
        discard(error as Error);
      }
      return { kind: 'failed', message: `batch ${batch.batchId}: ${(error as Error).message}` };
    }
  }

  async wasCommitted(batchId: number): Promise<boolean> {
    if (!Number.isSafeInteger(batchId)) throw new Error(`batchId must be a safe integer, got ${batchId}`);
    const result = await this.pool.query({
      name: 'livevote_journal_was_committed',
      text: 'SELECT 1 FROM vote_batches WHERE batch_id = $1',
      values: [batchId],
    });
    return result.rowCount === 1;
  }

  /** Checks every row before any I/O; returns the distinct (election, shard) pairs to fence. */
  private validate(batch: JournalBatch): FenceKey[] {
    if (!(Number.isSafeInteger(batch.batchId) && batch.batchId >= 1)) throw new Error(`batchId must be a positive safe integer, got ${batch.batchId}`);
    if (batch.rows.length > this.batchRowsMax) throw new Error(`${batch.rows.length} rows, more than batchRowsMax ${this.batchRowsMax}`);
    const keys = new Map<string, FenceKey>();
    let lastElectionId = '';
    for (const row of batch.rows) {
      if (row.electionId !== lastElectionId) {
        if (!uuidPattern.test(row.electionId)) throw new Error(`electionId is not a uuid: ${JSON.stringify(row.electionId)}`);
        lastElectionId = row.electionId;
      }
      validateRow(row);
      const mapKey = `${row.electionId.toLowerCase()}/${row.shard}`;
      const existing = keys.get(mapKey);
      if (existing === undefined) {
        keys.set(mapKey, {
          key: { electionId: row.electionId, shard: row.shard },
          electionIdLower: row.electionId.toLowerCase(),
          epoch: row.epoch,
          mixedEpochs: false,
        });
      } else if (existing.epoch !== row.epoch) {
        existing.mixedEpochs = true;
      }
    }
    return [...keys.values()];
  }

  /** BEGIN, then lock and compare the lease rows; returns the shards whose epoch is stale. */
  private async beginAndFence(client: PoolClient, fenceKeys: readonly FenceKey[]): Promise<ShardKey[]> {
    if (fenceKeys.length === 0) {
      await client.query(this.beginText);
      return [];
    }
    // A multi-statement simple query answers one result per statement; the fence is the last.
    const results = (await client.query(fenceQueryText(this.beginText, fenceKeys))) as unknown as QueryResult<LeaseRow>[];
    const leases = Array.isArray(results) ? results[results.length - 1] : undefined;
    if (leases === undefined) throw new Error('fence query returned no result');
    const byKey = new Map<string, LeaseRow>();
    for (const lease of leases.rows) byKey.set(`${lease.election_id}/${lease.shard}`, lease);
    const stale: ShardKey[] = [];
    for (const fenceKey of fenceKeys) {
      const lease = byKey.get(`${fenceKey.electionIdLower}/${fenceKey.key.shard}`);
      // No lease row at all: nobody may write that shard.
      const current = lease !== undefined && lease.epoch === fenceKey.epoch && lease.owner_node === this.nodeId && !fenceKey.mixedEpochs;
      if (!current) stale.push(fenceKey.key);
    }
    return stale;
  }
}

export function createPgJournal(options: PgJournalOptions): PgJournal {
  return new PgJournal(options);
}

function validateRow(row: JournalRow): void {
  if (!(Number.isSafeInteger(row.voterNumber) && row.voterNumber >= 0)) throw new Error(`voterNumber must be a non-negative safe integer, got ${row.voterNumber}`);
  if (!(Number.isInteger(row.candidateIndex) && row.candidateIndex >= 0 && row.candidateIndex <= 63)) throw new Error(`candidateIndex must be 0..63, got ${row.candidateIndex}`);
  if (!(Number.isInteger(row.shard) && row.shard >= 0 && row.shard <= 1023)) throw new Error(`shard must be 0..1023, got ${row.shard}`);
  if (!(Number.isSafeInteger(row.epoch) && row.epoch >= 1)) throw new Error(`epoch must be a positive safe integer, got ${row.epoch}`);
  if (!(Number.isSafeInteger(row.acceptedAtMs) && row.acceptedAtMs >= 0)) throw new Error(`acceptedAtMs must be a non-negative safe integer, got ${row.acceptedAtMs}`);
  // Also what keeps the COPY text unambiguous: a uuid cannot hold a tab, newline or backslash.
  if (!uuidPattern.test(row.voteId)) throw new Error(`voteId is not a uuid: ${JSON.stringify(row.voteId)}`);
}

/** COPY text format, a chunk per `copyChunkRows` rows; every field was validated to need no escaping. */
function* copyChunks(rows: readonly JournalRow[]): Generator<Buffer> {
  for (let start = 0; start < rows.length; start += copyChunkRows) {
    const end = Math.min(rows.length, start + copyChunkRows);
    let text = '';
    for (let i = start; i < end; i++) {
      const r = rows[i]!;
      text += `${r.electionId}\t${r.voterNumber}\t${r.candidateIndex}\t${r.shard}\t${r.epoch}\t${r.voteId}\t${r.acceptedAtMs}\n`;
    }
    yield Buffer.from(text, 'utf8');
  }
}

/** Postgres answers uuids in lower case; give conflicts back with the caller's spelling. */
function restoreCallerIds(conflicts: JournalConflict[], fenceKeys: readonly FenceKey[]): JournalConflict[] {
  const spelling = new Map<string, string>();
  for (const k of fenceKeys) spelling.set(k.electionIdLower, k.key.electionId);
  return conflicts.map((c) => ({ electionId: spelling.get(c.electionId) ?? c.electionId, voterNumber: c.voterNumber }));
}
