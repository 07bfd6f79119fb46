// SQL for the privacy controls (PRIVACY.md): what one user's export holds, erasure, and the
// retention purge of request metadata. Outcomes are data; SQL errors are thrown.
//
// Erasure removes the link between a person and their vote without touching the vote: the votes
// row keys on voter_number, a pseudonym, and only the users row maps a user to it. So erasure
// deletes the users row (its refresh tokens cascade), every metadata row about them, and the
// creator reference of elections they made, and keeps a tombstone with no personal data. The
// votes row, the shard's bitmap and snapshot, the tallies and the audit chain stay as they were:
// the vote is still counted, and nothing left joins it to an account, an email hash or an IP hash.
import type { Pool, PoolClient } from './db.ts';
import { inTransaction, uuidPattern, withClient } from './db.ts';
import { lockUserById, revokeUserSessions, type RevokedSessionRecord, type UserRole } from './users.ts';

/** Rows per section of an export at most; more is flagged `truncated` (nobody votes in 10k elections). */
export const exportSectionRowsMax = 10_000;

// ---------------------------------------------------------------------------------------------
// Export

export interface ExportedVote {
  readonly electionId: string;
  readonly electionTitle: string | null;
  readonly candidateId: string | null;
  readonly candidateName: string | null;
  readonly voteId: string;
  readonly acceptedAt: string;
}

export interface ExportedSession {
  /** When the session started (first refresh token of the family). */
  readonly issuedAt: string;
  /** The latest token rotation. */
  readonly lastRefreshedAt: string;
  readonly expiresAt: string;
  readonly revokedAt: string | null;
}

export interface ExportedVoteMetadata {
  readonly electionId: string;
  readonly ipHash: string;
  readonly networkHash: string;
  readonly userAgentFamily: string;
  readonly recordedAt: string;
}

export interface ExportedAccountMetadata {
  readonly event: 'register' | 'login';
  readonly ipHash: string;
  readonly networkHash: string;
  readonly userAgentFamily: string;
  readonly recordedAt: string;
}

export interface UserDataExport {
  readonly account: {
    readonly userId: string;
    readonly role: UserRole;
    readonly createdAt: string;
    readonly voterNumber: number;
    /** HMAC-SHA256 of the lower-cased email (hex): the only form in which the email is kept. */
    readonly emailHash: string | null;
  };
  readonly votes: readonly ExportedVote[];
  readonly sessions: readonly ExportedSession[];
  readonly metadata: {
    readonly votes: readonly ExportedVoteMetadata[];
    readonly account: readonly ExportedAccountMetadata[];
  };
  /** A section hit exportSectionRowsMax. */
  readonly truncated: boolean;
}

const iso = (d: Date) => d.toISOString();

/** Everything stored about one user, read in one snapshot; null when there is no such account. */
export async function exportUserData(pool: Pool, userId: string): Promise<UserDataExport | null> {
  if (!uuidPattern.test(userId)) return null;
  return withClient(pool, async (client) => {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    try {
      const result = await readExport(client, userId.toLowerCase());
      await client.query('COMMIT');
      return result;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    }
  });
}

