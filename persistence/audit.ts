// The audit trail: one hash chain per (election, shard) (migrations 005 and 014 have the tables
// and the triggers that make them append-only), sealed after the commits by auditSealer.ts, and
// checked by `livevote audit verify`.
//
// A commit keeps, in the same statement as its votes, the rows digest of each (election, shard,
// epoch) part it stored in its own vote_batches row (pending). The sealer, about once a second,
// appends ONE record per (election, shard, epoch) for all the pending batches it takes, and clears
// them. A sealed (v2) record says: batches b1 < b2 < … stored these N rows in this shard under lease
// epoch E, and it follows the record whose hash is prev_hash. The formats, byte for byte:
//
//   row line       `${voter_number}|${candidate_index}|${vote_id}|${accepted_at_ms}\n`
//   batch digest   SHA-256 of the row lines of one batch's stored rows of that shard, by voter_number
//   rows_digest    SHA-256(batch digest of b1 ‖ of b2 ‖ …)
//   hash           SHA-256(prev_hash ‖ `livevote-audit-v2|${election_id}|${shard}|${seq}|${b1},${b2},…|
//                  ${epoch}|${row_count}|${recorded_at_us}` ‖ rows_digest); prev_hash of seq 1 is 32 zero bytes
//
// Records written before migration 014 (batch_ids NULL) are v1: one batch each, rows_digest its
// batch digest, and `livevote-audit-v1|…|${seq}|${batch_id}|…` in the hash. A chain may hold both.
//
// The commit's plain statement (it stores every row of its batch or none) gets its parts' digests
// from the journal, computed here (auditPartsOfRows); the statement that skips voters already
// stored computes them in SQL from the rows it did store (auditPartsCte). The sealer hashes the
// records here. The verifier recomputes every digest from the stored votes, in TypeScript: it
// trusts no SQL function that lives in the database it is checking. Votes of batches not sealed
// yet are checked against the digests their commits kept and reported as awaiting their seal.
//
// Why after the commit: appended inside it, every commit of a shard waited on the shard's chain
// head for the commit before it, and paid a record per shard and commit (bench/README.md, "Tenth
// look"); sealed, a chain gets a record per shard and second whatever the commit rate.
import { createHash, hash } from 'node:crypto';
import type { Pool, PoolClient } from './db.ts';
import { uuidPattern, withClient } from './db.ts';

export const auditGenesisHash: Buffer = Buffer.alloc(32);
const auditHashVersion = 'livevote-audit-v1';
const auditSealedHashVersion = 'livevote-audit-v2';
/** Votes fetched per round trip while verifying. */
const verifyFetchRowsDefault = 20_000;

// ---------------------------------------------------------------------------------------------
// The writer side, part one: the commit keeps each part's digest in its batch row (the sealer,
// persistence/auditSealer.ts, appends them to the chains).

/** The SQL text of one row line; must produce exactly what `auditRowLine` does. */
const rowLineSql = (t: string) =>
  `${t}.voter_number::text || '|' || ${t}.candidate_index::text || '|' || ${t}.vote_id::text || '|' || ` +
  `((extract(epoch FROM ${t}.accepted_at) * 1000)::bigint)::text || E'\\n'`;

/**
 * A CTE `audit_parts` with one row per (election, shard, epoch) of `storedCte`'s rows: their
 * count and v1 rows digest. `storedCte` must return election_id, shard, epoch, voter_number,
 * candidate_index, vote_id, accepted_at of the rows actually stored (INSERT … RETURNING).
 */
export function auditPartsCte(storedCte: string): string {
  return `audit_parts AS (
           SELECT s.election_id, s.shard, s.epoch, count(*)::integer AS row_count,
                  sha256(convert_to(string_agg(${rowLineSql('s')}, '' ORDER BY s.voter_number), 'UTF8')) AS rows_digest
             FROM ${storedCte} s
            GROUP BY s.election_id, s.shard, s.epoch)`;
}

/** The vote_batches columns that hold a batch's pending parts, in the order of `auditPartsArrays`. */
export const auditPendingColumns = 'audit_election_ids, audit_shards, audit_epochs, audit_row_counts, audit_digests';

