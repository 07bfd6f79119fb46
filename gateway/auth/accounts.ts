// The accounts service: registration, login, refresh-token rotation, logout, role grants and the
// configured admin. It answers with ApiErrors from the one catalog; the SQL is in
// persistence/users.ts. Times come from `nowMs` so tests can move the clock.
//
// Sessions: a login starts a refresh-token family; its id is the `sid` of every access token
// minted from it. Refresh rotates the token (the old one is marked rotated, a new one issued
// in the same family); presenting a rotated token again means it leaked, so the whole family is
// revoked and its access tokens refused from then on (`SessionRevocations`).
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { ApiError } from '../errors.ts';
import type { Principal, Role } from '../http.ts';
import type { Logger } from '../../infra/logger.ts';
import type { Secrets } from '../../infra/secrets.ts';
import { inTransaction, uuidPattern, type Pool, type PoolClient } from '../../persistence/db.ts';
import {
  findRefreshToken, findUserByEmailHash, insertRefreshToken, insertUser, lockActiveAdmins, lockRefreshToken, lockUserById,
  markRefreshTokenRotated, revokeFamily, revokeUserSessions, updateUserPassword, updateUserRole,
  type RevokedSessionRecord, type UserRecord,
} from '../../persistence/users.ts';
import { accessTokenTtlS, signAccessToken } from './jwt.ts';
import {
  KdfLimiter, KdfOverloadedError, defaultScryptParams, emailHash, hashPassword, needsRehash, verifyPassword,
  type ScryptParams,
} from './passwords.ts';
import type { SessionRevocations } from './revocations.ts';

export const refreshTokenTtlMs = 30 * 24 * 3600 * 1000;
const refreshTokenBytes = 32;
/** base64url of 32 bytes: anything else cannot be one of ours and is refused without a query. */
const refreshTokenPattern = /^[A-Za-z0-9_-]{43}$/;
const roleRank: Readonly<Record<Role, number>> = { viewer: 0, broadcaster: 1, admin: 2 };

export interface TokenPair {
  readonly userId: string;
  readonly role: Role;
  readonly accessToken: string;
  readonly refreshToken: string;
  readonly tokenType: 'Bearer';
  /** Seconds until the access token expires. */
  readonly expiresIn: number;
}

export interface Credentials {
  readonly email: string;
  readonly password: string;
}

export interface AccountsDeps {
  readonly pool: Pool;
  readonly secrets: Secrets;
  readonly log: Logger;
  readonly nowMs: () => number;
  readonly revocations: SessionRevocations;
  readonly scryptParams?: ScryptParams;
  readonly kdfLimiter?: KdfLimiter;
}

/** Outcomes of one refresh transaction: data, so the reuse revocation commits before we answer. */
type RefreshOutcome =
  | { readonly kind: 'rotated'; readonly pair: TokenPair }
  | { readonly kind: 'reused'; readonly session: RevokedSessionRecord }
  | { readonly kind: 'refused' };