async function readExport(client: PoolClient, userId: string): Promise<UserDataExport | null> {
  const users = await client.query<{ voter_number: number; role: UserRole; created_at: Date; email_hash: Buffer | null }>(
    'SELECT voter_number, role, created_at, email_hash FROM users WHERE user_id = $1',
    [userId],
  );
  const user = users.rows[0];
  if (!user) return null;
  const limit = exportSectionRowsMax + 1;
  // One index probe of the votes primary key per election (votes are keyed by election first).
  const votes = await client.query<{
    election_id: string; title: string | null; candidate_id: string | null; name: string | null; vote_id: string; accepted_at: Date;
  }>(
    `SELECT v.election_id::text, e.title, c.candidate_id::text, c.name, v.vote_id::text, v.accepted_at
       FROM elections e
       JOIN votes v ON v.election_id = e.election_id AND v.voter_number = $1
       LEFT JOIN candidates c ON c.election_id = v.election_id AND c.candidate_index = v.candidate_index
      ORDER BY v.accepted_at, v.election_id
      LIMIT $2`,
    [user.voter_number, limit],
  );
  const sessions = await client.query<{ issued_at: Date; last_refreshed_at: Date; expires_at: Date; revoked_at: Date | null }>(
    `SELECT min(issued_at) AS issued_at, max(issued_at) AS last_refreshed_at, max(expires_at) AS expires_at, max(revoked_at) AS revoked_at
       FROM refresh_tokens WHERE user_id = $1
      GROUP BY family_id
      ORDER BY 1
      LIMIT $2`,
    [userId, limit],
  );
  const voteMetadata = await client.query<{ election_id: string; ip_hash: Buffer; network_hash: Buffer; ua_family: string; recorded_at: Date }>(
    `SELECT election_id::text, ip_hash, network_hash, ua_family, recorded_at FROM vote_metadata
      WHERE voter_number = $1 ORDER BY recorded_at LIMIT $2`,
    [user.voter_number, limit],
  );
  const accountMetadata = await client.query<{ event: 'register' | 'login'; ip_hash: Buffer; network_hash: Buffer; ua_family: string; recorded_at: Date }>(
    `SELECT event, ip_hash, network_hash, ua_family, recorded_at FROM account_metadata
      WHERE user_id = $1 ORDER BY recorded_at LIMIT $2`,
    [userId, limit],
  );
  const truncated = [votes, sessions, voteMetadata, accountMetadata].some((r) => r.rows.length > exportSectionRowsMax);
  const cap = <T>(rows: T[]) => rows.slice(0, exportSectionRowsMax);
  return {
    account: {
      userId,
      role: user.role,
      createdAt: iso(user.created_at),
      voterNumber: user.voter_number,
      emailHash: user.email_hash?.toString('hex') ?? null,
    },
    votes: cap(votes.rows).map((r) => ({
      electionId: r.election_id, electionTitle: r.title, candidateId: r.candidate_id, candidateName: r.name, voteId: r.vote_id, acceptedAt: iso(r.accepted_at),
    })),
    sessions: cap(sessions.rows).map((r) => ({
      issuedAt: iso(r.issued_at), lastRefreshedAt: iso(r.last_refreshed_at), expiresAt: iso(r.expires_at), revokedAt: r.revoked_at ? iso(r.revoked_at) : null,
    })),
    metadata: {
      votes: cap(voteMetadata.rows).map((r) => ({
        electionId: r.election_id, ipHash: r.ip_hash.toString('hex'), networkHash: r.network_hash.toString('hex'), userAgentFamily: r.ua_family, recordedAt: iso(r.recorded_at),
      })),
      account: cap(accountMetadata.rows).map((r) => ({
        event: r.event, ipHash: r.ip_hash.toString('hex'), networkHash: r.network_hash.toString('hex'), userAgentFamily: r.ua_family, recordedAt: iso(r.recorded_at),
      })),
    },
    truncated,
  };
}

// ---------------------------------------------------------------------------------------------
// Erasure

export type ErasureRequester = 'self' | 'admin';

export type ErasureOutcome =
  /** Erased now, or earlier (`alreadyErased`); `sessions` are the sessions this erasure revoked. */
  | { readonly kind: 'erased'; readonly erasedAt: Date; readonly alreadyErased: boolean; readonly sessions: readonly RevokedSessionRecord[] }
  | { readonly kind: 'not_found' }
  /**
   * The user has a counted vote in an election that is still open. Erasing now would let the same
   * person register again and vote a second time in it (the email hash is what erasure deletes),
   * so erasure waits until those elections close.
   */
  | { readonly kind: 'deferred'; readonly openElectionIds: readonly string[] }
  /** The password hash changed since the caller checked the password: check again. */
  | { readonly kind: 'credentials_changed' };

export interface ErasureRequest {
  readonly userId: string;
  readonly requestedBy: ErasureRequester;
  readonly at: Date;
  /** Until when the revoked sessions' access tokens could still be presented. */
  readonly sessionExpiresAt: Date;
  /** The password hash the caller verified the password against: erasure only if it is unchanged. */
  readonly verifiedPasswordHash?: string;
}

