// Reads of stored votes: answering a retry with its original voteId or a duplicate with the
// stored one (StoredVoteReader), a voter's status, a user's votes for the status route, and the
// per-candidate count(*) that the live tally must converge to (invariant 3).
import type { StoredVote, StoredVoteReader } from '../actors/ports.ts';
import { uuidPattern, withClientTimeout, type Pool } from './db.ts';

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

/** The vote path's lookup (a retry, a duplicate) gives up after this: the voter is told 503 lookup_failed. */
export const storedVoteLookupTimeoutMsDefault = 2_000;

export class PgStoredVoteReader implements StoredVoteReader {
  constructor(
    private readonly pool: Pool,
    private readonly timeoutMs = storedVoteLookupTimeoutMsDefault,
  ) {}

  async readStoredVote(electionId: string, voterNumber: number): Promise<StoredVote | null> {
    if (!isValidKey(electionId, voterNumber)) return null;
    const result = await withClientTimeout(this.pool, this.timeoutMs, (client) => client.query<StoredVoteRow>({ ...selectVote, values: [electionId, voterNumber] }));
    const row = result.rows[0] ?? null;
    if (row === null) return null;
    return { electionId, voterNumber, candidateIndex: row.candidate_index, voteId: row.vote_id, acceptedAtMs: row.accepted_at_ms };
  }
}