export function hashRefreshToken(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

export class Accounts {
  private readonly scryptParams: ScryptParams;
  private readonly kdf: KdfLimiter;
  /** Verified against when the email is unknown, so that answer takes as long as a wrong password. */
  private dummyHash: Promise<string> | undefined;

  constructor(private readonly deps: AccountsDeps) {
    this.scryptParams = deps.scryptParams ?? defaultScryptParams;
    this.kdf = deps.kdfLimiter ?? new KdfLimiter(3, 128);
  }

  /** Computes the dummy hash ahead of the first unknown-email login. */
  async prepare(): Promise<void> {
    await this.dummyPasswordHash();
  }

  async register(credentials: Credentials): Promise<TokenPair> {
    const hash = emailHash(this.deps.secrets.emailHashKey, credentials.email);
    // Cheap check first: a taken email costs no KDF run and burns no voter number.
    if (await findUserByEmailHash(this.deps.pool, hash)) throw new ApiError('email_taken');
    const passwordHash = await this.kdfRun(() => hashPassword(credentials.password, this.scryptParams));
    return inTransaction(this.deps.pool, async (client) => {
      // ON CONFLICT DO NOTHING: a concurrent registration of the same email loses here.
      const user = await insertUser(client, { userId: randomUUID(), emailHash: hash, passwordHash, role: 'viewer' });
      if (!user) throw new ApiError('email_taken');
      return this.startSession(client, user);
    });
  }

  async login(credentials: Credentials): Promise<TokenPair> {
    const user = await findUserByEmailHash(this.deps.pool, emailHash(this.deps.secrets.emailHashKey, credentials.email));
    if (!user || user.passwordHash === null || user.erasedAt !== null) {
      const dummy = await this.dummyPasswordHash();
      await this.kdfRun(() => verifyPassword(credentials.password, dummy));
      throw new ApiError('invalid_credentials');
    }
    const storedHash = user.passwordHash;
    const matches = await this.kdfRun(() => verifyPassword(credentials.password, storedHash));
    if (!matches) throw new ApiError('invalid_credentials');
    if (needsRehash(storedHash, this.scryptParams)) {
      const upgraded = await this.kdfRun(() => hashPassword(credentials.password, this.scryptParams));
      await updateUserPassword(this.deps.pool, user.userId, upgraded);
    }
    return inTransaction(this.deps.pool, async (client) => {
      // Read again under lock: the account may have been erased (its refresh token would then
      // violate a foreign key, a 500) or its role changed while the KDF ran.
      const current = await lockUserById(client, user.userId);
      if (!current || current.erasedAt !== null) throw new ApiError('invalid_credentials');
      return this.startSession(client, current);
    });
  }

  async refresh(refreshToken: string): Promise<TokenPair> {
    if (!refreshTokenPattern.test(refreshToken)) throw new ApiError('invalid_refresh_token');
    const tokenHash = hashRefreshToken(refreshToken);
    const now = new Date(this.deps.nowMs());
    const outcome = await inTransaction(this.deps.pool, async (client): Promise<RefreshOutcome> => {
      const token = await lockRefreshToken(client, tokenHash);
      if (!token || token.revokedAt !== null || token.familyRevoked) return { kind: 'refused' };
      if (token.rotatedAt !== null) {
        return { kind: 'reused', session: await revokeFamily(client, token.familyId, now, this.sessionExpiry(now)) };
      }
      if (token.expiresAt.getTime() <= now.getTime() || token.userErasedAt !== null) return { kind: 'refused' };
      await markRefreshTokenRotated(client, tokenHash, now);
      // Role and voter number are read again: a granted role takes effect at the next refresh.
      const pair = await this.issueInFamily(client, token.familyId, { userId: token.userId, voterNumber: token.voterNumber, role: token.role }, now);
      return { kind: 'rotated', pair };
    });
    switch (outcome.kind) {
      case 'rotated':
        return outcome.pair;
      case 'reused':
        this.deps.revocations.add(outcome.session);
        this.deps.log.warn({ sessionId: outcome.session.sessionId }, 'refresh token reused: session family revoked');
        throw new ApiError('refresh_token_reused');
      case 'refused':
        throw new ApiError('invalid_refresh_token');
    }
  }

  /**
   * Ends the caller's session: its refresh family is revoked and its access tokens refused. A
   * refresh token of another of the caller's sessions, when given, ends that session too; one
   * that is unknown or someone else's is ignored (logout never fails on it).
   */
  async logout(principal: Principal, refreshToken: string | undefined): Promise<void> {
    const now = new Date(this.deps.nowMs());
    const expiry = this.sessionExpiry(now);
    const sessions = await inTransaction(this.deps.pool, async (client) => {
      const revoked = [await revokeFamily(client, principal.sessionId, now, expiry)];
      if (refreshToken !== undefined && refreshTokenPattern.test(refreshToken)) {
        const other = await findRefreshToken(client, hashRefreshToken(refreshToken));
        if (other && other.userId === principal.userId && other.familyId !== principal.sessionId) {
          revoked.push(await revokeFamily(client, other.familyId, now, expiry));
        }
      }
      return revoked;
    });
    for (const session of sessions) this.deps.revocations.add(session);
  }

  /**
   * Sets a user's role. Lowering it also ends the user's sessions (their tokens carry the old
   * role for up to 15 minutes otherwise); raising it takes effect at their next refresh.
   */
  async grantRole(userId: string, role: Role): Promise<{ userId: string; role: Role }> {
    if (!uuidPattern.test(userId)) {
      throw new ApiError('validation_failed', 'userId must be a UUID.', { issues: [{ path: 'params.userId', message: 'must be a UUID' }] });
    }
    const now = new Date(this.deps.nowMs());
    const { updated, revoked } = await inTransaction(this.deps.pool, async (client) => {
      // Any lowering may be of the last admin: the admins' rows are locked first, so two admins
      // lowering each other at once are served one after the other and the second is refused.
      const admins = role === 'admin' ? [] : await lockActiveAdmins(client);
      const user = await lockUserById(client, userId.toLowerCase());
      if (!user) throw new ApiError('user_not_found');
      if (user.erasedAt !== null) throw new ApiError('account_erased');
      if (user.role === 'admin' && role !== 'admin' && admins.every((id) => id === user.userId)) throw new ApiError('last_admin');
      const lowered = roleRank[role] < roleRank[user.role];
      const changed = await updateUserRole(client, user.userId, role);
      if (!changed) throw new Error(`user ${user.userId} vanished while locked`);
      const sessions = lowered ? await revokeUserSessions(client, user.userId, now, this.sessionExpiry(now)) : [];
      return { updated: changed, revoked: sessions };
    });
    for (const session of revoked) this.deps.revocations.add(session);
    this.deps.log.info({ userId: updated.userId, role: updated.role, sessionsRevoked: revoked.length }, 'role granted');
    return { userId: updated.userId, role: updated.role };
  }

  /**
   * Makes sure the configured admin exists, is an admin, and has the configured password (a
   * replaced password ends the admin's existing sessions). Safe to run on several nodes at once.
   */
  async bootstrapAdmin(): Promise<void> {
    const { pool, secrets, log } = this.deps;
    const hash = emailHash(secrets.emailHashKey, secrets.adminEmail);
    let user = await findUserByEmailHash(pool, hash);
    if (!user) {
      const passwordHash = await hashPassword(secrets.adminPassword, this.scryptParams);
      const created = await insertUser(pool, { userId: randomUUID(), emailHash: hash, passwordHash, role: 'admin' });
      if (created) {
        log.info({ userId: created.userId }, 'created the configured admin account');
        return;
      }
      user = await findUserByEmailHash(pool, hash);
      if (!user) throw new Error('the configured admin was neither created nor found');
    }
    if (user.role !== 'admin') {
      await updateUserRole(pool, user.userId, 'admin');
      log.warn({ userId: user.userId, previousRole: user.role }, 'the configured admin account had lost its role; restored');
    }
    const storedHash = user.passwordHash;
    const matches = storedHash !== null && (await verifyPassword(secrets.adminPassword, storedHash));
    if (!matches || (storedHash !== null && needsRehash(storedHash, this.scryptParams))) {
      const passwordHash = await hashPassword(secrets.adminPassword, this.scryptParams);
      const adminId = user.userId;
      const now = new Date(this.deps.nowMs());
      const revoked = await inTransaction(pool, async (client) => {
        await updateUserPassword(client, adminId, passwordHash);
        return matches ? [] : revokeUserSessions(client, adminId, now, this.sessionExpiry(now));
      });
      for (const session of revoked) this.deps.revocations.add(session);
      if (!matches) log.warn({ userId: adminId, sessionsRevoked: revoked.length }, 'admin password set from configuration; earlier sessions ended');
    }
  }

  private async startSession(client: PoolClient, user: Pick<UserRecord, 'userId' | 'voterNumber' | 'role'>): Promise<TokenPair> {
    return this.issueInFamily(client, randomUUID(), user, new Date(this.deps.nowMs()));
  }

  private async issueInFamily(
    client: PoolClient,
    familyId: string,
    user: Pick<UserRecord, 'userId' | 'voterNumber' | 'role'>,
    now: Date,
  ): Promise<TokenPair> {
    const refreshToken = randomBytes(refreshTokenBytes).toString('base64url');
    await insertRefreshToken(client, {
      tokenHash: hashRefreshToken(refreshToken),
      familyId,
      userId: user.userId,
      issuedAt: now,
      expiresAt: new Date(now.getTime() + refreshTokenTtlMs),
    });
    const accessToken = signAccessToken(
      { sub: user.userId, vn: user.voterNumber, role: user.role, sid: familyId },
      this.deps.secrets.jwtSecret,
      Math.floor(now.getTime() / 1000),
    );
    return { userId: user.userId, role: user.role, accessToken, refreshToken, tokenType: 'Bearer', expiresIn: accessTokenTtlS };
  }

  /** After this, no access token minted before `now` is valid any more. */
  private sessionExpiry(now: Date): Date {
    return new Date(now.getTime() + (accessTokenTtlS + 1) * 1000);
  }

  private dummyPasswordHash(): Promise<string> {
    this.dummyHash ??= hashPassword(randomBytes(24).toString('base64url'), this.scryptParams);
    return this.dummyHash;
  }

  private async kdfRun<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await this.kdf.run(work);
    } catch (error) {
      if (error instanceof KdfOverloadedError) throw new ApiError('auth_overloaded', undefined, undefined, { 'retry-after': '1' });
      throw error;
    }
  }
}