export async function eraseAccount(pool: Pool, request: ErasureRequest): Promise<ErasureOutcome> {
  if (!uuidPattern.test(request.userId)) return { kind: 'not_found' };
  const userId = request.userId.toLowerCase();
  return inTransaction(pool, async (client): Promise<ErasureOutcome> => {
    // The row lock orders this against a concurrent erasure, role change or password change.
    const user = await lockUserById(client, userId);
    if (!user) {
      const tombstone = await client.query<{ erased_at: Date }>('SELECT erased_at FROM erased_accounts WHERE user_id = $1', [userId]);
      const erased = tombstone.rows[0];
      return erased ? { kind: 'erased', erasedAt: erased.erased_at, alreadyErased: true, sessions: [] } : { kind: 'not_found' };
    }
    if (request.verifiedPasswordHash !== undefined && user.passwordHash !== request.verifiedPasswordHash) return { kind: 'credentials_changed' };
    const open = await client.query<{ election_id: string }>(
      `SELECT e.election_id::text FROM elections e
         JOIN votes v ON v.election_id = e.election_id AND v.voter_number = $1
        WHERE e.status = 'open' ORDER BY 1`,
      [user.voterNumber],
    );
    if (open.rows.length > 0) return { kind: 'deferred', openElectionIds: open.rows.map((r) => r.election_id) };

    // Sessions first: their revocation rows must exist before the tokens cascade away.
    const sessions = await revokeUserSessions(client, userId, request.at, request.sessionExpiresAt);
    await client.query('DELETE FROM vote_metadata WHERE voter_number = $1', [user.voterNumber]);
    await client.query('DELETE FROM account_metadata WHERE user_id = $1', [userId]);
    await client.query('UPDATE elections SET created_by = NULL WHERE created_by = $1', [userId]);
    const deleted = await client.query('DELETE FROM users WHERE user_id = $1', [userId]);
    if (deleted.rowCount !== 1) throw new Error(`user ${userId} vanished while locked`);
    const tombstone = await client.query<{ erased_at: Date }>(
      'INSERT INTO erased_accounts (user_id, erased_at, requested_by) VALUES ($1, $2, $3) RETURNING erased_at',
      [userId, request.at, request.requestedBy],
    );
    return { kind: 'erased', erasedAt: tombstone.rows[0]!.erased_at, alreadyErased: false, sessions };
  });
}

// ---------------------------------------------------------------------------------------------
// Retention

export const retentionDaysDefault = 30;
/** Rows one DELETE removes at most: short transactions, no long lock on a busy table. */
const purgeBatchRowsDefault = 10_000;
/** Statements one purge runs at most; the next purge continues. */
const purgeBatchesMaxDefault = 10_000;

export interface PurgeOptions {
  readonly retentionDays: number;
  readonly nowMs: number;
  readonly batchRowsMax?: number;
  readonly batchesMax?: number;
}

export interface PurgeResult {
  /** Metadata recorded before this was deleted. */
  readonly before: Date;
  readonly voteMetadataDeleted: number;
  readonly accountMetadataDeleted: number;
  /** The batch limit stopped the purge before it was done; run it again. */
  readonly incomplete: boolean;
}

/** Deletes request metadata older than the retention period, in bounded batches. */
export async function purgeExpiredMetadata(pool: Pool, options: PurgeOptions): Promise<PurgeResult> {
  const batchRowsMax = options.batchRowsMax ?? purgeBatchRowsDefault;
  const batchesMax = options.batchesMax ?? purgeBatchesMaxDefault;
  if (!(Number.isInteger(options.retentionDays) && options.retentionDays >= 1)) throw new Error(`retentionDays must be a positive integer, got ${options.retentionDays}`);
  if (!(Number.isInteger(batchRowsMax) && batchRowsMax >= 1 && Number.isInteger(batchesMax) && batchesMax >= 1)) throw new Error('batchRowsMax and batchesMax must be positive integers');
  const before = new Date(options.nowMs - options.retentionDays * 24 * 3600 * 1000);
  let batches = 0;
  const purge = async (table: 'vote_metadata' | 'account_metadata') => {
    let deleted = 0;
    while (batches < batchesMax) {
      batches++;
      const result = await pool.query(
        `DELETE FROM ${table} WHERE ctid = ANY (ARRAY(SELECT ctid FROM ${table} WHERE recorded_at < $1 LIMIT $2))`,
        [before, batchRowsMax],
      );
      const count = result.rowCount ?? 0;
      deleted += count;
      if (count < batchRowsMax) return { deleted, done: true };
    }
    return { deleted, done: false };
  };
  const votes = await purge('vote_metadata');
  const accounts = votes.done ? await purge('account_metadata') : { deleted: 0, done: false };
  return { before, voteMetadataDeleted: votes.deleted, accountMetadataDeleted: accounts.deleted, incomplete: !(votes.done && accounts.done) };
}
