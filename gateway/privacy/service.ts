// The privacy service behind the routes: export and erasure, answering with ApiErrors from the
// one catalog. SQL lives in persistence/privacy.ts.
import { ApiError } from '../errors.ts';
import type { Principal } from '../http.ts';
import { accessTokenTtlS } from '../auth/jwt.ts';
import { KdfLimiter, KdfOverloadedError, verifyPassword } from '../auth/passwords.ts';
import type { Logger } from '../../infra/logger.ts';
import type { Pool } from '../../persistence/db.ts';
import { eraseAccount, exportUserData, type ErasureOutcome, type ErasureRequester, type UserDataExport } from '../../persistence/privacy.ts';
import { findUserById, type RevokedSessionRecord } from '../../persistence/users.ts';

export interface PrivacyDeps {
  readonly pool: Pool;
  readonly log: Logger;
  readonly nowMs: () => number;
  readonly metadataRetentionDays: number;
  /** Sessions an erasure revoked, for this node's in-memory revocation list (other nodes poll). */
  readonly onSessionsRevoked?: (sessions: readonly RevokedSessionRecord[]) => void;
  readonly kdfLimiter?: KdfLimiter;
}

export interface ErasureReply {
  readonly userId: string;
  readonly erasedAt: string;
  readonly alreadyErased: boolean;
}

export type ExportReply = UserDataExport & { readonly retention: { readonly metadataDays: number }; readonly exportedAt: string };

export class Privacy {
  private readonly kdf: KdfLimiter;

  constructor(private readonly deps: PrivacyDeps) {
    // Erasure re-checks a password: a KDF run, admitted like sign-ins are (few at once, short queue).
    this.kdf = deps.kdfLimiter ?? new KdfLimiter(1, 32);
  }

  async exportData(userId: string): Promise<ExportReply> {
    const data = await exportUserData(this.deps.pool, userId);
    // A valid token whose account is gone: it was erased (its sessions are being revoked).
    if (!data) throw new ApiError('account_erased');
    return { ...data, retention: { metadataDays: this.deps.metadataRetentionDays }, exportedAt: new Date(this.deps.nowMs()).toISOString() };
  }

  async eraseSelf(principal: Principal, password: string): Promise<ErasureReply> {
    const user = await findUserById(this.deps.pool, principal.userId);
    if (!user) throw new ApiError('account_erased');
    const storedHash = user.passwordHash;
    if (storedHash === null || !(await this.passwordMatches(password, storedHash))) throw new ApiError('reauthentication_failed');
    const outcome = await this.erase(principal.userId, 'self', storedHash);
    if (outcome.kind === 'not_found' || (outcome.kind === 'erased' && outcome.alreadyErased)) throw new ApiError('account_erased');
    if (outcome.kind === 'credentials_changed') throw new ApiError('reauthentication_failed');
    return this.reply(principal.userId, outcome);
  }

  async eraseByAdmin(userId: string): Promise<ErasureReply> {
    const outcome = await this.erase(userId, 'admin', undefined);
    if (outcome.kind === 'not_found') throw new ApiError('user_not_found');
    if (outcome.kind === 'credentials_changed') throw new Error('admin erasure checks no credentials');
    return this.reply(userId, outcome);
  }

  private async erase(userId: string, requestedBy: ErasureRequester, verifiedPasswordHash: string | undefined): Promise<ErasureOutcome> {
    const now = this.deps.nowMs();
    const outcome = await eraseAccount(this.deps.pool, {
      userId,
      requestedBy,
      at: new Date(now),
      // After this, no access token minted before the erasure is valid any more.
      sessionExpiresAt: new Date(now + (accessTokenTtlS + 1) * 1000),
      verifiedPasswordHash,
    });
    if (outcome.kind === 'erased' && !outcome.alreadyErased) {
      this.deps.onSessionsRevoked?.(outcome.sessions);
      // The user id is logged (it leads to nothing once erased); nothing else about the person.
      this.deps.log.info({ userId: userId.toLowerCase(), requestedBy, sessionsRevoked: outcome.sessions.length }, 'account erased');
    }
    return outcome;
  }

  private reply(userId: string, outcome: ErasureOutcome): ErasureReply {
    if (outcome.kind === 'deferred') {
      throw new ApiError('erasure_deferred', undefined, { openElectionIds: outcome.openElectionIds });
    }
    if (outcome.kind !== 'erased') throw new Error(`unexpected erasure outcome ${outcome.kind}`);
    return { userId: userId.toLowerCase(), erasedAt: outcome.erasedAt.toISOString(), alreadyErased: outcome.alreadyErased };
  }

  private async passwordMatches(password: string, storedHash: string): Promise<boolean> {
    try {
      return await this.kdf.run(async () => {
        try {
          return await verifyPassword(password, storedHash);
        } catch {
          // Not a hash we can read (bulk-created test voters store '!'): no password matches it.
          return false;
        }
      });
    } catch (error) {
      if (error instanceof KdfOverloadedError) throw new ApiError('auth_overloaded', undefined, undefined, { 'retry-after': '1' });
      throw error;
    }
  }
}
