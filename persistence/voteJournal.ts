// The durable journal of votes: one Postgres transaction per group-commit batch, in ONE round
// trip. Each commit is a single simple-query message, which Postgres runs as one implicit
// transaction (any error rolls all of it back; success commits before ReadyForQuery):
//
//   SET LOCAL statement_timeout; SET LOCAL lock_timeout;
//   EXECUTE livevote_journal_commit(batch, node, the rows as arrays, the fence keys as arrays)
//
// The prepared statement (PREPAREd once per connection) does everything in one statement:
//   fence   lock the lease rows of the batch's (election, shard) pairs FOR SHARE, in key order,
//           and compare each row's epoch and owner with the batch's → any mismatch: it stores
//           nothing and records nothing, and answers the stale positions (outcome `fenced`)
//   insert  INSERT INTO votes … FROM unnest(arrays), in key order; a plain INSERT first, and only if
//           a voter is already stored (unique violation on votes_pkey: the whole statement rolled
//           back) the same statement again with ON CONFLICT DO NOTHING, which skips such voters
//   audit   the rows digest of each (election, shard, epoch) part stored: computed by the journal
//           for the plain INSERT (audit.ts auditPartsOfRows), in SQL for the skipping one (auditPartsCte)
//   batch   the vote_batches row (row_count = rows actually stored): what wasCommitted asks; it
//           holds the parts' digests until the audit sealer appends them (auditSealer.ts)
//   answer  the stale fence positions, the stored count, and the positions not stored (conflicts)
//
// Why one round trip: on this kind of machine a Postgres round trip costs ~50-80 µs of CPU in
// each process (syscalls, wake-ups), and every round trip of a commit also waits for a turn of
// a busy event loop. The earlier journal (BEGIN+fence, COPY into staging ×2, INSERT, COMMIT) paid
// five of each per batch (bench/README.md, "journal").
//
// Why a plain INSERT first: ON CONFLICT makes Postgres probe the primary key before every row's
// insert (a second descent of the index) and log each row's insert as speculative, then confirmed.
// Voters already stored are rare on the journal's path (the shard's bitmap answers duplicates
// before they reach it; a conflict means a redelivery or a recovery race), so the plain statement
// pays ~2-4 µs less Postgres CPU per vote (bench/README.md, "Fourth look"), and a batch with a
// conflict pays a second round trip (and an ERROR line in the server's log).
//
// Why FOR SHARE: a takeover bumps the epoch with an UPDATE, which waits for every commit holding
// the row FOR SHARE, and every commit that starts after it sees the new epoch (READ COMMITTED
// re-reads a row updated while we waited for it). So no row can be stored under an epoch that is
// no longer the lease's (invariant 4), and commits of one node do not block each other (shared
// locks). Expiry is deliberately not checked here: an expired lease nobody took over is still
// exclusively ours, and refusing it would only turn a slow renewal into lost availability;
// taking over is what fences.
//
// The values travel as SQL literals, not bind parameters (a simple query has none). That is safe
// because every value is validated before any I/O: uuids, integers and the node id, which is
// escaped. A uuid or an integer cannot carry a quote, a comma or a brace.
//
// Outcomes are data (ports.ts): commit() resolves, never rejects.
import type {
  Journal,
  JournalBatch,
  JournalCommitResult,
  JournalConflict,
  JournalRow,
  ShardKey,
  HeldShard,
  SpilledBatch,
  SpilledBatchStore,
  SpilledStoreResult,
} from '../actors/ports.ts';
import { shardKeyString } from '../actors/ports.ts';
import type { QueryResult } from 'pg';
import { auditPartsArrays, auditPartsCte, auditPartsOfRows, auditPendingAppend, auditPendingColumns } from './audit.ts';
import { isUuidText } from '../infra/uuidText.ts';
import { withClientTimeout, type Pool, type PoolClient } from './db.ts';

/** The config allows batches up to 100k rows (LIVEVOTE_BATCH_ROWS_MAX); nothing bigger is sane. */
export const journalBatchRowsMaxDefault = 100_000;
/** The commit statement, the lock wait included, must finish within this. */
export const journalStatementTimeoutMsDefault = 10_000;
/** A takeover holds lease rows only for a moment; waiting longer means something is stuck. */
export const journalLockTimeoutMsDefault = 5_000;
/** wasCommitted gives up after this (client side): the batch then stays in doubt and is asked again. */
export const journalCheckTimeoutMsDefault = 2_000;
/** Storing one spilled batch (the drainer, off the vote path) gives up after this. */
export const journalDrainTimeoutMsDefault = 30_000;