const partColumns = ['election_id', 'shard', 'epoch', 'row_count', 'rows_digest'] as const;
const partArray = (c: string) => `(SELECT array_agg(${c} ORDER BY election_id, shard, epoch) FROM audit_parts)`;

/** `audit_parts` as five arrays in one order (NULL each when no row was stored: nothing to seal). */
export const auditPartsArrays = partColumns.map(partArray).join(', ');

/**
 * SET assignments that add `audit_parts` to a vote_batches row's pending parts (the drainer
 * stores a batch part by part; the sealer may have sealed and cleared the earlier ones).
 */
export const auditPendingAppend = auditPendingColumns.split(', ')
  .map((column, i) => `${column} = CASE WHEN EXISTS (SELECT 1 FROM audit_parts) THEN coalesce(${column}, '{}') || ${partArray(partColumns[i]!)} ELSE ${column} END`)
  .join(',\n                                 ');

// ---------------------------------------------------------------------------------------------
// The formats, in TypeScript: the sealer hashes its records with these, and the verifier
// recomputes every digest and hash with them (never with SQL from the database it checks).

export interface AuditRowFields {
  readonly voterNumber: number;
  readonly candidateIndex: number;
  readonly voteId: string;
  readonly acceptedAtMs: number;
}

export function auditRowLine(row: AuditRowFields): string {
  return `${row.voterNumber}|${row.candidateIndex}|${row.voteId.toLowerCase()}|${row.acceptedAtMs}\n`;
}

/** One (election, shard, epoch) part of a batch, as the commit keeps it for the sealer. */
export interface AuditPart {
  /** Lower case, as Postgres spells a uuid. */
  readonly electionId: string;
  readonly shard: number;
  readonly epoch: number;
  readonly rowCount: number;
  /** The part's v1 rows digest: what `auditPartsCte` computes in SQL from the stored rows. */
  readonly digest: Buffer;
}

/**
 * The parts of a batch whose every row is stored (the journal's plain commit statement: it stores
 * all of them or fails), ordered by (election, shard, epoch) as `auditPartsArrays` orders them.
 */
export function auditPartsOfRows(rows: readonly (AuditRowFields & { readonly electionId: string; readonly shard: number; readonly epoch: number })[]): AuditPart[] {
  // Per election (as spelled: a batch names an election one way, so one lower-casing each), per shard.
  const byElection = new Map<string, { electionId: string; byShard: { epoch: number; rows: AuditRowFields[] }[][] }>();
  let lastSpelling = '';
  let election: { electionId: string; byShard: { epoch: number; rows: AuditRowFields[] }[][] } | undefined;
  for (const row of rows) {
    if (row.electionId !== lastSpelling) {
      lastSpelling = row.electionId;
      const electionId = row.electionId.toLowerCase();
      election = byElection.get(electionId);
      if (election === undefined) byElection.set(electionId, (election = { electionId, byShard: [] }));
    }
    const ofShard = (election!.byShard[row.shard] ??= []);
    let part = ofShard.find((p) => p.epoch === row.epoch);
    if (part === undefined) ofShard.push((part = { epoch: row.epoch, rows: [] }));
    part.rows.push(row);
  }
  const parts: AuditPart[] = [];
  for (const electionId of [...byElection.keys()].sort()) {
    const { byShard } = byElection.get(electionId)!;
    for (let shard = 0; shard < byShard.length; shard++) {
      const ofShard = byShard[shard];
      if (ofShard === undefined) continue;
      for (const part of ofShard.sort((a, b) => a.epoch - b.epoch)) {
        parts.push({ electionId, shard, epoch: part.epoch, rowCount: part.rows.length, digest: auditRowsDigest(part.rows) });
      }
    }
  }
  return parts;
}

/**
 * rows_digest of rows given in any order (sorted here by voter number). One string and one hash
 * call: a hash update per row costs more than the line itself.
 */
export function auditRowsDigest(rows: readonly AuditRowFields[]): Buffer {
  let lines = '';
  for (const row of [...rows].sort((a, b) => a.voterNumber - b.voterNumber)) lines += auditRowLine(row);
  return hash('sha256', lines, 'buffer') as Buffer;
}