export function createPgStoredVoteReader(pool: Pool, timeoutMs?: number): PgStoredVoteReader {
  return new PgStoredVoteReader(pool, timeoutMs);
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

// ---------------------------------------------------------------------------------------------
// A user's votes, by user id (GET /api/v1/votes/status/{userId}). The voter number is resolved
// from the users row in the same statement, never taken from a token: once an account is erased
// its row is gone, and with it the only link from the person to their votes (PRIVACY.md), even on
// a node that still accepts the erased session's access token for a moment.

/** A user's stored vote in one election. */
export interface UserVote {
  readonly electionId: string;
  readonly candidateId: string;
  readonly voteId: string;
  readonly acceptedAtMs: number;
}

/** Where a page of a user's votes ends: the next page holds the votes strictly older than it. */
export interface UserVotePosition {
  readonly acceptedAtMs: number;
  readonly electionId: string;
}

export interface UserVotesPage {
  /** Newest first: by acceptedAt, then electionId, both descending. */
  readonly votes: readonly UserVote[];
  /** Null on the last page. */
  readonly next: UserVotePosition | null;
}

/** Looked up by user id: found, no such user, or an account that was erased (its tombstone). */
export type UserLookup<T> =
  | { readonly kind: 'found'; readonly value: T }
  | { readonly kind: 'unknown_user' }
  | { readonly kind: 'erased' };

export const userVotesPageRowsMax = 100;

interface UserVoteRow {
  election_id: string | null;
  candidate_id: string | null;
  vote_id: string | null;
  accepted_at_ms: number | null;
}

const acceptedAtMsSql = '(extract(epoch FROM v.accepted_at) * 1000)::bigint';

const selectUserVoteInElection = {
  name: 'livevote_user_vote_in_election',
  // No users row: no result row. A user without a vote here: one row of nulls.
  text: `SELECT v.election_id::text AS election_id, c.candidate_id::text AS candidate_id, v.vote_id::text AS vote_id,
                ${acceptedAtMsSql} AS accepted_at_ms
           FROM users u
           LEFT JOIN (votes v JOIN candidates c ON c.election_id = v.election_id AND c.candidate_index = v.candidate_index)
             ON v.election_id = $2 AND v.voter_number = u.voter_number
          WHERE u.user_id = $1 AND u.erased_at IS NULL`,
};

/** Exported for bench/userVotes.ts, which EXPLAINs it. */
export const selectUserVotes = {
  name: 'livevote_user_votes_page',
  // One probe of the votes primary key per election, as the export does: votes are keyed by
  // election first, and a second index on the hottest table would be paid by every vote
  // (bench/userVotes.ts measures both). Keyset paging on (acceptedAt in whole ms, electionId), the
  // values the answer and the cursor carry, so a time with more precision than that cannot put a
  // vote on two pages; $2/$3 is the previous page's last, or null for the first page.
  text: `SELECT p.election_id::text, p.candidate_id, p.vote_id, p.accepted_at_ms
           FROM users u
           LEFT JOIN LATERAL (
             SELECT v.election_id, c.candidate_id::text AS candidate_id, v.vote_id::text AS vote_id, ${acceptedAtMsSql} AS accepted_at_ms
               FROM elections e
               JOIN votes v ON v.election_id = e.election_id AND v.voter_number = u.voter_number
               JOIN candidates c ON c.election_id = v.election_id AND c.candidate_index = v.candidate_index
              WHERE e.status <> 'draft'
                AND ($2::bigint IS NULL OR (${acceptedAtMsSql}, v.election_id) < ($2::bigint, $3::uuid))
              ORDER BY 4 DESC, 1 DESC
              LIMIT $4
           ) p ON true
          WHERE u.user_id = $1 AND u.erased_at IS NULL
          ORDER BY p.accepted_at_ms DESC, p.election_id DESC`,
};

function userVoteOf(row: UserVoteRow): UserVote | null {
  if (row.election_id === null || row.candidate_id === null || row.vote_id === null || row.accepted_at_ms === null) return null;
  return { electionId: row.election_id, candidateId: row.candidate_id, voteId: row.vote_id, acceptedAtMs: row.accepted_at_ms };
}

/** No users row: an erased account (tombstone) or one that never existed. */
async function missingUser(pool: Pool, userId: string): Promise<{ kind: 'unknown_user' } | { kind: 'erased' }> {
  const tombstone = await pool.query('SELECT 1 FROM erased_accounts WHERE user_id = $1', [userId]);
  return tombstone.rowCount === 1 ? { kind: 'erased' } : { kind: 'unknown_user' };
}

/** The user's vote in one election (null: none stored). */
export async function readUserVoteInElection(pool: Pool, userId: string, electionId: string): Promise<UserLookup<UserVote | null>> {
  if (!uuidPattern.test(userId)) return { kind: 'unknown_user' };
  if (!uuidPattern.test(electionId)) throw new Error(`electionId must be a uuid, got ${JSON.stringify(electionId)}`);
  const result = await pool.query<UserVoteRow>({ ...selectUserVoteInElection, values: [userId, electionId] });
  const row = result.rows[0];
  if (!row) return missingUser(pool, userId);
  return { kind: 'found', value: userVoteOf(row) };
}

/** One page of the user's votes, newest first; `after` is the previous page's `next`. */
export async function readUserVotes(
  pool: Pool,
  userId: string,
  page: { readonly limit: number; readonly after?: UserVotePosition },
): Promise<UserLookup<UserVotesPage>> {
  if (!(Number.isInteger(page.limit) && page.limit >= 1 && page.limit <= userVotesPageRowsMax)) {
    throw new Error(`limit must be 1..${userVotesPageRowsMax}, got ${page.limit}`);
  }
  const after = page.after;
  if (after && !(Number.isSafeInteger(after.acceptedAtMs) && after.acceptedAtMs >= 0 && uuidPattern.test(after.electionId))) {
    throw new Error(`not a vote position: ${JSON.stringify(after)}`);
  }
  if (!uuidPattern.test(userId)) return { kind: 'unknown_user' };
  // One row more than asked for tells whether another page follows.
  const result = await pool.query<UserVoteRow>({
    ...selectUserVotes,
    values: [userId, after?.acceptedAtMs ?? null, after?.electionId ?? null, page.limit + 1],
  });
  if (result.rows.length === 0) return missingUser(pool, userId);
  const votes: UserVote[] = [];
  for (const row of result.rows) {
    const vote = userVoteOf(row);
    if (vote) votes.push(vote);
  }
  const more = votes.length > page.limit;
  if (more) votes.length = page.limit;
  const last = votes.at(-1);
  return {
    kind: 'found',
    value: { votes, next: more && last ? { acceptedAtMs: last.acceptedAtMs, electionId: last.electionId } : null },
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
