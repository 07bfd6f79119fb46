// The audit trail: one hash chain per (election, shard), appended by the vote journal in the
// same transaction as the votes it describes (migration 005 has the tables and the triggers that
// make them append-only), and checked by `livevote audit verify`.
//
// A record says: batch B stored these N rows (rows_digest) in this shard under lease epoch E,
// and it follows the record whose hash is prev_hash. The formats, byte for byte:
//
//   row line     `${voter_number}|${candidate_index}|${vote_id}|${accepted_at_ms}\n`
//   rows_digest  SHA-256 of the row lines of the batch's stored rows of that shard, by voter_number
//   hash         SHA-256(prev_hash ‖ `livevote-audit-v1|${election_id}|${shard}|${seq}|${batch_id}|
//                ${epoch}|${row_count}|${recorded_at_us}` ‖ rows_digest); prev_hash of seq 1 is 32 zero bytes
//
// The writer computes them in SQL inside the journal's one INSERT statement (no extra round
// trip). The verifier recomputes every one of them here, in TypeScript, from the stored votes: it
// trusts no SQL function that lives in the database it is checking.
//
// Serialising a chain: the journal's lease fence takes the lease rows FOR SHARE, which lets two
// commits of one node run at once, so it cannot order a chain. The chain head row does: the
// commit upserts audit_chain_heads (INSERT … ON CONFLICT DO UPDATE), which locks the head row
// of every shard it appends to, in (election, shard) order, after all its votes are inserted.
// A second commit of the same shard waits on that lock until the first commits, then links to
// the first's new hash (ON CONFLICT DO UPDATE always reads the latest committed row version).
//
// The genesis hash (seq 1) is computed only for a chain that has no head yet: every later commit
// takes the update path, which discards the proposed row's hash, so for an existing head the
// proposal carries a placeholder of the right length (CHECK constraints run on the proposed row
// before the conflict is found). Heads are never deleted (a trigger refuses it), so a head seen
// by the EXISTS is still there at the insert; one created meanwhile by another commit makes the
// insert conflict, and the update path computes the real hash.
// Only the tail of the second statement waits (its fence and vote insert ran concurrently), and
// the fixed lock order means two commits never deadlock on heads.
import { createHash } from 'node:crypto';
import type { Pool, PoolClient } from './db.ts';
import { uuidPattern, withClient } from './db.ts';

export const auditGenesisHash: Buffer = Buffer.alloc(32);
const auditHashVersion = 'livevote-audit-v1';
/** Votes fetched per round trip while verifying. */
const verifyFetchRowsDefault = 20_000;

// ---------------------------------------------------------------------------------------------
// The writer side: CTEs the journal's insert statement appends (persistence/voteJournal.ts).

/** The SQL text of one row line; must produce exactly what `auditRowLine` does. */
const rowLineSql = (t: string) =>
  `${t}.voter_number::text || '|' || ${t}.candidate_index::text || '|' || ${t}.vote_id::text || '|' || ` +
  `((extract(epoch FROM ${t}.accepted_at) * 1000)::bigint)::text || E'\\n'`;

/**
 * CTEs that append one audit record per (election, shard) of `storedCte`'s rows, to be placed in
 * the WITH list of the statement that stores the votes. `storedCte` must return election_id,
 * shard, epoch, voter_number, candidate_index, vote_id, accepted_at of the rows actually stored
 * (INSERT … RETURNING); `batchIdParam` is the bigint parameter holding the batch id.
 */
