// SQL for accounts: users, refresh tokens and revoked sessions. Parameterised queries only; no
// other file holds SQL for these tables. Times that decide expiry come from the caller's clock
// (so tests can move it); `revoked_sessions.revoked_at` comes from the database clock because
// pollers on every node page through it and need one clock to agree on.
import type { Pool, PoolClient } from './db.ts';

/** A pool or a client inside a transaction. */
export type Queryable = Pool | PoolClient;

export type UserRole = 'viewer' | 'broadcaster' | 'admin';

export interface UserRecord {
  readonly userId: string;
  readonly voterNumber: number;
  readonly role: UserRole;
  /** Null once the account is erased. */
  readonly passwordHash: string | null;
  readonly erasedAt: Date | null;
}

interface UserRow {
  user_id: string;
  voter_number: number;
  role: UserRole;
  password_hash: string | null;
  erased_at: Date | null;
}

const userColumns = 'user_id, voter_number, role, password_hash, erased_at';

function toUser(row: UserRow): UserRecord {
  return {
    userId: row.user_id,
    voterNumber: row.voter_number,
    role: row.role,
    passwordHash: row.password_hash,
    erasedAt: row.erased_at,
  };
}

export async function findUserByEmailHash(db: Queryable, emailHash: Buffer): Promise<UserRecord | null> {
  const result = await db.query<UserRow>(`SELECT ${userColumns} FROM users WHERE email_hash = $1`, [emailHash]);
  const row = result.rows[0];
  return row ? toUser(row) : null;
}

export async function findUserById(db: Queryable, userId: string): Promise<UserRecord | null> {
  const result = await db.query<UserRow>(`SELECT ${userColumns} FROM users WHERE user_id = $1`, [userId]);
  const row = result.rows[0];
  return row ? toUser(row) : null;
}

/** Inside a transaction: the user row, locked until commit. */
export async function lockUserById(client: PoolClient, userId: string): Promise<UserRecord | null> {
  const result = await client.query<UserRow>(`SELECT ${userColumns} FROM users WHERE user_id = $1 FOR UPDATE`, [userId]);
  const row = result.rows[0];
  return row ? toUser(row) : null;
}

/**
 * Inside a transaction: every admin not erased, their rows locked until commit. Always in
 * user_id order, so two transactions taking them at once queue instead of deadlocking.
 */
export async function lockActiveAdmins(client: PoolClient): Promise<string[]> {
  const result = await client.query<{ user_id: string }>("SELECT user_id FROM users WHERE role = 'admin' AND erased_at IS NULL ORDER BY user_id FOR UPDATE");
  return result.rows.map((row) => row.user_id);
}

/**
 * Inserts a user; the voter number comes from `voter_number_seq`. Null when the email hash is
 * already taken (no exception: a taken email is an expected outcome).
 */
export async function insertUser(
  db: Queryable,
  user: { userId: string; emailHash: Buffer; passwordHash: string; role: UserRole },
): Promise<UserRecord | null> {
  const result = await db.query<UserRow>(
    `INSERT INTO users (user_id, email_hash, password_hash, role) VALUES ($1, $2, $3, $4)
     ON CONFLICT (email_hash) DO NOTHING
     RETURNING ${userColumns}`,
    [user.userId, user.emailHash, user.passwordHash, user.role],
  );
  const row = result.rows[0];
  return row ? toUser(row) : null;
}

export async function updateUserRole(db: Queryable, userId: string, role: UserRole): Promise<UserRecord | null> {
  const result = await db.query<UserRow>(`UPDATE users SET role = $2 WHERE user_id = $1 RETURNING ${userColumns}`, [userId, role]);
  const row = result.rows[0];
  return row ? toUser(row) : null;
}

export async function updateUserPassword(db: Queryable, userId: string, passwordHash: string): Promise<boolean> {
  const result = await db.query('UPDATE users SET password_hash = $2 WHERE user_id = $1 AND erased_at IS NULL', [userId, passwordHash]);
  return result.rowCount === 1;
}