export interface PgJournalOptions {
  readonly pool: Pool;
  /** The node writing; must be the owner_node of every lease the batch's rows are fenced by. */
  readonly nodeId: string;
  readonly batchRowsMax?: number;
  readonly statementTimeoutMs?: number;
  readonly lockTimeoutMs?: number;
  /**
   * Client-side bound on a whole commit, connection wait included (a frozen server runs no
   * statement timeout). Default: the statement timeout plus 2 s.
   */
  readonly commitTimeoutMs?: number;
  readonly checkTimeoutMs?: number;
  readonly drainTimeoutMs?: number;
  /**
   * Measurement only (bench/journalFeatures.ts), never set by the product: a statement without
   * some of its parts, prepared under `name`. Without the fence, invariant 4 does not hold.
   */
  readonly measuredVariant?: { readonly name: string; readonly parts: CommitStatementParts };
}


const commitStatementName = 'livevote_journal_commit';
/** The commit statement's name when it skips voters already stored (ON CONFLICT DO NOTHING). */
const skippingStoredSuffix = '_skipping_stored';
/** SQLSTATE unique_violation, with the votes primary key as its constraint: a voter already stored. */
const uniqueViolation = '23505';
const votesPrimaryKey = 'votes_pkey';

/**
 * The parts of the commit statement. Production always runs every part; bench/journalFeatures.ts
 * prepares variants without one (under other names) to measure what each costs Postgres.
 */
export interface CommitStatementParts {
  /** Lock and compare the lease rows (invariant 4). */
  readonly fence: boolean;
  /** Append to the per-shard audit hash chains. */
  readonly audit: boolean;
}
const everyPart: CommitStatementParts = { fence: true, audit: true };
/** SQLSTATE: prepared statement already exists (prepared by an earlier, forgotten attempt). */
const duplicatePreparedStatement = '42P05';

// The parameters, in order: $1 batch id, $2 node id, $3..$9 the rows (one array per column),
// $10..$12 the fence keys (election, shard, expected epoch; epoch 0 marks a shard whose rows
// carry different epochs, which no lease can match).
//
// Conflicts can only come from the statement that skips stored voters: the plain INSERT either
// stores every row or fails whole on the first voter already stored, so it answers none.
//
// ORDER BY the key on insert: two commits naming the same voters (redeliveries) then take the key
// locks in one order, so one waits for the other instead of both dying in a deadlock; the
// primary-key index is also filled in order, which keeps its pages hot.
// The fence looks each lease row up by its key, in key order, and locks it there (a nested loop
// over the sorted keys, an index scan and a LockRows each): the join it used to be (a sort, two
// hash joins and a scan of every lease row) cost ~0.2 ms of Postgres CPU per commit with 8 keys,
// and the scan grew with the number of leases (bench/README.md, "Twelfth look"). A row updated
// by a takeover while we waited is re-read (READ COMMITTED), so its new epoch is what we compare.
//
// The audit parts: the plain statement stores every row or none, so the journal computes the
// parts' digests itself (audit.ts auditPartsOfRows) and passes them as $13..$17; the statement
// that skips stored voters computes them in SQL from the rows it did store (audit.ts
// auditPartsCte). The SQL aggregate, its sorts and the five arrays' subqueries cost Postgres
// ~0.2 ms per commit; the journal's hashes cost its event loop ~10-20 µs.
//
// to_timestamp(float8) rounds to the microsecond, so whole milliseconds come through exactly.
function prepareText(name: string, parts: CommitStatementParts, skipStored: boolean): string {
  const partsGiven = parts.audit && !skipStored;
  return `PREPARE ${name}
    (bigint, text, uuid[], bigint[], smallint[], integer[], bigint[], uuid[], bigint[], uuid[], integer[], bigint[]${partsGiven ? ', uuid[], integer[], bigint[], integer[], bytea[]' : ''}) AS
${parts.fence ? `  WITH fence AS (
         SELECT coalesce(array_agg(k.position ORDER BY k.position)
                           FILTER (WHERE l.epoch IS DISTINCT FROM k.epoch OR l.owner_node IS DISTINCT FROM $2), '{}') AS stale_positions
           FROM (SELECT * FROM unnest($10::uuid[], $11::integer[], $12::bigint[]) WITH ORDINALITY AS k(election_id, shard, epoch, position)
                  ORDER BY election_id, shard) k
           LEFT JOIN LATERAL (
                  SELECT l.epoch, l.owner_node FROM shard_leases l
                   WHERE l.election_id = k.election_id AND l.shard = k.shard
                     FOR SHARE) l ON true),
` : `  WITH fence AS (SELECT '{}'::bigint[] AS stale_positions),
`}       input AS (
         SELECT * FROM unnest($3::uuid[], $4::bigint[], $5::smallint[], $6::integer[], $7::bigint[], $8::uuid[], $9::bigint[])
                  WITH ORDINALITY AS i(election_id, voter_number, candidate_index, shard, epoch, vote_id, accepted_at_ms, position)),
       stored AS (
         INSERT INTO votes (election_id, voter_number, candidate_index, shard, epoch, batch_id, vote_id, accepted_at)
         SELECT election_id, voter_number, candidate_index, shard, epoch, $1, vote_id, to_timestamp(accepted_at_ms::float8 / 1000)
           FROM input
          WHERE (SELECT cardinality(stale_positions) = 0 FROM fence)
          ORDER BY election_id, voter_number
${skipStored ? `         ON CONFLICT (election_id, voter_number) DO NOTHING
         RETURNING election_id, shard, epoch, voter_number, candidate_index, vote_id, accepted_at),
