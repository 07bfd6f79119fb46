// The auth feature as the app sees it: routes, the hot-path `authenticate`, and a lifecycle
// (configured admin, revoked sessions loaded, revocation poller running).
import { ApiError } from '../errors.ts';
import type { Principal, RouteDefinition } from '../http.ts';
import type { Logger } from '../../infra/logger.ts';
import type { Secrets } from '../../infra/secrets.ts';
import type { Pool } from '../../persistence/db.ts';
import type { RevokedSessionRecord } from '../../persistence/users.ts';
import { Accounts } from './accounts.ts';
import { createAuthorizationVerifier, createUncheckedAuthorizationDecoder, type AuthorizationVerification } from './authorization.ts';
import { SessionRevocations, type RevocationOptions } from './revocations.ts';
import { authRoutes, type AccountEventHook, type VerifiedPrincipal } from './routes.ts';
import type { ScryptParams } from './passwords.ts';
import type { AuthGuard } from '../abuse/feature.ts';

export interface AuthFeature {
  readonly routes: readonly RouteDefinition<unknown, unknown>[];
  /** Verifies 'Bearer <jwt>' (throws ApiError unauthenticated/invalid_token/token_expired/unsupported_token_algorithm/session_revoked); hot path: no I/O. */
  authenticate(authorizationHeader: string): Principal;
  /**
   * `authenticate`'s second half, for a header verified elsewhere (the request checks worker,
   * gateway/requestChecks.ts): the refusal as its ApiError, or the principal unless its session is
   * revoked (the revoked sessions live on this thread).
   */
  admit(verification: AuthorizationVerification): Principal;
  /** Sessions revoked elsewhere in this process (an erasure): refused at once on this node. */
  addRevokedSessions(sessions: readonly RevokedSessionRecord[]): void;
  /** Bootstraps the configured admin, loads revoked sessions, starts the revocation poller. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

export interface AuthFeatureDeps {
  pool: Pool;
  secrets: Secrets;
  log: Logger;
  nowMs?: () => number;
  /** Tests only: cheaper scrypt and a faster poller. */
  scryptParams?: ScryptParams;
  revocationOptions?: Partial<RevocationOptions>;
  /** Rate limits, fraud rules and CAPTCHA on register and login (gateway/abuse/feature.ts). */
  guard?: AuthGuard;
  /** Registrations and logins, for the privacy feature's request-metadata recorder. */
  onAccountEvent?: AccountEventHook;
  /**
   * Measurement only (LIVEVOTE_MEASURE_WITHOUT token_check): false decodes access tokens without
   * checking their signature or claims (revoked sessions are still refused). Default true.
   */
  tokenChecks?: boolean;
}

export function createAuthFeature(deps: AuthFeatureDeps): AuthFeature {
  const nowMs = deps.nowMs ?? Date.now;
  const log = deps.log.child({ component: 'auth' });
  const revocations = new SessionRevocations(deps.pool, log, nowMs, deps.revocationOptions);
  const accounts = new Accounts({ pool: deps.pool, secrets: deps.secrets, log, nowMs, revocations, scryptParams: deps.scryptParams });
  const verify = deps.tokenChecks === false
    ? createUncheckedAuthorizationDecoder()
    : createAuthorizationVerifier(deps.secrets.jwtSecret, () => Math.floor(nowMs() / 1000));
  let started = false;

  const admit = (verification: AuthorizationVerification): VerifiedPrincipal => {
    if (!verification.ok) throw new ApiError(verification.refusal);
    const claims = verification.claims;
    if (revocations.isRevoked(claims.sid)) throw new ApiError('session_revoked');
    return { userId: claims.sub, voterNumber: claims.vn, role: claims.role, sessionId: claims.sid, expiresAtS: claims.exp };
  };

  return {
    routes: authRoutes({ accounts, guard: deps.guard, onAccountEvent: deps.onAccountEvent }),

    authenticate(authorizationHeader: string): VerifiedPrincipal {
      return admit(verify(authorizationHeader));
    },

    admit,

    addRevokedSessions(sessions) {
      for (const session of sessions) revocations.add(session);
    },

    async start() {
      if (started) return;
      await accounts.bootstrapAdmin();
      await revocations.start();
      await accounts.prepare();
      started = true;
    },

    async stop() {
      await revocations.stop();
      started = false;
    },
  };
}