// ---------------------------------------------------------------------------------------------
// Refresh tokens

export interface RefreshTokenRecord {
  readonly familyId: string;
  readonly userId: string;
  readonly expiresAt: Date;
  readonly rotatedAt: Date | null;
  readonly revokedAt: Date | null;
}

/** A refresh token with the user it belongs to, as read under lock at refresh time. */
export interface LockedRefreshToken extends RefreshTokenRecord {
  /**
   * Some token of the family is revoked. Revocation is always family-wide, but a refresh that
   * committed while a logout was waiting for its row lock inserts a token the logout's UPDATE
   * does not see; this is what keeps that straggler dead. (Hence: never delete a family's
   * revoked rows while any of its tokens is unexpired.)
   */
  readonly familyRevoked: boolean;
  readonly voterNumber: number;
  readonly role: UserRole;
  readonly userErasedAt: Date | null;
}

export async function insertRefreshToken(
  db: Queryable,
  token: { tokenHash: Buffer; familyId: string; userId: string; issuedAt: Date; expiresAt: Date },
): Promise<void> {
  await db.query(
    'INSERT INTO refresh_tokens (token_hash, family_id, user_id, issued_at, expires_at) VALUES ($1, $2, $3, $4, $5)',
    [token.tokenHash, token.familyId, token.userId, token.issuedAt, token.expiresAt],
  );
}

/** Inside a transaction: the token row locked until commit (concurrent refreshes take turns). */
export async function lockRefreshToken(client: PoolClient, tokenHash: Buffer): Promise<LockedRefreshToken | null> {
  const result = await client.query<{
    family_id: string; user_id: string; expires_at: Date; rotated_at: Date | null; revoked_at: Date | null;
    family_revoked: boolean; voter_number: number; role: UserRole; erased_at: Date | null;
  }>(
    `SELECT t.family_id, t.user_id, t.expires_at, t.rotated_at, t.revoked_at,
            EXISTS (SELECT 1 FROM refresh_tokens f WHERE f.family_id = t.family_id AND f.revoked_at IS NOT NULL) AS family_revoked,
            u.voter_number, u.role, u.erased_at
       FROM refresh_tokens t JOIN users u USING (user_id)
      WHERE t.token_hash = $1
      FOR UPDATE OF t`,
    [tokenHash],
  );
  const row = result.rows[0];
  if (!row) return null;
  return {
    familyId: row.family_id,
    userId: row.user_id,
    expiresAt: row.expires_at,
    rotatedAt: row.rotated_at,
    revokedAt: row.revoked_at,
    familyRevoked: row.family_revoked,
    voterNumber: row.voter_number,
    role: row.role,
    userErasedAt: row.erased_at,
  };
}

export async function findRefreshToken(db: Queryable, tokenHash: Buffer): Promise<RefreshTokenRecord | null> {
  const result = await db.query<{ family_id: string; user_id: string; expires_at: Date; rotated_at: Date | null; revoked_at: Date | null }>(
    'SELECT family_id, user_id, expires_at, rotated_at, revoked_at FROM refresh_tokens WHERE token_hash = $1',
    [tokenHash],
  );
  const row = result.rows[0];
  if (!row) return null;
  return { familyId: row.family_id, userId: row.user_id, expiresAt: row.expires_at, rotatedAt: row.rotated_at, revokedAt: row.revoked_at };
}

export async function markRefreshTokenRotated(client: PoolClient, tokenHash: Buffer, at: Date): Promise<void> {
  const result = await client.query('UPDATE refresh_tokens SET rotated_at = $2 WHERE token_hash = $1 AND rotated_at IS NULL', [tokenHash, at]);
  if (result.rowCount !== 1) throw new Error('refresh token to rotate was not found un-rotated; it should have been locked');
}

// ---------------------------------------------------------------------------------------------
// Revoked sessions (a session is a refresh-token family; its id is the access tokens' `sid`)

export interface RevokedSessionRecord {
  readonly sessionId: string;
  /** Database clock, microseconds since the epoch: the pollers' cursor. */
  readonly revokedAtUs: number;
  /** Until when access tokens of this session could still be presented (ms since the epoch). */
  readonly expiresAtMs: number;
}