${parts.audit ? `       ${auditPartsCte('stored')},
` : ''}` : `         RETURNING 1),
`}       batch AS (
         INSERT INTO vote_batches (batch_id, row_count, conflict_count, node_id${parts.audit ? `, ${auditPendingColumns}` : ''})
         SELECT $1, count(*), cardinality($4::bigint[]) - count(*), $2${partsGiven ? ', $13, $14, $15, $16, $17' : parts.audit ? `, ${auditPartsArrays}` : ''} FROM stored
         HAVING (SELECT cardinality(stale_positions) = 0 FROM fence)
         RETURNING row_count)
  SELECT (SELECT stale_positions FROM fence) AS stale_positions,
         (SELECT row_count FROM batch) AS row_count,
         ${skipStored ? `(SELECT coalesce(array_agg(i.position ORDER BY i.position), '{}') FROM input i
           WHERE (SELECT cardinality(stale_positions) = 0 FROM fence)
             AND NOT EXISTS (SELECT 1 FROM stored s WHERE s.election_id = i.election_id AND s.voter_number = i.voter_number))` : `'{}'::bigint[]`} AS conflict_positions`;
}

interface CommitAnswer {
  /** 1-based positions into the fence keys. */
  stale_positions: number[];
  /** null when fenced: nothing was recorded. */
  row_count: number | null;
  /** 1-based positions into the rows: voters another batch had already stored. */
  conflict_positions: number[];
}

interface FenceKey {
  readonly key: ShardKey;
  readonly epoch: number;
  /** Rows of this shard carry different epochs: at least one of them is stale. */
  mixedEpochs: boolean;
}

/**
 * The client-side bounds of a commit and of a check (connection wait included): what PgJournal
 * waits at most, and what a caller on another thread must wait at least (journalWorker.ts).
 */
export function journalClientBoundsMs(options: Pick<PgJournalOptions, 'statementTimeoutMs' | 'commitTimeoutMs' | 'checkTimeoutMs'>): { commitMs: number; checkMs: number } {
  const statementTimeoutMs = options.statementTimeoutMs ?? journalStatementTimeoutMsDefault;
  return {
    commitMs: options.commitTimeoutMs ?? statementTimeoutMs + 2_000,
    checkMs: options.checkTimeoutMs ?? journalCheckTimeoutMsDefault,
  };
}