export function auditAppendCtes(storedCte: string, batchIdParam: string): string {
  return `audit_digests AS (
           SELECT s.election_id, s.shard, s.epoch, count(*)::integer AS row_count,
                  sha256(convert_to(string_agg(${rowLineSql('s')}, '' ORDER BY s.voter_number), 'UTF8')) AS rows_digest
             FROM ${storedCte} s
            GROUP BY s.election_id, s.shard, s.epoch),
         audit_heads AS (
           INSERT INTO audit_chain_heads AS h (election_id, shard, seq, batch_id, epoch, row_count, rows_digest, prev_hash, hash, recorded_at)
           SELECT d.election_id, d.shard, 1, ${batchIdParam}, d.epoch, d.row_count, d.rows_digest, '\\x${auditGenesisHash.toString('hex')}'::bytea,
                  CASE WHEN EXISTS (SELECT 1 FROM audit_chain_heads x WHERE x.election_id = d.election_id AND x.shard = d.shard)
                       THEN '\\x${auditGenesisHash.toString('hex')}'::bytea
                       ELSE livevote_audit_hash('\\x${auditGenesisHash.toString('hex')}'::bytea, d.election_id, d.shard, 1, ${batchIdParam}, d.epoch, d.row_count, d.rows_digest, now())
                  END,
                  now()
             FROM audit_digests d
            ORDER BY d.election_id, d.shard
           ON CONFLICT (election_id, shard) DO UPDATE SET
             seq = h.seq + 1, batch_id = excluded.batch_id, epoch = excluded.epoch, row_count = excluded.row_count,
             rows_digest = excluded.rows_digest, prev_hash = h.hash, recorded_at = excluded.recorded_at,
             hash = livevote_audit_hash(h.hash, h.election_id, h.shard, h.seq + 1, excluded.batch_id, excluded.epoch,
                                        excluded.row_count, excluded.rows_digest, excluded.recorded_at)
           RETURNING h.election_id, h.shard, h.seq, h.batch_id, h.epoch, h.row_count, h.rows_digest, h.prev_hash, h.hash, h.recorded_at),
         audit_appended AS (
           INSERT INTO audit_records (election_id, shard, seq, batch_id, epoch, row_count, rows_digest, prev_hash, hash, recorded_at)
           SELECT election_id, shard, seq, batch_id, epoch, row_count, rows_digest, prev_hash, hash, recorded_at FROM audit_heads
           RETURNING 1)`;
}

// ---------------------------------------------------------------------------------------------
// The formats, in TypeScript (the verifier's independent implementation).

export interface AuditRowFields {
  readonly voterNumber: number;
  readonly candidateIndex: number;
  readonly voteId: string;
  readonly acceptedAtMs: number;
}

export function auditRowLine(row: AuditRowFields): string {
  return `${row.voterNumber}|${row.candidateIndex}|${row.voteId.toLowerCase()}|${row.acceptedAtMs}\n`;
}

/** rows_digest of rows given in any order (sorted here by voter number). */
export function auditRowsDigest(rows: readonly AuditRowFields[]): Buffer {
  const hash = createHash('sha256');
  for (const row of [...rows].sort((a, b) => a.voterNumber - b.voterNumber)) hash.update(auditRowLine(row));
  return hash.digest();
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
}

export function auditRecordHash(prevHash: Buffer, record: AuditRecordFields): Buffer {
  if (prevHash.length !== 32 || record.rowsDigest.length !== 32) throw new Error('prev_hash and rows_digest must be 32 bytes');
  const fields = [auditHashVersion, record.electionId.toLowerCase(), record.shard, record.seq, record.batchId, record.epoch, record.rowCount, record.recordedAtUs].join('|');
  return createHash('sha256').update(prevHash).update(fields, 'utf8').update(record.rowsDigest).digest();
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
  epoch: number;
  row_count: number;
  rows_digest: Buffer;
  prev_hash: Buffer;
  hash: Buffer;
  recorded_at_us: number;
}

const recordColumns = `seq, batch_id, epoch, row_count, rows_digest, prev_hash, hash,
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
  | { readonly kind: 'batch_recorded_twice'; readonly seq: number; readonly batchId: number };

export interface UncoveredVotes {
  readonly batchId: number;
  readonly epoch: number;
  readonly rows: number;
}

export interface ShardAudit {
  readonly shard: number;
  readonly records: number;
  readonly votes: number;
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
    };
    const link = checkLink(record, prevHash, expectedSeq);
    const group = groups.get(groupKey(record.batchId, record.epoch));
    let votesBreak: AuditBreak | undefined;
    if (group?.claimed) {
      votesBreak = { kind: 'batch_recorded_twice', seq: record.seq, batchId: record.batchId };
    } else {
      if (group) group.claimed = true;
      votesBreak = checkVotes(record, group);
    }
    const found = link ?? votesBreak;
    if (found) broke(found);
    // Link the next record to this one's stored hash: one edited record is one break, not a cascade.
    prevHash = record.hash;
    expectedSeq = record.seq + 1;
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

function checkVotes(record: AuditRecord, group: VoteGroup | undefined): AuditBreak | undefined {
  const storedRows = group?.rows ?? 0;
  const common = { seq: record.seq, batchId: record.batchId, epoch: record.epoch, recordedRows: record.rowCount, storedRows };
  if (storedRows < record.rowCount) return { kind: 'votes_removed', ...common };
  if (storedRows > record.rowCount) return { kind: 'votes_added', ...common };
  if (!group?.digest?.equals(record.rowsDigest)) return { kind: 'votes_changed', ...common };
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
        `${election.records} records, ${election.votes} stored votes` + (election.intact ? '' : `, ${broken.length} shard(s) broken`),
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