export interface AuditRecordFields {
  readonly electionId: string;
  readonly shard: number;
  readonly seq: number;
  readonly batchId: number;
  readonly epoch: number;
  readonly rowCount: number;
  readonly rowsDigest: Buffer;
  /** recorded_at in microseconds since the epoch (exact: the hash covers it). */
  readonly recordedAtUs: number;
  /** A sealed (v2) record: the batches it covers, ascending (batchId is the last). Absent: v1. */
  readonly batchIds?: readonly number[];
}

export function auditRecordHash(prevHash: Buffer, record: AuditRecordFields): Buffer {
  if (prevHash.length !== 32 || record.rowsDigest.length !== 32) throw new Error('prev_hash and rows_digest must be 32 bytes');
  const batches = record.batchIds === undefined ? [auditHashVersion, record.batchId] : [auditSealedHashVersion, record.batchIds.join(',')];
  const fields = [batches[0], record.electionId.toLowerCase(), record.shard, record.seq, batches[1], record.epoch, record.rowCount, record.recordedAtUs].join('|');
  return createHash('sha256').update(prevHash).update(fields, 'utf8').update(record.rowsDigest).digest();
}

/** A sealed (v2) record's rows_digest: SHA-256 over its batches' v1 digests, in batch order. */
export function auditSealedDigest(batchDigests: readonly Buffer[]): Buffer {
  const hash = createHash('sha256');
  for (const digest of batchDigests) hash.update(digest);
  return hash.digest();
}

// ---------------------------------------------------------------------------------------------
// Reading and verifying

export interface AuditRecord extends AuditRecordFields {
  readonly prevHash: Buffer;
  readonly hash: Buffer;
}

interface AuditRecordRow {
  seq: number;
  batch_id: number;
  /** bigint[] comes as strings; null for a v1 record. */
  batch_ids: string[] | null;
  epoch: number;
  row_count: number;
  rows_digest: Buffer;
  prev_hash: Buffer;
  hash: Buffer;
  recorded_at_us: number;
}

const recordColumns = `seq, batch_id, batch_ids, epoch, row_count, rows_digest, prev_hash, hash,
  (extract(epoch FROM recorded_at) * 1000000)::bigint AS recorded_at_us`;

/** What can be wrong with one link of a chain, in the order verify checks them. */
export type AuditBreak =
  /** Records are missing before this one (deleted from the chain). */
  | { readonly kind: 'missing_records'; readonly seq: number; readonly expectedSeq: number; readonly batchId: number }
  /** prev_hash is not the previous record's hash (a record was replaced or inserted). */
  | { readonly kind: 'bad_prev_link'; readonly seq: number; readonly batchId: number }
  /** The record's own fields do not hash to its hash (the record was edited). */
  | { readonly kind: 'record_altered'; readonly seq: number; readonly batchId: number }
  /** Fewer stored votes than the record says: votes were removed. */
  | { readonly kind: 'votes_removed'; readonly seq: number; readonly batchId: number; readonly epoch: number; readonly recordedRows: number; readonly storedRows: number }
  /** More stored votes under this batch than the record says: votes were added to it. */
  | { readonly kind: 'votes_added'; readonly seq: number; readonly batchId: number; readonly epoch: number; readonly recordedRows: number; readonly storedRows: number }
  /** As many votes as recorded, but not the same ones: votes were changed. */
  | { readonly kind: 'votes_changed'; readonly seq: number; readonly batchId: number; readonly epoch: number; readonly recordedRows: number; readonly storedRows: number }
  /** A second record for a batch this shard already has a record for. */
  | { readonly kind: 'batch_recorded_twice'; readonly seq: number; readonly batchId: number }
  /** A committed batch not sealed yet whose stored votes are not what its commit recorded (seq 0: no record yet). */
  | { readonly kind: 'pending_batch_mismatch'; readonly seq: 0; readonly batchId: number; readonly epoch: number; readonly recordedRows: number; readonly storedRows: number };

export interface UncoveredVotes {
  readonly batchId: number;
  readonly epoch: number;
  readonly rows: number;
}

