// SQL for elections and their candidates.
import type { Pool, PoolClient } from './db.ts';
import { inTransaction } from './db.ts';

export type ElectionStatus = 'draft' | 'open' | 'closed';
export type CaptchaPolicy = 'off' | 'always' | 'on_risk';

export interface CandidateRecord {
  readonly candidateId: string;
  readonly candidateIndex: number;
  readonly name: string;
}

export interface ElectionRecord {
  readonly electionId: string;
  readonly title: string;
  readonly status: ElectionStatus;
  readonly shardCount: number;
  readonly captchaPolicy: CaptchaPolicy;
  readonly createdAt: Date;
  readonly openedAt: Date | null;
  readonly closedAt: Date | null;
  readonly candidates: readonly CandidateRecord[];
}

interface ElectionRow {
  election_id: string;
  title: string;
  status: ElectionStatus;
  shard_count: number;
  captcha_policy: CaptchaPolicy;
  created_at: Date;
  opened_at: Date | null;
  closed_at: Date | null;
  candidates: { candidate_id: string; candidate_index: number; name: string }[];
}

const selectElections = `
  SELECT e.election_id, e.title, e.status, e.shard_count, e.captcha_policy, e.created_at, e.opened_at, e.closed_at,
         coalesce(json_agg(json_build_object('candidate_id', c.candidate_id, 'candidate_index', c.candidate_index, 'name', c.name)
                  ORDER BY c.candidate_index) FILTER (WHERE c.candidate_id IS NOT NULL), '[]') AS candidates
    FROM elections e LEFT JOIN candidates c USING (election_id)`;

function toRecord(row: ElectionRow): ElectionRecord {
  return {
    electionId: row.election_id,
    title: row.title,
    status: row.status,
    shardCount: row.shard_count,
    captchaPolicy: row.captcha_policy,
    createdAt: row.created_at,
    openedAt: row.opened_at,
    closedAt: row.closed_at,
    candidates: row.candidates.map((c) => ({ candidateId: c.candidate_id, candidateIndex: c.candidate_index, name: c.name })),
  };
}

/** The election as stored, or undefined when its creator's account is gone (erased while the request ran). */
export async function insertElection(
  pool: Pool,
  election: { electionId: string; title: string; shardCount: number; captchaPolicy: CaptchaPolicy; createdBy: string; candidates: readonly CandidateRecord[] },
): Promise<ElectionRecord | undefined> {
  const inserted = await inTransaction(pool, async (client: PoolClient) => {
    // Locked so no erasure deletes the creator between this check and the commit.
    const creator = await client.query('SELECT 1 FROM users WHERE user_id = $1 FOR KEY SHARE', [election.createdBy]);
    if (creator.rowCount === 0) return false;
    await client.query('INSERT INTO elections (election_id, title, shard_count, captcha_policy, created_by) VALUES ($1, $2, $3, $4, $5)', [
      election.electionId, election.title, election.shardCount, election.captchaPolicy, election.createdBy,
    ]);
    await client.query(
      `INSERT INTO candidates (election_id, candidate_index, candidate_id, name)
       SELECT $1, i, id, name FROM unnest($2::smallint[], $3::uuid[], $4::text[]) AS t(i, id, name)`,
      [
        election.electionId,
        election.candidates.map((c) => c.candidateIndex),
        election.candidates.map((c) => c.candidateId),
        election.candidates.map((c) => c.name),
      ],
    );
    return true;
  });
  if (!inserted) return undefined;
  const created = await findElection(pool, election.electionId);
  if (!created) throw new Error(`election ${election.electionId} vanished right after insert`);
  return created;
}

export async function findElection(pool: Pool, electionId: string): Promise<ElectionRecord | null> {
  const result = await pool.query<ElectionRow>(`${selectElections} WHERE e.election_id = $1 GROUP BY e.election_id`, [electionId]);
  const row = result.rows[0];
  return row ? toRecord(row) : null;
}

export async function listElections(pool: Pool): Promise<ElectionRecord[]> {
  const result = await pool.query<ElectionRow>(`${selectElections} GROUP BY e.election_id ORDER BY e.created_at DESC, e.election_id`);
  return result.rows.map(toRecord);
}

/**
 * Moves an election from `from` to `to` in one conditional UPDATE, so two admins racing to
 * open and close cannot both win. Returns null when the election was not in `from`.
 */
export async function transitionElection(
  pool: Pool,
  electionId: string,
  from: ElectionStatus,
  to: ElectionStatus,
): Promise<ElectionRecord | null> {
  const stamp = to === 'open' ? 'opened_at' : 'closed_at';
  const result = await pool.query(
    `UPDATE elections SET status = $3, ${stamp} = now() WHERE election_id = $1 AND status = $2`,
    [electionId, from, to],
  );
  if (result.rowCount === 0) return null;
  return findElection(pool, electionId);
}