interface RevokedSessionRow {
  session_id: string;
  revoked_at_us: number;
  expires_at_ms: number;
}

const revokedSessionColumns = `session_id,
  (extract(epoch FROM revoked_at) * 1000000)::bigint AS revoked_at_us,
  (extract(epoch FROM expires_at) * 1000)::bigint AS expires_at_ms`;

function toRevokedSession(row: RevokedSessionRow): RevokedSessionRecord {
  return { sessionId: row.session_id, revokedAtUs: row.revoked_at_us, expiresAtMs: row.expires_at_ms };
}

/**
 * Revokes every refresh token of one family and records the session as revoked, in one
 * statement (atomic without a transaction). A second revocation keeps the later expiry.
 */
export async function revokeFamily(
  db: Queryable,
  familyId: string,
  at: Date,
  sessionExpiresAt: Date,
): Promise<RevokedSessionRecord> {
  const result = await db.query<RevokedSessionRow>(
    `WITH tokens AS (
       UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL RETURNING 1
     )
     INSERT INTO revoked_sessions AS s (session_id, expires_at) VALUES ($1, $3)
     ON CONFLICT (session_id) DO UPDATE SET expires_at = greatest(s.expires_at, excluded.expires_at)
     RETURNING ${revokedSessionColumns}`,
    [familyId, at, sessionExpiresAt],
  );
  const row = result.rows[0];
  if (!row) throw new Error('revoking a session returned no row');
  return toRevokedSession(row);
}

/**
 * Revokes every live session of one user (role lowered, password replaced): all their refresh
 * tokens, and each family that still had a live token becomes a revoked session.
 */
export async function revokeUserSessions(
  db: Queryable,
  userId: string,
  at: Date,
  sessionExpiresAt: Date,
): Promise<RevokedSessionRecord[]> {
  const result = await db.query<RevokedSessionRow>(
    `WITH tokens AS (
       UPDATE refresh_tokens SET revoked_at = $2
        WHERE user_id = $1 AND revoked_at IS NULL
        RETURNING family_id, expires_at
     )
     INSERT INTO revoked_sessions AS s (session_id, expires_at)
     SELECT DISTINCT family_id, $3::timestamptz FROM tokens WHERE expires_at > $2
     ON CONFLICT (session_id) DO UPDATE SET expires_at = greatest(s.expires_at, excluded.expires_at)
     RETURNING ${revokedSessionColumns}`,
    [userId, at, sessionExpiresAt],
  );
  return result.rows.map(toRevokedSession);
}

/**
 * Revoked sessions after the cursor (revoked_at, session_id), oldest first, at most `limit`:
 * keyset pages, exact to the microsecond so a page boundary never loops.
 */
export async function revokedSessionsAfter(
  db: Queryable,
  cursor: { revokedAtUs: number; sessionId: string },
  notExpiredAt: Date,
  limit: number,
): Promise<RevokedSessionRecord[]> {
  const result = await db.query<RevokedSessionRow>(
    `SELECT ${revokedSessionColumns} FROM revoked_sessions
      WHERE (revoked_at, session_id) > ('epoch'::timestamptz + $1::bigint * interval '1 microsecond', $2::uuid)
        AND expires_at > $3
      ORDER BY revoked_at, session_id
      LIMIT $4`,
    [cursor.revokedAtUs, cursor.sessionId, notExpiredAt, limit],
  );
  return result.rows.map(toRevokedSession);
}

/** Deletes revoked sessions whose tokens have all expired; at most `limit` rows a call. */
export async function deleteExpiredRevokedSessions(db: Queryable, before: Date, limit: number): Promise<number> {
  const result = await db.query(
    `DELETE FROM revoked_sessions WHERE session_id IN (
       SELECT session_id FROM revoked_sessions WHERE expires_at < $1 LIMIT $2)`,
    [before, limit],
  );
  return result.rowCount ?? 0;
}