export interface ShardAudit {
  readonly shard: number;
  readonly records: number;
  readonly votes: number;
  /**
   * Of `votes`, those of committed batches not sealed into the chain yet (the sealer appends them
   * within about a second of their commit); each was checked against the digest its commit kept.
   */
  readonly awaitingSealRows: number;
  /** The chain head as stored (null: no head row). */
  readonly head: { readonly seq: number; readonly hash: string } | null;
  /** The first broken link in chain order, if any. */
  readonly firstBreak: AuditBreak | undefined;
  /** Broken links in all (the first included). */
  readonly breaks: number;
  /** Stored votes that no record covers, by (batch, epoch); the first few only. */
  readonly uncovered: readonly UncoveredVotes[];
  readonly uncoveredRows: number;
  /** The head row disagrees with the last record (the chain's end was cut off, or grown around the head). */
  readonly headMismatch: boolean;
  readonly intact: boolean;
}

export interface ElectionAudit {
  readonly electionId: string;
  readonly shards: readonly ShardAudit[];
  readonly records: number;
  readonly votes: number;
  readonly awaitingSealRows: number;
  /** SHA-256 over every shard's head (shard|seq|hash): one value to publish after the show. */
  readonly fingerprint: string;
  readonly intact: boolean;
}

export interface AuditReport {
  readonly elections: readonly ElectionAudit[];
  readonly intact: boolean;
}

export interface VerifyAuditOptions {
  /** Only this election; all elections with votes, records or an elections row otherwise. */
  readonly electionId?: string;
  readonly fetchRowsMax?: number;
  /** Called as each shard is done (progress for the CLI). */
  readonly onShard?: (electionId: string, shard: ShardAudit) => void;
}

const uncoveredListedMax = 5;

/**
 * Recomputes every chain against the stored votes. Each election is read in one REPEATABLE READ
 * READ ONLY transaction, so a live service committing meanwhile does not make it see half a batch.
 */
export async function verifyAudit(pool: Pool, options: VerifyAuditOptions = {}): Promise<AuditReport> {
  const fetchRowsMax = options.fetchRowsMax ?? verifyFetchRowsDefault;
  if (!(Number.isInteger(fetchRowsMax) && fetchRowsMax >= 1)) throw new Error(`fetchRowsMax must be a positive integer, got ${fetchRowsMax}`);
  if (options.electionId !== undefined && !uuidPattern.test(options.electionId)) throw new Error(`not an election id (uuid): ${options.electionId}`);
  const electionIds = options.electionId !== undefined ? [options.electionId.toLowerCase()] : await listAuditedElections(pool);
  const elections: ElectionAudit[] = [];
  for (const electionId of electionIds) {
    elections.push(await withClient(pool, (client) => verifyElection(client, electionId, fetchRowsMax, options.onShard)));
  }
  return { elections, intact: elections.every((e) => e.intact) };
}

/** Elections that have votes, chain records or an elections row (loose index scans, not full scans). */
export async function listAuditedElections(pool: Pool): Promise<string[]> {
  const result = await pool.query<{ election_id: string }>(
    `WITH RECURSIVE v AS (
       (SELECT election_id FROM votes ORDER BY election_id LIMIT 1)
       UNION ALL
       SELECT (SELECT n.election_id FROM votes n WHERE n.election_id > v.election_id ORDER BY n.election_id LIMIT 1)
         FROM v WHERE v.election_id IS NOT NULL
     ), r AS (
       (SELECT election_id FROM audit_records ORDER BY election_id LIMIT 1)
       UNION ALL
       SELECT (SELECT n.election_id FROM audit_records n WHERE n.election_id > r.election_id ORDER BY n.election_id LIMIT 1)
         FROM r WHERE r.election_id IS NOT NULL
     )
     SELECT election_id::text FROM v WHERE election_id IS NOT NULL
     UNION SELECT election_id::text FROM r WHERE election_id IS NOT NULL
     UNION SELECT election_id::text FROM audit_chain_heads
     UNION SELECT election_id::text FROM elections
     ORDER BY 1`,
  );
  return result.rows.map((r) => r.election_id);
}