export class PgJournal implements Journal, SpilledBatchStore {
  private readonly pool: Pool;
  private readonly nodeId: string;
  private readonly commitTimeoutMs: number;
  private readonly checkTimeoutMs: number;
  private readonly drainTimeoutMs: number;
  private readonly nodeIdLiteral: string;
  private readonly batchRowsMax: number;
  private readonly settingsText: string;
  private readonly statementName: string;
  private readonly statementParts: CommitStatementParts;
  /** Connections whose session holds the prepared commit statement (plain insert). */
  private readonly preparedClients = new WeakSet<PoolClient>();
  /** Connections whose session also holds the statement that skips voters already stored. */
  private readonly preparedSkippingClients = new WeakSet<PoolClient>();

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
    ({ commitMs: this.commitTimeoutMs, checkMs: this.checkTimeoutMs } = journalClientBoundsMs(options));
    this.drainTimeoutMs = options.drainTimeoutMs ?? journalDrainTimeoutMsDefault;
    for (const [name, value] of Object.entries({ commitTimeoutMs: this.commitTimeoutMs, checkTimeoutMs: this.checkTimeoutMs, drainTimeoutMs: this.drainTimeoutMs })) {
      if (!(Number.isInteger(value) && value >= 1)) throw new Error(`${name} must be a positive integer, got ${value}`);
    }
    this.nodeIdLiteral = sqlTextLiteral(options.nodeId);
    this.batchRowsMax = batchRowsMax;
    // SET LOCAL: the timeouts end with the implicit transaction, so the pooled connection goes back clean.
    this.settingsText = `SET LOCAL statement_timeout = ${statementTimeoutMs}; SET LOCAL lock_timeout = ${lockTimeoutMs}`;
    this.statementName = options.measuredVariant?.name ?? commitStatementName;
    this.statementParts = options.measuredVariant?.parts ?? everyPart;
  }

  async commit(batch: JournalBatch): Promise<JournalCommitResult> {
    let fenceKeys: FenceKey[];
    try {
      fenceKeys = this.validate(batch);
    } catch (error) {
      return { kind: 'failed', message: `invalid batch ${batch.batchId}: ${(error as Error).message}` };
    }
    try {
      return await withClientTimeout(this.pool, this.commitTimeoutMs, (client, discard) => this.commitOn(client, discard, batch, fenceKeys));
    } catch (error) {
      // commitOn never throws: checking a connection out failed, or the deadline passed (the
      // transaction may still land: wasCommitted settles it, and stops it if it has not).
      return { kind: 'failed', message: `batch ${batch.batchId}: ${(error as Error).message}` };
    }
  }

  private async commitOn(
    client: PoolClient,
    discard: (reason: Error) => void,
    batch: JournalBatch,
    fenceKeys: FenceKey[],
  ): Promise<JournalCommitResult> {
    try {
      if (!this.preparedClients.has(client)) {
        await prepareCommitStatement(client, prepareText(this.statementName, this.statementParts, false));
        this.preparedClients.add(client);
      }
      let results: QueryResult<CommitAnswer>[];
      try {
        // A multi-statement simple query answers one result per statement; the EXECUTE is the last.
        results = (await client.query(this.commitText(batch, fenceKeys, this.statementName, this.statementParts.audit))) as unknown as QueryResult<CommitAnswer>[];
      } catch (error) {
        if (!isVoterAlreadyStored(error)) throw error;
        // The implicit transaction rolled back whole (nothing stored, nothing recorded): the
        // connection is idle again, and the same batch goes once more, skipping stored voters.
        const skippingName = this.statementName + skippingStoredSuffix;
        if (!this.preparedSkippingClients.has(client)) {
          await prepareCommitStatement(client, prepareText(skippingName, this.statementParts, true));
          this.preparedSkippingClients.add(client);
        }
        results = (await client.query(this.commitText(batch, fenceKeys, skippingName, false))) as unknown as QueryResult<CommitAnswer>[];
      }
      const answer = Array.isArray(results) ? results[results.length - 1]?.rows[0] : undefined;
      if (answer === undefined) throw new Error('the commit statement returned no row');
      if (answer.stale_positions.length > 0) {
        return { kind: 'fenced', staleShards: answer.stale_positions.map((p) => fenceKeys[p - 1]!.key) };
      }
      if (answer.row_count === null) throw new Error('the commit statement recorded no batch');
      const conflicts: JournalConflict[] = answer.conflict_positions.map((p) => {
        const row = batch.rows[p - 1]!;
        return { electionId: row.electionId, voterNumber: row.voterNumber };
      });
      return { kind: 'committed', conflicts };
    } catch (error) {
      // An error answer means Postgres rolled the implicit transaction back; a lost connection
      // (no answer) also lands here, and the caller asks wasCommitted. Either way the connection
      // is not handed out again: a backend that was terminated answers FATAL and only then
      // closes, and its next user would find it dead. Failures are rare; a new connection is cheap.
      discard(error as Error);
      return { kind: 'failed', message: `batch ${batch.batchId}: ${(error as Error).message}` };
    }
  }

  /**
   * Marks the id abandoned unless a batch row exists. The INSERT waits for a commit of the same
   * id that is still running (the primary key's lock), so it answers that commit's real outcome;
   * the SELECT is a second statement so that it sees a row committed while the INSERT waited.
   */
  async wasCommitted(batchId: number): Promise<boolean> {
    if (!Number.isSafeInteger(batchId)) throw new Error(`batchId must be a safe integer, got ${batchId}`);
    return withClientTimeout(this.pool, this.checkTimeoutMs, async (client, discard) => {
      try {
        const marked = await client.query({
          name: 'livevote_journal_mark_abandoned',
          text: `INSERT INTO vote_batches (batch_id, row_count, conflict_count, node_id, outcome)
                 VALUES ($1, 0, 0, $2, 'abandoned') ON CONFLICT (batch_id) DO NOTHING`,
          values: [batchId, this.nodeId],
        });
        if (marked.rowCount === 1) return false;
        const existing = await client.query<{ outcome: string; shards_to_drain: number }>({
          name: 'livevote_journal_batch_state',
          text: 'SELECT outcome, shards_to_drain FROM vote_batches WHERE batch_id = $1',
          values: [batchId],
        });
        const row = existing.rows[0];
        if (row === undefined) throw new Error(`batch ${batchId}: no row after a conflicting insert`);
        // Claimed by the drainer with parts still queued (their owners store them): not stored
        // yet, and never to be abandoned: the batch stays in doubt until every part is stored.
        if (row.outcome === 'drained' && row.shards_to_drain > 0) throw new Error(`batch ${batchId}: drained in part, ${row.shards_to_drain} shards to go`);
        return row.outcome !== 'abandoned';
      } catch (error) {
        discard(error as Error);
        throw error;
      }
    });
  }

  /**
   * The drainer's write, one transaction: claim the batch id (so it waits for, or beats, a commit
   * of the same id still running, and no check can mark it abandoned afterwards), then, for each
   * shard of the batch that `held` names and whose part is not stored yet, lock its lease row FOR
   * SHARE and compare owner and epoch with ours, as a commit does; the parts that pass are stored
   * (ON CONFLICT DO NOTHING, audit digests kept for the sealer, a spill_drained_shards row each), the others are left
   * for their owner. The rows keep the epoch they were accepted under.
   */
  async storeSpilled(spilled: SpilledBatch, held: readonly HeldShard[]): Promise<SpilledStoreResult> {
    const batch: JournalBatch = { batchId: spilled.batchId, rows: spilled.rows };
    let fenceKeys: FenceKey[];
    try {
      fenceKeys = this.validate(batch);
    } catch (error) {
      return { kind: 'invalid', message: `batch ${batch.batchId}: ${(error as Error).message}` };
    }
    const heldEpochs = new Map(held.map((h) => [shardKeyString({ electionId: h.electionId.toLowerCase(), shard: h.shard }), h.epoch]));
    const candidates = fenceKeys.filter((k) => heldEpochs.has(lowerKey(k.key)));
    try {
      return await withClientTimeout(this.pool, this.drainTimeoutMs, async (client, discard) => {
        try {
          await client.query('BEGIN');
          const claimed = await client.query({
            name: 'livevote_drain_claim',
            text: `INSERT INTO vote_batches (batch_id, row_count, conflict_count, node_id, outcome, shards_to_drain)
                   VALUES ($1, 0, 0, $2, 'drained', $3) ON CONFLICT (batch_id) DO NOTHING`,
            values: [batch.batchId, this.nodeId, fenceKeys.length],
          });
          if (claimed.rowCount !== 1) {
            const existing = await client.query<{ outcome: string; shards_to_drain: number }>({
              name: 'livevote_drain_outcome', text: 'SELECT outcome, shards_to_drain FROM vote_batches WHERE batch_id = $1', values: [batch.batchId],
            });
            const row = existing.rows[0];
            if (row?.outcome === 'abandoned' || row?.outcome === 'committed' || row?.shards_to_drain === 0) {
              await client.query('COMMIT');
              return row.outcome === 'abandoned' ? { kind: 'abandoned' } : { kind: 'already_stored' };
            }
          }
          // The fence (our leases, locked until COMMIT, so a takeover waits for this transaction)
          // and the parts stored before, in one round trip.
          const fence = await client.query<{ leases: { election_id: string; shard: number; epoch: number; owner_node: string }[]; drained: { election_id: string; shard: number }[] }>({
            name: 'livevote_drain_fence',
            text: `WITH locked AS MATERIALIZED (
                     SELECT l.election_id, l.shard, l.epoch, l.owner_node FROM shard_leases l
                      WHERE (l.election_id, l.shard) IN (SELECT * FROM unnest($1::uuid[], $2::integer[]))
                      ORDER BY l.election_id, l.shard FOR SHARE)
                   SELECT coalesce((SELECT json_agg(json_build_object('election_id', election_id, 'shard', shard, 'epoch', epoch, 'owner_node', owner_node)) FROM locked), '[]') AS leases,
                          coalesce((SELECT json_agg(json_build_object('election_id', election_id, 'shard', shard)) FROM spill_drained_shards WHERE batch_id = $3), '[]') AS drained`,
            values: [candidates.map((k) => k.key.electionId), candidates.map((k) => k.key.shard), batch.batchId],
          });
          const leases = fence.rows[0]?.leases ?? [];
          const drainedKeys = new Set((fence.rows[0]?.drained ?? []).map((r) => shardKeyString({ electionId: r.election_id, shard: r.shard })));
          const leaseByKey = new Map(leases.map((l) => [shardKeyString({ electionId: l.election_id, shard: l.shard }), l]));
          const storing: FenceKey[] = [];
          const fenced: ShardKey[] = [];
          for (const candidate of candidates) {
            const key = lowerKey(candidate.key);
            if (drainedKeys.has(key)) continue;
            const lease = leaseByKey.get(key);
            if (lease !== undefined && Number(lease.epoch) === heldEpochs.get(key) && lease.owner_node === this.nodeId) storing.push(candidate);
            else fenced.push(candidate.key);
          }
          const shardsLeftBefore = fenceKeys.filter((k) => !drainedKeys.has(lowerKey(k.key))).length;
          if (storing.length === 0) {
            await client.query('COMMIT');
            return { kind: 'stored', storedRows: 0, conflicts: [], storedShards: [], fencedShards: fenced, shardsLeft: shardsLeftBefore };
          }
          const storingKeys = new Set(storing.map((k) => lowerKey(k.key)));
          const rows = batch.rows.filter((r) => storingKeys.has(lowerKey(r)));
          const rowsByKey = new Map<string, number>();
          for (const r of rows) rowsByKey.set(lowerKey(r), (rowsByKey.get(lowerKey(r)) ?? 0) + 1);
          const answer = await client.query<{ stored_rows: number; conflict_positions: number[] }>({
            name: 'livevote_drain_store',
            text: drainStoreText,
            values: [
              ...drainColumns({ batchId: batch.batchId, rows }),
              storing.map((k) => k.key.electionId),
              storing.map((k) => k.key.shard),
              storing.map((k) => heldEpochs.get(lowerKey(k.key))),
              storing.map(() => this.nodeId),
              storing.map((k) => rowsByKey.get(lowerKey(k.key)) ?? 0),
            ],
          });
          const result = answer.rows[0];
          if (result === undefined) throw new Error('the drain statement returned no row');
          await client.query('COMMIT');
          const conflicts: JournalConflict[] = result.conflict_positions.map((p) => {
            const row = rows[p - 1]!;
            return { electionId: row.electionId, voterNumber: row.voterNumber };
          });
          return {
            kind: 'stored', storedRows: result.stored_rows, conflicts, storedShards: storing.map((k) => k.key), fencedShards: fenced,
            shardsLeft: shardsLeftBefore - storing.length,
          };
        } catch (error) {
          discard(error as Error);
          throw error;
        }
      });
    } catch (error) {
      // Data the table refuses (SQLSTATE classes 22, 23) will be refused every time: poison.
      const code = String((error as { code?: unknown }).code ?? '');
      if (code.startsWith('22') || (code.startsWith('23') && code !== '23505')) {
        return { kind: 'invalid', message: `batch ${batch.batchId}: ${(error as Error).message}` };
      }
      throw error;
    }
  }

  /**
   * Checks every row before any I/O (what makes the literals safe); returns the distinct
   * (election, shard) pairs to fence. A voter named twice is refused here: Postgres would store
   * the first and silently skip the second, and the batch would already be committed.
   */
  private validate(batch: JournalBatch): FenceKey[] {
    if (!(Number.isSafeInteger(batch.batchId) && batch.batchId >= 1)) throw new Error(`batchId must be a positive safe integer, got ${batch.batchId}`);
    if (batch.rows.length > this.batchRowsMax) throw new Error(`${batch.rows.length} rows, more than batchRowsMax ${this.batchRowsMax}`);
    // Per election (by its lower-case id): its voters so far, and its fence keys indexed by shard
    // number, so a row costs no key string and no regex once its election has been seen.
    const elections = new Map<string, { voters: Set<number>; keysByShard: (FenceKey | undefined)[] }>();
    const keys: FenceKey[] = [];
    let lastElectionId = '';
    let election: { voters: Set<number>; keysByShard: (FenceKey | undefined)[] } | undefined;
    for (const row of batch.rows) {
      if (row.electionId !== lastElectionId) {
        if (!isUuidText(row.electionId)) throw new Error(`electionId is not a uuid: ${JSON.stringify(row.electionId)}`);
        lastElectionId = row.electionId;
        const lower = row.electionId.toLowerCase();
        election = elections.get(lower);
        if (election === undefined) elections.set(lower, (election = { voters: new Set(), keysByShard: [] }));
      }
      validateRow(row);
      const { voters, keysByShard } = election!;
      if (voters.has(row.voterNumber)) throw new Error(`voter ${row.voterNumber} of election ${row.electionId} is in the batch more than once`);
      voters.add(row.voterNumber);
      const existing = keysByShard[row.shard];
      if (existing === undefined) {
        const key: FenceKey = { key: { electionId: row.electionId, shard: row.shard }, epoch: row.epoch, mixedEpochs: false };
        keysByShard[row.shard] = key;
        keys.push(key);
      } else if (existing.epoch !== row.epoch) {
        existing.mixedEpochs = true;
      }
    }
    return keys;
  }

  /** The one message of a commit; every value in it was validated by validate(). */
  /** `withParts`: the audit parts' digests go along (the plain statement; see prepareText). */
  private commitText(batch: JournalBatch, fenceKeys: readonly FenceKey[], statementName: string, withParts: boolean): string {
    const rows = batch.rows;
    const n = rows.length;
    const electionIds = new Array<string>(n);
    const voterNumbers = new Array<number>(n);
    const candidates = new Array<number>(n);
    const shards = new Array<number>(n);
    const epochs = new Array<number>(n);
    const voteIds = new Array<string>(n);
    const acceptedAtMs = new Array<number>(n);
    for (let i = 0; i < n; i++) {
      const r = rows[i]!;
      electionIds[i] = r.electionId;
      voterNumbers[i] = r.voterNumber;
      candidates[i] = r.candidateIndex;
      shards[i] = r.shard;
      epochs[i] = r.epoch;
      voteIds[i] = r.voteId;
      acceptedAtMs[i] = r.acceptedAtMs;
    }
    const args = [
      String(batch.batchId),
      this.nodeIdLiteral,
      arrayLiteral(electionIds),
      arrayLiteral(voterNumbers),
      arrayLiteral(candidates),
      arrayLiteral(shards),
      arrayLiteral(epochs),
      arrayLiteral(voteIds),
      arrayLiteral(acceptedAtMs),
      arrayLiteral(fenceKeys.map((k) => k.key.electionId)),
      arrayLiteral(fenceKeys.map((k) => k.key.shard)),
      arrayLiteral(fenceKeys.map((k) => (k.mixedEpochs ? 0 : k.epoch))),
    ];
    if (withParts) {
      // No rows, no parts: NULL, as the SQL aggregate gives (the sealer has nothing to seal).
      if (n === 0) {
        args.push('NULL', 'NULL', 'NULL', 'NULL', 'NULL');
      } else {
        const parts = auditPartsOfRows(rows);
        args.push(
          arrayLiteral(parts.map((p) => p.electionId)),
          arrayLiteral(parts.map((p) => p.shard)),
          arrayLiteral(parts.map((p) => p.epoch)),
          arrayLiteral(parts.map((p) => p.rowCount)),
          // An array element's backslash is escaped by doubling: each element reads \x<hex>.
          arrayLiteral(parts.map((p) => `"\\\\x${p.digest.toString('hex')}"`)),
        );
      }
    }
    return `${this.settingsText}; EXECUTE ${statementName}(${args.join(', ')})`;
  }
}

