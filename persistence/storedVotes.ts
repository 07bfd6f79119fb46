// Reads of stored votes: answering a retry with its original voteId or a duplicate with the
// stored one (StoredVoteReader), a voter's status, and the per-candidate count(*) that the live
// tally must converge to (invariant 3).
import type { StoredVote, StoredVoteReader } from '../actors/ports.ts';
import { uuidPattern, type Pool } from './db.ts';


/** Candidate indexes are 0..63 (candidates table), so a tally array never needs more. */
export const candidateCountMax = 64;

export type VoteStatus =
  | { readonly voted: false }
  | { readonly voted: true; readonly vote: StoredVote; readonly batchId: number };

interface StoredVoteRow {
  candidate_index: number;
  vote_id: string;
  accepted_at_ms: number;
  batch_id: number;
}

const selectVote = {
  name: 'livevote_stored_vote',
  // extract(epoch) is numeric (exact) since Postgres 14; accepted_at holds whole milliseconds.
  text: `SELECT candidate_index, vote_id::text AS vote_id,
                (extract(epoch FROM accepted_at) * 1000)::bigint AS accepted_at_ms, batch_id
           FROM votes WHERE election_id = $1 AND voter_number = $2`,
};

function isValidKey(electionId: string, voterNumber: number): boolean {
  return uuidPattern.test(electionId) && Number.isSafeInteger(voterNumber) && voterNumber >= 0;
}

async function readRow(pool: Pool, electionId: string, voterNumber: number): Promise<StoredVoteRow | null> {
  // Not a uuid or not a voter number: no vote can be stored under it, and asking Postgres would
  // turn bad input into an error that looks like an outage.
  if (!isValidKey(electionId, voterNumber)) return null;
  const result = await pool.query<StoredVoteRow>({ ...selectVote, values: [electionId, voterNumber] });
  return result.rows[0] ?? null;
}

export class PgStoredVoteReader implements StoredVoteReader {
  constructor(private readonly pool: Pool) {}

  async readStoredVote(electionId: string, voterNumber: number): Promise<StoredVote | null> {
    const row = await readRow(this.pool, electionId, voterNumber);
    if (row === null) return null;
    return { electionId, voterNumber, candidateIndex: row.candidate_index, voteId: row.vote_id, acceptedAtMs: row.accepted_at_ms };
  }
}

export function createPgStoredVoteReader(pool: Pool): PgStoredVoteReader {
  return new PgStoredVoteReader(pool);
}

/** Whether the voter has a stored vote in the election, and which batch stored it. */
export async function readVoteStatus(pool: Pool, electionId: string, voterNumber: number): Promise<VoteStatus> {
  const row = await readRow(pool, electionId, voterNumber);
  if (row === null) return { voted: false };
  return {
    voted: true,
    vote: { electionId, voterNumber, candidateIndex: row.candidate_index, voteId: row.vote_id, acceptedAtMs: row.accepted_at_ms },
    batchId: row.batch_id,
  };
}

/**
 * count(*) of stored votes per candidate index: element i is candidate i's count. The array is
 * `candidateCount` long (zeros for candidates nobody voted for), longer if a higher index has
 * votes. A full scan of the election's rows: for tests and the results check, not per request.
 */
export async function countVotesByCandidate(pool: Pool, electionId: string, candidateCount = 0): Promise<number[]> {
  if (!(Number.isInteger(candidateCount) && candidateCount >= 0 && candidateCount <= candidateCountMax)) {
    throw new Error(`candidateCount must be 0..${candidateCountMax}, got ${candidateCount}`);
  }
  const tallies = new Array<number>(candidateCount).fill(0);
  if (!uuidPattern.test(electionId)) return tallies;
  const result = await pool.query<{ candidate_index: number; votes: number }>(
    'SELECT candidate_index, count(*) AS votes FROM votes WHERE election_id = $1 GROUP BY candidate_index',
    [electionId],
  );
  for (const row of result.rows) {
    while (tallies.length <= row.candidate_index) tallies.push(0);
    tallies[row.candidate_index] = row.votes;
  }
  return tallies;
}