async function verifyElection(
  client: PoolClient,
  electionId: string,
  fetchRowsMax: number,
  onShard: VerifyAuditOptions['onShard'],
): Promise<ElectionAudit> {
  await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    const shardRows = await client.query<{ shard: number }>(
      `WITH RECURSIVE v AS (
         (SELECT shard FROM votes WHERE election_id = $1 ORDER BY shard LIMIT 1)
         UNION ALL
         SELECT (SELECT n.shard FROM votes n WHERE n.election_id = $1 AND n.shard > v.shard ORDER BY n.shard LIMIT 1)
           FROM v WHERE v.shard IS NOT NULL
       ), r AS (
         (SELECT shard FROM audit_records WHERE election_id = $1 ORDER BY shard LIMIT 1)
         UNION ALL
         SELECT (SELECT n.shard FROM audit_records n WHERE n.election_id = $1 AND n.shard > r.shard ORDER BY n.shard LIMIT 1)
           FROM r WHERE r.shard IS NOT NULL
       )
       SELECT shard FROM v WHERE shard IS NOT NULL
       UNION SELECT shard FROM r WHERE shard IS NOT NULL
       UNION SELECT shard FROM audit_chain_heads WHERE election_id = $1
       ORDER BY 1`,
      [electionId],
    );
    const shards: ShardAudit[] = [];
    for (const { shard } of shardRows.rows) {
      const audit = await verifyShard(client, electionId, shard, fetchRowsMax);
      shards.push(audit);
      onShard?.(electionId, audit);
    }
    await client.query('COMMIT');
    const heads = shards.flatMap((s) => (s.head ? [{ shard: s.shard, seq: s.head.seq, hash: s.head.hash }] : []));
    return {
      electionId,
      shards,
      records: shards.reduce((n, s) => n + s.records, 0),
      votes: shards.reduce((n, s) => n + s.votes, 0),
      awaitingSealRows: shards.reduce((n, s) => n + s.awaitingSealRows, 0),
      fingerprint: auditFingerprint(heads),
      intact: shards.every((s) => s.intact),
    };
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

interface VoteGroup {
  readonly batchId: number;
  readonly epoch: number;
  rows: number;
  digest: Buffer | undefined;
  claimed: boolean;
}

async function verifyShard(client: PoolClient, electionId: string, shard: number, fetchRowsMax: number): Promise<ShardAudit> {
  const groups = await digestStoredVotes(client, electionId, shard, fetchRowsMax);
  let votes = 0;
  for (const g of groups.values()) votes += g.rows;

  const recordRows = await client.query<AuditRecordRow>(
    `SELECT ${recordColumns} FROM audit_records WHERE election_id = $1 AND shard = $2 ORDER BY seq`,
    [electionId, shard],
  );
  const headRows = await client.query<{ seq: number; hash: Buffer }>(
    'SELECT seq, hash FROM audit_chain_heads WHERE election_id = $1 AND shard = $2',
    [electionId, shard],
  );

  let firstBreak: AuditBreak | undefined;
  let breaks = 0;
  const broke = (found: AuditBreak) => {
    breaks++;
    firstBreak ??= found;
  };
  let prevHash = auditGenesisHash;
  let expectedSeq = 1;
  for (const row of recordRows.rows) {
    const record: AuditRecord = {
      electionId, shard, seq: row.seq, batchId: row.batch_id, epoch: row.epoch, rowCount: row.row_count,
      rowsDigest: row.rows_digest, prevHash: row.prev_hash, hash: row.hash, recordedAtUs: row.recorded_at_us,
      ...(row.batch_ids === null ? {} : { batchIds: row.batch_ids.map(Number) }),
    };
    const link = checkLink(record, prevHash, expectedSeq);
    const found = link ?? claimVotes(record, groups);
    if (found) broke(found);
    // Link the next record to this one's stored hash: one edited record is one break, not a cascade.
    prevHash = record.hash;
    expectedSeq = record.seq + 1;
  }

  // Batches committed but not sealed yet: their parts' digests, kept by their commits.
  const pendingRows = await client.query<{ batch_id: number; epoch: number; row_count: number; rows_digest: Buffer }>(
    `SELECT b.batch_id, p.epoch, p.row_count, p.rows_digest
       FROM vote_batches b,
            unnest(b.audit_election_ids, b.audit_shards, b.audit_epochs, b.audit_row_counts, b.audit_digests)
              AS p(election_id, shard, epoch, row_count, rows_digest)
      WHERE b.audit_shards IS NOT NULL AND p.election_id = $1 AND p.shard = $2
      ORDER BY b.batch_id`,
    [electionId, shard],
  );
  let awaitingSealRows = 0;
  for (const part of pendingRows.rows) {
    const group = groups.get(groupKey(Number(part.batch_id), Number(part.epoch)));
    const storedRows = group?.rows ?? 0;
    if (group !== undefined && !group.claimed && storedRows === part.row_count && group.digest?.equals(part.rows_digest)) {
      group.claimed = true;
      awaitingSealRows += storedRows;
    } else {
      broke({ kind: 'pending_batch_mismatch', seq: 0, batchId: Number(part.batch_id), epoch: Number(part.epoch), recordedRows: part.row_count, storedRows });
    }
  }

  const uncovered: UncoveredVotes[] = [];
  let uncoveredRows = 0;
  for (const g of groups.values()) {
    if (g.claimed) continue;
    uncoveredRows += g.rows;
    if (uncovered.length < uncoveredListedMax) uncovered.push({ batchId: g.batchId, epoch: g.epoch, rows: g.rows });
  }

  const last = recordRows.rows[recordRows.rows.length - 1];
  const headRow = headRows.rows[0];
  const head = headRow ? { seq: headRow.seq, hash: headRow.hash.toString('hex') } : null;
  const headMismatch = last === undefined
    ? headRow !== undefined
    : headRow === undefined || headRow.seq !== last.seq || !headRow.hash.equals(last.hash);

  return {
    shard,
    records: recordRows.rows.length,
    votes,
    awaitingSealRows,
    head,
    firstBreak,
    breaks,
    uncovered,
    uncoveredRows,
    headMismatch,
    intact: breaks === 0 && uncoveredRows === 0 && !headMismatch,
  };
}

function checkLink(record: AuditRecord, prevHash: Buffer, expectedSeq: number): AuditBreak | undefined {
  if (record.seq !== expectedSeq) return { kind: 'missing_records', seq: record.seq, expectedSeq, batchId: record.batchId };
  if (!record.prevHash.equals(prevHash)) return { kind: 'bad_prev_link', seq: record.seq, batchId: record.batchId };
  if (!auditRecordHash(record.prevHash, record).equals(record.hash)) return { kind: 'record_altered', seq: record.seq, batchId: record.batchId };
  return undefined;
}

/**
 * Claims the stored vote groups a record covers (one batch for v1, its batch_ids for a sealed
 * record) and checks them against it.
 */
function claimVotes(record: AuditRecord, groups: Map<string, VoteGroup>): AuditBreak | undefined {
  const batchIds = record.batchIds ?? [record.batchId];
  let storedRows = 0;
  const digests: Buffer[] = [];
  let twice: number | undefined;
  for (const batchId of batchIds) {
    const group = groups.get(groupKey(batchId, record.epoch));
    if (group === undefined) continue;
    if (group.claimed) twice ??= batchId;
    group.claimed = true;
    storedRows += group.rows;
    digests.push(group.digest!);
  }
  if (twice !== undefined) return { kind: 'batch_recorded_twice', seq: record.seq, batchId: twice };
  const common = { seq: record.seq, batchId: record.batchId, epoch: record.epoch, recordedRows: record.rowCount, storedRows };
  if (storedRows < record.rowCount) return { kind: 'votes_removed', ...common };
  if (storedRows > record.rowCount) return { kind: 'votes_added', ...common };
  const digest = record.batchIds === undefined ? digests[0] : digests.length === batchIds.length ? auditSealedDigest(digests) : undefined;
  if (!digest?.equals(record.rowsDigest)) return { kind: 'votes_changed', ...common };
  return undefined;
}

function groupKey(batchId: number, epoch: number): string {
  return `${batchId}/${epoch}`;
}

/**
 * Streams the shard's stored votes in (batch, epoch, voter) order through a cursor and hashes
 * each (batch, epoch) group: memory holds one fetch and one digest per group, not the votes.
 */
async function digestStoredVotes(client: PoolClient, electionId: string, shard: number, fetchRowsMax: number): Promise<Map<string, VoteGroup>> {
  // DECLARE takes no bind parameters here; both values were validated (uuid, integer).
  if (!uuidPattern.test(electionId) || !Number.isInteger(shard)) throw new Error('invalid election or shard');
  await client.query(
    `DECLARE livevote_audit_votes NO SCROLL CURSOR FOR
       SELECT batch_id, epoch, voter_number, candidate_index, vote_id::text,
              (extract(epoch FROM accepted_at) * 1000)::bigint
         FROM votes WHERE election_id = '${electionId}' AND shard = ${shard}
        ORDER BY batch_id, epoch, voter_number`,
  );
  const groups = new Map<string, VoteGroup>();
  let current: VoteGroup | undefined;
  let hash = createHash('sha256');
  let pending = '';
  const finish = () => {
    if (!current) return;
    hash.update(pending);
    current.digest = hash.digest();
  };
  try {
    for (;;) {
      const page = await client.query<[number, number, number, number, string, number]>({
        text: `FETCH ${fetchRowsMax} FROM livevote_audit_votes`,
        rowMode: 'array',
      });
      for (const [batchId, epoch, voterNumber, candidateIndex, voteId, acceptedAtMs] of page.rows) {
        if (!current || current.batchId !== batchId || current.epoch !== epoch) {
          finish();
          current = { batchId, epoch, rows: 0, digest: undefined, claimed: false };
          groups.set(groupKey(batchId, epoch), current);
          hash = createHash('sha256');
          pending = '';
        }
        current.rows++;
        pending += auditRowLine({ voterNumber, candidateIndex, voteId, acceptedAtMs });
        if (pending.length >= 64 * 1024) {
          hash.update(pending);
          pending = '';
        }
      }
      if (page.rows.length < fetchRowsMax) break;
    }
    finish();
  } finally {
    await client.query('CLOSE livevote_audit_votes');
  }
  return groups;
}

// ---------------------------------------------------------------------------------------------
// The chain heads, for publishing

export interface AuditHead {
  readonly electionId: string;
  readonly shard: number;
  readonly seq: number;
  readonly hash: string;
  readonly recordedAt: Date;
}

/**
 * One value per election that commits to every chain: SHA-256 over `|shard:seq:hash` of each
 * head, by shard. Published after the show, it makes a later rewrite of any chain visible.
 */
export function auditFingerprint(heads: readonly { readonly shard: number; readonly seq: number; readonly hash: string }[]): string {
  const hash = createHash('sha256').update('livevote-audit-fingerprint-v1');
  for (const head of [...heads].sort((a, b) => a.shard - b.shard)) hash.update(`|${head.shard}:${head.seq}:${head.hash}`);
  return hash.digest('hex');
}

export async function readAuditHeads(pool: Pool, electionId?: string): Promise<AuditHead[]> {
  if (electionId !== undefined && !uuidPattern.test(electionId)) throw new Error(`not an election id (uuid): ${electionId}`);
  const result = await pool.query<{ election_id: string; shard: number; seq: number; hash: Buffer; recorded_at: Date }>(
    `SELECT election_id::text, shard, seq, hash, recorded_at FROM audit_chain_heads
      WHERE $1::uuid IS NULL OR election_id = $1 ORDER BY election_id, shard`,
    [electionId ?? null],
  );
  return result.rows.map((r) => ({ electionId: r.election_id, shard: r.shard, seq: r.seq, hash: r.hash.toString('hex'), recordedAt: r.recorded_at }));
}

// ---------------------------------------------------------------------------------------------
// The human-readable report

function describeBreak(b: AuditBreak): string {
  switch (b.kind) {
    case 'missing_records':
      return `records ${b.expectedSeq}..${b.seq - 1} are missing before seq ${b.seq} (batch ${b.batchId}): deleted from the chain`;
    case 'bad_prev_link':
      return `seq ${b.seq} (batch ${b.batchId}): prev_hash is not the previous record's hash: a record was replaced or inserted`;
    case 'record_altered':
      return `seq ${b.seq} (batch ${b.batchId}): the record does not hash to its stored hash: the record was edited`;
    case 'votes_removed':
      return `seq ${b.seq} (batch ${b.batchId}, epoch ${b.epoch}): ${b.recordedRows - b.storedRows} of ${b.recordedRows} recorded votes are no longer stored: votes were removed`;
    case 'votes_added':
      return `seq ${b.seq} (batch ${b.batchId}, epoch ${b.epoch}): ${b.storedRows} votes stored where ${b.recordedRows} were recorded: votes were added`;
    case 'votes_changed':
      return `seq ${b.seq} (batch ${b.batchId}, epoch ${b.epoch}): the stored votes do not match the digest of the ${b.recordedRows} recorded: a vote was changed`;
    case 'batch_recorded_twice':
      return `seq ${b.seq}: a second record for batch ${b.batchId}: a record was forged`;
    case 'pending_batch_mismatch':
      return `batch ${b.batchId} (epoch ${b.epoch}), not sealed yet: ${b.storedRows} votes stored where its commit recorded ${b.recordedRows}, or other votes: votes were changed before the seal`;
  }
}

export function formatAuditReport(report: AuditReport): string {
  const lines: string[] = [];
  if (report.elections.length === 0) lines.push('No elections, votes or audit records found.');
  for (const election of report.elections) {
    if (election.shards.length === 0) {
      lines.push(`election ${election.electionId}: no votes yet, nothing to verify`);
      continue;
    }
    const broken = election.shards.filter((s) => !s.intact);
    lines.push(
      `election ${election.electionId}: ${election.intact ? 'INTACT' : 'BROKEN'} — ${election.shards.length} shard chains, ` +
        `${election.records} records, ${election.votes} stored votes` +
        (election.awaitingSealRows > 0 ? ` (${election.awaitingSealRows} of them in batches not sealed yet)` : '') + (election.intact ? '' : `, ${broken.length} shard(s) broken`),
    );
    lines.push(`  fingerprint ${election.fingerprint}`);
    for (const s of election.shards) {
      const head = s.head ? `head seq ${s.head.seq} ${s.head.hash.slice(0, 16)}…` : 'no head';
      if (s.intact) {
        lines.push(`  shard ${s.shard}: ok (${s.records} records, ${s.votes} votes, ${head})`);
        continue;
      }
      lines.push(`  shard ${s.shard}: BROKEN (${s.records} records, ${s.votes} votes, ${head})`);
      if (s.firstBreak) {
        lines.push(`    first broken link: ${describeBreak(s.firstBreak)}`);
        if (s.breaks > 1) lines.push(`    and ${s.breaks - 1} more broken link(s) after it`);
      }
      if (s.uncoveredRows > 0) {
        const listed = s.uncovered.map((u) => `batch ${u.batchId} epoch ${u.epoch}: ${u.rows}`).join('; ');
        lines.push(`    ${s.uncoveredRows} stored vote(s) not covered by any audit record (inserted behind the service's back): ${listed}${s.uncovered.length < countGroups(s) ? '; …' : ''}`);
      }
      if (s.headMismatch) {
        lines.push(`    the chain head (${s.head ? `seq ${s.head.seq}` : 'missing'}) is not the last record (${s.records > 0 ? 'see records' : 'no records'}): the end of the chain was cut off or records were added past the head`);
      }
    }
  }
  lines.push(report.intact ? 'audit verify: INTACT' : 'audit verify: BROKEN');
  return `${lines.join('\n')}\n`;
}

function countGroups(s: ShardAudit): number {
  // uncovered lists at most uncoveredListedMax groups; more exist when their rows add up to less.
  const listedRows = s.uncovered.reduce((n, u) => n + u.rows, 0);
  return listedRows < s.uncoveredRows ? s.uncovered.length + 1 : s.uncovered.length;
}