// $1 batch id, $2..$8 the rows as columns, $9..$13 the parts stored (election, shard, epoch, node,
// rows): recorded in spill_drained_shards in the same statement. Conflicts are voters stored with another vote id:
// a row stored before with the same vote id (the original commit of this very batch) is no conflict.
const drainStoreText = `
  WITH input AS (
         SELECT * FROM unnest($2::uuid[], $3::bigint[], $4::smallint[], $5::integer[], $6::bigint[], $7::uuid[], $8::bigint[])
                  WITH ORDINALITY AS i(election_id, voter_number, candidate_index, shard, epoch, vote_id, accepted_at_ms, position)),
       stored AS (
         INSERT INTO votes (election_id, voter_number, candidate_index, shard, epoch, batch_id, vote_id, accepted_at)
         SELECT election_id, voter_number, candidate_index, shard, epoch, $1, vote_id, to_timestamp(accepted_at_ms::float8 / 1000)
           FROM input ORDER BY election_id, voter_number
         ON CONFLICT (election_id, voter_number) DO NOTHING
         RETURNING election_id, shard, epoch, voter_number, candidate_index, vote_id, accepted_at),
       ${auditPartsCte('stored')},
       parts AS (
         INSERT INTO spill_drained_shards (batch_id, election_id, shard, epoch, node_id, row_count)
         SELECT $1, * FROM unnest($9::uuid[], $10::integer[], $11::bigint[], $12::text[], $13::integer[])
         RETURNING 1),
       counted AS (
         UPDATE vote_batches SET row_count = row_count + (SELECT count(*) FROM stored),
                                 ${auditPendingAppend},
                                 conflict_count = conflict_count + cardinality($3::bigint[]) - (SELECT count(*) FROM stored),
                                 shards_to_drain = shards_to_drain - (SELECT count(*) FROM parts)
          WHERE batch_id = $1 RETURNING 1)
  SELECT (SELECT count(*) FROM stored)::integer AS stored_rows,
         (SELECT coalesce(array_agg(i.position ORDER BY i.position), '{}') FROM input i JOIN votes v
             ON v.election_id = i.election_id AND v.voter_number = i.voter_number
          WHERE v.vote_id <> i.vote_id) AS conflict_positions,
         (SELECT count(*) FROM counted) AS counted`;

function drainColumns(batch: JournalBatch): unknown[] {
  const rows = batch.rows;
  return [
    batch.batchId,
    rows.map((r) => r.electionId),
    rows.map((r) => r.voterNumber),
    rows.map((r) => r.candidateIndex),
    rows.map((r) => r.shard),
    rows.map((r) => r.epoch),
    rows.map((r) => r.voteId),
    rows.map((r) => r.acceptedAtMs),
  ];
}

export function createPgJournal(options: PgJournalOptions): PgJournal {
  return new PgJournal(options);
}

async function prepareCommitStatement(client: PoolClient, text: string): Promise<void> {
  try {
    await client.query(text);
  } catch (error) {
    // Prepared by another PgJournal on the same pool (each knows only its own connections): same text.
    if ((error as { code?: string }).code !== duplicatePreparedStatement) throw error;
  }
}

function isVoterAlreadyStored(error: unknown): boolean {
  const { code, constraint } = error as { code?: unknown; constraint?: unknown };
  return code === uniqueViolation && constraint === votesPrimaryKey;
}

function validateRow(row: JournalRow): void {
  if (!(Number.isSafeInteger(row.voterNumber) && row.voterNumber >= 0)) throw new Error(`voterNumber must be a non-negative safe integer, got ${row.voterNumber}`);
  if (!(Number.isInteger(row.candidateIndex) && row.candidateIndex >= 0 && row.candidateIndex <= 63)) throw new Error(`candidateIndex must be 0..63, got ${row.candidateIndex}`);
  if (!(Number.isInteger(row.shard) && row.shard >= 0 && row.shard <= 1023)) throw new Error(`shard must be 0..1023, got ${row.shard}`);
  if (!(Number.isSafeInteger(row.epoch) && row.epoch >= 1)) throw new Error(`epoch must be a positive safe integer, got ${row.epoch}`);
  if (!(Number.isSafeInteger(row.acceptedAtMs) && row.acceptedAtMs >= 0)) throw new Error(`acceptedAtMs must be a non-negative safe integer, got ${row.acceptedAtMs}`);
  if (!isUuidText(row.voteId)) throw new Error(`voteId is not a uuid: ${JSON.stringify(row.voteId)}`);
}

/** The (election, shard) key with the election id in lower case, as Postgres returns uuids. */
function lowerKey(key: ShardKey): string {
  return shardKeyString({ electionId: key.electionId.toLowerCase(), shard: key.shard });
}

/** '{a,b,c}': only for validated uuids and integers, which need no quoting inside an array. */
function arrayLiteral(values: readonly (string | number)[]): string {
  return `'{${values.join(',')}}'`;
}

/** A standard SQL string literal; a backslash makes it an E'' literal so it cannot escape. */
function sqlTextLiteral(value: string): string {
  const quoted = value.replace(/'/g, "''");
  return value.includes('\\') ? ` E'${quoted.replace(/\\/g, '\\\\')}'` : `'${quoted}'`;
}
